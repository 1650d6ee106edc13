//! The interpreter, state by state, against the behaviour the AWS specification gives. Time is tokio's paused clock:
//! waits and retry delays are measured exactly, and take no real time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::*;

type Handler = dyn Fn(TaskCall) -> BoxFuture<'static, Result<Value, Failure>> + Send + Sync;

/// Task resources as a closure; every call is recorded.
struct Fake {
    handler: Box<Handler>,
    calls: Mutex<Vec<TaskCall>>,
}

impl Fake {
    fn new(f: impl Fn(TaskCall) -> BoxFuture<'static, Result<Value, Failure>> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            handler: Box::new(f),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn echo() -> Arc<Self> {
        Self::new(|c| Box::pin(async move { Ok(json!({"echo": c.input, "resource": c.resource})) }))
    }

    fn calls(&self) -> Vec<TaskCall> {
        self.calls.lock().expect("calls").clone()
    }
}

impl Resources for Fake {
    fn invoke(&self, call: TaskCall) -> BoxFuture<'_, Result<Value, Failure>> {
        self.calls.lock().expect("calls").push(call.clone());
        (self.handler)(call)
    }

    fn read_items<'a>(
        &'a self,
        _state: &'a str,
        resource: &'a str,
        parameters: Value,
        reader_config: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, Failure>> {
        Box::pin(async move {
            assert_eq!(resource, "arn:aws:states:::s3:getObject");
            assert_eq!(reader_config, Some(&json!({"InputType": "JSON"})));
            let n = parameters["Key"].as_str().map(|k| k.len()).unwrap_or(0);
            Ok((0..n).map(|i| json!({"n": i})).collect())
        })
    }

    fn write_results<'a>(
        &'a self,
        _state: &'a str,
        _resource: &'a str,
        parameters: Value,
        results: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move { Ok(json!({"Bucket": parameters["Bucket"], "count": results.len()})) })
    }
}

fn machine(states: Value) -> Arc<Machine> {
    let start = states
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("a state");
    let start = states.get("Start").map(|_| "Start".to_string()).unwrap_or(start);
    Machine::parse(&json!({"StartAt": start, "States": states})).expect("valid definition")
}

async fn run(states: Value, resources: Arc<Fake>, input: Value) -> Result<Value, Failure> {
    Interpreter::new(machine(states), resources)
        .execute("test", input)
        .await
}

#[tokio::test]
async fn pass_applies_input_parameters_result_and_output_paths_in_order() {
    let states = json!({
        "Start": {
            "Type": "Pass",
            "InputPath": "$.in",
            "Parameters": {
                "fixed": 1,
                "copied.$": "$.a",
                "nested": {"deep.$": "$.b[1]", "list": [1, {"x.$": "$.a"}]},
                "fmt.$": "States.Format('{}-{}', $.a, $$.Execution.Name)",
                "state.$": "$$.State.Name"
            },
            "ResultPath": "$.out",
            "OutputPath": "$.out",
            "End": true
        }
    });
    let out = run(states, Fake::echo(), json!({"in": {"a": "A", "b": [0, 5]}})).await;
    assert_eq!(
        out,
        Ok(
            json!({"fixed": 1, "copied": "A", "nested": {"deep": 5, "list": [1, {"x": "A"}]},
                  "fmt": "A-test", "state": "Start"})
        )
    );
}

#[tokio::test]
async fn result_path_merges_into_the_raw_input_and_null_paths_discard() {
    let states = json!({
        "Start": {"Type": "Pass", "Result": {"r": 1}, "ResultPath": "$.x.y", "Next": "Discard"},
        "Discard": {"Type": "Pass", "Result": "ignored", "ResultPath": null, "Next": "Empty"},
        "Empty": {"Type": "Pass", "InputPath": null, "ResultPath": "$.seen", "Next": "Out"},
        "Out": {"Type": "Pass", "OutputPath": null, "End": true}
    });
    // After Empty: the effective input was {} and lands at $.seen of the raw input.
    let m = machine(states.clone());
    let out = Interpreter::new(m, Fake::echo())
        .execute("t", json!({"keep": true}))
        .await;
    assert_eq!(out, Ok(json!({})), "OutputPath null gives an empty object");
    let mut partial = states;
    partial["Out"] = json!({"Type": "Succeed"});
    assert_eq!(
        run(partial, Fake::echo(), json!({"keep": true})).await,
        Ok(json!({"keep": true, "x": {"y": {"r": 1}}, "seen": {}}))
    );
}

