//! The Redshift Data API runner at the SDK boundary: the exact requests sent and every status path, with recorded
//! responses (aws-smithy-mocks; no local Redshift exists). The SQL shape it shares with the PostgreSQL warehouse runs
//! for real in the load tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementOutput;
use aws_sdk_redshiftdata::operation::cancel_statement::CancelStatementOutput;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::operation::execute_statement::ExecuteStatementOutput;
use aws_sdk_redshiftdata::operation::get_statement_result::GetStatementResultOutput;
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString, SubStatementData};
use aws_sdk_redshiftdata::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use pgshift::contract::load::{LoadProgress, LoadSummary, PendingLoad, StepKind};
use pgshift::contract::model::{ColumnSpec, PgType, TableRef};
use pgshift::contract::plan::{PlanRequest, PlanSettings};
use pgshift::contract::types::Mapping;
use pgshift::entry::pipeline::{LocalRun, DEFINITION};
use pgshift::load::{LoadContext, LoadError};
use pgshift::source::PgConnector;
use pgshift::warehouse::redshift::{Polling, RedshiftTarget, RedshiftWarehouse};
use pgshift::warehouse::{count, execute, Batch, CopyJob, Step, Until, Warehouse, WarehouseError};
use pgshift::UrlStages;

fn fast() -> Polling {
    Polling {
        first: Duration::from_millis(1),
        max: Duration::from_millis(2),
        deadline: Duration::from_secs(10),
    }
}

fn cluster() -> RedshiftTarget {
    RedshiftTarget::parse(
        "redshift://analytics-1/dw?db_user=loader&iam_role=arn:aws:iam::123456789012:role/pgshift-copy",
    )
    .expect("a valid URL")
}

fn described(status: StatusString) -> DescribeStatementOutput {
    DescribeStatementOutput::builder()
        .id("s-1")
        .status(status)
        .build()
        .expect("id is set")
}

/// What a BatchExecuteStatement carried: statements, cluster, database, database user.
type SentBatch = (Vec<String>, Option<String>, Option<String>, Option<String>);

#[tokio::test]
async fn a_transaction_is_one_batch_and_is_waited_on() -> Result<()> {
    let sent: Arc<Mutex<Vec<SentBatch>>> = Arc::default();
    let record = sent.clone();
    let batch = mock!(Client::batch_execute_statement)
        .match_requests(move |r| {
            let mut s = record.lock().expect("lock");
            s.push((
                r.sqls().to_vec(),
                r.cluster_identifier().map(str::to_string),
                r.database().map(str::to_string),
                r.db_user().map(str::to_string),
            ));
            true
        })
        .then_output(|| BatchExecuteStatementOutput::builder().id("s-1").build());
    let describe = mock!(Client::describe_statement)
        .sequence()
        .output(|| described(StatusString::Started))
        .times(2)
        .output(|| described(StatusString::Finished))
        .build();
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::MatchAny, [&batch, &describe]);
    let wh = RedshiftWarehouse::new(client, cluster(), fast());
    execute(
        &wh,
        vec![
            "DELETE FROM \"s\".\"t\"".into(),
            "INSERT INTO \"s\".\"t\" SELECT 1".into(),
        ],
    )
    .await?;
    let sent = sent.lock().expect("lock").clone();
    assert_eq!(
        sent,
        vec![(
            vec![
                "DELETE FROM \"s\".\"t\"".to_string(),
                "INSERT INTO \"s\".\"t\" SELECT 1".to_string()
            ],
            Some("analytics-1".to_string()),
            Some("dw".to_string()),
            Some("loader".to_string())
        )]
    );
    assert_eq!(describe.num_calls(), 3, "STARTED, STARTED, FINISHED");
    Ok(())
}

#[tokio::test]
async fn a_count_reads_the_statement_result() -> Result<()> {
    let exec = mock!(Client::execute_statement)
        .match_requests(|r| r.sql() == Some("SELECT count(*) FROM \"s\".\"t\""))
        .then_output(|| ExecuteStatementOutput::builder().id("s-1").build());
    let describe = mock!(Client::describe_statement).then_output(|| described(StatusString::Finished));
    let result = mock!(Client::get_statement_result).then_output(|| {
        GetStatementResultOutput::builder()
            .records(vec![Field::LongValue(42)])
            .build()
            .expect("records set")
    });
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::MatchAny, [&exec, &describe, &result]);
    let wh = RedshiftWarehouse::new(client, cluster(), fast());
    assert_eq!(count(&wh, "SELECT count(*) FROM \"s\".\"t\"".into()).await?, 42);
    Ok(())
}

