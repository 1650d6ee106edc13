//! The Step Functions port over the AWS SDK, at the SDK boundary with recorded responses: every action the command
//! line uses, histories and listings over several pages, and each error a clear, named one.

use anyhow::Result;
use aws_sdk_sfn::operation::describe_execution::{DescribeExecutionError, DescribeExecutionOutput};
use aws_sdk_sfn::operation::get_execution_history::GetExecutionHistoryOutput;
use aws_sdk_sfn::operation::list_executions::ListExecutionsOutput;
use aws_sdk_sfn::operation::redrive_execution::{RedriveExecutionError, RedriveExecutionOutput};
use aws_sdk_sfn::operation::start_execution::{StartExecutionError, StartExecutionOutput};
use aws_sdk_sfn::primitives::DateTime;
use aws_sdk_sfn::types::error::{ExecutionDoesNotExist, ExecutionNotRedrivable, StateMachineDoesNotExist};
use aws_sdk_sfn::types::{
    ExecutionListItem, ExecutionStatus, HistoryEvent, HistoryEventType, MapRunStartedEventDetails,
    StateEnteredEventDetails, StateExitedEventDetails,
};
use aws_sdk_sfn::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use pgshift::executions::aws::AwsExecutions;
use pgshift::executions::{self, ExecutionError, Executions};
use pgshift_tests::sfn::Counts;

const MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:pgshift";
const EXECUTION: &str = "arn:aws:states:us-east-1:123456789012:execution:pgshift:run-1";
const MAP_RUN: &str = "arn:aws:states:us-east-1:123456789012:mapRun:pgshift/Extract:run-1";

fn meta(code: &str, message: &str) -> aws_sdk_sfn::error::ErrorMetadata {
    aws_sdk_sfn::error::ErrorMetadata::builder()
        .code(code)
        .message(message)
        .build()
}

fn entered(id: i64, state: &str) -> HistoryEvent {
    HistoryEvent::builder()
        .id(id)
        .r#type(HistoryEventType::TaskStateEntered)
        .timestamp(DateTime::from_secs(1_796_342_400 + id))
        .state_entered_event_details(StateEnteredEventDetails::builder().name(state).build().expect("name"))
        .build()
        .expect("event")
}

fn exited(id: i64, state: &str, output: &str) -> HistoryEvent {
    HistoryEvent::builder()
        .id(id)
        .r#type(HistoryEventType::TaskStateExited)
        .timestamp(DateTime::from_secs(1_796_342_400 + id))
        .state_exited_event_details(
            StateExitedEventDetails::builder()
                .name(state)
                .output(output)
                .build()
                .expect("name"),
        )
        .build()
        .expect("event")
}

fn map_started(id: i64) -> HistoryEvent {
    HistoryEvent::builder()
        .id(id)
        .r#type(HistoryEventType::MapRunStarted)
        .timestamp(DateTime::from_secs(1_796_342_400 + id))
        .map_run_started_event_details(MapRunStartedEventDetails::builder().map_run_arn(MAP_RUN).build())
        .build()
        .expect("event")
}

fn described(status: ExecutionStatus) -> DescribeExecutionOutput {
    let mut b = DescribeExecutionOutput::builder()
        .execution_arn(EXECUTION)
        .state_machine_arn(MACHINE)
        .name("run-1")
        .status(status.clone())
        .start_date(DateTime::from_secs(1_796_342_400))
        .input("{}");
    if status != ExecutionStatus::Running {
        b = b.stop_date(DateTime::from_secs(1_796_342_460));
    }
    if status == ExecutionStatus::Failed {
        b = b
            .error("Pipeline.Fatal.Warehouse")
            .cause("warehouse: relation is locked");
    }
    b.build().expect("described")
}

/// One page of `GetExecutionHistory` of `execution`, answered once and only to the request that carries exactly
/// `token` (`None`: the first page): an adapter that drops or repeats the token asks for a page no rule serves, and
/// the mock refuses it.
fn history_page(
    execution: &'static str,
    token: Option<&'static str>,
    page: impl Fn() -> GetExecutionHistoryOutput + Send + Sync + 'static,
) -> aws_smithy_mocks::Rule {
    mock!(Client::get_execution_history)
        .match_requests(move |r| r.execution_arn() == Some(execution) && r.next_token() == token)
        .sequence()
        .output(page)
        .build()
}

