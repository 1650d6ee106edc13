//! The local binding of the definition's resources: Lambda functions (the same handlers the Lambda binaries call,
//! errors reported by their stable names as `errorType`), the Distributed Map's S3 item reader (`tasks.json` on the
//! stage) and its result writer (`manifest.json` and `SUCCEEDED_0.json` under the results prefix), and the
//! definition's RDS calls bound to the RDS stand-in.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::contract::layout::bucket_url;
use crate::entry::handlers::PlannerOutput;
use crate::entry::trigger::PlannerDefaults;
use crate::extract::ExtractContext;
use crate::load::LoadContext;
use crate::plan::PlanContext;
use crate::stage::StageOpener;
use asl::{Failure, Resources, TaskCall};

use super::progress::{Attempt, Progress};
use super::{LOCAL_ARN, RDS_SDK};

/// The local binding: every effect of the definition, in process.
pub(crate) struct LocalPipeline {
    pub planner: PlanContext,
    /// What the planner Lambda reads from its environment; the run input overrides it.
    pub plan_defaults: PlannerDefaults,
    pub extractor: ExtractContext,
    pub loader: LoadContext,
    pub stages: Arc<dyn StageOpener>,
    pub progress: Arc<Progress>,
    /// The extractor's memory, for the run report's cost.
    pub memory_mb: u32,
    /// The RDS stand-in, and what the loader's sweep may delete.
    pub rds: Option<Arc<dyn crate::rds::Rds>>,
    pub sweep: Option<crate::entry::handlers::SweepContext>,
    /// What the run's end tells (lineage's START at the pre-flight; the rest once the execution ended).
    pub announce: Option<Arc<crate::entry::announce::Announce>>,
}

/// The message of a failure: a Lambda function error's `errorMessage` (its cause is that JSON), else the cause.
pub fn failure_message(f: &Failure) -> String {
    crate::contract::code::in_words(&f.cause)
}

