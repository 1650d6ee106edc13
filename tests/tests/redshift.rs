//! The Redshift Data API adapter (`RedshiftWarehouse`) at the SDK boundary, against the fake Data API
//! (`pgshift_tests::data_api`; no local Redshift exists): the exact requests it sends, where and as whom, and every
//! status path, each statement answered by its own id. Then the loader's checks over it (`load::check`). Whole runs
//! through the definition are in `redshift_pipeline`; the SQL shape shared with the PostgreSQL warehouse runs for
//! real in the load tests.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use aws_sdk_redshiftdata::types::{Field, StatusString};
use pgshift::contract::load::{LoadProgress, LoadSummary, PendingLoad, StepKind};
use pgshift::contract::model::{ColumnSpec, PgType, TableRef};
use pgshift::contract::types::Mapping;
use pgshift::entry::local::DEFINITION;
use pgshift::load::{LoadContext, LoadError};
use pgshift::warehouse::redshift::{Polling, RedshiftTarget, RedshiftWarehouse};
use pgshift::warehouse::{
    count, execute, reconcile_sql, Batch, CopyJob, Step, Submission, TxStatus, Until, Warehouse, WarehouseError,
};
use pgshift::UrlStages;
use pgshift_tests::data_api::{DataApi, Refusal, Request, Script, Submitted, Target};

/// Polling fast enough for tests.
pub(crate) fn fast() -> Polling {
    Polling {
        first: Duration::from_millis(1),
        max: Duration::from_millis(2),
        deadline: Duration::from_secs(10),
    }
}

/// A provisioned cluster, reached as a database user.
pub(crate) fn cluster() -> RedshiftTarget {
    RedshiftTarget::parse(
        "redshift://analytics-1/dw?db_user=loader&iam_role=arn:aws:iam::123456789012:role/pgshift-copy",
    )
    .expect("a valid URL")
}

/// Where every request of [`cluster`] goes.
pub(crate) fn cluster_target() -> Target {
    Target {
        cluster: Some("analytics-1".into()),
        workgroup: None,
        database: Some("dw".into()),
        db_user: Some("loader".into()),
        secret_arn: None,
    }
}

fn warehouse(api: &DataApi) -> RedshiftWarehouse {
    RedshiftWarehouse::new(api.client(), cluster(), fast())
}

/// The id the fake gave the submission whose first statement is `first`.
fn id_of(api: &DataApi, first: &str) -> String {
    api.submitted()
        .into_iter()
        .find(|s| s.sqls.first().map(String::as_str) == Some(first))
        .map(|s| s.id)
        .unwrap_or_else(|| panic!("no submission starts with {first}: {:#?}", api.requests()))
}

/// The query that explains a failed load from `SYS_LOAD_ERROR_DETAIL`.
fn load_errors_sql(query_id: i64) -> String {
    format!(
        "SELECT file_name, column_name, error_message FROM sys_load_error_detail WHERE query_id = {query_id} ORDER BY \
         start_time LIMIT 10"
    )
}

/// The query that explains a failed load on a provisioned cluster from `STL_LOAD_ERRORS`, by the Data API's query id.
fn stl_errors_sql(query_id: i64) -> String {
    format!(
        "SELECT filename, colname, err_reason FROM stl_load_errors WHERE query = {query_id} ORDER BY starttime LIMIT 10"
    )
}

// ---- The adapter ----

