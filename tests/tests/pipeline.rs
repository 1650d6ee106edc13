//! The whole pipeline through the state machine, run locally: statemachine/pipeline.asl.json executed by the
//! interpreter against the in-process handlers, a real source, a real stage and a PostgreSQL warehouse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use futures_util::future::BoxFuture;
use pgshift::contract::plan::{Plan, PlanRequest, PlanSettings};
use pgshift::entry::local::{LocalRun, RunOutcome, DEFINITION};
use pgshift::source::PgConnector;
use pgshift::stage::StageOpener;
use pgshift::stage::{ObjectWriter, Stage, StageError};
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::{Step, Warehouse};
use pgshift::UrlStages;
use pgshift_tests::{cluster, connect, list_files, stage_dir};

use super::hooked::{Edit, Hooked};
use super::load::{fingerprint, SALES};
use super::{db, ALL_TYPES};

/// A table without a key, planned by ctid pages.
const HEAP: &str = "
CREATE TABLE public.events (at timestamptz NOT NULL, kind text, payload jsonb);
INSERT INTO public.events SELECT TIMESTAMPTZ '2025-01-01' + g * INTERVAL '1 second', 'k' || g % 5,
    jsonb_build_object('g', g) FROM generate_series(1, 5000) g;
ANALYZE;";

pub(crate) fn request(stage: &str, tables: &[&str], parts: u32) -> PlanRequest {
    PlanRequest {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        settings: PlanSettings {
            parts: Some(parts),
            max_concurrency: 3,
            ..PlanSettings::default()
        },
        stage: stage.to_string(),
        ..PlanRequest::default()
    }
}

pub(crate) async fn run_local(
    source: &str,
    request: PlanRequest,
    stages: Arc<dyn StageOpener>,
    warehouse: Arc<dyn Warehouse>,
) -> Result<RunOutcome> {
    run_definition(DEFINITION.to_string(), source, request, (stages, warehouse), "test").await
}

/// A run of `definition` as the execution `execution` (the same name again is the same execution again, as
/// `pgshift run --run-id` is).
pub(crate) async fn run_definition(
    definition: String,
    source: &str,
    request: PlanRequest,
    (stages, warehouse): (Arc<dyn StageOpener>, Arc<dyn Warehouse>),
    execution: &str,
) -> Result<RunOutcome> {
    let run = LocalRun {
        definition,
        request,
        source: Arc::new(PgConnector::new(source)?),
        stages,
        warehouse,
        memory_mb: 1024,
        input: None,
        restore: Default::default(),
        rds: None,
        load_budget: None,
        announce: Default::default(),
    };
    Ok(run.start(execution)?.outcome.await?)
}

pub(crate) async fn plan_of(out: &serde_json::Value) -> Result<Plan> {
    let url = out["plan"]["plan_url"].as_str().expect("plan_url");
    let path = url.strip_prefix("file://").expect("a file stage");
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_moves_a_multi_table_schema_with_every_type() -> Result<()> {
    let source = db("pipesrc", &format!("{ALL_TYPES}{SALES}{HEAP}")).await?;
    let target = cluster().create_db("pipewh").await?;
    let stage = format!("file://{}", stage_dir("pipeline").display());
    let tables = [r#""Odd ""Schema""".all_types"#, "sales.*", "public.events"];
    let out = run_local(
        &source,
        request(&stage, &tables, 3),
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(&target)?),
    )
    .await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    let plan = plan_of(&output).await?;
    assert_eq!(plan.tables.len(), 4);
    for t in [
        r#"Odd "Schema".all_types"#,
        "sales.orders",
        "sales.items",
        "public.events",
    ] {
        assert_eq!(
            fingerprint(&target, &plan, t, false).await?,
            fingerprint(&source, &plan, t, true).await?,
            "{t}"
        );
    }
    // The report: every table, every part, reconciled; the Map ran parts side by side within its limit.
    let r = &out.report;
    assert!(r.reconciled(), "{}", r.render());
    assert_eq!(r.tables.len(), 4);
    let orders = r
        .tables
        .iter()
        .find(|t| t.table.to_string() == "sales.orders")
        .expect("orders");
    assert_eq!((orders.parts.len(), orders.rows), (3, 20_000));
    assert!(orders.skew < 1.2, "{}", orders.skew);
    assert!(
        r.peak_concurrency >= 2 && r.peak_concurrency <= 3,
        "{}",
        r.peak_concurrency
    );
    assert!(r.retried.is_empty());
    // The Map's ResultWriter wrote a manifest and the results where the planner said.
    let manifest = output["extract"]["ResultWriterDetails"]["Key"]
        .as_str()
        .expect("manifest key");
    let root = stage.strip_prefix("file://").expect("file stage");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(format!("{root}/{manifest}"))?)?;
    let results_key = m["ResultFiles"]["SUCCEEDED"][0]["Key"].as_str().expect("results file");
    let results: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(format!("{root}/{results_key}"))?)?;
    assert_eq!(results.len(), plan.tasks.len());
    assert_eq!(output["load"]["progress"]["done"], true);
    // The same report, read back from the stage alone (as for a run on AWS).
    let plan_url = output["plan"]["plan_url"].as_str().expect("plan_url");
    let (again, notes) = pgshift::report::from_stage(&UrlStages::default(), plan_url, 1024).await?;
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(again.tables, r.tables);
    assert!(again.reconciled());
    Ok(())
}