/// A history of three pages: Trigger, Plan (with the plan URL in its output), the Map run, Load; each page served
/// only for the token the page before it returned.
fn history_pages() -> [aws_smithy_mocks::Rule; 3] {
    let plan = r#"{"plan": {"plan_url": "s3://stage/runs/run-1/plan.json", "run_id": "run-1"}}"#;
    [
        history_page(EXECUTION, None, || {
            GetExecutionHistoryOutput::builder()
                .events(entered(1, "Trigger"))
                .events(entered(2, "Plan"))
                .next_token("page-2")
                .build()
                .expect("page")
        }),
        history_page(EXECUTION, Some("page-2"), move || {
            GetExecutionHistoryOutput::builder()
                .events(exited(3, "Plan", plan))
                .events(entered(4, "Extract"))
                .events(map_started(5))
                .next_token("page-3")
                .build()
                .expect("page")
        }),
        history_page(EXECUTION, Some("page-3"), || {
            GetExecutionHistoryOutput::builder()
                .events(entered(6, "Load"))
                .build()
                .expect("page")
        }),
    ]
}

#[tokio::test]
async fn start_describe_history_map_run_and_listings_read_every_page() -> Result<()> {
    let start = mock!(Client::start_execution)
        .match_requests(|r| r.state_machine_arn() == Some(MACHINE) && r.name() == Some("run-1"))
        .then_output(|| {
            StartExecutionOutput::builder()
                .execution_arn(EXECUTION)
                .start_date(DateTime::from_secs(1_796_342_400))
                .build()
                .expect("started")
        });
    let describe = mock!(Client::describe_execution).then_output(|| described(ExecutionStatus::Failed));
    let map_run = mock!(Client::describe_map_run).then_output(|| {
        let c = Counts {
            total: 8,
            succeeded: 6,
            failed: 1,
            running: 1,
            pending: 0,
        };
        pgshift_tests::sfn::map_run(MAP_RUN, EXECUTION, aws_sdk_sfn::types::MapRunStatus::Failed, c)
    });
    let item = |n: i64| {
        ExecutionListItem::builder()
            .execution_arn(format!("{EXECUTION}-{n}"))
            .state_machine_arn(MACHINE)
            .name(format!("run-{n}"))
            .status(ExecutionStatus::Succeeded)
            .start_date(DateTime::from_secs(1_796_342_400 + n))
            .build()
            .expect("item")
    };
    // Each listing page answered once, and only to the token the page before returned.
    let list_page = |token: Option<&'static str>| {
        mock!(Client::list_executions)
            .match_requests(move |r| r.state_machine_arn() == Some(MACHINE) && r.next_token() == token)
            .sequence()
    };
    let list_1 = list_page(None)
        .output(move || {
            ListExecutionsOutput::builder()
                .executions(item(1))
                .executions(item(2))
                .next_token("n2")
                .build()
                .expect("page")
        })
        .build();
    let list_2 = list_page(Some("n2"))
        .output(move || {
            ListExecutionsOutput::builder()
                .executions(item(3))
                .build()
                .expect("page")
        })
        .build();
    let [h1, h2, h3] = history_pages();
    let client = mock_client!(
        aws_sdk_sfn,
        RuleMode::MatchAny,
        [&start, &describe, &h1, &h2, &h3, &map_run, &list_1, &list_2]
    );
    let x = AwsExecutions::new(client);
    assert_eq!(x.start(MACHINE, "run-1", "{}").await?, EXECUTION);
    let e = x.describe(EXECUTION).await?;
    assert_eq!(
        (e.status.as_str(), e.error.as_deref()),
        ("FAILED", Some("Pipeline.Fatal.Warehouse"))
    );
    assert_eq!(e.stopped_at.map(|s| s - e.started_at), Some(60.0));
    let events = executions::full_history(&x, EXECUTION).await?;
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6],
        "all three pages"
    );
    assert_eq!(executions::transitions(&events), 4);
    assert_eq!(executions::map_run_of(&events), Some(MAP_RUN));
    assert_eq!(
        executions::plan_url_of(&events).as_deref(),
        Some("s3://stage/runs/run-1/plan.json")
    );
    let c = x.map_run(MAP_RUN).await?;
    assert_eq!((c.total, c.succeeded, c.running, c.failed), (8, 6, 1, 1));
    let all = executions::all_executions(&x, Some(MACHINE), None).await?;
    assert_eq!(
        all.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["run-1", "run-2", "run-3"]
    );
    Ok(())
}