#[tokio::test]
async fn a_missing_path_is_a_runtime_error_that_no_catch_takes() {
    let states = json!({
        "Start": {
            "Type": "Task", "Resource": "r", "Parameters": {"x.$": "$.nope"},
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}], "End": true
        },
        "Caught": {"Type": "Succeed"}
    });
    let fake = Fake::echo();
    let e = run(states, fake.clone(), json!({})).await.expect_err("runtime error");
    assert_eq!(e.error, "States.Runtime");
    assert!(e.cause.contains("$.nope") && e.cause.contains("Start"), "{e}");
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn choice_rules_compare_like_the_specification() {
    let states = json!({
        "Start": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.s", "StringEquals": "x", "Next": "S"},
                {"And": [{"Variable": "$.n", "NumericGreaterThanEquals": 10},
                         {"Variable": "$.n", "NumericLessThanPath": "$.limit"}], "Next": "N"},
                {"Not": {"Variable": "$.flag", "IsPresent": true}, "Next": "Absent"},
                {"Or": [{"Variable": "$.flag", "BooleanEquals": true},
                        {"Variable": "$.name", "StringMatches": "log-*.txt"}], "Next": "Or"}
            ],
            "Default": "D"
        },
        "S": {"Type": "Pass", "Result": "S", "End": true},
        "N": {"Type": "Pass", "Result": "N", "End": true},
        "Absent": {"Type": "Pass", "Result": "Absent", "End": true},
        "Or": {"Type": "Pass", "Result": "Or", "End": true},
        "D": {"Type": "Pass", "Result": "D", "End": true}
    });
    let cases = [
        (json!({"s": "x"}), "S"),
        (json!({"s": 1, "n": 10, "limit": 11}), "N"),
        (json!({"s": "y", "n": 11, "limit": 11}), "Absent"),
        (json!({"s": "y", "n": 1, "limit": 0, "flag": true}), "Or"),
        (
            json!({"s": "y", "n": 1, "limit": 0, "flag": false, "name": "log-2024.txt"}),
            "Or",
        ),
        (
            json!({"s": "y", "n": 1, "limit": 0, "flag": false, "name": "log.txt"}),
            "D",
        ),
        // Mismatched types compare false rather than fail.
        (json!({"s": 5, "n": "10", "limit": 11, "flag": "yes", "name": 1}), "D"),
    ];
    for (input, want) in cases {
        let out = run(states.clone(), Fake::echo(), input.clone()).await;
        assert_eq!(out, Ok(json!(want)), "{input}");
    }
    let mut no_default = states.clone();
    no_default["Start"].as_object_mut().expect("object").remove("Default");
    let e = run(
        no_default,
        Fake::echo(),
        json!({"s": "y", "n": 1, "limit": 0, "flag": false, "name": ""}),
    )
    .await
    .expect_err("no match");
    assert_eq!(e.error, "States.NoChoiceMatched");
    let e = run(states, Fake::echo(), json!({"n": 1}))
        .await
        .expect_err("missing variable");
    assert_eq!(e.error, "States.Runtime");
}

#[tokio::test(start_paused = true)]
async fn wait_sleeps_for_seconds_and_seconds_path() {
    let states = json!({
        "Start": {"Type": "Wait", "Seconds": 30, "Next": "Dyn"},
        "Dyn": {"Type": "Wait", "SecondsPath": "$.delay", "End": true}
    });
    let t0 = tokio::time::Instant::now();
    let out = run(states.clone(), Fake::echo(), json!({"delay": 12})).await;
    assert_eq!(out, Ok(json!({"delay": 12})));
    assert_eq!(t0.elapsed(), Duration::from_secs(42));
    let e = run(states, Fake::echo(), json!({"delay": "soon"}))
        .await
        .expect_err("bad path");
    assert_eq!(e.error, "States.Runtime");
}

