//! Never load wrong data: each path that once ended with exit 0, "reconciliation ✓" and a wrong warehouse, reproduced.
//! Every test asserts what the warehouse holds (row count and a per-column fingerprint), not only an outcome.

use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use pgshift::contract::load::{Atomicity, LoadMode, LoadOptions, LoadRequest, SchemaEvolution, TableStatus};
use pgshift::contract::plan::{Plan, PlanRequest, Strategy};
use pgshift::load::{LoadContext, LoadError};
use pgshift::plan::{PlanContext, PlanError};
use pgshift::source::PgConnector;
use pgshift::stage::s3::S3Options;
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::{Step, Warehouse};
use pgshift::UrlStages;
use pgshift_tests::{cluster, connect, s3_server, stage_dir};

use super::db;
use super::hooked::{is_sql, Edit, Hooked};
use super::load::{fingerprint, plan_and_extract, plan_url, SALES};
use super::pipeline::{plan_of, request, run_local};

/// A table without a key.
const HEAP2: &str = "
CREATE TABLE public.heap2 (v int8, pad text);
INSERT INTO public.heap2 SELECT g, repeat('p', 20 + g % 7) FROM generate_series(1, 30000) g;
ANALYZE;";

async fn count(url: &str, table: &str) -> Result<i64> {
    Ok(connect(url)
        .await?
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0))
}

async fn exists(url: &str, table: &str) -> Result<bool> {
    Ok(connect(url)
        .await?
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0))
}

fn planner(source: &str, stages: Arc<UrlStages>) -> Result<PlanContext> {
    Ok(PlanContext {
        source: Arc::new(PgConnector::new(source)?),
        stages,
    })
}

async fn extract_all(source: &str, plan: &Plan, only: Option<u32>) -> Result<()> {
    let ectx = pgshift::ExtractContext {
        source: Arc::new(PgConnector::new(source)?),
        stages: Arc::new(UrlStages::default()),
    };
    for t in plan.tasks.iter().filter(|t| only.is_none_or(|i| t.range_index == i)) {
        pgshift::extract(&ectx, t.clone()).await?;
    }
    Ok(())
}

async fn load_with(
    wh: Arc<dyn Warehouse>,
    stages: Arc<UrlStages>,
    plan: &Plan,
    evolution: SchemaEvolution,
) -> Result<pgshift::contract::load::LoadResult, LoadError> {
    let ctx = LoadContext::new(stages, wh);
    let req = LoadRequest {
        plan_url: plan_url(plan),
        options: LoadOptions {
            schema_evolution: evolution,
            ..LoadOptions::default()
        },
        ..LoadRequest::default()
    };
    pgshift::load::load(&ctx, req).await
}

