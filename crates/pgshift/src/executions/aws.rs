//! [`Executions`] over the AWS SDK for Step Functions. API reference:
//! <https://docs.aws.amazon.com/step-functions/latest/apireference/API_Operations.html> (StartExecution,
//! RedriveExecution, DescribeExecution, DescribeMapRun, GetExecutionHistory, ListExecutions).

use aws_sdk_sfn::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sfn::Client;
use futures_util::future::BoxFuture;

use super::{Execution, ExecutionError, Executions, HistoryEvent, MapRunCounts, Page};

pub struct AwsExecutions {
    client: Client,
}

impl AwsExecutions {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// A client from the standard AWS environment (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_env() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(Client::new(&config))
    }
}

/// An SDK error as the named error of `subject` (the execution, Map run or state machine asked about).
fn named<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
    subject: &str,
) -> ExecutionError {
    if let Some(problem) = crate::awsclient::setup_problem(&e) {
        return ExecutionError::Other { detail: problem };
    }
    let code = e.code().unwrap_or_default().to_string();
    let message = e.message().map(str::to_string).unwrap_or_else(|| {
        let mut s = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            s = format!("{s}: {inner}");
            source = inner.source();
        }
        s
    });
    let arn = subject.to_string();
    match code.as_str() {
        "ExecutionDoesNotExist" | "ResourceNotFound" => ExecutionError::NotFound { arn },
        "StateMachineDoesNotExist" => ExecutionError::MachineNotFound { arn },
        "ExecutionNotRedrivable" => ExecutionError::NotRedrivable { arn, why: message },
        "ExecutionAlreadyExists" => ExecutionError::AlreadyExists { name: arn },
        "ThrottlingException" | "TooManyRequestsException" | "ExecutionLimitExceeded" => {
            ExecutionError::Throttled { detail: message }
        }
        "InvalidArn" | "InvalidExecutionInput" | "InvalidName" | "InvalidToken" | "ValidationException" => {
            ExecutionError::Invalid {
                detail: format!("{code}: {message}"),
            }
        }
        "" => ExecutionError::Other { detail: message },
        _ => ExecutionError::Other {
            detail: format!("{code}: {message}"),
        },
    }
}

fn secs(d: &aws_sdk_sfn::primitives::DateTime) -> f64 {
    d.as_secs_f64()
}

impl Executions for AwsExecutions {
    fn start<'a>(
        &'a self,
        state_machine: &'a str,
        name: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<String, ExecutionError>> {
        Box::pin(async move {
            let out = self
                .client
                .start_execution()
                .state_machine_arn(state_machine)
                .name(name)
                .input(input)
                .send()
                .await
                .map_err(|e| match named(e, state_machine) {
                    ExecutionError::AlreadyExists { .. } => ExecutionError::AlreadyExists { name: name.into() },
                    other => other,
                })?;
            Ok(out.execution_arn().to_string())
        })
    }

    fn redrive<'a>(&'a self, execution: &'a str) -> BoxFuture<'a, Result<(), ExecutionError>> {
        Box::pin(async move {
            self.client
                .redrive_execution()
                .execution_arn(execution)
                .send()
                .await
                .map_err(|e| named(e, execution))?;
            Ok(())
        })
    }

    fn describe<'a>(&'a self, execution: &'a str) -> BoxFuture<'a, Result<Execution, ExecutionError>> {
        Box::pin(async move {
            let o = self
                .client
                .describe_execution()
                .execution_arn(execution)
                .send()
                .await
                .map_err(|e| named(e, execution))?;
            Ok(Execution {
                arn: o.execution_arn().to_string(),
                name: o.name().unwrap_or_default().to_string(),
                status: o.status().as_str().to_string(),
                started_at: secs(o.start_date()),
                stopped_at: o.stop_date().map(secs),
                input: o.input().map(str::to_string),
                output: o.output().map(str::to_string),
                error: o.error().map(str::to_string),
                cause: o.cause().map(str::to_string),
                redrive_count: o.redrive_count().unwrap_or(0),
            })
        })
    }

    fn map_run<'a>(&'a self, map_run: &'a str) -> BoxFuture<'a, Result<MapRunCounts, ExecutionError>> {
        Box::pin(async move {
            let o = self
                .client
                .describe_map_run()
                .map_run_arn(map_run)
                .send()
                .await
                .map_err(|e| named(e, map_run))?;
            Ok(o.item_counts().map_or_else(MapRunCounts::default, |c| MapRunCounts {
                total: c.total(),
                succeeded: c.succeeded(),
                failed: c.failed() + c.timed_out() + c.aborted(),
                running: c.running(),
                pending: c.pending(),
            }))
        })
    }

    fn history<'a>(
        &'a self,
        execution: &'a str,
        next: Option<String>,
    ) -> BoxFuture<'a, Result<Page<HistoryEvent>, ExecutionError>> {
        Box::pin(async move {
            let o = self
                .client
                .get_execution_history()
                .execution_arn(execution)
                .max_results(1000)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| named(e, execution))?;
            let items = o
                .events()
                .iter()
                .map(|e| HistoryEvent {
                    id: e.id(),
                    kind: e.r#type().as_str().to_string(),
                    timestamp: secs(e.timestamp()),
                    state: e
                        .state_entered_event_details()
                        .map(|d| d.name().to_string())
                        .or_else(|| e.state_exited_event_details().map(|d| d.name().to_string())),
                    output: e
                        .state_exited_event_details()
                        .and_then(|d| d.output())
                        .map(str::to_string),
                    map_run_arn: e
                        .map_run_started_event_details()
                        .and_then(|d| d.map_run_arn())
                        .map(str::to_string),
                })
                .collect();
            Ok(Page {
                items,
                next: o.next_token().map(str::to_string),
            })
        })
    }

    fn list<'a>(
        &'a self,
        state_machine: Option<&'a str>,
        map_run: Option<&'a str>,
        next: Option<String>,
    ) -> BoxFuture<'a, Result<Page<Execution>, ExecutionError>> {
        Box::pin(async move {
            let subject = map_run.or(state_machine).unwrap_or_default();
            let o = self
                .client
                .list_executions()
                .set_state_machine_arn(state_machine.map(str::to_string))
                .set_map_run_arn(map_run.map(str::to_string))
                .max_results(1000)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| named(e, subject))?;
            let items = o
                .executions()
                .iter()
                .map(|x| Execution {
                    arn: x.execution_arn().to_string(),
                    name: x.name().to_string(),
                    status: x.status().as_str().to_string(),
                    started_at: secs(x.start_date()),
                    stopped_at: x.stop_date().map(secs),
                    input: None,
                    output: None,
                    error: None,
                    cause: None,
                    redrive_count: x.redrive_count().unwrap_or(0),
                })
                .collect();
            Ok(Page {
                items,
                next: o.next_token().map(str::to_string),
            })
        })
    }
}