fn flaky(failures: usize, error: &'static str) -> Arc<Fake> {
    let n = Arc::new(AtomicUsize::new(0));
    Fake::new(move |c| {
        let n = n.clone();
        Box::pin(async move {
            if n.fetch_add(1, Ordering::SeqCst) < failures {
                Err(Failure::new(error, format!("attempt {}", c.attempt)))
            } else {
                Ok(json!({"ok": c.attempt}))
            }
        })
    })
}

#[tokio::test(start_paused = true)]
async fn retry_backs_off_exponentially_up_to_the_cap() {
    let states = json!({
        "Start": {
            "Type": "Task", "Resource": "r",
            "Retry": [{"ErrorEquals": ["Pipeline.Retryable.Source"], "IntervalSeconds": 2, "BackoffRate": 3,
                       "MaxAttempts": 4, "MaxDelaySeconds": 10}],
            "End": true
        }
    });
    let fake = flaky(3, "Pipeline.Retryable.Source");
    let t0 = tokio::time::Instant::now();
    let out = run(states, fake.clone(), json!({})).await;
    assert_eq!(out, Ok(json!({"ok": 3})));
    // 2, 6, then 18 capped at 10.
    assert_eq!(t0.elapsed(), Duration::from_secs(18));
    let attempts: Vec<u32> = fake.calls().iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, vec![0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_never_waits_longer_than_the_backoff() {
    let states = json!({
        "Start": {
            "Type": "Task", "Resource": "r",
            "Retry": [{"ErrorEquals": ["E"], "IntervalSeconds": 8, "MaxAttempts": 1, "JitterStrategy": "FULL"}],
            "End": true
        }
    });
    // Full jitter waits a uniform fraction of the backoff: never longer, and not the backoff itself each time (a
    // plain 8 s wait fails here). Over 40 retries the waits differ, and their mean is near 4 s, far from 8 s.
    let mut waits = Vec::new();
    for _ in 0..40 {
        let t0 = tokio::time::Instant::now();
        assert!(run(states.clone(), flaky(1, "E"), json!({})).await.is_ok());
        waits.push(t0.elapsed());
    }
    assert!(waits.iter().all(|w| *w <= Duration::from_secs(8)), "{waits:?}");
    let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
    assert!(distinct.len() > 20, "the waits vary: {waits:?}");
    let mean = waits.iter().sum::<Duration>() / 40;
    assert!(
        mean > Duration::from_secs(2) && mean < Duration::from_secs(6),
        "mean wait {mean:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fall_to_the_catch_with_the_raw_input_kept() {
    let states = json!({
        "Start": {
            "Type": "Task", "Resource": "r", "InputPath": "$.sub",
            "Retry": [
                {"ErrorEquals": ["E.A"], "MaxAttempts": 1, "IntervalSeconds": 1},
                {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5}
            ],
            "Catch": [{"ErrorEquals": ["E.Other"], "Next": "Wrong"},
                      {"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.error", "Next": "Cleanup"}],
            "End": true
        },
        "Wrong": {"Type": "Fail", "Error": "Wrong"},
        "Cleanup": {"Type": "Pass", "End": true}
    });
    let fake = flaky(10, "E.A");
    let out = run(states, fake.clone(), json!({"sub": {"v": 1}, "run": "r1"})).await;
    assert_eq!(
        out,
        Ok(json!({"sub": {"v": 1}, "run": "r1", "error": {"Error": "E.A", "Cause": "attempt 1"}}))
    );
    // Only the first matching retrier counts: one retry, not five more from States.ALL.
    assert_eq!(fake.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn task_timeout_is_states_timeout_which_task_failed_does_not_match() {
    let states = json!({
        "Start": {
            "Type": "Task", "Resource": "r", "TimeoutSeconds": 5,
            "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "Caught"}],
            "End": true
        },
        "Caught": {"Type": "Succeed"}
    });
    let slow = Fake::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(json!(1))
        })
    });
    let e = run(states, slow, json!({})).await.expect_err("timeout");
    assert_eq!(e.error, "States.Timeout");
}

#[tokio::test]
async fn fail_ends_the_execution_with_its_error_and_cause() {
    let states = json!({"Start": {"Type": "Fail", "Error": "Pipeline.Failed", "Cause": "why"}});
    assert_eq!(
        run(states, Fake::echo(), json!({})).await,
        Err(Failure::new("Pipeline.Failed", "why"))
    );
    let states = json!({"Start": {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}});
    assert_eq!(
        run(
            states.clone(),
            Fake::echo(),
            json!({"error": {"Error": "E.X", "Cause": "c"}})
        )
        .await,
        Err(Failure::new("E.X", "c"))
    );
    let e = run(states, Fake::echo(), json!({})).await.expect_err("no error");
    assert_eq!(e.error, "States.Runtime");
}

#[tokio::test(start_paused = true)]
async fn map_runs_iterations_in_parallel_up_to_max_concurrency_in_item_order() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let fake = Fake::new(move |c| {
        let (r, p) = (r.clone(), p.clone());
        Box::pin(async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            // Later items finish first: results must still come back in item order.
            let n = c.input["value"]["n"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_secs(20 - n)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(json!({"doubled": n * 2, "index": c.input["index"], "item": c.item}))
        })
    });
    let states = json!({
        "Start": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrencyPath": "$.limit",
            "ItemSelector": {"value.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index", "run.$": "$.run"},
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Work",
                "States": {"Work": {"Type": "Task", "Resource": "r", "End": true}}
            },
            "ResultSelector": {"all.$": "$"},
            "ResultPath": "$.results",
            "End": true
        }
    });
    let items: Vec<Value> = (0..10).map(|n| json!({"n": n})).collect();
    let out = run(states, fake.clone(), json!({"items": items, "limit": 3, "run": "r"}))
        .await
        .expect("map");
    let all = out["results"]["all"].as_array().expect("array");
    assert_eq!(all.len(), 10);
    for (i, v) in all.iter().enumerate() {
        assert_eq!(v, &json!({"doubled": i * 2, "index": i, "item": i}));
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3, "exactly MaxConcurrency at once");
    assert!(fake.calls().iter().all(|c| c.input["run"] == "r"));
}