#[tokio::test]
async fn a_transaction_is_one_batch_and_is_waited_on() -> Result<()> {
    let api = DataApi::new();
    let delete = "DELETE FROM \"s\".\"t\"";
    api.script(move |sqls| sqls.iter().any(|s| s == delete), Script::running_for(2));
    let wh = warehouse(&api);
    execute(&wh, vec![delete.into(), "INSERT INTO \"s\".\"t\" SELECT 1".into()]).await?;
    let id = id_of(&api, delete);
    assert_eq!(
        api.submitted(),
        [Submitted {
            id: id.clone(),
            sqls: vec![delete.into(), "INSERT INTO \"s\".\"t\" SELECT 1".into()],
            batch: true,
            target: cluster_target(),
        }],
        "one BatchExecuteStatement: one transaction"
    );
    // It returned only once the batch had finished, and asked no more after.
    let seen = api.answered(&id);
    assert_eq!(seen.last(), Some(&StatusString::Finished), "{seen:?}");
    assert!(
        seen[..seen.len() - 1].iter().all(|s| *s == StatusString::Started),
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_count_reads_the_statement_result() -> Result<()> {
    let api = DataApi::new();
    let sql = "SELECT count(*) FROM \"s\".\"t\"";
    api.answer(move |s| s == sql, vec![vec![Field::LongValue(42)]]);
    let wh = warehouse(&api);
    assert_eq!(count(&wh, sql.into()).await?, 42);
    // One statement, its result read by its own id once it was seen finished.
    let id = id_of(&api, sql);
    assert_eq!(
        api.requests(),
        [
            Request::Submit(Submitted {
                id: id.clone(),
                sqls: vec![sql.into()],
                batch: false,
                target: cluster_target(),
            }),
            Request::Describe {
                id: id.clone(),
                status: Some(StatusString::Finished)
            },
            Request::Result { id },
        ]
    );
    Ok(())
}

fn order_columns() -> Vec<ColumnSpec> {
    vec![
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
    ]
}

/// A failed COPY on `target`, its load errors answered by `answers` (by SQL); the error, the COPY's id and every
/// statement sent.
async fn failed_copy(target: RedshiftTarget, answers: &[(String, &str)]) -> Result<(String, String, Vec<String>)> {
    let api = DataApi::new();
    api.script(
        |sqls| sqls.iter().any(|s| s.starts_with("COPY ")),
        Script::fails_at(0, "ERROR: Spectrum Scan Error", 777),
    );
    for (sql, file) in answers {
        let (sql, file) = (sql.clone(), file.to_string());
        api.answer(
            move |q| q == sql,
            vec![vec![
                Field::StringValue(format!("{file} ")),
                Field::StringValue("amount ".into()),
                Field::StringValue("numeric overflow".into()),
            ]],
        );
    }
    let wh = RedshiftWarehouse::new(api.client(), target, fast());
    let stage = pgshift::stage::open("file:///tmp")?;
    let columns = order_columns();
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
    assert_eq!(e.name(), "Pipeline.Fatal.Warehouse");
    let copy = api.statements().first().cloned().unwrap_or_default();
    Ok((e.to_string(), id_of(&api, &copy), api.statements()))
}

#[tokio::test]
async fn a_failed_copy_reports_file_column_and_error() -> Result<()> {
    let said = |id: &str, file: &str| {
        format!(
            "warehouse: statement {id}: ERROR: Spectrum Scan Error; load errors: s3://stage/run/sales/orders/{file} \
             column amount: numeric overflow"
        )
    };
    let (stl, sys) = (stl_errors_sql(777), load_errors_sql(777));
    // A provisioned cluster: the Data API's query id is STL's `query`, so STL_LOAD_ERRORS is read first.
    let (e, id, sent) = failed_copy(cluster(), &[(stl.clone(), "s3://stage/run/sales/orders/a.parquet")]).await?;
    assert_eq!(e, said(&id, "a.parquet"));
    assert_eq!(
        sent[1..],
        *std::slice::from_ref(&stl),
        "the COPY, then STL_LOAD_ERRORS by its query id"
    );
    // STL has nothing (the id names something else there): SYS_LOAD_ERROR_DETAIL by query_id.
    let (e, id, sent) = failed_copy(cluster(), &[(sys.clone(), "s3://stage/run/sales/orders/b.parquet")]).await?;
    assert_eq!(e, said(&id, "b.parquet"));
    assert_eq!(sent[1..], [stl.clone(), sys.clone()]);
    // Serverless has no STL views: SYS_LOAD_ERROR_DETAIL only.
    let serverless = RedshiftTarget::parse("redshift-serverless://etl/dev?iam_role=arn:aws:iam::1:role/copy")?;
    let (e, id, sent) = failed_copy(serverless, &[(sys.clone(), "s3://stage/run/sales/orders/c.parquet")]).await?;
    assert_eq!(e, said(&id, "c.parquet"));
    assert_eq!(sent[1..], *std::slice::from_ref(&sys));
    // Neither has rows: the error says where it looked.
    let (e, _, _) = failed_copy(cluster(), &[]).await?;
    assert!(
        e.ends_with("no rows in STL_LOAD_ERRORS; no rows in SYS_LOAD_ERROR_DETAIL"),
        "{e}"
    );
    Ok(())
}

#[tokio::test]
async fn a_statement_past_its_deadline_is_cancelled() -> Result<()> {
    let api = DataApi::new();
    api.script(|sqls| sqls == ["VACUUM"], Script::running());
    let polling = Polling {
        deadline: Duration::from_millis(20),
        ..fast()
    };
    let wh = RedshiftWarehouse::new(api.client(), cluster(), polling);
    let e = execute(&wh, vec!["VACUUM".into()]).await.expect_err("deadline");
    assert!(matches!(e, WarehouseError::Sql { retryable: true, .. }), "{e}");
    let id = id_of(&api, "VACUUM");
    assert_eq!(
        e.to_string(),
        format!("warehouse: statement {id} still running after 20ms; cancel requested")
    );
    assert_eq!(api.cancelled(), [id], "the statement it gave up on, and only it");
    Ok(())
}

/// The slices a provisioned cluster has, from STV_SLICES; Serverless has none to ask (no STV tables), and asks nothing.
#[tokio::test]
async fn a_clusters_slices_are_read_from_stv_slices_and_serverless_asks_nothing() -> Result<()> {
    let api = DataApi::new();
    api.answer(|s| s.contains("stv_slices"), vec![vec![Field::LongValue(8)]]);
    let wh = warehouse(&api);
    assert_eq!(wh.slices().await?, Some((8, "stv_slices".to_string())));
    let serverless = RedshiftTarget::parse("redshift-serverless://etl/dev?iam_role=r&secret_arn=s")?;
    let api = DataApi::new();
    let wh = RedshiftWarehouse::new(api.client(), serverless, fast());
    assert_eq!(wh.slices().await?, None);
    assert!(api.requests().is_empty(), "{:?}", api.requests());
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
    let api = DataApi::new();
    execute(
        &RedshiftWarehouse::new(api.client(), t, fast()),
        vec!["SELECT 1".into()],
    )
    .await?;
    assert_eq!(
        api.submitted(),
        [Submitted {
            id: id_of(&api, "SELECT 1"),
            sqls: vec!["SELECT 1".into()],
            batch: false,
            target: Target {
                cluster: None,
                workgroup: Some("etl".into()),
                database: Some("dev".into()),
                db_user: None,
                secret_arn: Some("arn:aws:secretsmanager:eu-west-1:1:secret:rs".into()),
            },
        }]
    );
    Ok(())
}

#[tokio::test]
async fn the_failed_statement_is_named_not_the_first_aborted_one_and_busy_sessions_are_retried() -> Result<()> {
    // A batch whose third statement failed: the others are reported ABORTED (rolled back), before and after it.
    let api = DataApi::new();
    let error = "ERROR: value too long for type character varying(256)";
    api.script(|sqls| sqls.len() == 4, Script::fails_at(2, error, 77));
    let wh = warehouse(&api);
    let steps = (1..=4)
        .map(|i| Step::Sql(format!("INSERT INTO \"s\".\"t\" VALUES ({i})")))
        .collect();
    let Submission::Pending(id) = wh.submit(Batch::new(steps, Until::Submitted)).await? else {
        panic!("a batch the Data API takes is pending")
    };
    assert_eq!(
        wh.status(&id).await?,
        TxStatus::Failed {
            step: Some(2),
            detail: format!("statement {id}: {error}"),
            query_id: Some(77),
        }
    );
    // Too many sessions: retried, not a permanent failure.
    let api = DataApi::new();
    api.refuse(|_| true, Refusal::Busy);
    let e = execute(&warehouse(&api), vec!["SELECT 1".into()])
        .await
        .expect_err("busy");
    assert!(matches!(e, WarehouseError::Sql { retryable: true, .. }), "{e}");
    assert_eq!(e.name(), "Pipeline.Retryable.Warehouse");
    Ok(())
}

// ---- The loader's checks over the adapter ----

/// A one-table load transaction of `sales.orders` as the loader sends it: COPY, reconcile, then the swap.
fn orders_load() -> Result<Vec<String>> {
    let staging = TableRef::new("sales", "orders__pgshift_run1");
    Ok(vec![
        "COPY \"sales\".\"orders__pgshift_run1\" (\"id\", \"amount\") FROM 's3://stage/run/sales/orders/manifest.json' \
         IAM_ROLE 'arn:aws:iam::123456789012:role/pgshift-copy' FORMAT AS PARQUET MANIFEST STATUPDATE OFF"
            .into(),
        reconcile_sql(&staging, 20_000)?,
        "LOCK \"sales\".\"orders\"".into(),
        "DELETE FROM \"sales\".\"orders\"".into(),
        "INSERT INTO \"sales\".\"orders\" (\"id\", \"amount\") SELECT \"id\", \"amount\" FROM \
         \"sales\".\"orders__pgshift_run1\""
            .into(),
        "DROP TABLE \"sales\".\"orders__pgshift_run1\"".into(),
    ])
}

fn is_orders_load(sqls: &[String]) -> bool {
    sqls.first()
        .is_some_and(|s| s.starts_with("COPY \"sales\".\"orders__pgshift_run1\""))
}

/// A loader over the fake, and the progress of its pending `sales.orders` load, submitted through the adapter.
async fn pending_orders_load(api: &DataApi) -> Result<(LoadContext, LoadProgress)> {
    let wh = Arc::new(warehouse(api));
    let steps = orders_load()?.into_iter().map(Step::Sql).collect();
    let Submission::Pending(statement_id) = wh.submit(Batch::new(steps, Until::Submitted)).await? else {
        panic!("a load the Data API takes is pending")
    };
    let progress = LoadProgress {
        done: false,
        plan_url: "file:///x/run/plan.json".into(),
        wait_seconds: 2,
        checks: 0,
        started_at: 0.0,
        pending: vec![PendingLoad {
            statement_id,
            tables: vec![TableRef::new("sales", "orders")],
            rows: vec![20_000],
            swaps: Vec::new(),
        }],
        queued: Vec::new(),
        options: Default::default(),
        deadline: None,
        summary: LoadSummary::default(),
    };
    Ok((LoadContext::new(Arc::new(UrlStages::default()), wh), progress))
}

#[tokio::test]
async fn a_failed_load_batch_names_the_table_and_the_failing_step() -> Result<()> {
    // The reconcile guard divided by zero: the staging table did not hold the parts' rows.
    let api = DataApi::new();
    api.script(is_orders_load, Script::fails_at(1, "ERROR: division by zero", 4242));
    let (c, p) = pending_orders_load(&api).await?;
    let pending = p.pending[0].clone();
    assert_eq!(
        (pending.label(0).kind, pending.label(1).kind, pending.label(5).kind),
        (StepKind::Copy, StepKind::Reconcile, StepKind::Swap)
    );
    let e = pgshift::load::check(&c, p).await.expect_err("fails");
    assert!(matches!(e, LoadError::Reconcile { expected: 20_000, .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "sales.orders: staging holds a different number of rows but the parts hold 20000; rolled back"
    );
    assert_eq!(e.name(), "Pipeline.Fatal.Reconcile");
    assert!(
        !api.statements().iter().any(|s| s.contains("sys_load_error_detail")),
        "a failed reconcile has no load errors to look up"
    );

    // The COPY failed: the error names the table and the load errors looked up by the sub-statement's query id.
    let api = DataApi::new();
    api.script(is_orders_load, Script::fails_at(0, "ERROR: Spectrum Scan Error", 4242));
    api.answer(
        |sql| sql == load_errors_sql(4242),
        vec![vec![
            Field::StringValue("s3://stage/run/sales/orders/part-00001-000.parquet".into()),
            Field::StringValue("amount".into()),
            Field::StringValue("numeric overflow".into()),
        ]],
    );
    let (c, p) = pending_orders_load(&api).await?;
    let id = p.pending[0].statement_id.clone();
    let e = pgshift::load::check(&c, p).await.expect_err("fails");
    assert_eq!(
        e.to_string(),
        format!(
            "warehouse: COPY into sales.orders failed, nothing swapped (sales.orders): statement {id}: ERROR: \
             Spectrum Scan Error; load errors: s3://stage/run/sales/orders/part-00001-000.parquet column amount: \
             numeric overflow"
        )
    );
    assert_eq!(e.name(), "Pipeline.Fatal.Warehouse");
    assert_eq!(api.statements().last(), Some(&load_errors_sql(4242)));
    Ok(())
}

#[tokio::test]
async fn a_load_still_running_at_its_deadline_fails_as_a_load_timeout_before_the_executions_own() -> Result<()> {
    let api = DataApi::new();
    api.script(is_orders_load, Script::running());
    let (c, mut p) = pending_orders_load(&api).await?;
    let id = p.pending[0].statement_id.clone();
    // Before the deadline a running transaction is waited on.
    p.deadline = Some(pgshift::contract::clock::unix_now() + 3600.0);
    let mut p = pgshift::load::check(&c, p).await?;
    assert!(!p.done && p.pending.len() == 1, "{p:?}");
    assert!(api.cancelled().is_empty(), "nothing cancelled before the deadline");
    // Past it, the check gives up by a name of its own, which the definition's Catch sends to Cleanup, and cancels
    // the transaction it gives up on.
    p.deadline = Some(pgshift::contract::clock::unix_now() - 1.0);
    let e = pgshift::load::check(&c, p).await.expect_err("past the deadline");
    assert_eq!(e.name(), "Pipeline.Fatal.LoadTimeout", "{e}");
    assert!(e.to_string().starts_with("sales.orders still loading "), "{e}");
    assert_eq!(api.cancelled(), [id]);
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