#[tokio::test]
async fn a_failed_copy_reports_file_column_and_error() -> Result<()> {
    let sqls: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = sqls.clone();
    let exec = mock!(Client::execute_statement)
        .match_requests(move |r| {
            record
                .lock()
                .expect("lock")
                .push(r.sql().unwrap_or_default().to_string());
            true
        })
        .then_output(|| ExecuteStatementOutput::builder().id("s-1").build());
    let describe = mock!(Client::describe_statement)
        .sequence()
        .output(|| {
            DescribeStatementOutput::builder()
                .id("s-1")
                .status(StatusString::Failed)
                .error("ERROR: Spectrum Scan Error")
                .redshift_query_id(777)
                .build()
                .expect("id is set")
        })
        .output(|| described(StatusString::Finished))
        .build();
    let detail = mock!(Client::get_statement_result).then_output(|| {
        GetStatementResultOutput::builder()
            .records(vec![
                Field::StringValue("s3://stage/run/sales/orders/part-00000-000.parquet".into()),
                Field::StringValue("amount".into()),
                Field::StringValue("numeric overflow".into()),
            ])
            .build()
            .expect("records set")
    });
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::MatchAny, [&exec, &describe, &detail]);
    let wh = RedshiftWarehouse::new(client, cluster(), fast());
    let stage = pgshift::stage::open("file:///tmp")?;
    let columns = vec![
        ColumnSpec {
            name: "id".into(),
            pg_type: PgType {
                name: "bigint".into(),
                oid: 20,
                typmod: -1,
                declared: None,
            },
            nullable: false,
            cast: None,
            mapping: Mapping::Int64,
        },
        ColumnSpec {
            name: "amount".into(),
            pg_type: PgType {
                name: "numeric(12,2)".into(),
                oid: 1700,
                typmod: (12 << 16 | 2) + 4,
                declared: None,
            },
            nullable: false,
            cast: None,
            mapping: Mapping::Decimal {
                precision: 12,
                scale: 2,
            },
        },
    ];
    let staging = TableRef::new("sales", "orders__pgshift_run1");
    let job = CopyJob {
        staging: &staging,
        columns: &columns,
        manifest_url: "s3://stage/run/sales/orders/manifest.json",
        files: &[],
        stage: stage.as_ref(),
        truncate_long_text: false,
    };
    let e = wh
        .submit(Batch::new(vec![Step::Copy(job)], Until::Committed))
        .await
        .expect_err("the COPY fails");
    let msg = e.to_string();
    assert!(msg.contains("Spectrum Scan Error"), "{msg}");
    assert!(
        msg.contains("part-00000-000.parquet column amount: numeric overflow"),
        "{msg}"
    );
    assert_eq!(e.name(), "Pipeline.Fatal.Warehouse");
    let sqls = sqls.lock().expect("lock").clone();
    assert_eq!(
        sqls[0],
        "COPY \"sales\".\"orders__pgshift_run1\" (\"id\", \"amount\") FROM 's3://stage/run/sales/orders/manifest.json' \
         IAM_ROLE 'arn:aws:iam::123456789012:role/pgshift-copy' FORMAT AS PARQUET MANIFEST"
    );
    assert!(
        sqls[1].contains("sys_load_error_detail") && sqls[1].contains("query_id = 777"),
        "{}",
        sqls[1]
    );
    Ok(())
}

#[tokio::test]
async fn a_statement_past_its_deadline_is_cancelled() -> Result<()> {
    let exec = mock!(Client::execute_statement).then_output(|| ExecuteStatementOutput::builder().id("s-1").build());
    let describe = mock!(Client::describe_statement)
        .sequence()
        .output(|| described(StatusString::Started))
        .repeatedly()
        .build();
    let cancel = mock!(Client::cancel_statement)
        .match_requests(|r| r.id() == Some("s-1"))
        .then_output(|| CancelStatementOutput::builder().status(true).build());
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::MatchAny, [&exec, &describe, &cancel]);
    let polling = Polling {
        deadline: Duration::from_millis(20),
        ..fast()
    };
    let wh = RedshiftWarehouse::new(client, cluster(), polling);
    let e = execute(&wh, vec!["VACUUM".into()]).await.expect_err("deadline");
    assert!(matches!(e, WarehouseError::Sql { retryable: true, .. }), "{e}");
    assert!(e.to_string().contains("cancel requested"), "{e}");
    assert_eq!(cancel.num_calls(), 1);
    Ok(())
}

#[tokio::test]
async fn serverless_workgroups_and_urls() -> Result<()> {
    let t = RedshiftTarget::parse(
        "redshift-serverless://etl/dev?iam_role=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fcopy&secret_arn=arn:aws:secretsmanager:eu-west-1:1:secret:rs",
    )?;
    assert_eq!(t.workgroup_name.as_deref(), Some("etl"));
    assert_eq!(t.cluster_identifier, None);
    assert_eq!(t.iam_role, "arn:aws:iam::1:role/copy");
    for bad in [
        "redshift://c/db?iam_role=r",                       // no db_user or secret
        "redshift://c/db?db_user=u",                        // no iam_role
        "redshift://c?db_user=u&iam_role=r",                // no database
        "postgres://c/db",                                  // another scheme
        "redshift://c/db?db_user=u&iam_role=r&x=1",         // unknown parameter
        "redshift-serverless://wg/db?db_user=u&iam_role=r", // db_user is for provisioned clusters
    ] {
        assert!(RedshiftTarget::parse(bad).is_err(), "{bad}");
    }
    let e = RedshiftTarget::parse("redshift-serverless://wg/db?db_user=u&iam_role=r").expect_err("refused");
    assert!(e.to_string().contains("remove db_user"), "{e}");
    let workgroup: Arc<Mutex<Option<String>>> = Arc::default();
    let record = workgroup.clone();
    let exec = mock!(Client::execute_statement)
        .match_requests(move |r| {
            *record.lock().expect("lock") = r.workgroup_name().map(str::to_string);
            r.cluster_identifier().is_none() && r.secret_arn().is_some()
        })
        .then_output(|| ExecuteStatementOutput::builder().id("s-1").build());
    let describe = mock!(Client::describe_statement).then_output(|| described(StatusString::Finished));
    let client = mock_client!(aws_sdk_redshiftdata, RuleMode::MatchAny, [&exec, &describe]);
    execute(&RedshiftWarehouse::new(client, t, fast()), vec!["SELECT 1".into()]).await?;
    assert_eq!(workgroup.lock().expect("lock").as_deref(), Some("etl"));
    Ok(())
}

/// Statements a one-table run waits on before its load batch: the pre-flight write and read, the staging registry's
/// columns (garbage collection), the target's columns, the set-up batch, the log.
const SETUP_DESCRIBES: usize = 6;

/// Every statement the mocked Data API received, in order, one entry per request.
type Sent = Arc<Mutex<Vec<Vec<String>>>>;