#[tokio::test]
async fn a_failed_iteration_fails_the_map_inline_as_itself_distributed_as_threshold() {
    let processor = json!({
        "StartAt": "Work",
        "States": {"Work": {"Type": "Task", "Resource": "r", "End": true}}
    });
    let failing = || {
        Fake::new(|c| {
            Box::pin(async move {
                if c.item == Some(2) {
                    Err(Failure::new("Pipeline.Fatal.BadValue", "item 2"))
                } else {
                    Ok(json!(c.item))
                }
            })
        })
    };
    let inline = json!({"Start": {"Type": "Map", "ItemProcessor": processor, "End": true}});
    let e = run(inline, failing(), json!([1, 2, 3, 4])).await.expect_err("fails");
    assert_eq!(e, Failure::new("Pipeline.Fatal.BadValue", "item 2"));

    let mut p = processor.clone();
    p["ProcessorConfig"] = json!({"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"});
    let distributed = json!({"Start": {"Type": "Map", "ItemProcessor": p, "End": true}});
    let e = run(distributed, failing(), json!([1, 2, 3, 4]))
        .await
        .expect_err("fails");
    assert_eq!(e.error, "States.ExceedToleratedFailureThreshold");
    assert!(e.cause.contains("Pipeline.Fatal.BadValue"), "{e}");
}

#[tokio::test]
async fn item_reader_and_result_writer_go_through_the_bound_resources() {
    let states = json!({
        "Start": {
            "Type": "Map",
            "ItemReader": {
                "Resource": "arn:aws:states:::s3:getObject",
                "ReaderConfig": {"InputType": "JSON"},
                "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.key"}
            },
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "Work",
                "States": {"Work": {"Type": "Pass", "End": true}}
            },
            "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket.$": "$.bucket", "Prefix": "p"}},
            "ResultPath": "$.map",
            "End": true
        }
    });
    let out = run(states, Fake::echo(), json!({"bucket": "b", "key": "abcd"}))
        .await
        .expect("map");
    assert_eq!(out["map"]["ResultWriterDetails"], json!({"Bucket": "b", "count": 4}));
    assert!(out["map"]["MapRunArn"].is_string());
}