/// A warehouse whose replace swaps hold the window between their first change of the target (the DELETE, or the
/// DROP of a swap by rename) and their commit open, and whose two load transactions start together: what two runs of
/// a large table look like.
pub(crate) fn overlapping(url: &str) -> Result<Hooked> {
    let edit: Edit = Box::new(|steps| {
        if let Some(i) = steps.iter().position(|s| is_sql(s, "LOCK TABLE", "")) {
            steps.insert(i + 2, Step::Sql("SELECT pg_sleep(0.5)".into()));
        }
    });
    let mut wh = Hooked::new(PgWarehouse::new(url)?, edit);
    wh.together = Some(tokio::sync::Barrier::new(2));
    Ok(wh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_replace_runs_of_a_keyless_table_leave_it_once() -> Result<()> {
    let source = db("twosrc", HEAP2).await?;
    let target = cluster().create_db("twowh").await?;
    let stage = format!("file://{}", stage_dir("two").display());
    // One warehouse port for both runs, so their load transactions meet; an empty warehouse, so both create the
    // target at once too.
    let wh: Arc<dyn Warehouse> = Arc::new(overlapping(&target)?);
    let run = |id: &str| {
        let mut req = request(&stage, &["public.heap2"], 2);
        req.run_id = Some(id.to_string());
        run_local(&source, req, Arc::new(UrlStages::default()), wh.clone())
    };
    let (a, b) = tokio::join!(run("a"), run("b"));
    let (a, b) = (a?, b?);
    let plan = plan_of(a.output.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?).await?;
    b.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    // Each replace saw the other's rows: the table holds the source once.
    assert_eq!(count(&target, "public.heap2").await?, 30_000);
    assert_eq!(
        fingerprint(&target, &plan, "public.heap2", false).await?,
        fingerprint(&source, &plan, "public.heap2", true).await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_run_id_is_refused_and_the_report_claims_nothing_it_did_not_load() -> Result<()> {
    let source = db("samesrc", SALES).await?;
    let target = cluster().create_db("samewh").await?;
    let stage = format!("file://{}", stage_dir("same").display());
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let mut req = request(&stage, &["sales.orders"], 3);
    req.run_id = Some("same1".into());

    // Planned, then interrupted before the load: the same request goes on with the same plan.
    let (planned, _) = pgshift::plan::handle(&planner(&source, Arc::new(UrlStages::default()))?, req.clone()).await?;
    let first = run_local(&source, req.clone(), Arc::new(UrlStages::default()), wh.clone()).await?;
    let plan = plan_of(first.output.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?).await?;
    assert_eq!(plan.plan_id, planned.plan_id, "the interrupted run kept its plan");
    assert!(first.report.reconciled(), "{}", first.report.render());
    let loaded = fingerprint(&target, &plan, "sales.orders", false).await?;
    assert_eq!(loaded, fingerprint(&source, &plan, "sales.orders", true).await?);

    // The source changes; the same command again is refused by name, and nothing is claimed.
    connect(&source)
        .await?
        .batch_execute("DELETE FROM sales.orders WHERE id <= 1000")
        .await?;
    let again = run_local(&source, req.clone(), Arc::new(UrlStages::default()), wh.clone()).await?;
    let failure = again.output.as_ref().expect_err("a loaded run id is refused");
    assert_eq!(failure.error, "Pipeline.Fatal.RunExists");
    assert!(
        failure.cause.contains("--restart") && failure.cause.contains("same1"),
        "{}",
        failure.cause
    );
    let text = again.report.render();
    assert!(!again.report.reconciled() && !text.contains('✓'), "{text}");
    assert!(text.contains("no table of this run was committed"), "{text}");
    assert_eq!(fingerprint(&target, &plan, "sales.orders", false).await?, loaded);
    assert_eq!(count(&target, "sales.orders").await?, 20_000);

    // --restart extracts and loads it again, for real.
    req.restart = true;
    let restarted = run_local(&source, req, Arc::new(UrlStages::default()), wh).await?;
    let plan2 = plan_of(restarted.output.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?).await?;
    assert_ne!(plan2.plan_id, plan.plan_id);
    assert!(restarted.report.reconciled(), "{}", restarted.report.render());
    assert_eq!(count(&target, "sales.orders").await?, 19_000);
    assert_eq!(
        fingerprint(&target, &plan2, "sales.orders", false).await?,
        fingerprint(&source, &plan2, "sales.orders", true).await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_an_earlier_plan_of_the_run_id_are_never_loaded() -> Result<()> {
    let source = db("stlsrc", SALES).await?;
    let target = cluster().create_db("stlwh").await?;
    let dir = stage_dir("stl");
    let stage = format!("file://{}", dir.display());
    let stages = Arc::new(UrlStages::default());
    let pctx = planner(&source, stages.clone())?;
    let mut req = request(&stage, &["sales.orders"], 4);
    req.run_id = Some("stl".into());
    let (four, _) = pgshift::plan::handle(&pctx, req.clone()).await?;
    extract_all(&source, &four, None).await?;

    // Planning the run id again with other settings is refused by name.
    let mut two = request(&stage, &["sales.orders"], 2);
    two.run_id = Some("stl".into());
    let e = pgshift::plan::handle(&pctx, two.clone())
        .await
        .expect_err("replanning is refused");
    assert!(matches!(e, PlanError::RunExists { .. }), "{e}");
    assert_eq!(e.name(), "Pipeline.Fatal.RunExists");

    // Restarted with 2 parts; only range 0 extracted; range 1 of the old plan put back beside it.
    let run_dir = dir.join("stl/sales/orders");
    let old: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&run_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-00001"))
        })
        .map(|p| std::fs::read(&p).map(|b| (p, b)))
        .collect::<Result<_, _>>()?;
    assert!(old.len() >= 2, "a result and its file");
    two.restart = true;
    let (plan, _) = pgshift::plan::handle(&pctx, two).await?;
    assert!(
        !run_dir.join("part-00001.result.json").exists(),
        "restart cleared the run"
    );
    extract_all(&source, &plan, Some(0)).await?;
    for (p, b) in &old {
        std::fs::write(p, b)?;
    }
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let e = load_with(wh, stages, &plan, SchemaEvolution::Refuse)
        .await
        .expect_err("a result of another plan");
    assert_eq!(e.name(), "Pipeline.Fatal.PlanMismatch", "{e}");
    assert!(
        e.to_string().contains("range 1") && e.to_string().contains(&four.plan_id),
        "{e}"
    );
    assert!(!exists(&target, "sales.orders").await?, "nothing reached the warehouse");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_corrupted_without_changing_its_size_loads_nothing() -> Result<()> {
    let source = db("crcsrc", SALES).await?;
    let target = cluster().create_db("crcwh").await?;
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);

    // A local stage: 400 bytes zeroed in the middle of a part.
    let stage = format!("file://{}", stage_dir("crc").display());
    let stages = Arc::new(UrlStages::default());
    let plan = plan_and_extract(&source, &["sales.orders"], &stage, stages.clone()).await?;
    let file = stage_file(&plan, 1, &stages).await?;
    let path = file.strip_prefix("file://").expect("a file stage");
    let mut bytes = std::fs::read(path)?;
    let mid = bytes.len() / 2;
    bytes[mid - 200..mid + 200].fill(0);
    std::fs::write(path, &bytes)?;
    let e = load_with(wh.clone(), stages, &plan, SchemaEvolution::Refuse)
        .await
        .expect_err("a corrupt part");
    assert_eq!(e.name(), "Pipeline.Fatal.PartCorrupt", "{e}");
    assert!(e.to_string().contains(&file) && e.to_string().contains("CRC32"), "{e}");
    assert!(!exists(&target, "sales.orders").await?, "nothing reached the warehouse");

    // An S3 stage: the object replaced by one of the same size, then checked without a download.
    let server = s3_server();
    let bucket = server.bucket("crc");
    let s3 = Arc::new(UrlStages::with_s3_client(server.client(), S3Options::default()));
    let plan = plan_and_extract(&source, &["sales.orders"], &format!("s3://{bucket}/stage"), s3.clone()).await?;
    let file = stage_file(&plan, 0, &s3).await?;
    let key = file
        .strip_prefix(&format!("s3://{bucket}/"))
        .expect("an object of the bucket");
    let client = server.client();
    let body = client
        .get_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await?
        .body
        .collect()
        .await?;
    let mut bytes = body.into_bytes().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid - 200..mid + 200].fill(0);
    client
        .put_object()
        .bucket(&bucket)
        .key(key)
        .body(Bytes::from(bytes).into())
        .send()
        .await?;
    let e = load_with(wh, s3, &plan, SchemaEvolution::Refuse)
        .await
        .expect_err("a corrupt object");
    assert_eq!(e.name(), "Pipeline.Fatal.PartCorrupt", "{e}");
    assert!(e.to_string().contains(&file), "{e}");
    assert!(!exists(&target, "sales.orders").await?, "nothing reached the warehouse");
    Ok(())
}

/// The first file of range `range`, as its result on the stage names it.
async fn stage_file(plan: &Plan, range: u32, stages: &UrlStages) -> Result<String> {
    let task = plan.tasks.iter().find(|t| t.range_index == range).expect("range");
    let stage = pgshift::stage::StageOpener::open(stages, &plan.stage).await?;
    let b = stage.get(&pgshift::contract::layout::result_key(task)).await?;
    let r: pgshift::ExtractResult = serde_json::from_slice(&b)?;
    Ok(r.files[0].url.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_with_a_task_removed_loads_nothing() -> Result<()> {
    let source = db("cutsrc", SALES).await?;
    let target = cluster().create_db("cutwh").await?;
    let stage = format!("file://{}", stage_dir("cut").display());
    let stages = Arc::new(UrlStages::default());
    let plan = plan_and_extract(&source, &["sales.orders"], &stage, stages.clone()).await?;
    let path = format!("{}/{}/plan.json", stage.trim_start_matches("file://"), plan.run_id);
    let mut edited: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    edited["tasks"].as_array_mut().expect("tasks").remove(1);
    std::fs::write(&path, serde_json::to_vec_pretty(&edited)?)?;
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let e = load_with(wh.clone(), stages.clone(), &plan, SchemaEvolution::Refuse)
        .await
        .expect_err("a plan with a gap");
    assert_eq!(e.name(), "Pipeline.Fatal.PlanMismatch", "{e}");
    let text = e.to_string();
    assert!(text.contains("changed after planning"), "{text}");
    assert!(text.contains("range 2 where range 1 belongs"), "{text}");
    assert!(!exists(&target, "sales.orders").await?, "nothing reached the warehouse");

    // Put back as planned, it loads whole.
    std::fs::write(&path, serde_json::to_vec_pretty(&plan)?)?;
    load_with(wh, stages, &plan, SchemaEvolution::Refuse).await?;
    assert_eq!(
        fingerprint(&target, &plan, "sales.orders", false).await?,
        fingerprint(&source, &plan, "sales.orders", true).await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_type_drift_is_never_cast_into_the_target() -> Result<()> {
    let source = db(
        "driftsrc",
        "CREATE TABLE public.d (id int8 PRIMARY KEY, amount integer NOT NULL, note text);
         INSERT INTO public.d SELECT g, g, 'n' || g FROM generate_series(1, 1000) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("driftwh").await?;
    let stage = format!("file://{}", stage_dir("drift").display());
    let stages = Arc::new(UrlStages::default());
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let src = connect(&source).await?;
    let run = || plan_and_extract(&source, &["public.d"], &stage, stages.clone());
    let first = run().await?;
    load_with(wh.clone(), stages.clone(), &first, SchemaEvolution::Refuse).await?;
    let loaded = fingerprint(&target, &first, "public.d", false).await?;

    // integer → numeric(20,3): refused by column, the target untouched; widened on request, 1.235 kept.
    src.batch_execute(
        "ALTER TABLE d ALTER COLUMN amount TYPE numeric(20,3); UPDATE d SET amount = amount + 0.235; ANALYZE d;",
    )
    .await?;
    let widened = run().await?;
    let e = load_with(wh.clone(), stages.clone(), &widened, SchemaEvolution::Refuse)
        .await
        .expect_err("drift");
    assert_eq!(e.name(), "Pipeline.Fatal.SchemaDrift", "{e}");
    assert!(
        e.to_string().contains("public.d.amount") && e.to_string().contains("numeric(20,3)"),
        "{e}"
    );
    assert_eq!(fingerprint(&target, &first, "public.d", false).await?, loaded);
    load_with(wh.clone(), stages.clone(), &widened, SchemaEvolution::AddAndWiden).await?;
    assert_eq!(
        fingerprint(&target, &widened, "public.d", false).await?,
        fingerprint(&source, &widened, "public.d", true).await?
    );
    let one: String = connect(&target)
        .await?
        .query_one("SELECT amount::text FROM d WHERE id = 1", &[])
        .await?
        .get(0);
    assert_eq!(one, "1.235");

    // An added column: refused by default, added on request.
    src.batch_execute("ALTER TABLE d ADD COLUMN extra text DEFAULT 'x'; ANALYZE d;")
        .await?;
    let added = run().await?;
    let e = load_with(wh.clone(), stages.clone(), &added, SchemaEvolution::Refuse)
        .await
        .expect_err("added column");
    assert!(
        e.to_string().contains("public.d.extra") && e.to_string().contains("--schema-evolution"),
        "{e}"
    );
    load_with(wh.clone(), stages.clone(), &added, SchemaEvolution::AddAndWiden).await?;
    assert_eq!(
        fingerprint(&target, &added, "public.d", false).await?,
        fingerprint(&source, &added, "public.d", true).await?
    );

    // A dropped column: never NULL-filled, whatever the setting.
    src.batch_execute("ALTER TABLE d DROP COLUMN note; ANALYZE d;").await?;
    let dropped = run().await?;
    let before = fingerprint(&target, &added, "public.d", false).await?;
    let e = load_with(wh, stages, &dropped, SchemaEvolution::AddAndWiden)
        .await
        .expect_err("dropped column");
    assert!(
        e.to_string().contains("public.d.note") && e.to_string().contains("no longer"),
        "{e}"
    );
    assert_eq!(fingerprint(&target, &added, "public.d", false).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_tables_on_a_live_source_are_read_in_one_snapshot() -> Result<()> {
    let source = db(
        "livesrc",
        "CREATE TABLE public.h (id int8 NOT NULL, v int8, pad text);
         INSERT INTO public.h SELECT g, 0, repeat('x', 60) FROM generate_series(1, 50000) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("livewh").await?;
    let stage = format!("file://{}", stage_dir("live").display());
    let pctx = planner(&source, Arc::new(UrlStages::default()))?;
    let (plan, _) = pgshift::plan::handle(&pctx, request(&stage, &["public.h"], 4)).await?;
    let t = &plan.tables[0];
    assert_eq!((plan.tasks.len(), &t.strategy), (1, &Strategy::Single), "{}", t.reason);
    assert!(t.reason.contains("live source"), "{}", t.reason);
    assert!(
        plan.notes.iter().any(|n| n.starts_with("consistency: live source")),
        "{:?}",
        plan.notes
    );
    let mut quiet = request(&stage, &["public.h"], 4);
    quiet.settings.static_source = true;
    let (plan, _) = pgshift::plan::handle(&pctx, quiet).await?;
    assert!(matches!(plan.tables[0].strategy, Strategy::CtidPages { .. }));
    assert_eq!(plan.tasks.len(), 4);

    // A run while every row is being updated (each UPDATE moves 2,500 rows to other pages): every row once, and
    // every UPDATE either wholly in or wholly out of what was read.
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, done, source) = (stop.clone(), done.clone(), source.clone());
        tokio::spawn(async move {
            let c = connect(&source).await?;
            for k in 0..100_000u32 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                c.execute("UPDATE h SET v = v + 1 WHERE id % 20 = $1", &[&i64::from(k % 20)])
                    .await?;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            anyhow::Ok(())
        })
    };
    while done.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before = done.load(std::sync::atomic::Ordering::SeqCst);
    let out = run_local(
        &source,
        request(&stage, &["public.h"], 4),
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(&target)?),
    )
    .await?;
    let after = done.load(std::sync::atomic::Ordering::SeqCst);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await??;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    let wh = connect(&target).await?;
    let row = wh
        .query_one("SELECT count(*), count(DISTINCT id), sum(v)::int8 FROM h", &[])
        .await?;
    let (n, distinct, sum) = (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2));
    assert_eq!((n, distinct), (50_000, 50_000));
    // Each committed UPDATE adds 2,500 to sum(v): one snapshot holds a whole number of them, and the writer ran on
    // both sides of it (more UPDATEs were read than had committed when the run started, fewer than when it ended).
    assert_eq!(sum % 2_500, 0, "a torn read: sum(v) = {sum}");
    let read = (sum / 2_500) as u64;
    assert!(
        before < read && read < after,
        "the writer ran during the run: {before} UPDATEs before it, {read} read, {after} when it ended"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_zero_is_refused_before_anything_runs() -> Result<()> {
    let source = db("zerosrc", SALES).await?;
    let stage = format!("file://{}", stage_dir("zero").display());
    let mut req: PlanRequest = request(&stage, &["sales.orders"], 2);
    req.settings.max_concurrency = 0;
    let e = pgshift::plan::handle(&planner(&source, Arc::new(UrlStages::default()))?, req)
        .await
        .expect_err("0 is refused");
    assert_eq!(e.name(), "Pipeline.Fatal.InvalidInput");
    assert!(e.to_string().contains("--concurrency"), "{e}");
    Ok(())
}

/// A warehouse whose load transaction of the table named `table` fails after its swap ran (others may commit).
fn fail_one(url: &str, table: &'static str) -> Result<Hooked> {
    let edit: Edit = Box::new(move |steps| {
        if steps.iter().any(|s| is_sql(s, "LOCK TABLE", table)) {
            steps.push(Step::Sql("SELECT 1 / 0".into()));
        }
    });
    Ok(Hooked::new(PgWarehouse::new(url)?, edit))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_reports_exactly_what_the_warehouse_committed() -> Result<()> {
    let source = db("partsrc", SALES).await?;
    let target = cluster().create_db("partwh").await?;
    let dir = stage_dir("part");
    let stage = format!("file://{}", dir.display());
    let mut req = request(&stage, &["sales.*"], 2);
    req.load = Some(LoadOptions {
        mode: LoadMode::Replace,
        atomic: Atomicity::Table,
        ..Default::default()
    });
    let out = run_local(
        &source,
        req,
        Arc::new(UrlStages::default()),
        Arc::new(fail_one(&target, "\"items\"")?),
    )
    .await?;
    let failure = out.output.as_ref().expect_err("items fails");
    assert_eq!(failure.error, "Pipeline.Fatal.Warehouse");
    // orders committed in its own transaction; items rolled back, and the empty target its set-up created dropped
    // again by Cleanup: the warehouse holds what it held.
    let plan: Plan = {
        let f = pgshift_tests::list_files(&dir)
            .into_iter()
            .find(|f| f.ends_with("plan.json"))
            .expect("plan");
        serde_json::from_slice(&std::fs::read(dir.join(f))?)?
    };
    assert_eq!(
        fingerprint(&target, &plan, "sales.orders", false).await?,
        fingerprint(&source, &plan, "sales.orders", true).await?
    );
    let items: bool = connect(&target)
        .await?
        .query_one("SELECT pg_catalog.to_regclass('sales.items') IS NOT NULL", &[])
        .await?
        .get(0);
    assert!(!items, "sales.items, created by the failed load, is gone");
    // The report and status.json say so, table by table.
    let text = out.report.render();
    assert!(text.contains("committed before the failure: 1 of 2 tables"), "{text}");
    assert!(
        text.contains("sales.orders: 20,000 rows") && !text.contains('✓'),
        "{text}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{}/status.json", plan.run_id)))?)?;
    let of = |t: &str| {
        status["tables"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["table"]["name"] == t).cloned())
            .unwrap_or_default()
    };
    assert_eq!(of("orders")["status"], serde_json::json!(TableStatus::Committed));
    assert_eq!(of("orders")["committed_rows"], 20_000);
    assert_eq!(of("items")["status"], serde_json::json!(TableStatus::Failed));
    assert!(of("items")["error"]
        .as_str()
        .is_some_and(|e| e.contains("division by zero")));
    // Cleanup reports dropping only what was there: items' staging table (orders' went with its commit).
    let cleanup = out.cleanup.expect("cleanup ran");
    assert_eq!(cleanup.dropped.len(), 1, "{:?}", cleanup.dropped);
    assert!(cleanup.dropped[0].contains("items__pgshift_"), "{:?}", cleanup.dropped);

    // A run that fails before anything is planned prints no reconciliation at all.
    let none = run_local(
        &source,
        request(&stage, &["public.nope"], 2),
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(&target)?),
    )
    .await?;
    let text = none.report.render();
    assert!(
        text.contains("run FAILED [Pipeline.Fatal.NotFound]") && !text.contains('✓'),
        "{text}"
    );
    assert!(!text.contains("0 of 0"), "{text}");
    Ok(())
}
