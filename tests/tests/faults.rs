//! The fault matrix: a run broken at a named point, then resumed with the same run id (`pgshift run --run-id`), and
//! what the warehouse holds afterwards checked against the source: every table equal by fingerprint, no duplicate
//! key, no staging table and no registry row left, no object left half-written on the stage, and a report that says
//! what was committed. Faults are injected at the ports (a stage whose writes fail at a key, a warehouse whose
//! transactions fail at a statement), so each is a real failure of a real PostgreSQL transaction or a real file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use futures_util::future::BoxFuture;
use pgshift::contract::load::{Atomicity, LoadOptions};
use pgshift::contract::plan::PlanRequest;
use pgshift::entry::local::{RunOutcome, DEFINITION};
use pgshift::stage::{StageError, StageOpener};
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::{Batch, Cell, Dialect, Step, Submission, Warehouse, WarehouseError};
use pgshift::UrlStages;
use pgshift_tests::hooked::{Gate, HookedStages, Op, Verdict};
use pgshift_tests::{cluster, connect, list_files, stage_dir, staging_tables};

use super::load::{fingerprint, SALES};
use super::pipeline::{plan_of, request, run_definition};

/// Where a fault strikes.
#[derive(Clone, Copy, Debug)]
enum At {
    /// Creating a stage object whose key contains the text fails (a full disk: fatal).
    Create(&'static str),
    /// The object whose key contains the text lands, but its writer reports a failure (a lost response).
    Landed(&'static str),
    /// Reading back (checksum) an object whose key contains the text fails.
    Checksum(&'static str),
    /// A transaction fails right before its first statement that starts with the text (and contains the second).
    Before(&'static str, &'static str),
    /// A transaction fails right after its first statement that starts with the text (and contains the second).
    After(&'static str, &'static str),
    /// A transaction whose first statement starts with the text (and contains the second) fails: Cleanup's and
    /// garbage collection's drops of a staging table, not the set-up's.
    First(&'static str, &'static str),
    /// A transaction fails right after its staging COPY for the table.
    AfterCopy(&'static str),
    /// A transaction fails right before its row-count check.
    BeforeReconcile,
    /// Queries of the warehouse fail as a cut connection does (retryable), while armed.
    QueryCut,
}

/// One point of the matrix.
struct Fault {
    name: &'static str,
    at: Vec<At>,
    atomic: Atomicity,
    /// Whether the faulted run must fail (a fault in a best-effort step does not).
    fails: bool,
}

fn fault(name: &'static str, at: At) -> Fault {
    Fault {
        name,
        at: vec![at],
        atomic: Atomicity::Table,
        fails: true,
    }
}

/// Faults armed until the run ends; how many times each of a point's faults struck (by its index in `at`).
#[derive(Default)]
struct Switch {
    armed: AtomicBool,
    struck: std::sync::Mutex<std::collections::BTreeMap<usize, usize>>,
}

impl Switch {
    /// Whether fault `i` strikes now (armed); counted if so.
    fn hits(&self, i: usize) -> bool {
        let on = self.armed.load(Ordering::SeqCst);
        if on {
            *self.struck.lock().expect("lock").entry(i).or_default() += 1;
        }
        on
    }

    /// The faults of `at` that never struck.
    fn missed(&self, at: &[At]) -> Vec<At> {
        let struck = self.struck.lock().expect("lock");
        (0..at.len())
            .filter(|i| !struck.contains_key(i))
            .map(|i| at[i])
            .collect()
    }
}

fn disk_full(key: &str) -> StageError {
    StageError::Io {
        location: format!("injected at {key}"),
        source: std::io::Error::from(std::io::ErrorKind::StorageFull),
    }
}

/// A stage whose requests meet the faults `at` while the switch is armed (pgshift_tests::hooked).
fn fault_stages(at: Vec<At>, switch: Arc<Switch>) -> Arc<HookedStages> {
    let gate: Gate = Arc::new(move |op| {
        let hit = |pick: fn(&At) -> Option<&'static str>, key: &str| {
            at.iter()
                .enumerate()
                .any(|(i, a)| pick(a).is_some_and(|k| key.contains(k)) && switch.hits(i))
        };
        match op {
            Op::Create(key) if hit(|a| if let At::Create(k) = a { Some(k) } else { None }, key) => {
                Verdict::Fail(disk_full(key))
            }
            Op::Create(key) if hit(|a| if let At::Landed(k) = a { Some(k) } else { None }, key) => {
                Verdict::LoseResponse
            }
            Op::Checksum(key) if hit(|a| if let At::Checksum(k) = a { Some(k) } else { None }, key) => {
                Verdict::Fail(disk_full(key))
            }
            _ => Verdict::Pass,
        }
    });
    Arc::new(HookedStages {
        inner: Arc::new(UrlStages::default()),
        gate,
    })
}

struct FaultWarehouse {
    inner: PgWarehouse,
    at: Vec<At>,
    switch: Arc<Switch>,
}

const RAISE: &str = "DO $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$";

fn sql_is(step: &Step<'_>, prefix: &str, part: &str) -> bool {
    matches!(step, Step::Sql(q) if q.starts_with(prefix) && q.contains(part))
}

impl FaultWarehouse {
    /// Where in this transaction a fault goes (its index in `at`, and the step it goes before), if one is set for it.
    fn position(&self, steps: &[Step<'_>]) -> Option<(usize, usize)> {
        for (i, a) in self.at.iter().enumerate() {
            let at = match *a {
                At::Before(p, part) => steps.iter().position(|s| sql_is(s, p, part)),
                At::After(p, part) => steps.iter().position(|s| sql_is(s, p, part)).map(|i| i + 1),
                At::AfterCopy(table) => steps
                    .iter()
                    .position(|s| matches!(s, Step::Copy(c) if c.staging.name.starts_with(&format!("{table}__"))))
                    .map(|i| i + 1),
                At::BeforeReconcile => steps.iter().position(|s| matches!(s, Step::Reconcile { .. })),
                At::First(p, part) => steps.first().filter(|s| sql_is(s, p, part)).map(|_| 0),
                _ => None,
            };
            if let Some(at) = at {
                return Some((i, at));
            }
        }
        None
    }
}

impl Warehouse for FaultWarehouse {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn reach(&self) -> BoxFuture<'_, Result<(), WarehouseError>> {
        self.inner.reach()
    }
    fn query(&self, sql: String) -> BoxFuture<'_, Result<Vec<Vec<Cell>>, WarehouseError>> {
        Box::pin(async move {
            let cut = self.at.iter().position(|a| matches!(a, At::QueryCut));
            if cut.is_some_and(|i| self.switch.hits(i)) {
                return Err(WarehouseError::Sql {
                    detail: "injected: connection reset by peer".into(),
                    retryable: true,
                });
            }
            self.inner.query(sql).await
        })
    }
    fn submit<'a>(&'a self, mut batch: Batch<'a>) -> BoxFuture<'a, Result<Submission, WarehouseError>> {
        if let Some((fault, i)) = self.position(&batch.steps) {
            if self.switch.hits(fault) {
                batch.steps.insert(i, Step::Sql(RAISE.into()));
            }
        }
        self.inner.submit(batch)
    }
}

/// The definition with its retry intervals cut to a hundredth of a second: a retried fault costs no wall time.
fn quick_definition() -> String {
    DEFINITION
        .replace("\"IntervalSeconds\": 10", "\"IntervalSeconds\": 0.01")
        .replace("\"IntervalSeconds\": 2", "\"IntervalSeconds\": 0.01")
        .replace("\"IntervalSeconds\": 5", "\"IntervalSeconds\": 0.01")
}

async fn run_once(
    source: &str,
    request: PlanRequest,
    stages: Arc<dyn StageOpener>,
    warehouse: Arc<dyn Warehouse>,
    execution: &str,
) -> Result<RunOutcome> {
    run_definition(quick_definition(), source, request, (stages, warehouse), execution).await
}

const TABLES: [&str; 2] = ["sales.orders", "sales.items"];

/// Runs a fault's point: the run broken there, then resumed; everything the matrix asserts, checked.
async fn prove(source: &str, f: &Fault) -> Result<()> {
    let tag = f.name.replace(|c: char| !c.is_ascii_alphanumeric(), "");
    // A fault strikes keys containing its fragment: the run's own directory must not contain one.
    let fragments: Vec<&str> =
        f.at.iter()
            .filter_map(|a| match a {
                At::Create(k) | At::Landed(k) | At::Checksum(k) => Some(*k),
                _ => None,
            })
            .collect();
    assert!(
        !fragments.iter().any(|k| format!("fault-{tag}").contains(k)),
        "{}: the run id matches its fault",
        f.name
    );
    let target = cluster().create_db(&format!("f{}", &tag[..tag.len().min(20)])).await?;
    let dir = stage_dir(&format!("fault-{tag}"));
    let stage = format!("file://{}", dir.display());
    let mut req = request(&stage, &["sales.*"], 3);
    req.run_id = Some(format!("fault-{tag}"));
    // Small files: ranges write several files, so a fault can strike between them.
    req.writer.batch_bytes = 8 * 1024;
    req.writer.target_file_bytes = 16 * 1024;
    req.writer.row_group_bytes = 16 * 1024;
    req.load = Some(LoadOptions {
        atomic: f.atomic,
        ..LoadOptions::default()
    });
    let switch = Arc::new(Switch::default());
    switch.armed.store(true, Ordering::SeqCst);
    let stages = fault_stages(f.at.clone(), switch.clone());
    let wh = Arc::new(FaultWarehouse {
        inner: PgWarehouse::new(&target)?,
        at: f.at.clone(),
        switch: switch.clone(),
    });
    let first = run_once(source, req.clone(), stages.clone(), wh.clone(), "run-fault").await?;
    let missed = switch.missed(&f.at);
    anyhow::ensure!(missed.is_empty(), "these faults never struck: {missed:?}");
    anyhow::ensure!(
        first.output.is_err() == f.fails,
        "the faulted run: {:?}",
        first.output.as_ref().err()
    );
    if let Err(failure) = &first.output {
        anyhow::ensure!(
            failure.error.starts_with("Pipeline.") || failure.error.starts_with("States."),
            "{failure:?}"
        );
        // The failed run's report says what the warehouse holds: nothing it did not commit.
        let committed: u64 = first.report.tables.iter().map(|t| t.loaded_rows.unwrap_or(0)).sum();
        let held = held_rows(&target).await?;
        anyhow::ensure!(
            committed == held,
            "the failed run's report claims {committed} rows, the warehouse holds {held}"
        );
    }
    // The same run id again, healthy: it resumes (the plan and the landed parts kept) and ends loaded. A fault in
    // a best-effort step left a run that succeeded: that run is the one checked.
    switch.armed.store(false, Ordering::SeqCst);
    let again = match f.fails {
        true => run_once(source, req, stages, wh, "run-fault").await?,
        false => first,
    };
    let output = again
        .output
        .map_err(|e| anyhow::anyhow!("the resumed run failed: {e}"))?;
    anyhow::ensure!(again.report.reconciled(), "the resumed run does not reconcile");
    let plan = plan_of(&output).await?;
    same_as_source(source, &target, &plan).await?;
    let wh = connect(&target).await?;
    let row = wh
        .query_one("SELECT count(*), count(DISTINCT id) FROM sales.orders", &[])
        .await?;
    let (n, distinct) = (row.get::<_, i64>(0), row.get::<_, i64>(1));
    anyhow::ensure!(
        (n, distinct) == (20_000, 20_000),
        "sales.orders holds {n} rows, {distinct} distinct"
    );
    let staging = staging_tables(&target).await?;
    anyhow::ensure!(staging == 0, "{staging} staging tables left");
    let registered: i64 = wh.query_one("SELECT count(*) FROM pgshift.staging", &[]).await?.get(0);
    anyhow::ensure!(registered == 0, "{registered} rows left in the staging registry");
    let files = list_files(&dir);
    anyhow::ensure!(
        !files.iter().any(|f| f.ends_with(".tmp")),
        "half-written objects left: {files:?}"
    );
    anyhow::ensure!(
        !files.iter().any(|f| f.ends_with("status.json")),
        "the resumed run is marked failed"
    );
    let reported: u64 = again.report.tables.iter().map(|t| t.loaded_rows.unwrap_or(0)).sum();
    let loaded_now: u64 = again.report.tables.iter().map(|t| t.rows).sum();
    anyhow::ensure!(loaded_now == 50_000, "the report counts {loaded_now} rows of 50000");
    anyhow::ensure!(reported == 50_000, "the report says {reported} rows committed of 50000");
    Ok(())
}

/// Every table of the run holds what the source holds, by fingerprint.
async fn same_as_source(source: &str, target: &str, plan: &pgshift::contract::plan::Plan) -> Result<()> {
    for t in TABLES {
        let (got, want) = (
            fingerprint(target, plan, t, false).await?,
            fingerprint(source, plan, t, true).await?,
        );
        anyhow::ensure!(got == want, "{t} differs from the source: {got:?} vs {want:?}");
    }
    Ok(())
}

/// Rows the warehouse holds in the run's tables (0 for a table not created).
async fn held_rows(url: &str) -> Result<u64> {
    let c = connect(url).await?;
    let mut n = 0;
    for t in TABLES {
        if let Ok(r) = c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await {
            n += r.get::<_, i64>(0) as u64;
        }
    }
    Ok(n)
}

fn planner_and_extractor_faults() -> Vec<Fault> {
    vec![
        fault("planner before writing the plan", At::Create("tasks.json")),
        fault("planner after writing the plan", At::Landed("plan.json")),
        fault("trigger cannot take the run lock", At::Create("lock.json")),
        fault("extractor before its first row", At::Create("part-00001-000.parquet")),
        fault("extractor mid-stream", At::Create("orders/part-00001-001.parquet")),
        fault(
            "extractor after a file landed, before its result",
            At::Landed("orders/part-00002-000.parquet"),
        ),
        fault(
            "extractor before its result",
            At::Create("items/part-00000.result.json"),
        ),
        fault("extractor after its result", At::Landed("items/part-00002.result.json")),
        // A range fails (its disk full), and so does the record of its failed attempt (best effort: only logged).
        Fault {
            name: "a failed attempt's record cannot be written either",
            at: vec![At::Create("orders/part-00001-000.parquet"), At::Create(".attempt-")],
            atomic: Atomicity::Table,
            fails: true,
        },
    ]
}

fn loader_faults() -> Vec<Fault> {
    let mut out = vec![
        fault("loader before writing manifests", At::Create("orders/manifest")),
        fault(
            "loader after writing manifests",
            At::Before("CREATE SCHEMA IF NOT EXISTS", "sales"),
        ),
        fault("loader reads a part back and fails", At::Checksum("items/part-00001")),
        fault("mid-COPY", At::AfterCopy("items")),
        fault("after COPY, before the reconcile", At::BeforeReconcile),
        fault(
            "mid-swap: the old target dropped, the new one not renamed in",
            At::After("DROP TABLE \"sales\".\"orders\"", ""),
        ),
        fault(
            "after the swap, before the load log",
            At::Before("INSERT INTO \"pgshift\".\"load_log\"", "items"),
        ),
        fault(
            "after the swap and its log, before the staging registry row",
            At::Before("DELETE FROM \"pgshift\".\"staging\"", "orders"),
        ),
        fault("after commit, before load.json", At::Create("load.json")),
        fault("the warehouse connection cut", At::QueryCut),
    ];
    out.push(Fault {
        name: "atomic run: mid-swap of the second table",
        // One transaction: every COPY and reconcile, then the swaps in name order (items, then orders). The fault
        // strikes once items is swapped in and orders' old target is dropped, before its staging table is renamed.
        at: vec![At::After("DROP TABLE \"sales\".\"orders\"", "")],
        atomic: Atomicity::Run,
        fails: true,
    });
    out.push(Fault {
        name: "cleanup itself fails",
        at: vec![At::AfterCopy("orders"), At::Create("status.json")],
        atomic: Atomicity::Table,
        fails: true,
    });
    out.push(Fault {
        name: "cleanup cannot drop the staging table",
        at: vec![At::BeforeReconcile, At::First("DROP TABLE IF EXISTS", "__pgshift_")],
        atomic: Atomicity::Table,
        fails: true,
    });
    out.push(Fault {
        name: "the report cannot be written",
        at: vec![At::Create("report.html")],
        atomic: Atomicity::Table,
        fails: false,
    });
    out
}

async fn matrix(faults: Vec<Fault>, source_name: &str) -> Result<()> {
    let source = super::db(source_name, SALES).await?;
    let mut failed = Vec::new();
    for f in &faults {
        if let Err(e) = prove(&source, f).await {
            failed.push(format!("{}: {e:#}", f.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} fault points failed:\n{}",
        failed.len(),
        faults.len(),
        failed.join("\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_and_extractor_faults_resume_to_the_source_exactly() -> Result<()> {
    matrix(planner_and_extractor_faults(), "faultsrc1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_and_cleanup_faults_resume_to_the_source_exactly() -> Result<()> {
    matrix(loader_faults(), "faultsrc2").await
}

/// The incremental points (`--incremental diff`): a second run, broken while it applies changes to a target its
/// first run loaded, never advances the state; resumed, the target equals the source.
fn incremental_faults() -> Vec<Fault> {
    vec![
        fault("incremental: a key file cannot be written", At::Create(".keys")),
        fault("incremental: the changed rows' manifest", At::Create("orders/manifest")),
        fault("incremental: mid-COPY of the changed rows", At::AfterCopy("orders")),
        fault(
            "incremental: after the deletes, before the insert",
            At::After("DELETE FROM \"sales\".\"orders\" USING", ""),
        ),
    ]
}

/// One incremental point: a healthy first run, the source changed, the faulted second run, then resumed.
async fn prove_incremental(source: &str, f: &Fault) -> Result<()> {
    let tag = f.name.replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let target = cluster().create_db(&format!("f{}", &tag[..tag.len().min(20)])).await?;
    let dir = stage_dir(&format!("fault-{tag}"));
    let stage = format!("file://{}", dir.display());
    let mut req = request(&stage, &["sales.*"], 3);
    req.incremental = pgshift::contract::incremental::Incremental::Diff;
    req.settings.static_source = true;
    req.run_id = Some("base".into());
    let switch = Arc::new(Switch::default());
    let stages = fault_stages(f.at.clone(), switch.clone());
    let wh = Arc::new(FaultWarehouse {
        inner: PgWarehouse::new(&target)?,
        at: f.at.clone(),
        switch: switch.clone(),
    });
    let first = run_once(source, req.clone(), stages.clone(), wh.clone(), "base").await?;
    first.output.map_err(|e| anyhow::anyhow!("the first run failed: {e}"))?;
    connect(source)
        .await?
        .batch_execute(&format!(
            "UPDATE sales.orders SET note = '{tag}' WHERE id % 97 = 0; DELETE FROM sales.orders WHERE id % 89 = 0;"
        ))
        .await?;
    req.run_id = Some("second".into());
    switch.armed.store(true, Ordering::SeqCst);
    let faulted = run_once(source, req.clone(), stages.clone(), wh.clone(), "second").await?;
    let missed = switch.missed(&f.at);
    anyhow::ensure!(missed.is_empty(), "these faults never struck: {missed:?}");
    anyhow::ensure!(faulted.output.is_err(), "the faulted run succeeded");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(".state/sales/orders/sync.json"))?)?;
    anyhow::ensure!(
        state["run_id"] == "base",
        "a failed run advanced the state: {}",
        state["run_id"]
    );
    switch.armed.store(false, Ordering::SeqCst);
    let again = run_once(source, req, stages, wh, "second").await?;
    let output = again
        .output
        .map_err(|e| anyhow::anyhow!("the resumed run failed: {e}"))?;
    let plan = plan_of(&output).await?;
    same_as_source(source, &target, &plan).await?;
    let staging = staging_tables(&target).await?;
    anyhow::ensure!(staging == 0, "{staging} staging tables left");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(".state/sales/orders/sync.json"))?)?;
    anyhow::ensure!(
        state["run_id"] == "second",
        "the resumed run's state: {}",
        state["run_id"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_faults_never_advance_the_state_and_resume_to_the_source_exactly() -> Result<()> {
    let mut failed = Vec::new();
    for (i, f) in incremental_faults().iter().enumerate() {
        // A source of its own per point: each point changes it.
        let source = super::db(&format!("faultinc{i}"), SALES).await?;
        if let Err(e) = prove_incremental(&source, f).await {
            failed.push(format!("{}: {e:#}", f.name));
        }
    }
    assert!(
        failed.is_empty(),
        "incremental fault points failed:\n{}",
        failed.join("\n")
    );
    Ok(())
}

#[test]
fn the_matrix_has_twenty_seven_distinct_points() {
    let names: std::collections::BTreeSet<&str> = planner_and_extractor_faults()
        .iter()
        .chain(loader_faults().iter())
        .chain(incremental_faults().iter())
        .map(|f| f.name)
        .collect();
    assert_eq!(names.len(), 27, "{names:?}");
}

/// A resumed run extracts only what did not land: the ranges whose results verify are kept as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_keeps_the_ranges_that_landed_and_extracts_the_rest() -> Result<()> {
    let source = super::db("resumesrc", SALES).await?;
    let target = cluster().create_db("resumewh").await?;
    let dir = stage_dir("resume");
    let stage = format!("file://{}", dir.display());
    let mut req = request(&stage, &["sales.orders"], 4);
    req.run_id = Some("resume-1".into());
    let switch = Arc::new(Switch::default());
    switch.armed.store(true, Ordering::SeqCst);
    // Range 2 fails at its first file, but only once another range has landed: what the resumed run keeps never
    // depends on which range the Map started first (the gate holds range 2's writer, up to 30 s, until then).
    let (armed, seen) = (switch.clone(), dir.clone());
    let gate: Gate = Arc::new(move |op| match op {
        Op::Create(key) if key.contains("part-00002-000.parquet") && armed.hits(0) => {
            let t0 = std::time::Instant::now();
            while !list_files(&seen).iter().any(|f| f.ends_with(".result.json"))
                && t0.elapsed() < std::time::Duration::from_secs(30)
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Verdict::Fail(disk_full(key))
        }
        _ => Verdict::Pass,
    });
    let stages = Arc::new(HookedStages {
        inner: Arc::new(UrlStages::default()),
        gate,
    });
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let first = run_once(&source, req.clone(), stages.clone(), wh.clone(), "run-resume-1").await?;
    let failure = first.output.expect_err("range 2 cannot land");
    assert!(failure.cause.contains("Pipeline.Fatal.Stage"), "{failure:?}");
    let landed = |d: &std::path::Path| -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = list_files(d)
            .into_iter()
            .filter(|f| f.ends_with(".result.json"))
            .map(|f| {
                let at = std::fs::metadata(d.join(&f)).and_then(|m| m.modified()).expect("mtime");
                (f, at)
            })
            .collect();
        v.sort();
        v
    };
    // Range 2 fails at once; the Map then stops the ranges still running, so one to three of the others landed.
    let before = landed(&dir);
    assert!((1..4).contains(&before.len()), "some ranges landed: {before:?}");
    switch.armed.store(false, Ordering::SeqCst);
    let again = run_once(&source, req, stages, wh, "run-resume-1").await?;
    let output = again.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    let plan = plan_of(&output).await?;
    assert_eq!(
        fingerprint(&target, &plan, "sales.orders", false).await?,
        fingerprint(&source, &plan, "sales.orders", true).await?
    );
    let after = landed(&dir);
    assert_eq!(after.len(), 4);
    // The landed results are the same objects (not rewritten); only the others are new.
    for b in &before {
        assert!(after.contains(b), "{} was kept as it was", b.0);
    }
    let kept: usize = again.report.tables.iter().map(|t| t.reused_parts).sum();
    assert_eq!(kept, before.len(), "the report says how many ranges were kept");
    assert!(
        again.report.render().contains("kept from an earlier attempt"),
        "{}",
        again.report.render()
    );
    Ok(())
}

/// An unreachable warehouse, or a stage that refuses writes, is found before anything is extracted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_warehouse_or_stage_fails_the_run_before_any_extraction() -> Result<()> {
    let source = super::db("preflightsrc", SALES).await?;
    // A port nothing listens on: the connection is refused (a transient error, retried, then the run fails).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let nowhere = format!("postgres://postgres@127.0.0.1:{closed}/nowhere?sslmode=disable&connect_timeout=2");
    let dir = stage_dir("preflight-wh");
    let mut req = request(&format!("file://{}", dir.display()), &["sales.*"], 2);
    req.run_id = Some("preflight-wh".into());
    let out = run_once(
        &source,
        req,
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(&nowhere)?),
        "run-preflight-wh",
    )
    .await?;
    let failure = out.output.expect_err("the warehouse cannot be reached");
    assert!(failure.cause.contains("before extracting anything"), "{failure:?}");
    assert!(
        failure.cause.contains(&closed.to_string()),
        "names the port: {failure:?}"
    );
    let parts: Vec<String> = list_files(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(parts.is_empty(), "nothing was extracted: {parts:?}");

    let target = cluster().create_db("preflightwh").await?;
    let dir = stage_dir("preflight-stage");
    let mut req = request(&format!("file://{}", dir.display()), &["sales.*"], 2);
    req.run_id = Some("preflight-stage".into());
    let switch = Arc::new(Switch::default());
    switch.armed.store(true, Ordering::SeqCst);
    let stages = fault_stages(vec![At::Create("preflight.json")], switch);
    let out = run_once(
        &source,
        req,
        stages,
        Arc::new(PgWarehouse::new(&target)?),
        "run-preflight-stage",
    )
    .await?;
    let failure = out.output.expect_err("the stage refuses writes");
    assert_eq!(failure.error, "Pipeline.Fatal.Stage", "{failure:?}");
    assert!(list_files(&dir).iter().all(|f| !f.ends_with(".parquet")));
    Ok(())
}

/// A dead run's staging tables go with the next load of the same target; a live run's are never touched, and
/// `gc` tells the two apart by the run's records on its stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_tables_of_dead_runs_are_collected_and_live_runs_are_left_alone() -> Result<()> {
    let source = super::db("gcsrc", SALES).await?;
    let target = cluster().create_db("gcwh").await?;
    let dir = stage_dir("gc");
    let stage = format!("file://{}", dir.display());
    // A run that fails with its Cleanup unable to drop the staging tables: they stay, registered.
    let mut req = request(&stage, &["sales.*"], 2);
    req.run_id = Some("gc-dead".into());
    let switch = Arc::new(Switch::default());
    switch.armed.store(true, Ordering::SeqCst);
    let at = vec![At::BeforeReconcile, At::First("DROP TABLE IF EXISTS", "__pgshift_")];
    let wh = Arc::new(FaultWarehouse {
        inner: PgWarehouse::new(&target)?,
        at: at.clone(),
        switch: switch.clone(),
    });
    let out = run_once(&source, req, Arc::new(UrlStages::default()), wh, "run-gc-dead").await?;
    assert!(out.output.is_err());
    let c = connect(&target).await?;
    assert_eq!(
        staging_tables(&target).await?,
        2,
        "the dead run's staging tables are left"
    );

    // A live run's staging table, registered, its lock held by this very process.
    c.batch_execute(
        "CREATE TABLE sales.orders__pgshift_live_1 (id int8);
         INSERT INTO pgshift.staging VALUES ('sales', 'orders__pgshift_live_1', 'sales', 'orders', 'gc-live', 'p', '')",
    )
    .await?;
    c.execute(
        "UPDATE pgshift.staging SET stage = $1 WHERE run_id = 'gc-live'",
        &[&stage],
    )
    .await?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_string();
    std::fs::create_dir_all(dir.join("gc-live"))?;
    std::fs::write(
        dir.join("gc-live/lock.json"),
        serde_json::json!({"execution": "local:test", "taken_at": "2026-12-04T00:00:00Z",
            "process": {"host": host, "pid": std::process::id(), "start_ticks": 0}})
        .to_string(),
    )?;

    // A dry run lists both and drops nothing.
    let ctx = pgshift::load::LoadContext::new(Arc::new(UrlStages::default()), Arc::new(PgWarehouse::new(&target)?));
    let scope = |dry_run| pgshift::load::gc::GcScope {
        targets: None,
        own_run: None,
        dry_run,
    };
    let seen = pgshift::load::gc::collect(&ctx, &scope(true)).await?;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| s.dead).count(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| !s.dropped));

    // The next load of the same targets (another run id) drops the dead run's, and keeps the live one's.
    let mut req = request(&stage, &["sales.*"], 2);
    req.run_id = Some("gc-next".into());
    let out = run_once(
        &source,
        req,
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(&target)?),
        "run-gc-next",
    )
    .await?;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert_eq!(
        staging_tables(&target).await?,
        1,
        "only the live run's staging table is left"
    );
    let kept: String = c.query_one("SELECT table_name FROM pgshift.staging", &[]).await?.get(0);
    assert_eq!(kept, "orders__pgshift_live_1");

    // Its process gone (a pid no process has), the live run is dead: gc drops its table.
    std::fs::write(
        dir.join("gc-live/lock.json"),
        serde_json::json!({"execution": "local:test", "taken_at": "2026-12-04T00:00:00Z",
            "process": {"host": host, "pid": 4_194_999u32, "start_ticks": 0}})
        .to_string(),
    )?;
    let swept = pgshift::load::gc::collect(&ctx, &scope(false)).await?;
    assert_eq!(swept.len(), 1);
    assert!(swept[0].dropped && swept[0].why.contains("is gone"), "{swept:?}");
    assert_eq!(staging_tables(&target).await?, 0);
    Ok(())
}