#[test]
fn constructs_outside_the_subset_are_refused_naming_the_state() {
    let refused = |states: Value, needle: &str| {
        let e = Machine::parse(&json!({"StartAt": "S", "States": states})).expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("\"S\"") && text.contains(needle), "{text}");
    };
    refused(
        json!({"S": {"Type": "Parallel", "Branches": [], "End": true}}),
        "Parallel",
    );
    refused(
        json!({"S": {"Type": "Task", "Resource": "r", "HeartbeatSeconds": 5, "End": true}}),
        "HeartbeatSeconds",
    );
    refused(
        json!({"S": {"Type": "Wait", "Timestamp": "2026-01-01T00:00:00Z", "End": true}}),
        "Timestamp",
    );
    refused(
        json!({"S": {"Type": "Choice", "Choices": [{"Variable": "$.t", "TimestampEquals": "x", "Next": "S"}]}}),
        "TimestampEquals",
    );
    refused(json!({"S": {"Type": "Pass", "Next": "Nowhere"}}), "Nowhere");
    refused(
        json!({"S": {"Type": "Pass", "Parameters": {"x.$": "$.a[*]"}, "End": true}}),
        "[*]",
    );
    refused(
        json!({"S": {"Type": "Pass", "Parameters": {"x.$": "States.Hash($.a, 'MD5')"}, "End": true}}),
        "States.Hash",
    );
    refused(
        json!({"S": {"Type": "Task", "Resource": "r", "Retry": [{"ErrorEquals": ["States.ALL", "X"]}], "End": true}}),
        "alone",
    );
    refused(json!({"S": {"Type": "Pass"}}), "Next");
    let e = Machine::parse(&json!({"StartAt": "S", "QueryLanguage": "JSONata", "States": {}})).expect_err("refused");
    assert!(e.to_string().contains("JSONata"), "{e}");
}

/// The interpreter is a crate of its own: it depends on no crate of this workspace (pgshift least of all); what it
/// runs is bound through [`Resources`].
#[test]
fn the_interpreter_depends_on_no_part_of_pgshift() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(members.contains(&"pgshift"), "the workspace was read: {members:?}");
    let asl = packages.iter().find(|p| p["name"] == "asl").expect("the asl package");
    let deps = asl["dependencies"].as_array().expect("dependencies");
    assert!(!deps.is_empty());
    for d in deps {
        let name = d["name"].as_str().unwrap_or_default();
        assert!(
            d.get("path").is_none() && !members.contains(&name),
            "asl depends on the workspace crate {name}"
        );
    }
}

#[tokio::test]
async fn a_looping_definition_fails_at_the_history_cap_instead_of_running_forever() {
    // Task → Choice → back to Task, forever: 5 events per Task and 2 per Choice.
    let states = json!({
        "Start": {"Type": "Task", "Resource": "arn:aws:lambda:local:0:function:poll", "Next": "Again"},
        "Again": {"Type": "Choice", "Choices": [{"Variable": "$.echo", "IsPresent": true, "Next": "Start"}],
                  "Default": "Start"}
    });
    let poll = || Fake::new(|_| Box::pin(async { Ok(json!({"echo": "still running"})) }));
    let fake = poll();
    let out = Interpreter::new(machine(states.clone()), fake.clone())
        .execute("loop", json!({}))
        .await;
    let f = out.expect_err("the loop is stopped");
    assert_eq!(f.error, "States.Runtime");
    assert!(f.cause.contains("25000 events"), "{}", f.cause);
    // 7 events a round: the 3,571st Task is the last that fits under 25,000.
    assert_eq!(fake.calls().len(), 3571);
    // A lower cap for a test stops sooner, by the same rule.
    let fake = poll();
    let f = Interpreter::new(machine(states), fake.clone())
        .with_history_limit(70)
        .execute("loop", json!({}))
        .await
        .expect_err("stopped");
    assert_eq!((f.error.as_str(), fake.calls().len()), ("States.Runtime", 10));
}