#[tokio::test]
async fn every_error_is_named_and_says_what_to_do() -> Result<()> {
    let missing = mock!(Client::describe_execution).then_error(|| {
        DescribeExecutionError::ExecutionDoesNotExist(
            ExecutionDoesNotExist::builder()
                .message("Execution Does Not Exist")
                .meta(meta("ExecutionDoesNotExist", "Execution Does Not Exist"))
                .build(),
        )
    });
    let not_redrivable = mock!(Client::redrive_execution).then_error(|| {
        RedriveExecutionError::ExecutionNotRedrivable(
            ExecutionNotRedrivable::builder()
                .message("Execution succeeded: only failed, aborted or timed-out executions can be redriven")
                .meta(meta("ExecutionNotRedrivable", "Execution succeeded"))
                .build(),
        )
    });
    let no_machine = mock!(Client::start_execution).then_error(|| {
        StartExecutionError::StateMachineDoesNotExist(
            StateMachineDoesNotExist::builder()
                .message("State Machine Does Not Exist")
                .meta(meta("StateMachineDoesNotExist", "State Machine Does Not Exist"))
                .build(),
        )
    });
    let client = mock_client!(
        aws_sdk_sfn,
        RuleMode::MatchAny,
        [&missing, &not_redrivable, &no_machine]
    );
    let x = AwsExecutions::new(client);
    let e = x.describe(EXECUTION).await.expect_err("missing");
    assert!(matches!(e, ExecutionError::NotFound { .. }), "{e:?}");
    assert_eq!(e.name(), "Sfn.ExecutionDoesNotExist");
    assert!(
        e.to_string().contains(EXECUTION) && e.to_string().contains("check the ARN"),
        "{e}"
    );
    assert!(!e.is_retryable());
    let e = x.redrive(EXECUTION).await.expect_err("not redrivable");
    assert_eq!(e.name(), "Sfn.ExecutionNotRedrivable");
    assert!(e.to_string().contains("cannot be redriven: Execution succeeded"), "{e}");
    let e = x.start(MACHINE, "run-1", "{}").await.expect_err("no machine");
    assert_eq!(e.name(), "Sfn.StateMachineDoesNotExist");
    assert!(e.to_string().contains("--state-machine"), "{e}");

    // Throttled: a named, retryable error.
    let throttled = mock!(Client::describe_execution)
        .then_error(|| DescribeExecutionError::generic(meta("ThrottlingException", "Rate exceeded")));
    let redrive_ok = mock!(Client::redrive_execution).then_output(|| {
        RedriveExecutionOutput::builder()
            .redrive_date(DateTime::from_secs(1))
            .build()
            .expect("out")
    });
    let client = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, [&throttled, &redrive_ok]);
    let x = AwsExecutions::new(client);
    let e = x.describe(EXECUTION).await.expect_err("throttled");
    assert_eq!((e.name(), e.is_retryable()), ("Sfn.ThrottlingException", true));
    assert!(e.to_string().contains("Rate exceeded"), "{e}");
    x.redrive(EXECUTION).await?;
    Ok(())
}

#[tokio::test]
async fn a_deployed_runs_transitions_are_counted_from_its_history_and_every_map_child() -> Result<()> {
    // The parent: four states entered over three pages, the Map run among them; its two children: one state each,
    // one of them entered twice (a retry).
    let [p1, p2, p3] = history_pages();
    let child = |n: i64| format!("{MAP_RUN}:child-{n}");
    let children = mock!(Client::list_executions)
        .match_requests(|r| r.map_run_arn() == Some(MAP_RUN) && r.next_token().is_none())
        .then_output(move || {
            let item = |n: i64| {
                ExecutionListItem::builder()
                    .execution_arn(child(n))
                    .state_machine_arn(MACHINE)
                    .name(format!("child-{n}"))
                    .status(ExecutionStatus::Succeeded)
                    .start_date(DateTime::from_secs(1))
                    .build()
                    .expect("item")
            };
            ListExecutionsOutput::builder()
                .executions(item(1))
                .executions(item(2))
                .build()
                .expect("page")
        });
    const CHILD_1: &str = "arn:aws:states:us-east-1:123456789012:mapRun:pgshift/Extract:run-1:child-1";
    const CHILD_2: &str = "arn:aws:states:us-east-1:123456789012:mapRun:pgshift/Extract:run-1:child-2";
    assert_eq!((child(1).as_str(), child(2).as_str()), (CHILD_1, CHILD_2));
    let child_one = history_page(CHILD_1, None, || {
        GetExecutionHistoryOutput::builder()
            .events(entered(1, "ExtractRange"))
            .build()
            .expect("page")
    });
    let child_two = history_page(CHILD_2, None, || {
        GetExecutionHistoryOutput::builder()
            .events(entered(1, "ExtractRange"))
            .events(entered(2, "ExtractRange"))
            .build()
            .expect("page")
    });
    let client = mock_client!(
        aws_sdk_sfn,
        RuleMode::MatchAny,
        [&child_one, &child_two, &p1, &p2, &p3, &children]
    );
    let x = AwsExecutions::new(client);
    assert_eq!(executions::run_transitions(&x, EXECUTION).await?, 4 + 1 + 2);
    Ok(())
}
