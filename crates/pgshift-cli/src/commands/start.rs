//! `pgshift start`: a run on the deployed state machine (StartExecution with the input `pgshift run` would build),
//! `--redrive` of a failed execution (RedriveExecution: only its unfinished and failed ranges run again, then the
//! load), and `--follow`: the execution's live line from DescribeExecution, its Map run and its history, until it
//! ends, the exit code and the error name being the execution's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use pgshift::executions::{self, Executions};
use serde_json::{json, Value};

use crate::commands::flags::{LoadFlags, PlanFlags};

#[derive(Args)]
pub(crate) struct StartArgs {
    /// The deployed state machine (the stack's StateMachineArn output). Also PGSHIFT_STATE_MACHINE.
    #[arg(long, env = "PGSHIFT_STATE_MACHINE", required_unless_present_any = ["redrive", "attach"])]
    state_machine: Option<String>,
    /// Follow this execution, already running, to its end (starts nothing).
    #[arg(long, conflicts_with_all = ["redrive", "input", "event", "tables"])]
    attach: Option<String>,
    /// Redrive this failed execution instead of starting one: its failed and unfinished ranges run again, the
    /// ranges that landed are kept, then the load.
    #[arg(long, conflicts_with_all = ["input", "event", "tables"])]
    redrive: Option<String>,
    /// The execution's input as a JSON file (a manual input or an RDS snapshot event) instead of the flags.
    #[arg(long, conflicts_with_all = ["event", "tables"])]
    input: Option<PathBuf>,
    /// An RDS-shaped snapshot event (EventBridge JSON), started as the deployed rule would start it.
    #[arg(long, conflicts_with = "tables")]
    event: Option<PathBuf>,
    /// Follow the execution to its end: the live line, then its outcome and exit code.
    #[arg(long)]
    follow: bool,
    /// Seconds between checks while following.
    #[arg(long, default_value_t = 5)]
    every: u64,
    #[command(flatten)]
    plan: PlanFlags,
    #[command(flatten)]
    load: LoadFlags,
}

/// The execution's input: the file or event given, or a manual input of exactly the flags given (the planner's
/// defaults, from the stack, fill in the rest).
fn input_of(a: &StartArgs) -> Result<Value> {
    if let Some(p) = a.input.as_ref().or(a.event.as_ref()) {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        return serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()));
    }
    if a.plan.tables.is_empty() {
        bail!("no tables: pass --tables (or --input FILE, --event FILE)");
    }
    let mut m = a.plan.fields()?;
    let load = a.load.fields();
    if !load.is_empty() {
        m.insert("load".into(), Value::Object(load));
    }
    Ok(Value::Object(m))
}

/// An execution name: the run id's characters Step Functions takes, else one from the time.
fn execution_name(run_id: Option<&str>) -> String {
    match run_id {
        Some(id) => crate::commands::run::name_chars(id, 80),
        None => format!(
            "pgshift-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ),
    }
}

fn named<T>(r: Result<T, executions::ExecutionError>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e} [{}]", e.name()))
}

pub(crate) async fn run(a: StartArgs) -> Result<()> {
    let x = executions::aws::AwsExecutions::from_env().await;
    let arn = match (&a.attach, &a.redrive) {
        (Some(arn), _) => {
            let end = follow(&x, arn, Duration::from_secs(a.every.max(1)), &mut |l| eprintln!("{l}")).await?;
            return outcome(&end, arn);
        }
        (None, Some(arn)) => redrive(&x, arn).await?,
        (None, None) => {
            let machine = a.state_machine.as_deref().unwrap_or_default();
            let input = serde_json::to_string(&input_of(&a)?)?;
            let arn = named(
                x.start(machine, &execution_name(a.plan.run_id.as_deref()), &input)
                    .await,
            )?;
            out!("started: {arn}");
            arn
        }
    };
    if !a.follow {
        out!("follow it with: pgshift start --attach {arn}; its report: pgshift report --execution {arn}");
        return Ok(());
    }
    let end = follow(&x, &arn, Duration::from_secs(a.every.max(1)), &mut |line| {
        eprintln!("{line}")
    })
    .await?;
    outcome(&end, &arn)
}

