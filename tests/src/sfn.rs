//! Recorded Step Functions responses the tests share (aws-sdk-sfn's builders, at the SDK boundary).

use aws_sdk_sfn::operation::describe_map_run::DescribeMapRunOutput;
use aws_sdk_sfn::primitives::DateTime;
use aws_sdk_sfn::types::{MapRunExecutionCounts, MapRunItemCounts, MapRunStatus};

/// Item counts of a Map run: how many items succeeded, failed, ran and waited.
#[derive(Clone, Copy)]
pub struct Counts {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub running: i64,
    pub pending: i64,
}

/// `DescribeMapRun` of `map_run` in `execution`, its items and child executions both at `c`.
pub fn map_run(map_run: &str, execution: &str, status: MapRunStatus, c: Counts) -> DescribeMapRunOutput {
    let done = c.succeeded + c.failed;
    DescribeMapRunOutput::builder()
        .map_run_arn(map_run)
        .execution_arn(execution)
        .status(status)
        .start_date(DateTime::from_secs(1_796_342_410))
        .max_concurrency(16)
        .tolerated_failure_percentage(0.0)
        .tolerated_failure_count(0)
        .item_counts(
            MapRunItemCounts::builder()
                .pending(c.pending)
                .running(c.running)
                .succeeded(c.succeeded)
                .failed(c.failed)
                .timed_out(0)
                .aborted(0)
                .total(c.total)
                .results_written(done)
                .build(),
        )
        .execution_counts(
            MapRunExecutionCounts::builder()
                .pending(c.pending)
                .running(c.running)
                .succeeded(c.succeeded)
                .failed(c.failed)
                .timed_out(0)
                .aborted(0)
                .total(c.total)
                .results_written(done)
                .build(),
        )
        .build()
        .expect("every required field is set")
}