/// A Data API that finishes set-up statements at once, answers the load log's count with 0, and reports the load
/// batch as running for `running_checks` status checks before it finishes.
fn data_api(sent: &Sent, running_checks: usize, fail: Option<(usize, &'static str)>) -> Client {
    let (b, e) = (sent.clone(), sent.clone());
    let batch = mock!(Client::batch_execute_statement)
        .match_requests(move |r| {
            b.lock().expect("lock").push(r.sqls().to_vec());
            true
        })
        .then_output(|| BatchExecuteStatementOutput::builder().id("s-1").build());
    let exec = mock!(Client::execute_statement)
        .match_requests(move |r| {
            e.lock()
                .expect("lock")
                .push(vec![r.sql().unwrap_or_default().to_string()]);
            true
        })
        .then_output(|| ExecuteStatementOutput::builder().id("s-1").build());
    let zero = mock!(Client::get_statement_result).then_output(|| {
        GetStatementResultOutput::builder()
            .records(vec![Field::LongValue(0)])
            .build()
            .expect("records set")
    });
    // The target's columns, the set-up batch and the log count finish; then the load batch runs, then ends.
    let mut seq = mock!(Client::describe_statement).sequence();
    for _ in 0..SETUP_DESCRIBES {
        seq = seq.output(|| described(StatusString::Finished));
    }
    for _ in 0..running_checks {
        seq = seq.output(|| described(StatusString::Started));
    }
    let seq = match fail {
        None => seq.output(|| described(StatusString::Finished)),
        Some((step, error)) => seq.output(move || {
            let subs = (0..7)
                .map(|i| {
                    let status = match i.cmp(&step) {
                        std::cmp::Ordering::Less => StatementStatusString::Finished,
                        std::cmp::Ordering::Equal => StatementStatusString::Failed,
                        std::cmp::Ordering::Greater => StatementStatusString::Aborted,
                    };
                    let mut s = SubStatementData::builder().id(format!("s-1:{}", i + 1)).status(status);
                    if i == step {
                        s = s.error(error).redshift_query_id(4242);
                    }
                    s.build().expect("id is set")
                })
                .collect();
            DescribeStatementOutput::builder()
                .id("s-1")
                .status(StatusString::Failed)
                .error(error)
                .set_sub_statements(Some(subs))
                .build()
                .expect("id is set")
        }),
    };
    let describe = seq.repeatedly().build();
    // Cleanup cancels what the state last saw pending, even if it has ended since.
    let cancel = mock!(Client::cancel_statement).then_output(|| CancelStatementOutput::builder().status(false).build());
    mock_client!(
        aws_sdk_redshiftdata,
        RuleMode::MatchAny,
        [&batch, &exec, &zero, &describe, &cancel]
    )
}

/// `pgshift run` through the definition, loading `table` into Redshift bound to `client` (recorded responses).
async fn run_redshift(
    source: &str,
    table: &str,
    client: Client,
    name: &str,
) -> Result<pgshift::entry::pipeline::RunOutcome> {
    run_redshift_with(source, &[table], client, name, |_| {}).await
}

async fn run_redshift_with(
    source: &str,
    tables: &[&str],
    client: Client,
    name: &str,
    edit: impl FnOnce(&mut LocalRun),
) -> Result<pgshift::entry::pipeline::RunOutcome> {
    let stage = format!("file://{}", pgshift_tests::stage_dir(name).display());
    let wh = RedshiftWarehouse::new(client, cluster(), fast());
    let request = PlanRequest {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        settings: PlanSettings {
            parts: Some(2),
            ..PlanSettings::default()
        },
        stage,
        // What `pgshift run` sets from a Redshift warehouse, and the planner Lambda from its environment.
        warehouse: wh.dialect().limits(),
        ..PlanRequest::default()
    };
    let mut run = LocalRun {
        definition: DEFINITION.to_string(),
        request,
        source: Arc::new(PgConnector::new(source)?),
        stages: Arc::new(UrlStages::default()),
        warehouse: Arc::new(wh),
        memory_mb: 1024,
        input: None,
        restore: Default::default(),
        rds: None,
        load_budget: None,
    };
    edit(&mut run);
    Ok(run.start(name)?.outcome.await?)
}

/// The load transaction among the batches sent: the one whose second statement reconciles.
fn load_batch(sent: &Sent) -> Vec<String> {
    let sent = sent.lock().expect("lock").clone();
    sent.into_iter()
        .find(|b| {
            b.get(1)
                .is_some_and(|s| s.starts_with("SELECT 1 / CASE WHEN count(*) ="))
        })
        .expect("the load batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_waits_on_a_redshift_load_and_checks_it() -> Result<()> {
    let source = super::db("rswait", super::load::SALES).await?;
    let sent: Sent = Arc::default();
    let out = run_redshift(&source, "sales.orders", data_api(&sent, 1, None), "rswait").await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    // Started, still running at the first check, finished at the second: the Wait state did the waiting.
    assert_eq!(output["load"]["progress"]["done"], true);
    assert_eq!(output["load"]["progress"]["checks"], 2);
    assert!(out.report.reconciled(), "{}", out.report.render());
    let load = load_batch(&sent);
    // COPY, reconcile and swap are one batch: one transaction. The target is locked after the COPY, before the
    // swap, so a second run loading it waits instead of doubling it.
    assert_eq!(load.len(), 8, "{load:#?}");
    assert!(load[0].contains("FORMAT AS PARQUET MANIFEST") && load[0].contains("/manifest.json'"));
    assert!(load[1].starts_with("SELECT 1 / CASE WHEN count(*) = 20000 THEN 1 ELSE 0 END FROM"));
    assert_eq!(load[2], "LOCK \"sales\".\"orders\"");
    assert_eq!(load[3], "DELETE FROM \"sales\".\"orders\"");
    assert!(load[4].starts_with("INSERT INTO \"sales\".\"orders\" (\"id\", \"amount\", \"note\", \"placed\") SELECT"));
    assert!(load[5].starts_with("INSERT INTO \"pgshift\".\"load_log\""));
    // GETDATE(): Redshift's CURRENT_TIMESTAMP is a leader-node function and fails on a user table.
    assert!(
        load[5].contains("GETDATE()") && !load[5].contains("CURRENT_TIMESTAMP"),
        "{}",
        load[5]
    );
    assert!(load[6].starts_with("DROP TABLE \"sales\".\"orders__pgshift_"));
    assert!(
        load[7].starts_with("DELETE FROM \"pgshift\".\"staging\""),
        "{}",
        load[7]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_run_past_the_data_apis_batch_is_refused_at_plan_time_before_anything_is_sent() -> Result<()> {
    // Six tables of 7 statements each: 42, past the 40 of one BatchExecuteStatement.
    let ddl: String = (1..=6)
        .map(|i| format!("CREATE TABLE s.t{i} (id int8 PRIMARY KEY); INSERT INTO s.t{i} VALUES (1);"))
        .collect();
    let source = super::db("rsatomic", &format!("CREATE SCHEMA s; {ddl} ANALYZE;")).await?;
    let sent: Sent = Arc::default();
    let t0 = std::time::Instant::now();
    let out = run_redshift_with(&source, &["s.*"], data_api(&sent, 0, None), "rsatomic", |r| {
        r.request.load = Some(pgshift::contract::load::LoadOptions {
            atomic: pgshift::contract::load::Atomicity::Run,
            ..Default::default()
        });
    })
    .await?;
    let f = out.output.expect_err("refused");
    assert_eq!(f.error, "Pipeline.Fatal.InvalidInput", "{f:?}");
    assert!(
        f.cause.contains("--atomic table") && f.cause.contains("at most 5 tables"),
        "{}",
        f.cause
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "at once");
    assert!(
        sent.lock().expect("lock").is_empty(),
        "nothing reached the warehouse: no staging table exists"
    );
    assert!(out.report.tables.is_empty(), "nothing was extracted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_table_loads_without_a_copy_and_still_empties_its_target() -> Result<()> {
    let source = super::db(
        "rsempty",
        "CREATE SCHEMA sales; CREATE TABLE sales.gone (id int8 PRIMARY KEY, note text); ANALYZE;",
    )
    .await?;
    let sent: Sent = Arc::default();
    let out = run_redshift(&source, "sales.gone", data_api(&sent, 0, None), "rsempty").await?;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    let all = sent.lock().expect("lock").clone();
    assert!(
        !all.iter().flatten().any(|s| s.starts_with("COPY ")),
        "no COPY from a manifest that lists no file: {all:#?}"
    );
    // The COPY's place holds a statement that changes nothing; the reconcile against 0 and the replace still run.
    let load = load_batch(&sent);
    assert_eq!(load[0], "SELECT 0 AS no_parts_to_copy", "{load:#?}");
    assert!(
        load[1].starts_with("SELECT 1 / CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM"),
        "{load:#?}"
    );
    assert_eq!(
        load[3], "DELETE FROM \"sales\".\"gone\"",
        "an emptied source empties its target"
    );
    assert!(out.report.reconciled(), "{}", out.report.render());
    Ok(())
}

fn progress() -> LoadProgress {
    LoadProgress {
        done: false,
        plan_url: "file:///x/run/plan.json".into(),
        wait_seconds: 2,
        checks: 0,
        started_at: 0.0,
        pending: vec![PendingLoad {
            statement_id: "s-1".into(),
            tables: vec![TableRef::new("sales", "orders")],
            rows: vec![20_000],
            swaps: Vec::new(),
        }],
        queued: Vec::new(),
        options: Default::default(),
        deadline: None,
        summary: LoadSummary::default(),
    }
}

#[tokio::test]
async fn a_failed_load_batch_names_the_table_and_the_failing_step() -> Result<()> {
    // The steps of a one-table load read back from the pending load: COPY, reconcile, then the swap.
    let p = progress().pending[0].clone();
    assert_eq!(
        (p.label(0).kind, p.label(1).kind, p.label(5).kind),
        (StepKind::Copy, StepKind::Reconcile, StepKind::Swap)
    );
    assert_eq!(p.label(1).expected, Some(20_000));
    let ctx = |client| {
        LoadContext::new(
            Arc::new(UrlStages::default()),
            Arc::new(RedshiftWarehouse::new(client, cluster(), fast())),
        )
    };
    // The reconcile guard divided by zero: the staging table did not hold the parts' rows.
    let sent: Sent = Arc::default();
    let c = ctx(data_api(&sent, 0, Some((1, "ERROR: division by zero"))));
    // The first describes of the helper are for set-up; skip them as `start` would have used them.
    for _ in 0..SETUP_DESCRIBES {
        let _ = c.warehouse.status("s-1").await?;
    }
    let e = pgshift::load::check(&c, progress()).await.expect_err("fails");
    assert!(matches!(e, LoadError::Reconcile { expected: 20_000, .. }), "{e}");
    assert!(e.to_string().contains("sales.orders"), "{e}");
    assert_eq!(e.name(), "Pipeline.Fatal.Reconcile");

    // The COPY failed: the error names the table and asks SYS_LOAD_ERROR_DETAIL by the sub-statement's query id.
    let sent: Sent = Arc::default();
    let c = ctx(data_api(&sent, 0, Some((0, "ERROR: Spectrum Scan Error"))));
    for _ in 0..SETUP_DESCRIBES {
        let _ = c.warehouse.status("s-1").await?;
    }
    let e = pgshift::load::check(&c, progress()).await.expect_err("fails");
    assert!(
        e.to_string().contains("COPY into sales.orders failed") && e.to_string().contains("Spectrum Scan Error"),
        "{e}"
    );
    let sent = sent.lock().expect("lock").clone();
    assert!(
        sent.iter()
            .flatten()
            .any(|s| s.contains("sys_load_error_detail") && s.contains("query_id = 4242")),
        "{sent:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_failed_statement_is_named_not_the_first_aborted_one_and_busy_sessions_are_retried() -> Result<()> {
    // A batch whose third statement failed: the others are reported ABORTED (rolled back), before and after it.
    let describe = mock!(Client::describe_statement).then_output(|| {
        let sub = |i: usize, status: StatementStatusString| {
            let failed = status == StatementStatusString::Failed;
            let mut s = SubStatementData::builder().id(format!("s-1:{i}")).status(status);
            if failed {
                s = s
                    .error("ERROR: value too long for type character varying(256)")
                    .redshift_query_id(77);
            }
            s.build().expect("id is set")
        };
        DescribeStatementOutput::builder()
            .id("s-1")
            .status(StatusString::Failed)
            .set_sub_statements(Some(vec![
                sub(1, StatementStatusString::Aborted),
                sub(2, StatementStatusString::Aborted),
                sub(3, StatementStatusString::Failed),
                sub(4, StatementStatusString::Aborted),
            ]))
            .build()
            .expect("id is set")
    });
    let client = mock_client!(aws_sdk_redshiftdata, [&describe]);
    let wh = RedshiftWarehouse::new(client, cluster(), fast());
    match wh.status("s-1").await? {
        pgshift::warehouse::TxStatus::Failed { step, detail, query_id } => {
            assert_eq!((step, query_id), (Some(2), Some(77)), "{detail}");
            assert!(detail.contains("value too long"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Too many sessions: retried, not a permanent failure.
    let busy = mock!(Client::execute_statement).then_error(|| {
        aws_sdk_redshiftdata::operation::execute_statement::ExecuteStatementError::ActiveSessionsExceededException(
            aws_sdk_redshiftdata::types::error::ActiveSessionsExceededException::builder()
                .message("Active sessions exceeded")
                .meta(
                    aws_sdk_redshiftdata::error::ErrorMetadata::builder()
                        .code("ActiveSessionsExceededException")
                        .message("Active sessions exceeded")
                        .build(),
                )
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_redshiftdata, [&busy]);
    let wh = RedshiftWarehouse::new(client, cluster(), fast());
    let e = execute(&wh, vec!["SELECT 1".into()]).await.expect_err("busy");
    assert!(matches!(e, WarehouseError::Sql { retryable: true, .. }), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_bytea_loads_into_varbyte_and_text_gets_varchars_maximum() -> Result<()> {
    // A 100 kB bytea: more than VARCHAR's 65,535, well within VARBYTE's 1,024,000.
    let source = super::db(
        "rsbytea",
        "CREATE SCHEMA sales; CREATE TABLE sales.blobs (id int8 PRIMARY KEY, body bytea, note text);
         INSERT INTO sales.blobs SELECT g, decode(repeat('ab', 100000), 'hex'), 'n' FROM generate_series(1, 3) g;
         ANALYZE;",
    )
    .await?;
    let sent: Sent = Arc::default();
    let out = run_redshift(&source, "sales.blobs", data_api(&sent, 0, None), "rsbytea").await?;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    let all = sent.lock().expect("lock").clone();
    let create = all
        .iter()
        .flatten()
        .find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS \"sales\".\"blobs\""))
        .expect("the target's DDL");
    assert!(create.contains("\"body\" VARBYTE(1024000)"), "{create}");
    // The first run's values are one byte long; the column is sized for any later run's.
    assert!(create.contains("\"note\" VARCHAR(65535)"), "{create}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_differ_only_in_case_are_refused_at_plan_time_by_name() -> Result<()> {
    let source = super::db(
        "rscase",
        r#"CREATE SCHEMA s;
           CREATE TABLE s.t ("Id" int8 PRIMARY KEY, id int8, "Note" text);
           CREATE TABLE s."Orders" (id int8 PRIMARY KEY); CREATE TABLE s.orders (id int8 PRIMARY KEY);
           ANALYZE;"#,
    )
    .await?;
    let sent: Sent = Arc::default();
    let out = run_redshift_with(&source, &["s.*"], data_api(&sent, 0, None), "rscase", |_| {}).await?;
    let f = out.output.expect_err("refused");
    assert_eq!(f.error, "Pipeline.Fatal.InvalidInput", "{f:?}");
    for said in [r#"columns \"Id\" and \"id\""#, "s.Orders and s.orders", "--exclude"] {
        assert!(f.cause.contains(said), "{said}: {}", f.cause);
    }
    assert!(
        !f.cause.contains("Note"),
        "a mixed-case name alone is fine: {}",
        f.cause
    );
    assert!(sent.lock().expect("lock").is_empty(), "nothing reached the warehouse");
    Ok(())
}

/// What a tracking Data API saw: every request in order (`load <table>` for a load batch, `batch`/`exec` for the
/// others, `describe <id>`), with ids `load-N` for load batches.
type Events = Arc<Mutex<Vec<String>>>;

/// A Data API whose statements all finish at their first describe, recording the order of requests.
fn tracking_data_api(events: &Events) -> Client {
    let (b, e, d) = (events.clone(), events.clone(), events.clone());
    let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let last_was_load = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, flag2) = (last_was_load.clone(), last_was_load);
    let batch = mock!(Client::batch_execute_statement)
        .match_requests(move |r| {
            let sqls = r.sqls();
            let load = sqls
                .get(1)
                .is_some_and(|s| s.starts_with("SELECT 1 / CASE WHEN count(*) ="));
            flag.store(load, std::sync::atomic::Ordering::SeqCst);
            let what = match load {
                true => format!("load {}", sqls[2].trim_start_matches("LOCK ")),
                false => "batch".to_string(),
            };
            b.lock().expect("lock").push(what);
            true
        })
        .then_output(move || {
            let id = match flag2.load(std::sync::atomic::Ordering::SeqCst) {
                true => format!("load-{}", loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
                false => "setup".to_string(),
            };
            BatchExecuteStatementOutput::builder().id(id).build()
        });
    let exec = mock!(Client::execute_statement)
        .match_requests(move |_| {
            e.lock().expect("lock").push("exec".into());
            true
        })
        .then_output(|| ExecuteStatementOutput::builder().id("setup").build());
    let zero = mock!(Client::get_statement_result).then_output(|| {
        GetStatementResultOutput::builder()
            .records(vec![Field::LongValue(0)])
            .build()
            .expect("records set")
    });
    let describe = mock!(Client::describe_statement)
        .match_requests(move |r| {
            d.lock()
                .expect("lock")
                .push(format!("describe {}", r.id().unwrap_or_default()));
            true
        })
        .then_output(|| described(StatusString::Finished));
    mock_client!(
        aws_sdk_redshiftdata,
        RuleMode::MatchAny,
        [&batch, &exec, &zero, &describe]
    )
}

/// The most load batches ever running at once, and the tables in the order their loads were submitted.
fn most_pending(events: &[String]) -> (usize, Vec<String>) {
    let (mut running, mut most, mut order) = (std::collections::BTreeSet::new(), 0, Vec::new());
    let mut next = 0;
    for e in events {
        if let Some(t) = e.strip_prefix("load ") {
            running.insert(format!("load-{next}"));
            next += 1;
            order.push(t.to_string());
            most = most.max(running.len());
        } else if let Some(id) = e.strip_prefix("describe ") {
            running.remove(id);
        }
    }
    (most, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_concurrency_loads_are_pending_and_the_rest_are_set_up_by_the_checks() -> Result<()> {
    let source = super::db(
        "rsqueue",
        "CREATE SCHEMA q; CREATE TABLE q.a (id int8 PRIMARY KEY, v text); CREATE TABLE q.b (LIKE q.a INCLUDING ALL);
         CREATE TABLE q.c (LIKE q.a INCLUDING ALL); CREATE TABLE q.d (LIKE q.a INCLUDING ALL);
         INSERT INTO q.a SELECT g, 'a' || g FROM generate_series(1, 300) g; INSERT INTO q.b SELECT * FROM q.a;
         INSERT INTO q.c SELECT * FROM q.a; INSERT INTO q.d SELECT * FROM q.a; ANALYZE;",
    )
    .await?;
    // (concurrency, budget, the most pending at once, checks at least): with no time to spare, one table is set up
    // per invocation, and the start and three checks set up the four.
    let cases = [
        ("rsqueue1", 1, None, 1, 4),
        ("rsqueue2", 2, None, 2, 2),
        ("rsqueue3", 2, Some(Duration::ZERO), 1, 3),
    ];
    for (name, concurrency, budget, expected_most, checks) in cases {
        let events: Events = Arc::default();
        let mut stage = String::new();
        let out = run_redshift_with(&source, &["q.*"], tracking_data_api(&events), name, |r| {
            stage = r.request.stage.clone();
            r.request.load = Some(pgshift::contract::load::LoadOptions {
                concurrency: Some(concurrency),
                ..Default::default()
            });
            r.load_budget = budget;
        })
        .await?;
        let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
        let events = events.lock().expect("lock").clone();
        let (most, order) = most_pending(&events);
        assert_eq!(most, expected_most, "{name}: {events:#?}");
        assert_eq!(order.len(), 4, "{name}: every table loaded once: {events:#?}");
        // The checks set up and submitted the tables the start left queued.
        assert!(
            output["load"]["progress"]["checks"].as_u64() >= Some(checks),
            "{name}: {output:#}"
        );
        assert!(output["load"]["progress"].get("queued").is_none(), "{output:#}");
        assert!(out.report.reconciled(), "{name}: {}", out.report.render());
        let path = std::path::Path::new(stage.trim_start_matches("file://"))
            .join(pgshift::contract::layout::load_key(&out.report.run_id));
        let load: pgshift::contract::load::LoadResult = serde_json::from_slice(&std::fs::read(&path)?)?;
        assert!(load.done, "{name}: {load:?}");
        for t in &load.tables {
            assert_eq!(t.committed_rows, Some(300), "{name}: {t:?}");
            assert!(
                t.steps.iter().any(|s| s.step == StepKind::Setup),
                "{name}: set-up timed: {t:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_load_still_running_at_its_deadline_fails_as_a_load_timeout_before_the_executions_own() -> Result<()> {
    let sent: Sent = Arc::default();
    let c = LoadContext::new(
        Arc::new(UrlStages::default()),
        Arc::new(RedshiftWarehouse::new(data_api(&sent, 10, None), cluster(), fast())),
    );
    for _ in 0..SETUP_DESCRIBES {
        let _ = c.warehouse.status("s-1").await?;
    }
    // Before the deadline a running transaction is waited on.
    let mut p = progress();
    p.deadline = Some(pgshift::contract::clock::unix_now() + 3600.0);
    let p = pgshift::load::check(&c, p).await?;
    assert!(!p.done && p.pending.len() == 1, "{p:?}");
    // Past it, the check gives up by a name of its own, which the definition's Catch sends to Cleanup (which cancels).
    let mut p = p;
    p.deadline = Some(pgshift::contract::clock::unix_now() - 1.0);
    let e = pgshift::load::check(&c, p).await.expect_err("past the deadline");
    assert_eq!(e.name(), "Pipeline.Fatal.LoadTimeout", "{e}");
    assert!(e.to_string().contains("sales.orders"), "{e}");
    // The Load state sets the deadline from the execution's start and the definition's own TimeoutSeconds.
    let asl: serde_json::Value = serde_json::from_str(DEFINITION)?;
    let params = &asl["States"]["Load"]["Parameters"];
    assert_eq!(params["execution_timeout_seconds"], asl["TimeoutSeconds"], "{params:#}");
    assert_eq!(params["execution_started_at.$"], "$$.Execution.StartTime", "{params:#}");
    let req: pgshift::contract::load::LoadRequest = serde_json::from_value(serde_json::json!({
        "plan_url": "file:///s/r/plan.json",
        "execution_started_at": "2026-12-03T00:00:00Z",
        "execution_timeout_seconds": 86400,
    }))?;
    let start = pgshift::contract::clock::parse_rfc3339("2026-12-03T00:00:00Z").expect("time");
    assert_eq!(req.deadline(), Ok(Some(start + 86400.0 - 1800.0)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_as_super_copies_text_into_varchar_staging_and_parses_it_in_the_swap() -> Result<()> {
    let source = super::db(
        "rsjson",
        "CREATE SCHEMA j; CREATE TABLE j.docs (id int8 PRIMARY KEY, doc jsonb NOT NULL, raw json);
         INSERT INTO j.docs SELECT g, jsonb_build_object('n', g), '[1, 2]' FROM generate_series(1, 50) g; ANALYZE;",
    )
    .await?;
    let sent: Sent = Arc::default();
    let out = run_redshift_with(&source, &["j.docs"], data_api(&sent, 0, None), "rsjson", |r| {
        r.request.load = Some(pgshift::contract::load::LoadOptions {
            json_as_super: true,
            ..Default::default()
        });
    })
    .await?;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    let all: Vec<String> = sent.lock().expect("lock").iter().flatten().cloned().collect();
    let created = |prefix: &str| {
        all.iter()
            .find(|s| s.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix}: {all:#?}"))
            .clone()
    };
    // The target's JSON columns are SUPER; staging holds the same columns as VARCHAR text.
    let target = created("CREATE TABLE IF NOT EXISTS \"j\".\"docs\"");
    assert!(
        target.contains("\"doc\" SUPER NOT NULL") && target.contains("\"raw\" SUPER"),
        "{target}"
    );
    let staging = created("CREATE TABLE \"j\".\"docs__pgshift_");
    assert!(
        staging.contains("\"doc\" VARCHAR(") && !staging.contains("SUPER"),
        "{staging}"
    );
    let load = load_batch(&sent);
    assert!(
        load[0].ends_with("FORMAT AS PARQUET MANIFEST"),
        "no SERIALIZETOJSON: {}",
        load[0]
    );
    // A string inserted into SUPER stays a string: the swap parses each document.
    assert_eq!(
        load[3], "DELETE FROM \"j\".\"docs\"",
        "replaced by rows, not renamed: {load:#?}"
    );
    assert!(
        load[4].starts_with("INSERT INTO \"j\".\"docs\" (\"id\", \"doc\", \"raw\") SELECT \"id\", JSON_PARSE(\"doc\"), JSON_PARSE(\"raw\") FROM"),
        "{}",
        load[4]
    );
    Ok(())
}

/// The load batch of one `sales.orders` load in `mode`, through the definition against the recorded Data API.
async fn one_load(name: &str, mode: pgshift::contract::load::LoadMode) -> Result<Vec<String>> {
    let source = super::db(name, super::load::SALES).await?;
    let sent: Sent = Arc::default();
    let out = run_redshift_with(&source, &["sales.orders"], data_api(&sent, 0, None), name, |r| {
        r.request.load = Some(pgshift::contract::load::LoadOptions {
            mode,
            ..Default::default()
        });
    })
    .await?;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert!(out.report.reconciled(), "{}", out.report.render());
    Ok(load_batch(&sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_merge_send_exactly_their_statements_in_one_transaction() -> Result<()> {
    use pgshift::contract::load::LoadMode;
    let cols = "(\"id\", \"amount\", \"note\", \"placed\")";
    let append = one_load("rsappend", LoadMode::Append).await?;
    assert_eq!(append.len(), 7, "{append:#?}");
    assert!(
        append[0].starts_with("COPY \"sales\".\"orders__pgshift_") && append[0].ends_with("FORMAT AS PARQUET MANIFEST")
    );
    assert!(append[1].starts_with("SELECT 1 / CASE WHEN count(*) = 20000 THEN 1 ELSE 0 END FROM"));
    assert_eq!(append[2], "LOCK \"sales\".\"orders\"");
    assert!(
        append[3].starts_with(&format!(
            "INSERT INTO \"sales\".\"orders\" {cols} SELECT \"id\", \"amount\""
        )),
        "{}",
        append[3]
    );
    assert!(
        append[4].starts_with("INSERT INTO \"pgshift\".\"load_log\"") && append[4].contains("'append'"),
        "{}",
        append[4]
    );
    assert!(
        append[5].starts_with("DROP TABLE \"sales\".\"orders__pgshift_"),
        "{}",
        append[5]
    );
    // The staging table leaves the registry in the transaction that drops it.
    assert!(
        append[6].starts_with("DELETE FROM \"pgshift\".\"staging\" WHERE") && append[6].contains("orders__pgshift_"),
        "{}",
        append[6]
    );

    let merge = one_load("rsmerge", LoadMode::Merge).await?;
    assert_eq!(merge.len(), 8, "{merge:#?}");
    assert_eq!(merge[2], "LOCK \"sales\".\"orders\"");
    // Rows of the same key are replaced: deleted by key from the target, then every staged row inserted.
    assert!(
        merge[3].starts_with("DELETE FROM \"sales\".\"orders\" USING \"sales\".\"orders__pgshift_")
            && merge[3].contains("WHERE \"sales\".\"orders\".\"id\" = \"sales\".\"orders__pgshift_"),
        "{}",
        merge[3]
    );
    assert!(
        merge[4].starts_with(&format!("INSERT INTO \"sales\".\"orders\" {cols} SELECT")),
        "{}",
        merge[4]
    );
    assert!(merge[5].contains("'merge'"), "{}", merge[5]);
    assert!(merge[6].starts_with("DROP TABLE \"sales\".\"orders__pgshift_"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_and_a_failed_reconcile_end_the_run_by_name_with_the_warehouse_as_it_was() -> Result<()> {
    let source = super::db("rsfail", super::load::SALES).await?;
    let cases = [
        (
            0,
            "ERROR: Spectrum Scan Error",
            "Pipeline.Fatal.Warehouse",
            "COPY into sales.orders failed",
        ),
        (
            1,
            "ERROR: division by zero",
            "Pipeline.Fatal.Reconcile",
            "sales.orders: staging holds",
        ),
    ];
    for (step, error, name, says) in cases {
        let sent: Sent = Arc::default();
        let out = run_redshift(
            &source,
            "sales.orders",
            data_api(&sent, 0, Some((step, error))),
            &format!("rsfail{step}"),
        )
        .await?;
        let f = out.output.expect_err("the load fails");
        assert_eq!(f.error, name, "{f:?}");
        assert!(f.cause.contains(says), "{f:?}");
        let all: Vec<String> = sent.lock().expect("lock").iter().flatten().cloned().collect();
        if step == 0 {
            // The failed COPY is explained from SYS_LOAD_ERROR_DETAIL by the sub-statement's query id.
            assert!(
                all.iter()
                    .any(|s| s.contains("sys_load_error_detail") && s.contains("4242")),
                "{all:#?}"
            );
        }
        // Cleanup ran; the report says nothing was committed.
        assert!(out.cleanup.is_some(), "cleanup ran");
        let report = out.report.render();
        assert!(report.contains("no table of this run was committed"), "{report}");
        assert!(out.report.tables.iter().all(|t| t.loaded_rows.is_none()), "{report}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_run_copies_reconciles_and_swaps_every_table_in_one_transaction() -> Result<()> {
    let source = super::db("rsatomicok", super::load::SALES).await?;
    let sent: Sent = Arc::default();
    let out = run_redshift_with(&source, &["sales.*"], data_api(&sent, 0, None), "rsatomicok", |r| {
        r.request.load = Some(pgshift::contract::load::LoadOptions {
            atomic: pgshift::contract::load::Atomicity::Run,
            ..Default::default()
        });
    })
    .await?;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert!(out.report.reconciled(), "{}", out.report.render());
    let loads: Vec<Vec<String>> = sent
        .lock()
        .expect("lock")
        .iter()
        .filter(|b| b.iter().any(|s| s.starts_with("COPY ")))
        .cloned()
        .collect();
    assert_eq!(loads.len(), 1, "one transaction for the run: {loads:#?}");
    let b = &loads[0];
    // Both tables' COPY and reconcile first, then both swaps: nothing changes unless everything staged.
    let kinds: Vec<&str> = b
        .iter()
        .map(|s| match s {
            s if s.starts_with("COPY ") => "copy",
            s if s.starts_with("SELECT 1 / CASE") => "reconcile",
            s if s.starts_with("LOCK ") => "lock",
            _ => "swap",
        })
        .collect();
    assert_eq!(
        &kinds[..6],
        ["copy", "reconcile", "copy", "reconcile", "lock", "swap"],
        "{b:#?}"
    );
    assert_eq!(kinds.iter().filter(|k| **k == "lock").count(), 2, "{b:#?}");
    assert!(
        b.len() <= 40,
        "inside the Data API's 40 statements a batch: {}",
        b.len()
    );
    Ok(())
}

/// A load that fails after it submitted another table's transaction cancels that transaction before it reports the
/// error: the state machine keeps the progress of the call before, so Cleanup would never see it, and it could
/// commit after the run is marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_fails_after_submitting_cancels_what_it_submitted() -> Result<()> {
    use aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementError;
    use aws_sdk_redshiftdata::types::error::ValidationException;
    let source = super::db(
        "rscancel",
        "CREATE SCHEMA q; CREATE TABLE q.a (id int8 PRIMARY KEY, v text); CREATE TABLE q.b (LIKE q.a INCLUDING ALL);
         INSERT INTO q.a SELECT g, 'a' || g FROM generate_series(1, 300) g; INSERT INTO q.b SELECT * FROM q.a;
         ANALYZE;",
    )
    .await?;
    let is_load = |sqls: &[String]| {
        sqls.get(1)
            .is_some_and(|s| s.starts_with("SELECT 1 / CASE WHEN count(*) ="))
    };
    let first = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load_ok = mock!(Client::batch_execute_statement)
        .match_requests(move |r| is_load(r.sqls()) && !first.swap(true, std::sync::atomic::Ordering::SeqCst))
        .then_output(|| BatchExecuteStatementOutput::builder().id("load-a").build());
    let load_refused = mock!(Client::batch_execute_statement)
        .match_requests(move |r| is_load(r.sqls()))
        .then_error(|| {
            BatchExecuteStatementError::ValidationException(
                ValidationException::builder()
                    .message("injected: the second load batch is refused")
                    .meta(
                        aws_sdk_redshiftdata::error::ErrorMetadata::builder()
                            .code("ValidationException")
                            .message("injected: the second load batch is refused")
                            .build(),
                    )
                    .build(),
            )
        });
    let setup = mock!(Client::batch_execute_statement)
        .match_requests(move |r| !is_load(r.sqls()))
        .then_output(|| BatchExecuteStatementOutput::builder().id("setup").build());
    let exec = mock!(Client::execute_statement).then_output(|| ExecuteStatementOutput::builder().id("setup").build());
    let zero = mock!(Client::get_statement_result).then_output(|| {
        GetStatementResultOutput::builder()
            .records(vec![Field::LongValue(0)])
            .build()
            .expect("records set")
    });
    let describe = mock!(Client::describe_statement).then_output(|| described(StatusString::Finished));
    let cancelled: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = cancelled.clone();
    let cancel = mock!(Client::cancel_statement)
        .match_requests(move |r| {
            seen.lock().expect("lock").push(r.id().unwrap_or_default().to_string());
            true
        })
        .then_output(|| CancelStatementOutput::builder().status(true).build());
    let client = mock_client!(
        aws_sdk_redshiftdata,
        RuleMode::MatchAny,
        [&load_ok, &load_refused, &setup, &exec, &zero, &describe, &cancel]
    );
    let out = run_redshift_with(&source, &["q.*"], client, "rscancel", |r| {
        r.request.load = Some(pgshift::contract::load::LoadOptions {
            concurrency: Some(2),
            ..Default::default()
        });
    })
    .await?;
    let f = out.output.expect_err("the second load batch is refused");
    assert!(f.cause.contains("injected"), "{f:?}");
    let cancelled = cancelled.lock().expect("lock").clone();
    assert!(
        cancelled.contains(&"load-a".to_string()),
        "the submitted load was cancelled: {cancelled:?}"
    );
    Ok(())
}