/// The state the definition ends a caught failure in, after Cleanup (statemachine/pipeline.asl.json).
const FAIL_STATE: &str = "Failed";

/// What `--redrive` does with a failed execution. Step Functions redrives from the unsuccessful step
/// (<https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html>); an execution whose failure the
/// definition caught ended in its Fail state after Cleanup, so a redrive would only run that Fail state again. Such
/// a run goes on as a new execution of the same run id (its input, its run id): the plan is kept, every range that
/// landed is kept by its extractor, the tables the load committed are skipped. Any other failure (a timeout, a state
/// no Catch took) is redriven.
#[derive(Debug, PartialEq)]
pub(crate) enum Redrive {
    Redrive,
    Resume {
        state_machine: String,
        name: String,
        input: Value,
    },
}

pub(crate) fn redrive_plan(e: &executions::Execution, events: &[executions::HistoryEvent]) -> Result<Redrive> {
    if e.status == "SUCCEEDED" || e.status == "RUNNING" {
        bail!(
            "execution {} is {}: only a failed, timed-out or aborted execution can be redriven",
            e.arn,
            e.status
        );
    }
    let last = events
        .iter()
        .rev()
        .find(|h| h.kind.ends_with("StateEntered"))
        .and_then(|h| h.state.as_deref());
    if last != Some(FAIL_STATE) {
        return Ok(Redrive::Redrive);
    }
    let plan_url = executions::plan_url_of(events);
    let run_id = plan_url
        .as_deref()
        .and_then(pgshift::contract::layout::split_plan_url)
        .map(|(_, run)| run.to_string());
    let mut input: Value =
        serde_json::from_str(e.input.as_deref().unwrap_or("{}")).with_context(|| format!("the input of {}", e.arn))?;
    if let (Some(id), Some(m)) = (&run_id, input.as_object_mut()) {
        // A manual input names its run; an RDS event makes the same run id from its snapshot again.
        if !m.contains_key("detail-type") {
            m.insert("run_id".into(), json!(id));
        }
    }
    // arn:aws:states:<region>:<account>:execution:<machine>:<name> → …:stateMachine:<machine>
    let parts: Vec<&str> = e.arn.split(':').collect();
    if parts.len() < 8 || parts[5] != "execution" {
        bail!("{} is not an execution ARN", e.arn);
    }
    let state_machine = format!("{}:stateMachine:{}", parts[..5].join(":"), parts[6]);
    let suffix = format!("-resume-{}", now() as u64);
    let name: String = e.name.chars().take(80 - suffix.len()).collect::<String>() + &suffix;
    Ok(Redrive::Resume {
        state_machine,
        name,
        input,
    })
}

/// Redrives (or resumes, [`redrive_plan`]) a failed execution; the ARN of the execution that goes on.
async fn redrive(x: &dyn Executions, arn: &str) -> Result<String> {
    let e = named(x.describe(arn).await)?;
    let events = named(executions::full_history(x, arn).await)?;
    match redrive_plan(&e, &events)? {
        Redrive::Redrive => {
            named(x.redrive(arn).await)?;
            out!("redriven: {arn} (its failed and unfinished states run again; the ranges that landed are kept)");
            Ok(arn.to_string())
        }
        Redrive::Resume {
            state_machine,
            name,
            input,
        } => {
            let next = named(x.start(&state_machine, &name, &serde_json::to_string(&input)?).await)?;
            out!(
                "{arn} ended in its Fail state after Cleanup, which a redrive would only repeat: resumed as {next} \
                 (the same run id: its plan and every range that landed kept, committed tables skipped)"
            );
            Ok(next)
        }
    }
}