/// A handler error as Step Functions reports a Lambda function error: the `errorType` is the error name.
fn lambda_failure(name: &str, message: String) -> Failure {
    Failure::new(name, json!({"errorMessage": message, "errorType": name}).to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, Failure> {
    serde_json::to_value(v).map_err(|e| lambda_failure("Pipeline.Fatal.Internal", e.to_string()))
}

impl LocalPipeline {
    async fn extract(&self, call: TaskCall) -> Result<Value, Failure> {
        let input =
            crate::entry::handlers::extractor_input(call.input).map_err(|e| lambda_failure(e.name(), e.to_string()))?;
        let (task, attempt) = (&input.task, input.attempt);
        let t0 = self.progress.elapsed();
        let slot = {
            let mut slot = 0;
            self.progress.update(|s| {
                s.phase = "extracting";
                slot = s.attempts.len();
                s.attempts.push(Attempt {
                    table: task.table.clone(),
                    range_index: task.range_index,
                    attempt,
                    started: t0,
                    ended: None,
                    error: None,
                });
            });
            slot
        };
        let r = crate::entry::handlers::extractor(&self.extractor, input).await;
        let now = self.progress.elapsed();
        match r {
            Ok(result) => {
                let v = to_json(&result)?;
                self.progress.update(|s| {
                    s.attempts[slot].ended = Some(now);
                    s.results.push(result);
                });
                Ok(v)
            }
            Err(e) => {
                self.progress.update(|s| {
                    s.attempts[slot].ended = Some(now);
                    s.attempts[slot].error = Some(e.name().to_string());
                });
                Err(lambda_failure(e.name(), e.to_string()))
            }
        }
    }
}

impl LocalPipeline {
    /// An RDS call of the definition, made on the bound stand-in; its error named as Step Functions names it.
    async fn rds_call(&self, state: &str, action: &str, input: Value) -> Result<Value, Failure> {
        let Some(rds) = &self.rds else {
            return Err(Failure::new(
                "States.Runtime",
                format!("state {state:?}: no RDS stand-in is bound (run with --snapshot-dir)"),
            ));
        };
        self.progress.update(|s| s.phase = "restoring");
        rds.call(action, input)
            .await
            .map_err(|e| Failure::new(&e.name, e.message))
    }
}

impl Resources for LocalPipeline {
    fn invoke(&self, call: TaskCall) -> BoxFuture<'_, Result<Value, Failure>> {
        Box::pin(async move {
            if let Some(action) = call.resource.strip_prefix(RDS_SDK) {
                return self.rds_call(&call.state, action, call.input).await;
            }
            let Some(function) = call.resource.strip_prefix(LOCAL_ARN) else {
                return Err(Failure::new(
                    "States.Runtime",
                    format!(
                        "state {:?}: resource {} is not bound locally",
                        call.state, call.resource
                    ),
                ));
            };
            let t0 = Instant::now();
            let name: &'static str = match function {
                "planner" => "planner",
                "extractor" => "extractor",
                _ => "loader",
            };
            let out = match function {
                "planner" => {
                    self.progress.update(|s| s.phase = "planning");
                    let failed = |e: crate::plan::PlanError| lambda_failure(e.name(), e.to_string());
                    let input = crate::entry::handlers::planner_input(call.input).map_err(failed)?;
                    let out = crate::entry::handlers::planner(&self.planner, &self.plan_defaults, input)
                        .await
                        .map_err(failed)?;
                    match &out {
                        PlannerOutput::Planned(summary) => self.progress.update(|s| {
                            s.plan_url = Some(summary.plan_url.clone());
                            s.tables = summary.tables;
                        }),
                        PlannerOutput::Triggered(t) if t.duplicate_of.is_none() => self.progress.update(|s| {
                            s.trigger = Some((t.run_id.clone(), t.stage.clone()));
                        }),
                        PlannerOutput::Triggered(_) => {}
                    }
                    to_json(&out)
                }
                "extractor" => self.extract(call).await,
                "loader" => {
                    use crate::contract::load::LoaderInput;
                    let input = crate::entry::handlers::loader_input(call.input);
                    let cleanup = matches!(input, Ok(LoaderInput::Cleanup(_)));
                    let phase = if cleanup { "cleaning up" } else { "loading" };
                    self.progress.update(|s| s.phase = phase);
                    let out = match input {
                        Ok(input) => {
                            let extras = crate::entry::handlers::LoaderExtras {
                                sweep: self.sweep.as_ref(),
                                announce: self.announce.as_deref(),
                                extractor_memory_mb: self.memory_mb,
                            };
                            crate::entry::handlers::loader(&self.loader, &extras, input).await
                        }
                        Err(e) => Err(e),
                    }
                    .map_err(|e| lambda_failure(e.name(), e.to_string()));
                    if let (Ok(v), true) = (&out, cleanup) {
                        let done = serde_json::from_value(v.clone()).ok();
                        self.progress.update(|s| s.cleanup = done);
                    }
                    out
                }
                other => Err(Failure::new(
                    "States.Runtime",
                    format!("state {:?}: no local function {other:?}", call.state),
                )),
            };
            let secs = t0.elapsed().as_secs_f64();
            self.progress.update(|s| s.invocations.push((name, secs)));
            out
        })
    }

    fn read_items<'a>(
        &'a self,
        state: &'a str,
        resource: &'a str,
        parameters: Value,
        reader_config: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, Failure>> {
        Box::pin(async move {
            let input_type = reader_config.and_then(|c| c.get("InputType")).and_then(Value::as_str);
            if resource != "arn:aws:states:::s3:getObject" || input_type != Some("JSON") {
                return Err(Failure::new(
                    "States.Runtime",
                    format!("state {state:?}: only an s3:getObject item reader of a JSON array is bound locally"),
                ));
            }
            let (bucket, key) = bucket_key(&parameters, "Key", state)?;
            let stage = self
                .stages
                .open(&bucket_url(&bucket))
                .await
                .map_err(|e| Failure::new("States.ItemReaderFailed", e.to_string()))?;
            let body = stage
                .get(&key)
                .await
                .map_err(|e| Failure::new("States.ItemReaderFailed", e.to_string()))?;
            let items: Vec<Value> = serde_json::from_slice(&body).map_err(|e| {
                Failure::new(
                    "States.ItemReaderFailed",
                    format!("{bucket}/{key} is not a JSON array: {e}"),
                )
            })?;
            self.progress.update(|s| s.parts = items.len());
            Ok(items)
        })
    }

    fn write_results<'a>(
        &'a self,
        state: &'a str,
        resource: &'a str,
        parameters: Value,
        results: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move {
            if resource != "arn:aws:states:::s3:putObject" {
                return Err(Failure::new(
                    "States.Runtime",
                    format!("state {state:?}: only an s3:putObject result writer is bound locally"),
                ));
            }
            let (bucket, prefix) = bucket_key(&parameters, "Prefix", state)?;
            let failed = |e: crate::stage::StageError| Failure::new("States.ResultWriterFailed", e.to_string());
            let stage = self.stages.open(&bucket_url(&bucket)).await.map_err(failed)?;
            let dir = format!("{}/{}", prefix.trim_end_matches('/'), uuid::Uuid::new_v4());
            let succeeded: Vec<Value> = results
                .iter()
                .map(|r| json!({"Status": "SUCCEEDED", "Output": r.to_string()}))
                .collect();
            let body = Bytes::from(Value::Array(succeeded).to_string());
            let size = body.len();
            let file = format!("{dir}/SUCCEEDED_0.json");
            crate::stage::put(stage.as_ref(), &file, body).await.map_err(failed)?;
            let manifest = json!({
                "DestinationBucket": bucket,
                "MapRunArn": format!("arn:aws:states:local:000000000000:mapRun:pgshift/{state}"),
                "ResultFiles": {"FAILED": [], "PENDING": [], "SUCCEEDED": [{"Key": file, "Size": size}]},
            });
            let key = format!("{dir}/manifest.json");
            crate::stage::put(stage.as_ref(), &key, Bytes::from(manifest.to_string()))
                .await
                .map_err(failed)?;
            Ok(json!({"Bucket": bucket, "Key": key}))
        })
    }
}

fn bucket_key(p: &Value, second: &str, state: &str) -> Result<(String, String), Failure> {
    let get = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Failure::new("States.Runtime", format!("state {state:?}: Parameters need {k}")))
    };
    Ok((get("Bucket")?, get(second)?))
}