/// A stage that fails creating one file once, with a retryable error: after the same part already completed a file.
/// A stage whose first write of one key fails with a retryable error.
pub(crate) struct FlakyStages {
    pub(crate) inner: UrlStages,
    pub(crate) failed: Arc<AtomicBool>,
    pub(crate) victim: &'static str,
}

struct FlakyStage {
    inner: Arc<dyn Stage>,
    failed: Arc<AtomicBool>,
    victim: &'static str,
}

impl StageOpener for FlakyStages {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Arc<dyn Stage>, StageError>> {
        Box::pin(async move {
            Ok(Arc::new(FlakyStage {
                inner: self.inner.open(url).await?,
                failed: self.failed.clone(),
                victim: self.victim,
            }) as Arc<dyn Stage>)
        })
    }
}

impl Stage for FlakyStage {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StageError>> {
        if key.ends_with(self.victim) && !self.failed.swap(true, Ordering::SeqCst) {
            return Box::pin(async move {
                Err(StageError::Remote {
                    location: key.to_string(),
                    detail: "injected: connection reset".into(),
                    retryable: true,
                })
            });
        }
        self.inner.create(key)
    }
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StageError>> {
        self.inner.head(key)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, u64)>, StageError>> {
        self.inner.list(prefix)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bytes::Bytes, StageError>> {
        self.inner.get(key)
    }
    fn checksum<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<pgshift::stage::ObjectSum>, StageError>> {
        self.inner.checksum(key)
    }
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StageError>> {
        self.inner.delete_prefix(prefix)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extractor_that_fails_once_is_retried_and_nothing_is_duplicated() -> Result<()> {
    let source = db("retrysrc", SALES).await?;
    let target = cluster().create_db("retrywh").await?;
    let dir = stage_dir("retry");
    let stage = format!("file://{}", dir.display());
    let failed = Arc::new(AtomicBool::new(false));
    let stages = Arc::new(FlakyStages {
        inner: UrlStages::default(),
        failed: failed.clone(),
        // The second file of range 1: its first file is complete when the attempt fails.
        victim: "orders/part-00001-001.parquet",
    });
    let mut req = request(&stage, &["sales.orders"], 3);
    // Small batches and files: every range writes several files.
    req.writer.batch_bytes = 8 * 1024;
    req.writer.target_file_bytes = 16 * 1024;
    req.writer.row_group_bytes = 16 * 1024;
    // Kept, to count them on the stage after the run.
    req.load = Some(pgshift::contract::load::LoadOptions {
        keep_parts: true,
        ..Default::default()
    });
    let out = run_local(&source, req, stages, Arc::new(PgWarehouse::new(&target)?)).await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert!(failed.load(Ordering::SeqCst), "the failure was injected");
    let plan = plan_of(&output).await?;
    assert_eq!(
        fingerprint(&target, &plan, "sales.orders", false).await?,
        fingerprint(&source, &plan, "sales.orders", true).await?
    );
    let wh = connect(&target).await?;
    let row = wh
        .query_one("SELECT count(*), count(DISTINCT id) FROM sales.orders", &[])
        .await?;
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (20_000, 20_000));
    let r = &out.report;
    assert_eq!(r.retried.len(), 1, "{:?}", r.retried);
    assert_eq!(
        (r.retried[0].1, r.retried[0].2.as_str()),
        (1, "Pipeline.Retryable.Stage")
    );
    assert!(r.reconciled());
    // The retry overwrote the same names: the stage holds exactly the files the results list.
    let listed: Vec<String> = list_files(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    let recorded: usize = r.tables.iter().flat_map(|t| &t.parts).map(|p| p.files).sum();
    assert_eq!(listed.len(), recorded, "{listed:?}");
    assert!(listed.iter().filter(|f| f.contains("part-00001-")).count() >= 2);
    Ok(())
}

/// A warehouse whose load transactions fail first thing (after the staging tables were created): a real error.
fn failing_loads(url: &str) -> Result<Hooked> {
    let edit: Edit = Box::new(|steps| {
        steps.insert(
            0,
            Step::Sql("DO $$ BEGIN RAISE EXCEPTION 'injected: disk full'; END $$".into()),
        )
    });
    Ok(Hooked::new(PgWarehouse::new(url)?, edit))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_runs_cleanup_and_leaves_the_target_as_it_was() -> Result<()> {
    let source = db("failsrc", SALES).await?;
    let target = cluster().create_db("failwh").await?;
    connect(&target)
        .await?
        .batch_execute(
            "CREATE SCHEMA sales; CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, \
             note text, placed timestamptz NOT NULL); INSERT INTO sales.orders VALUES (1, 1.00, 'before', now());",
        )
        .await?;
    let dir = stage_dir("fail");
    let stage = format!("file://{}", dir.display());
    let out = run_local(
        &source,
        request(&stage, &["sales.*"], 2),
        Arc::new(UrlStages::default()),
        Arc::new(failing_loads(&target)?),
    )
    .await?;
    let failure = out.output.expect_err("the run fails");
    // The Fail state ends the execution with the error that started the cleanup.
    assert_eq!(failure.error, "Pipeline.Fatal.Warehouse");
    assert!(failure.cause.contains("disk full"), "{}", failure.cause);
    let wh = connect(&target).await?;
    let n: i64 = wh.query_one("SELECT count(*) FROM sales.orders", &[]).await?.get(0);
    assert_eq!(n, 1, "the target is as it was");
    let staging: i64 = wh
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_\\_pgshift\\_%'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(staging, 0, "cleanup dropped the staging tables");
    let status = list_files(&dir)
        .into_iter()
        .find(|f| f.ends_with("status.json"))
        .expect("the run is marked failed on the stage");
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(status))?)?;
    assert_eq!(status["status"], "FAILED");
    assert_eq!(status["error"], "Pipeline.Fatal.Warehouse");
    assert!(!out.report.reconciled());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_fails_the_map_and_the_planner_refuses_bad_input_by_name() -> Result<()> {
    let source = db(
        "badsrc",
        "CREATE TABLE t (id int8 PRIMARY KEY, at timestamp); INSERT INTO t SELECT g, '2024-01-01' FROM \
         generate_series(1, 100) g; UPDATE t SET at = 'infinity' WHERE id = 77; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("badwh").await?;
    let stage = format!("file://{}", stage_dir("bad").display());
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let out = run_local(
        &source,
        request(&stage, &["public.t"], 2),
        Arc::new(UrlStages::default()),
        wh.clone(),
    )
    .await?;
    let f = out.output.expect_err("infinity is an error by default");
    assert_eq!(f.error, "States.ExceedToleratedFailureThreshold");
    assert!(
        f.cause.contains("Pipeline.Fatal.BadValue") && f.cause.contains("public.t.at"),
        "{}",
        f.cause
    );
    let exists: bool = connect(&target)
        .await?
        .query_one("SELECT to_regclass('public.t') IS NOT NULL", &[])
        .await?
        .get(0);
    assert!(!exists, "nothing was loaded");

    // A typo in the run input: the planner names the field, the cleanup has no plan, the run fails.
    let mut req = request(&stage, &["public.t"], 2);
    req.tables.clear();
    let out = run_local(&source, req, Arc::new(UrlStages::default()), wh).await?;
    let f = out.output.expect_err("no tables");
    assert_eq!(f.error, "Pipeline.Fatal.InvalidInput");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_runs_on_an_s3_stage() -> Result<()> {
    let source = db("s3pipe", SALES).await?;
    let target = cluster().create_db("s3pipewh").await?;
    let server = pgshift_tests::s3_server();
    let bucket = server.bucket("pipeline");
    let stages = Arc::new(UrlStages::with_s3_client(
        server.client(),
        pgshift::stage::s3::S3Options::default(),
    ));
    let stage = format!("s3://{bucket}/deep/prefix");
    let out = run_local(
        &source,
        request(&stage, &["sales.*"], 2),
        stages.clone(),
        Arc::new(PgWarehouse::new(&target)?),
    )
    .await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    // The Map read its items from, and wrote its results to, the bucket and keys the planner named.
    assert_eq!(output["plan"]["task_list"]["bucket"], bucket.as_str());
    let key = output["plan"]["task_list"]["key"].as_str().expect("key");
    assert!(key.starts_with("deep/prefix/") && key.ends_with("/tasks.json"), "{key}");
    let manifest = output["extract"]["ResultWriterDetails"]["Key"]
        .as_str()
        .expect("manifest");
    assert!(manifest.starts_with("deep/prefix/"), "{manifest}");
    let root = stages.open(&format!("s3://{bucket}")).await?;
    assert!(
        root.head(manifest).await?.is_some(),
        "the Map's manifest is in the bucket"
    );
    assert!(out.report.reconciled(), "{}", out.report.render());
    // Every table equal to the source, value by value (the plan read back from the bucket).
    let plan_key = output["plan"]["plan_url"]
        .as_str()
        .and_then(|u| u.strip_prefix(&format!("s3://{bucket}/")))
        .expect("plan_url in the bucket");
    let plan: Plan = serde_json::from_slice(&root.get(plan_key).await?)?;
    for t in ["sales.orders", "sales.items"] {
        let loaded = fingerprint(&target, &plan, t, false).await?;
        assert_eq!(loaded, fingerprint(&source, &plan, t, true).await?, "{t}");
        assert!(
            loaded[0] == "rows=20000" || loaded[0] == "rows=30000",
            "{t}: {loaded:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_table_emptied_since_the_last_run_empties_its_target() -> Result<()> {
    let source = db("pipeempty", SALES).await?;
    let target = cluster().create_db("pipeemptywh").await?;
    let run = |name: &str| {
        let stage = format!("file://{}", stage_dir(name).display());
        let (source, target) = (source.clone(), target.clone());
        async move {
            run_local(
                &source,
                request(&stage, &["sales.orders"], 2),
                Arc::new(UrlStages::default()),
                Arc::new(PgWarehouse::new(&target)?),
            )
            .await
        }
    };
    let first = run("pipeempty-1").await?;
    first.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    connect(&source)
        .await?
        .batch_execute("DELETE FROM sales.orders; ANALYZE sales.orders")
        .await?;
    let second = run("pipeempty-2").await?;
    second.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    let rows: i64 = connect(&target)
        .await?
        .query_one("SELECT count(*) FROM sales.orders", &[])
        .await?
        .get(0);
    assert_eq!(rows, 0, "replace of an empty source leaves an empty target");
    assert!(second.report.reconciled(), "{}", second.report.render());
    assert_eq!(second.report.tables[0].parquet_bytes, 0, "no part was written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_of_a_running_run_ends_at_once_and_touches_nothing() -> Result<()> {
    let source = db("pipedup", SALES).await?;
    let target = cluster().create_db("pipedupwh").await?;
    let stage_path = stage_dir("pipeline-dup");
    let stage = format!("file://{}", stage_path.display());
    let mut req = request(&stage, &["sales.orders"], 2);
    req.run_id = Some("snap-nightly-1".into());
    req.load = Some(pgshift::contract::load::LoadOptions {
        mode: pgshift::contract::load::LoadMode::Replace,
        ..Default::default()
    });
    // One run of the definition: its output.
    let run = |req: PlanRequest| {
        let (source, target) = (source.clone(), target.clone());
        async move {
            let out = run_local(
                &source,
                req,
                Arc::new(UrlStages::default()),
                Arc::new(PgWarehouse::new(&target)?),
            )
            .await?;
            out.output.map_err(|f| anyhow::anyhow!("{f}"))
        }
    };
    // Another execution took the run id and is still running (no status.json, no finished load.json).
    let run_dir = stage_path.join("snap-nightly-1");
    std::fs::create_dir_all(&run_dir)?;
    let lock = serde_json::json!({"execution": "arn:aws:states:local:000000000000:execution:pgshift:first", "taken_at": "2026-12-03T00:00:00Z"});
    std::fs::write(run_dir.join("lock.json"), lock.to_string())?;
    let output = run(req.clone()).await?;
    assert_eq!(
        output["trigger"]["duplicate_of"]["execution"], lock["execution"],
        "{output:#}"
    );
    assert!(output.get("plan").is_none(), "nothing planned");
    assert!(!run_dir.join("plan.json").exists(), "nothing written under the run");
    let tables: i64 = connect(&target)
        .await?
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'sales'", &[])
        .await?
        .get(0);
    assert_eq!(tables, 0, "the warehouse is untouched");
    // Once the holder ended, the run id passes on: this execution runs and loads.
    std::fs::write(
        run_dir.join("status.json"),
        r#"{"error": "States.Timeout", "cause": "killed"}"#,
    )?;
    let output = run(req.clone()).await?;
    assert!(
        output["trigger"].get("duplicate_of").is_none() && output["plan"].is_object(),
        "{output:#}"
    );
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("lock.json"))?)?;
    assert!(
        lock["execution"].as_str().is_some_and(|e| e.ends_with(":test")),
        "{lock}"
    );
    // The same execution again (a retried Trigger state, a redrive) holds its lock already.
    req.run_id = Some("snap-nightly-2".into());
    let run_dir = stage_path.join("snap-nightly-2");
    std::fs::create_dir_all(&run_dir)?;
    let mine = serde_json::json!({"execution": "arn:aws:states:local:000000000000:execution:pgshift:test", "taken_at": "2026-12-03T00:00:00Z"});
    std::fs::write(run_dir.join("lock.json"), mine.to_string())?;
    let output = run(req).await?;
    assert!(
        output["trigger"].get("duplicate_of").is_none() && output["plan"].is_object(),
        "{output:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_sharing_a_long_name_prefix_get_staging_tables_of_their_own() -> Result<()> {
    // 45-character names equal in their first 40: their staging tables used to be one and the same.
    let (a, b) = (
        "customer_lifetime_value_snapshots_by_region_a",
        "customer_lifetime_value_snapshots_by_region_b",
    );
    let source = db(
        "pipeprefix",
        &format!(
            "CREATE SCHEMA s; CREATE TABLE s.{a} (id int8 PRIMARY KEY, v text);
             CREATE TABLE s.{b} (id int8 PRIMARY KEY, w int4, v text);
             INSERT INTO s.{a} SELECT g, 'a' || g FROM generate_series(1, 2000) g;
             INSERT INTO s.{b} SELECT g, g, 'b' || g FROM generate_series(1, 3000) g; ANALYZE;"
        ),
    )
    .await?;
    let target = cluster().create_db("pipeprefixwh").await?;
    let stage = format!("file://{}", stage_dir("pipeprefix").display());
    let out = run_local(
        &source,
        request(&stage, &["s.*"], 2),
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(&target)?),
    )
    .await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert!(out.report.reconciled(), "{}", out.report.render());
    let plan = plan_of(&output).await?;
    for t in [a, b] {
        let table = format!("s.{t}");
        assert_eq!(
            fingerprint(&target, &plan, &table, false).await?,
            fingerprint(&source, &plan, &table, true).await?,
            "{table}"
        );
    }
    let left: i64 = connect(&target)
        .await?
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%pgshift%'", &[])
        .await?
        .get(0);
    assert_eq!(left, 0, "no staging table left");
    Ok(())
}