/// The execution's end as the process's: success, or the execution's error name and cause.
pub(crate) fn outcome(e: &executions::Execution, arn: &str) -> Result<()> {
    match e.status.as_str() {
        "SUCCEEDED" => {
            out!("succeeded: pgshift report --execution {arn}");
            Ok(())
        }
        status => bail!(
            "the execution {status}: {} [{}]; pgshift start --redrive {arn} runs its failed and unfinished ranges again",
            e.cause.as_deref().unwrap_or("no cause given"),
            e.error.as_deref().unwrap_or(status)
        ),
    }
}

/// Follows an execution until it is no longer running: one line a check (its status, the state it is in, its Map
/// run's items), then its description.
pub(crate) async fn follow(
    x: &dyn Executions,
    arn: &str,
    every: Duration,
    say: &mut dyn FnMut(String),
) -> Result<executions::Execution> {
    loop {
        let e = named(x.describe(arn).await)?;
        let events = named(executions::full_history(x, arn).await)?;
        let state = events
            .iter()
            .rev()
            .find(|h| h.kind.ends_with("StateEntered"))
            .and_then(|h| h.state.clone());
        let items = match executions::map_run_of(&events) {
            Some(m) => {
                let c = named(x.map_run(m).await)?;
                format!(
                    " | parts {}/{} done, {} running, {} failed",
                    c.succeeded, c.total, c.running, c.failed
                )
            }
            None => String::new(),
        };
        let since = e.stopped_at.unwrap_or_else(now) - e.started_at;
        say(format!(
            "[{since:7.1}s] {:<10} {}{items}",
            e.status,
            state.as_deref().unwrap_or("-")
        ));
        if e.status != "RUNNING" {
            return Ok(e);
        }
        tokio::time::sleep(every).await;
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
    use aws_sdk_sfn::operation::get_execution_history::GetExecutionHistoryOutput;
    use aws_sdk_sfn::primitives::DateTime;
    use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType};
    use aws_sdk_sfn::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        start: StartArgs,
    }

    #[test]
    fn the_input_holds_exactly_the_flags_given_so_the_stacks_defaults_fill_the_rest() {
        let a = Cli::try_parse_from([
            "pgshift",
            "--state-machine",
            "arn:m",
            "--tables",
            "sales.*",
            "--parts",
            "8",
            "--mode",
            "merge",
            "--run-id",
            "nightly/1",
            "--cast",
            "sales.orders.location=text",
        ])
        .expect("flags")
        .start;
        let v = input_of(&a).expect("input");
        assert_eq!(v["tables"], json!(["sales.*"]));
        assert_eq!(v["settings"], json!({"parts": 8}));
        assert_eq!(v["load"], json!({"mode": "merge"}));
        assert_eq!(v["overrides"]["sales.orders"]["casts"]["location"], "text");
        assert!(v.get("stage").is_none() && v.get("policies").is_none(), "{v}");
        assert_eq!(execution_name(a.plan.run_id.as_deref()), "nightly_1");
        let none = Cli::try_parse_from(["pgshift", "--state-machine", "arn:m"])
            .expect("flags")
            .start;
        assert!(input_of(&none).expect_err("no tables").to_string().contains("--tables"));
    }

    #[test]
    fn a_caught_failure_resumes_as_a_new_execution_of_the_run_and_any_other_is_redriven() {
        let arn = "arn:aws:states:us-east-1:1:execution:pgshift:nightly";
        let e = executions::Execution {
            arn: arn.into(),
            name: "nightly".into(),
            status: "FAILED".into(),
            started_at: 0.0,
            stopped_at: Some(1.0),
            input: Some(r#"{"tables": ["sales.*"]}"#.into()),
            output: None,
            error: Some("Pipeline.Fatal.Warehouse".into()),
            cause: None,
            redrive_count: 0,
        };
        let ev = |id: i64, kind: &str, state: &str, output: Option<&str>| executions::HistoryEvent {
            id,
            kind: kind.into(),
            timestamp: 0.0,
            state: Some(state.into()),
            output: output.map(str::to_string),
            map_run_arn: None,
        };
        let plan = r#"{"plan": {"plan_url": "s3://b/runs/20261204T000000Z-ab/plan.json"}}"#;
        let caught = [
            ev(1, "TaskStateEntered", "Plan", None),
            ev(2, "TaskStateExited", "Plan", Some(plan)),
            ev(3, "TaskStateEntered", "Load", None),
            ev(4, "TaskStateEntered", "Cleanup", None),
            ev(5, "FailStateEntered", "Failed", None),
        ];
        match redrive_plan(&e, &caught).expect("plan") {
            Redrive::Resume {
                state_machine,
                name,
                input,
            } => {
                assert_eq!(state_machine, "arn:aws:states:us-east-1:1:stateMachine:pgshift");
                assert!(name.starts_with("nightly-resume-"), "{name}");
                assert_eq!(input["run_id"], "20261204T000000Z-ab");
                assert_eq!(input["tables"], json!(["sales.*"]));
            }
            other => panic!("{other:?}"),
        }
        let timed_out = [
            ev(1, "TaskStateEntered", "Plan", None),
            ev(2, "MapStateEntered", "Extract", None),
        ];
        assert_eq!(redrive_plan(&e, &timed_out).expect("plan"), Redrive::Redrive);
        let ok = executions::Execution {
            status: "SUCCEEDED".into(),
            ..e
        };
        assert!(redrive_plan(&ok, &caught).is_err());
    }

    #[tokio::test]
    async fn following_shows_each_check_and_ends_with_the_executions_error_name() {
        let arn = "arn:aws:states:us-east-1:1:execution:pgshift:run-1";
        let at = move |status: ExecutionStatus, stopped: bool| {
            let mut b = DescribeExecutionOutput::builder()
                .execution_arn(arn)
                .state_machine_arn("arn:m")
                .status(status)
                .start_date(DateTime::from_secs(1_000));
            if stopped {
                b = b
                    .stop_date(DateTime::from_secs(1_090))
                    .error("Pipeline.Fatal.Warehouse")
                    .cause("warehouse: permission denied for schema sales");
            }
            b.build().expect("described")
        };
        let describe = mock!(Client::describe_execution)
            .sequence()
            .output(move || at(ExecutionStatus::Running, false))
            .times(2)
            .output(move || at(ExecutionStatus::Failed, true))
            .build();
        let history = mock!(Client::get_execution_history).then_output(|| {
            GetExecutionHistoryOutput::builder()
                .events(
                    HistoryEvent::builder()
                        .id(1)
                        .r#type(HistoryEventType::MapRunStarted)
                        .timestamp(DateTime::from_secs(1_010))
                        .map_run_started_event_details(
                            aws_sdk_sfn::types::MapRunStartedEventDetails::builder()
                                .map_run_arn("arn:map")
                                .build(),
                        )
                        .build()
                        .expect("event"),
                )
                .build()
                .expect("history")
        });
        let map = mock!(Client::describe_map_run).then_output(move || {
            let c = pgshift_tests::sfn::Counts {
                total: 8,
                succeeded: 2,
                failed: 0,
                running: 4,
                pending: 2,
            };
            pgshift_tests::sfn::map_run("arn:map", arn, aws_sdk_sfn::types::MapRunStatus::Running, c)
        });
        let client = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&describe, &history, &map]);
        let x = executions::aws::AwsExecutions::new(client);
        let mut lines = Vec::new();
        let end = follow(&x, arn, Duration::from_millis(1), &mut |l| lines.push(l))
            .await
            .expect("followed");
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].contains("RUNNING") && lines[0].contains("parts 2/8 done, 4 running, 0 failed"),
            "{lines:#?}"
        );
        assert!(lines[2].contains("FAILED") && lines[2].contains("90.0s"), "{lines:#?}");
        let e = outcome(&end, arn).expect_err("failed");
        let said = e.to_string();
        assert!(
            said.contains("[Pipeline.Fatal.Warehouse]") && said.contains("permission denied"),
            "{said}"
        );
        assert!(said.contains(&format!("pgshift start --redrive {arn}")), "{said}");
    }
}
