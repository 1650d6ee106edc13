//! The loader: every part verified landed, one manifest and one COPY per table into a staging table, the row count
//! reconciled, then the target changed in one transaction, so a failure at any point leaves the target as it was.
//!
//! Modes: `replace` (the target's rows become the run's), `append`, `merge` (rows with the same key replaced). Each
//! ends in a single transaction: `DELETE`/`INSERT … SELECT` from staging, a row in `pgshift.load_log`, and the
//! staging table dropped; no `TRUNCATE` (it commits in Redshift). The log makes a rerun of the same run id a no-op,
//! so nothing is loaded twice. `atomic: run` swaps every table in one transaction.
//!
//! The warehouse is a port ([`Warehouse`]); `postgres` streams the Parquet parts into staging with binary COPY.

mod cleanup;
mod drift;
pub mod gc;
mod progress;
mod statements;
mod triggers;
mod verify;

use crate::contract::code::{first_few, Code};
pub use cleanup::cleanup;
pub use progress::check;
use progress::{record, summarize, wait_seconds};
use statements::{drop_staging_sql, ident, logged_sql, qualified, setup_sql, swap_sql, SwapSql};
pub(crate) use statements::{staging_table, varchar_bytes};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::contract::layout::{load_queue_key, manifest_key};
use crate::contract::load::*;
use crate::contract::model::{ExtractResult, StagedFile, TableRef};
use crate::contract::plan::{Plan, TablePlan};
use crate::stage::{run, StageOpener};
use crate::stage::{Stage, StageError};
use crate::warehouse::{self, Batch, CopyJob, Step, Submission, Until, Warehouse, WarehouseError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load request: {0}")]
    InvalidRequest(String),
    #[error("parts missing or incomplete on the stage, nothing loaded: {}", first_few(.0, "; "))]
    PartsMissing(Vec<String>),
    #[error("parts on the stage differ from what their extractors wrote, nothing loaded: {}", first_few(.0, "; "))]
    PartCorrupt(Vec<String>),
    #[error("{plan_url}: the plan and its results do not hold together, nothing loaded: {}", first_few(.problems, "; "))]
    PlanMismatch { plan_url: String, problems: Vec<String> },
    #[error("the source's columns differ from the existing target's, nothing loaded: {}", first_few(.0, "; "))]
    SchemaDrift(Vec<String>),
    #[error("{table}: staging holds {} rows but the parts hold {expected}; rolled back", staged.map_or("a different number of".to_string(), |n| n.to_string()))]
    Reconcile {
        table: TableRef,
        /// `None` when the check ran inside a warehouse batch that reports only that it failed.
        staged: Option<i64>,
        expected: u64,
    },
    #[error("{table}.{column}: values of {bytes} bytes exceed Redshift's {limit}, nothing loaded; {what}")]
    TooLong {
        table: TableRef,
        column: String,
        bytes: u64,
        /// The limit: `VARCHAR(65535)` or `VARBYTE(16777216)`.
        limit: String,
        /// What to do.
        what: &'static str,
    },
    #[error("{} still loading {hours:.1} h after the load started, too close to the execution's timeout: cancelled, nothing of them committed; load them in a run of their own or give the warehouse more capacity", first_few(.tables, ", "))]
    Deadline { tables: Vec<String>, hours: f64 },
    #[error(
        "{table} holds data from {} (the instant of its last load); this run's data is older, from {}: refused, \
         nothing of it loaded (pass --allow-older to load it anyway)",
        crate::contract::clock::rfc3339(*current), crate::contract::clock::rfc3339(*instant)
    )]
    OlderData {
        table: TableRef,
        instant: i64,
        current: i64,
    },
    #[error("rules or triggers on the target change what a load writes, and no count of the run's rows can see it; nothing loaded: {}; drop or disable them, or pass --allow-target-triggers to load anyway (what the target holds is then theirs)", first_few(.0, "; "))]
    TargetTriggers(Vec<String>),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl LoadError {
    pub fn code(&self) -> Code {
        match self {
            LoadError::InvalidRequest(_) => Code::FatalInvalidInput,
            LoadError::PartsMissing(_) => Code::FatalPartsMissing,
            LoadError::PartCorrupt(_) => Code::FatalPartCorrupt,
            LoadError::PlanMismatch { .. } => Code::FatalPlanMismatch,
            LoadError::SchemaDrift(_) => Code::FatalSchemaDrift,
            LoadError::Reconcile { .. } => Code::FatalReconcile,
            LoadError::TooLong { .. } => Code::FatalBadValue,
            LoadError::Deadline { .. } => Code::FatalLoadTimeout,
            LoadError::OlderData { .. } => Code::FatalOlderData,
            LoadError::TargetTriggers(_) => Code::FatalTargetTriggers,
            LoadError::Warehouse(e) => e.code(),
            LoadError::Stage(e) => e.code(),
        }
    }

    /// The stable name of [`Self::code`].
    pub fn name(&self) -> &'static str {
        self.code().name()
    }
}

/// The loader's ports, and who watches the load (none in a Lambda).
pub struct LoadContext {
    pub stages: Arc<dyn StageOpener>,
    pub warehouse: Arc<dyn Warehouse>,
    pub watch: Option<Arc<dyn LoadWatch>>,
    /// How long one `start` or `check` may go on setting tables up before it hands the rest to the next check (a
    /// Lambda's timeout bounds each invocation; at least one table is set up each time). `None`: no bound.
    pub budget: Option<std::time::Duration>,
}

impl LoadContext {
    pub fn new(stages: Arc<dyn StageOpener>, warehouse: Arc<dyn Warehouse>) -> Self {
        Self {
            stages,
            warehouse,
            watch: None,
            budget: None,
        }
    }
}

/// What the stage says of one table's load, worked out once by `start` (and kept on the stage for the tables a
/// check sets up later): the files its extractors recorded, their rows, each column's longest value, its manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TableFacts {
    table: TableRef,
    files: Vec<StagedFile>,
    rows: u64,
    observed: BTreeMap<String, u64>,
    manifest_url: String,
}

impl TableFacts {
    /// The table's load before its set-up: pending, nothing known of the warehouse yet.
    fn table_load(&self) -> TableLoad {
        TableLoad {
            table: self.table.clone(),
            rows: self.rows,
            files: self.files.len(),
            bytes: self.files.iter().map(|f| f.bytes).sum(),
            manifest_url: self.manifest_url.clone(),
            loaded: true,
            status: TableStatus::Pending,
            committed_rows: None,
            error: None,
            steps: Vec::new(),
            swap: None,
            swap_note: None,
            created_target: false,
            evolved: Vec::new(),
        }
    }
}

/// One table ready for its load transaction.
struct Prepared<'a> {
    plan: &'a TablePlan,
    staging: TableRef,
    load: TableLoad,
    files: &'a [StagedFile],
    /// The target's JSON columns are SUPER: staging holds their text, the swap parses it.
    super_columns: bool,
    /// `replace` swaps the staging table in by rename, carrying these (PostgreSQL, when nothing would be lost).
    rename: Option<warehouse::RenameFacts>,
}

/// Loads a planned and extracted run to the end: [`start`], then [`check`] until done (for the command line and the
/// tests; the state machine waits between checks itself).
pub async fn load(ctx: &LoadContext, req: LoadRequest) -> Result<LoadResult, LoadError> {
    let plan_url = req.plan_url.clone();
    let mut p = start(ctx, req).await?;
    while !p.done {
        tokio::time::sleep(std::time::Duration::from_secs(p.wait_seconds.min(5))).await;
        p = check(ctx, p).await?;
    }
    run::read_load(ctx.stages.as_ref(), &plan_url).await?.ok_or_else(|| {
        // Never a failure that hides what the load committed.
        let s = &p.summary;
        LoadError::InvalidRequest(format!(
            "{plan_url}: the load of run {} committed {} of {} tables ({} rows) but left no load.json beside this \
             plan; see the run's load log (pgshift.load_log) for what the warehouse holds",
            s.run_id, s.loaded, s.tables, s.rows
        ))
    })
}

/// Before the extraction: the warehouse reached and written (its `pgshift` schema created if missing), and an object
/// written to the run's stage directory and read back, so that an unreachable warehouse or a stage that refuses
/// writes is found in seconds, not after the whole extraction.
pub async fn preflight(ctx: &LoadContext, req: PreflightRequest) -> Result<PreflightResult, LoadError> {
    let started = Instant::now();
    let stage = stage_of(ctx, &req.plan_url).await?;
    let (_, run_dir) = run::plan_dirs(&req.plan_url)?;
    let key = format!("{run_dir}/preflight.json");
    let body = serde_json::json!({"checked_at": crate::contract::clock::now_rfc3339().0}).to_string();
    let put = crate::stage::put(stage.as_ref(), &key, Bytes::from(body)).await?;
    stage.get(&key).await?;
    let wh = ctx.warehouse.as_ref();
    // Set-ups of every run take turns where the dialect needs it: two concurrent CREATE SCHEMA IF NOT EXISTS of one
    // name fail with a duplicate key in PostgreSQL.
    let mut ddl: Vec<String> = wh.dialect().setup_lock().into_iter().collect();
    ddl.push("CREATE SCHEMA IF NOT EXISTS \"pgshift\"".into());
    warehouse::execute(wh, ddl)
        .await
        .map_err(|e| LoadError::Warehouse(preflight_context(e)))?;
    warehouse::count(wh, "SELECT 1".into())
        .await
        .map_err(|e| LoadError::Warehouse(preflight_context(e)))?;
    let plan = run::read_plan(stage.as_ref(), &req.plan_url).await?;
    triggers::check(wh, &plan, &mut LoadOptions::default()).await?;
    tracing::info!(stage = %put.url, "pre-flight: warehouse and stage reached and written");
    Ok(PreflightResult {
        warehouse: format!("{:?}", wh.dialect()),
        stage_object: put.url,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A warehouse error of the pre-flight check, saying that nothing was extracted yet.
fn preflight_context(e: WarehouseError) -> WarehouseError {
    match e {
        WarehouseError::Sql { detail, retryable } => WarehouseError::Sql {
            detail: format!("before extracting anything, the warehouse check failed: {detail}"),
            retryable,
        },
        other => other,
    }
}

/// A load by hand (`pgshift load`) holds the run's lock as an execution does, as this process: another live
/// execution of the run is refused, and once this process is gone (even by kill -9) what it left is known to be
/// garbage ([`gc`]).
pub async fn hold_run(ctx: &LoadContext, plan_url: &str) -> Result<(), LoadError> {
    let stage = stage_of(ctx, plan_url).await?;
    let plan = run::read_plan(stage.as_ref(), plan_url).await?;
    let problems = verify::location_problems(&plan, plan_url);
    if !problems.is_empty() {
        return Err(LoadError::PlanMismatch {
            plan_url: plan_url.to_string(),
            problems,
        });
    }
    let execution = format!("local:load-{}", std::process::id());
    match run::take_run_lock(stage.as_ref(), &plan.run_id, &execution).await? {
        None => Ok(()),
        Some(h) => Err(LoadError::InvalidRequest(format!(
            "run {} is held by execution {} (since {}), which has not ended: wait for it, or let it fail first",
            plan.run_id, h.execution, h.taken_at
        ))),
    }
}

/// Starts loading a run: every part verified landed, a manifest per table, target and staging tables set up, then one
/// transaction per table (or one for the run) of COPY, reconcile and swap. PostgreSQL runs it to the end; Redshift
/// takes it as a Data API batch and the returned progress is pending.
pub async fn start(ctx: &LoadContext, req: LoadRequest) -> Result<LoadProgress, LoadError> {
    let span = tracing::info_span!(
        "load",
        run = tracing::field::Empty,
        tables = tracing::field::Empty,
        rows = tracing::field::Empty,
        bytes = tracing::field::Empty
    );
    tracing::Instrument::instrument(start_load(ctx, req, span.clone()), span).await
}

/// The load's record as this invocation leaves it, billed as Lambda bills it.
fn load_result(
    plan: &Plan,
    mode: LoadMode,
    tables: Vec<TableLoad>,
    (started, started_at): (Instant, f64),
    done: bool,
) -> LoadResult {
    let seconds = started.elapsed().as_secs_f64();
    LoadResult {
        run_id: plan.run_id.clone(),
        mode,
        tables,
        started_at,
        seconds,
        done,
        billed: vec![crate::contract::ledger::Billed::here("loader", seconds)],
    }
}

/// Staging tables that dead runs left beside this run's targets go first (never another live run's).
async fn collect_beside(ctx: &LoadContext, plan: &Plan) -> Result<(), LoadError> {
    let targets: Vec<TableRef> = plan.tables.iter().map(|t| t.table.clone()).collect();
    let scope = gc::GcScope {
        targets: Some(&targets),
        own_run: Some(&plan.run_id),
        dry_run: false,
    };
    gc::collect(ctx, &scope).await?;
    Ok(())
}

/// Every table's outcome: as the set-ups and transactions left it, else as planned (not reached yet).
fn outcomes(facts: &[TableFacts], touched: Vec<TableLoad>) -> Vec<TableLoad> {
    let mut tables: Vec<TableLoad> = facts.iter().map(TableFacts::table_load).collect();
    for l in touched {
        if let Some(t) = tables.iter_mut().find(|t| t.table == l.table) {
            *t = l;
        }
    }
    tables
}

/// The tables past this invocation's budget, for the checks to set up (`<run>/load-queue.json`).
async fn save_queue(
    stage: &dyn Stage,
    run_id: &str,
    queue: &VecDeque<(&TablePlan, &TableFacts)>,
) -> Result<(), LoadError> {
    let rest: Vec<&TableFacts> = queue.iter().map(|(_, f)| *f).collect();
    let json = serde_json::to_vec(&rest).map_err(|e| LoadError::InvalidRequest(e.to_string()))?;
    crate::stage::put(stage, &load_queue_key(run_id), Bytes::from(json)).await?;
    Ok(())
}

async fn start_load(ctx: &LoadContext, mut req: LoadRequest, span: tracing::Span) -> Result<LoadProgress, LoadError> {
    let started = Instant::now();
    let started_at = crate::contract::clock::unix_now();
    let stage = stage_of(ctx, &req.plan_url).await?;
    let plan = run::read_plan(stage.as_ref(), &req.plan_url).await?;
    span.record("run", plan.run_id.as_str());
    span.record("tables", plan.tables.len());

    // Nothing reaches the warehouse unless the plan is intact, covers every table whole, and every part of every
    // range is on the stage exactly as its extractor of this plan wrote it.
    verify::check_plan(&plan, &req.plan_url)?;
    let results = match req.results.clone() {
        Some(r) => r,
        None => read_results(stage.as_ref(), &plan).await?,
    };
    let by_part = verify::match_results(&plan, &results)?;
    verify::check_file_keys(stage.as_ref(), &plan, &by_part)?;
    verify::verify_parts(stage.as_ref(), &by_part).await?;
    let wh = ctx.warehouse.as_ref();
    check_options(wh, &req.options)?;
    let hooked = triggers::check(wh, &plan, &mut req.options).await?;
    let deadline = req.deadline().map_err(LoadError::InvalidRequest)?;
    let mut facts = Vec::new();
    for t in &plan.tables {
        facts.push(table_facts(wh, stage.as_ref(), &plan, &req.options, &by_part, t).await?);
    }
    collect_beside(ctx, &plan).await?;
    let pctx = PrepareContext {
        wh,
        stage: stage.as_ref(),
        plan: &plan,
        options: &req.options,
        watch: ctx.watch.as_deref(),
    };
    let mut queue: VecDeque<(&TablePlan, &TableFacts)> = plan.tables.iter().zip(&facts).collect();
    let mut pending = Vec::new();
    let advanced = advance(&pctx, &mut queue, &mut pending, ctx.budget.map(|b| started + b)).await;
    let (touched, failure) = match advanced {
        Ok(a) => a,
        Err(e) => {
            progress::cancel_all(wh, &pending).await;
            return Err(e);
        }
    };
    let mut tables = outcomes(&facts, touched);
    triggers::annotate(&mut tables, &hooked);
    let queued: Vec<TableRef> = queue.iter().map(|(t, _)| t.table.clone()).collect();
    if !queued.is_empty() && failure.is_none() {
        save_queue(stage.as_ref(), &plan.run_id, &queue).await?;
    }
    let done = pending.is_empty() && queued.is_empty() && failure.is_none();
    let result = load_result(&plan, req.options.mode, tables, (started, started_at), done);
    let summary = summarize(&result);
    span.record("rows", summary.rows);
    span.record("bytes", summary.bytes);
    // The record says what the warehouse committed, failed tables included, before any error is reported.
    let recorded = record(stage.as_ref(), &result).await;
    if let Some(e) = failure.or(recorded.err()) {
        progress::cancel_all(wh, &pending).await;
        return Err(e);
    }
    tracing::info!(pending = pending.len(), queued = queued.len(), "load started");
    let mut progress = LoadProgress {
        done: result.done,
        plan_url: req.plan_url,
        wait_seconds: 0,
        checks: 0,
        started_at,
        pending,
        queued,
        options: req.options,
        deadline,
        summary,
    };
    progress.wait_seconds = next_wait(&progress);
    Ok(progress)
}

/// Seconds before the next check: soon when tables wait for a free slot that is free now, else the backoff.
pub(super) fn next_wait(p: &LoadProgress) -> u64 {
    if !p.queued.is_empty() && p.pending.len() < p.options.concurrency() {
        1
    } else {
        wait_seconds(p.checks)
    }
}

/// The options a load cannot run with, refused before anything reaches the warehouse.
fn check_options(wh: &dyn Warehouse, options: &LoadOptions) -> Result<(), LoadError> {
    if options.concurrency == Some(0) {
        return Err(LoadError::InvalidRequest(
            "load concurrency 0: set --load-concurrency (or [load] concurrency in pgshift.toml) to 1 or more".into(),
        ));
    }
    // A rehearsal for Redshift (`warehouse_dialect`) refuses what Redshift would.
    let checked = wh.dialect().checked_as(options.warehouse_dialect);
    if !checked.truncates_long_text() && options.long_text == LongText::Truncate {
        // Whether Parquet COPY takes TRUNCATECOLUMNS is not verified; refuse rather than fail inside the COPY.
        return Err(LoadError::InvalidRequest(
            "long_text: truncate is not supported for Redshift yet (Parquet COPY cannot cut values)".into(),
        ));
    }
    Ok(())
}

/// Sets tables up and submits their transactions from the front of `queue`: every table at once for `atomic: run`;
/// else while fewer than `concurrency` are pending and, past `until`, once at least one table was set up. The
/// tables it touched, as they stand, and the first failure (set-up or submit), after which it stops.
async fn advance<'a>(
    c: &PrepareContext<'a>,
    queue: &mut VecDeque<(&'a TablePlan, &'a TableFacts)>,
    pending: &mut Vec<PendingLoad>,
    until: Option<Instant>,
) -> Result<(Vec<TableLoad>, Option<LoadError>), LoadError> {
    let limit = match c.options.atomic {
        Atomicity::Run => usize::MAX,
        Atomicity::Table => c.options.concurrency(),
    };
    let late = || until.is_some_and(|u| Instant::now() >= u) && c.options.atomic == Atomicity::Table;
    let mut out: Vec<TableLoad> = Vec::new();
    while !queue.is_empty() && pending.len() < limit && (out.is_empty() || !late()) {
        let mut prepared = Vec::new();
        let mut failure = None;
        while prepared.len() + pending.len() < limit {
            let Some((t, f)) = queue.pop_front() else { break };
            match prepare_table(c, t, f).await {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    let mut load = f.table_load();
                    load.status = TableStatus::Failed;
                    load.error = Some(format!("{}: {e}", e.name()));
                    out.push(load);
                    failure = Some(e);
                    break;
                }
            }
            if late() {
                break;
            }
        }
        if failure.is_none() {
            let (p, f) = submit_all(c, &mut prepared).await?;
            pending.extend(p);
            failure = f;
        }
        out.extend(prepared.into_iter().map(|p| p.load));
        if failure.is_some() {
            return Ok((out, failure));
        }
    }
    Ok((out, None))
}

/// Every task's result as the extractors left it beside their files (a range without one is named by the check).
async fn read_results(stage: &dyn Stage, plan: &Plan) -> Result<Vec<ExtractResult>, LoadError> {
    let mut out = Vec::new();
    for task in &plan.tasks {
        out.extend(run::read_result(stage, task).await?);
    }
    Ok(out)
}

async fn stage_of(ctx: &LoadContext, plan_url: &str) -> Result<Arc<dyn Stage>, LoadError> {
    Ok(run::stage_of(ctx.stages.as_ref(), plan_url).await?)
}

/// What preparing and submitting a run's tables needs.
struct PrepareContext<'a> {
    wh: &'a dyn Warehouse,
    stage: &'a dyn Stage,
    plan: &'a Plan,
    options: &'a LoadOptions,
    watch: Option<&'a dyn LoadWatch>,
}

/// One table made ready: target and staging set up, the target's columns checked against the run's, and the load
/// log asked whether this plan already loaded it.
async fn prepare_table<'a>(
    c: &PrepareContext<'a>,
    t: &'a TablePlan,
    facts: &'a TableFacts,
) -> Result<Prepared<'a>, LoadError> {
    if let Some(w) = c.watch {
        w.step(&t.table, StepKind::Setup);
    }
    let (started_at, t0) = (crate::contract::clock::unix_now(), Instant::now());
    let mut p = set_up_table(c, t, facts).await?;
    p.load.add_step(StepKind::Setup, started_at, t0.elapsed().as_secs_f64());
    if let (Some(w), TableStatus::AlreadyLoaded) = (c.watch, p.load.status) {
        w.done(&t.table, p.load.status);
    }
    Ok(p)
}

/// A table's facts from its ranges' results, its manifest written; values too long for the warehouse refused here,
/// before any table is set up.
async fn table_facts(
    wh: &dyn Warehouse,
    stage: &dyn Stage,
    plan: &Plan,
    options: &LoadOptions,
    by_part: &BTreeMap<(TableRef, u32), &ExtractResult>,
    t: &TablePlan,
) -> Result<TableFacts, LoadError> {
    let parts: Vec<&ExtractResult> = by_part
        .iter()
        .filter(|((tb, _), _)| tb == &t.table)
        .map(|(_, r)| *r)
        .collect();
    let files: Vec<StagedFile> = parts.iter().flat_map(|r| r.files.iter().cloned()).collect();
    let mut observed: BTreeMap<String, u64> = BTreeMap::new();
    for r in &parts {
        for (col, n) in &r.max_value_bytes {
            let e = observed.entry(col.clone()).or_default();
            *e = (*e).max(*n);
        }
    }
    check_value_limits(
        wh.dialect().checked_as(options.warehouse_dialect),
        options,
        t,
        &observed,
    )?;
    let manifest_url = write_manifest(stage, &plan.run_id, &t.table, &files).await?;
    Ok(TableFacts {
        table: t.table.clone(),
        rows: parts.iter().map(|r| r.rows).sum(),
        files,
        observed,
        manifest_url,
    })
}

/// Values longer than the warehouse can hold (or the warehouse a local run rehearses for, `warehouse_dialect`),
/// found from the lengths the extractors recorded, before anything loads: text past VARCHAR's limit unless
/// `long_text: truncate` cuts it, binary past VARBYTE's.
fn check_value_limits(
    limits: warehouse::Dialect,
    options: &LoadOptions,
    t: &TablePlan,
    observed: &BTreeMap<String, u64>,
) -> Result<(), LoadError> {
    let binary = |name: &str| {
        t.columns
            .iter()
            .any(|col| col.name == name && col.mapping == crate::contract::types::Mapping::Binary)
    };
    for (col, n) in observed {
        let (max, limit, what) = match binary(col) {
            true => (
                limits.max_binary_bytes(),
                "VARBYTE",
                "shorten such values at the source, or leave the table out (--exclude)",
            ),
            false if options.long_text == LongText::Truncate => (None, "", ""),
            false => (
                limits.max_text_bytes(),
                "VARCHAR",
                "shorten such values at the source, or leave the table out (--exclude): Redshift's Parquet load \
                 cannot cut them",
            ),
        };
        if let Some(max) = max.filter(|m| n > m) {
            return Err(LoadError::TooLong {
                table: t.table.clone(),
                column: col.to_string(),
                bytes: *n,
                limit: format!("{limit}({max})"),
                what,
            });
        }
    }
    Ok(())
}

/// Refuses a load whose data is older than what the target holds (an older snapshot after a newer one), unless
/// `allow_older`; a load log without the instant's column (set up by an earlier pgshift) gets it first.
async fn refuse_older_data(c: &PrepareContext<'_>, table: &TableRef) -> Result<(), LoadError> {
    let log = warehouse::columns(c.wh, &statements::log_table()).await?;
    if !log.is_empty() && !log.iter().any(|col| col.name == "data_at") {
        if let Err(e) = warehouse::execute(c.wh, vec![statements::log_instant_sql()]).await {
            // Another run may have added it meanwhile.
            let again = warehouse::columns(c.wh, &statements::log_table()).await?;
            if !again.iter().any(|col| col.name == "data_at") {
                return Err(e.into());
            }
        }
    }
    if c.options.allow_older {
        return Ok(());
    }
    let current = warehouse::count(c.wh, statements::data_at_sql(table)?).await?;
    let instant = c.plan.data_instant();
    if current > instant {
        return Err(LoadError::OlderData {
            table: table.clone(),
            instant,
            current,
        });
    }
    Ok(())
}

async fn set_up_table<'a>(
    c: &PrepareContext<'a>,
    t: &'a TablePlan,
    facts: &'a TableFacts,
) -> Result<Prepared<'a>, LoadError> {
    let dialect = c.wh.dialect();
    let observed: BTreeMap<&str, u64> = facts.observed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let staging = staging_table(&t.table, &c.plan.run_id);
    let json_as_super = c.options.json_as_super && dialect.has_super();
    let existed = !warehouse::columns(c.wh, &t.table).await?.is_empty();
    warehouse::execute(c.wh, setup_sql(dialect, c.plan, t, &staging, &observed, json_as_super)?).await?;
    refuse_older_data(c, &t.table).await?;
    let evolved = match existed {
        true => evolve_target(c, t, &staging, &observed).await?,
        false => Vec::new(),
    };
    let already = match warehouse::count(c.wh, logged_sql(c.plan, &t.table, "count(*)")?).await? {
        0 => -1,
        _ => warehouse::count(c.wh, logged_sql(c.plan, &t.table, "max(rows)")?).await?,
    };
    let mut load = facts.table_load();
    load.loaded = already < 0;
    load.created_target = !existed;
    load.evolved = evolved;
    let mut rename = None;
    let super_columns = json_as_super && t.columns.iter().any(warehouse::is_json);
    if c.options.mode == LoadMode::Replace && already < 0 && super_columns {
        // Staging holds the JSON as text: only INSERT … SELECT JSON_PARSE(…) makes it the target's SUPER.
        (load.swap, load.swap_note) = (
            Some(SwapKind::Rows),
            Some("rows replaced, not renamed: JSON columns are parsed into SUPER".into()),
        );
    } else if c.options.mode == LoadMode::Replace && already < 0 {
        let (kind, note, facts) = replace_swap(c.wh, &t.table, &staging).await?;
        (load.swap, load.swap_note, rename) = (Some(kind), note, facts);
    }
    if already >= 0 {
        tracing::info!(table = %t.table, rows = already, "already loaded by this plan");
        load.status = TableStatus::AlreadyLoaded;
        load.committed_rows = Some(already as u64);
        let drop = drop_staging_sql(&staging)?;
        warehouse::execute(c.wh, drop).await?;
    }
    Ok(Prepared {
        plan: t,
        staging,
        load,
        files: &facts.files,
        super_columns,
        rename,
    })
}

/// The table's manifest on the stage: exactly the files the extractors recorded, never a prefix listing. Its URL.
async fn write_manifest(
    stage: &dyn Stage,
    run_id: &str,
    table: &TableRef,
    files: &[StagedFile],
) -> Result<String, LoadError> {
    let manifest = serde_json::json!({
        "entries": files.iter().map(|f| serde_json::json!({
            "url": f.url, "mandatory": true, "meta": {"content_length": f.bytes}
        })).collect::<Vec<_>>()
    });
    let key = manifest_key(run_id, table);
    Ok(crate::stage::put(stage, &key, Bytes::from(manifest.to_string()))
        .await?
        .url)
}

/// How `replace` will swap a table in: by rename where the warehouse can and the target would lose nothing (with
/// the facts the rename carries over), else by replacing its rows, and why.
async fn replace_swap(
    wh: &dyn Warehouse,
    target: &TableRef,
    staging: &TableRef,
) -> Result<(SwapKind, Option<String>, Option<warehouse::RenameFacts>), LoadError> {
    Ok(match warehouse::rename_facts(wh, target, staging).await? {
        None => (SwapKind::Rows, None, None),
        Some(f) => match f.blocker.clone() {
            None => (SwapKind::Rename, None, Some(f)),
            Some(why) => {
                tracing::info!(table = %target, reason = %why, "replace by DELETE + INSERT: a rename would lose something");
                (SwapKind::Rows, Some(format!("rows replaced, not renamed: {why}")), None)
            }
        },
    })
}

/// An existing target against the run's columns (the staging table made from them): the changes the schema-evolution
/// setting allows are made now, before the load transaction; any other difference fails the load by column.
async fn evolve_target(
    c: &PrepareContext<'_>,
    t: &TablePlan,
    staging: &TableRef,
    observed: &BTreeMap<&str, u64>,
) -> Result<Vec<String>, LoadError> {
    let dialect = c.wh.dialect();
    // The catalog's names are the warehouse's (Redshift's folded to lower case); the plan's are the source's.
    let spec_of = |name: &str| t.columns.iter().find(|s| dialect.fold(&s.name) == name);
    let observed_of = |name: &str| observed.iter().find(|(k, _)| dialect.fold(k) == name).map(|(_, n)| *n);
    let target = warehouse::columns(c.wh, &t.table).await?;
    let mut run = warehouse::columns(c.wh, staging).await?;
    if c.options.json_as_super && dialect.has_super() {
        // Staging holds JSON as text for the swap to parse: the run's column is the SUPER it becomes.
        for col in run.iter_mut() {
            if spec_of(&col.name).is_some_and(warehouse::is_json) {
                (col.data_type, col.char_length) = ("super".into(), None);
            }
        }
    }
    let run_columns: Vec<drift::RunColumn<'_>> = run
        .iter()
        .map(|col| drift::RunColumn {
            column: col,
            observed_bytes: observed_of(&col.name),
        })
        .collect();
    let changes =
        drift::compare(&t.table, &target, &run_columns, c.options.schema_evolution).map_err(LoadError::SchemaDrift)?;
    let json_as_super = c.options.json_as_super && dialect.has_super();
    let mut applied = Vec::new();
    for change in changes {
        let name = match &change {
            drift::Change::Add(n) | drift::Change::Widen(n) => n,
        };
        let Some(spec) = spec_of(name) else {
            continue;
        };
        let bytes = varchar_bytes(spec, observed_of(name).unwrap_or(0)) as u32;
        let ty = dialect.column_type(spec, bytes, json_as_super);
        let sql = match change {
            drift::Change::Add(_) => format!("ALTER TABLE {} ADD COLUMN {} {ty}", qualified(&t.table)?, ident(name)?),
            drift::Change::Widen(_) => format!(
                "ALTER TABLE {} ALTER COLUMN {} TYPE {ty}",
                qualified(&t.table)?,
                ident(name)?
            ),
        };
        tracing::warn!(table = %t.table, sql = %sql, "schema evolution");
        // One statement at a time: Redshift runs ALTER COLUMN … TYPE outside a transaction block only.
        warehouse::execute(c.wh, vec![sql.clone()]).await?;
        applied.push(sql);
    }
    Ok(applied)
}

/// The load transactions: COPY, reconcile and swap of a table (or of every table) all or nothing, side by side, a
/// bounded number at a time. Each table's outcome is set on it; the first failure is returned after the others ran.
async fn submit_all(
    c: &PrepareContext<'_>,
    prepared: &mut [Prepared<'_>],
) -> Result<(Vec<PendingLoad>, Option<LoadError>), LoadError> {
    let todo: Vec<usize> = (0..prepared.len()).filter(|&i| prepared[i].load.loaded).collect();
    let groups: Vec<Vec<usize>> = match c.options.atomic {
        Atomicity::Table => todo.into_iter().map(|i| vec![i]).collect(),
        Atomicity::Run if todo.is_empty() => Vec::new(),
        Atomicity::Run => vec![todo],
    };
    let mut steps = Vec::new();
    let mut labels = Vec::new();
    for group in &groups {
        let (s, l) = group_steps(c, prepared, group)?;
        steps.push(s);
        labels.push(l);
    }
    let tables: Vec<Vec<TableRef>> = groups
        .iter()
        .map(|g| g.iter().map(|&i| prepared[i].plan.table.clone()).collect())
        .collect();
    let submitted = submit_groups(c, steps, &labels, &tables).await;
    let mut pending = Vec::new();
    let mut failure = None;
    for (((group, outcome), labels), tables) in groups.iter().zip(submitted).zip(&labels).zip(tables) {
        match outcome {
            Ok(Submission::Done(timings)) => {
                for &i in group {
                    committed(&mut prepared[i].load, labels, &timings, c.watch);
                }
            }
            Ok(Submission::Pending(statement_id)) => pending.push(PendingLoad {
                statement_id,
                tables,
                rows: group.iter().map(|&i| prepared[i].load.rows).collect(),
                swaps: group
                    .iter()
                    .map(|&i| {
                        labels
                            .iter()
                            .filter(|(t, k)| *k == StepKind::Swap && t == &prepared[i].load.table)
                            .count()
                    })
                    .collect(),
            }),
            Err(e) => {
                for &i in group {
                    prepared[i].load.status = TableStatus::Failed;
                    prepared[i].load.error = Some(format!("{}: {e}", e.name()));
                    if let Some(w) = c.watch {
                        w.done(&prepared[i].load.table, TableStatus::Failed);
                    }
                }
                failure.get_or_insert(LoadError::from(e));
            }
        }
    }
    Ok((pending, failure))
}

/// Every group's transaction, `concurrency` at a time. The watch is told each step's table and kind as it starts (the
/// labels also place the timings after), and each group's tables the moment their transaction commits, not when the
/// last one does.
async fn submit_groups<'a>(
    c: &PrepareContext<'a>,
    steps: Vec<Vec<Step<'a>>>,
    labels: &[Vec<(TableRef, StepKind)>],
    tables: &[Vec<TableRef>],
) -> Vec<Result<Submission, WarehouseError>> {
    let watch = c.watch;
    let watchers: Vec<_> = labels
        .iter()
        .map(|l: &Vec<(TableRef, StepKind)>| {
            move |i: usize| {
                if let (Some(w), Some((t, k))) = (watch, l.get(i)) {
                    w.step(t, *k);
                }
            }
        })
        .collect();
    let jobs: Vec<_> = steps
        .into_iter()
        .zip(&watchers)
        .zip(tables)
        .map(|((steps, on_step), tables)| async move {
            let batch = Batch {
                steps,
                until: Until::Submitted,
                on_step: Some(on_step),
            };
            let outcome = c.wh.submit(batch).await;
            if let (Some(w), Ok(Submission::Done(_))) = (watch, &outcome) {
                tables.iter().for_each(|t| w.done(t, TableStatus::Committed));
            }
            outcome
        })
        .collect();
    futures_util::stream::iter(jobs)
        .buffered(c.options.concurrency())
        .collect()
        .await
}

/// A table whose transaction committed: its outcome, its steps' times, and the watch told.
fn committed(
    load: &mut TableLoad,
    labels: &[(TableRef, StepKind)],
    timings: &[warehouse::Timing],
    watch: Option<&dyn LoadWatch>,
) {
    load.status = TableStatus::Committed;
    load.committed_rows = Some(load.rows);
    for ((t, kind), time) in labels.iter().zip(timings) {
        if t == &load.table {
            load.add_step(*kind, time.started_at, time.seconds);
        }
    }
    if let Some(w) = watch {
        w.done(&load.table, load.status);
    }
}

/// The COPY step of a table with no parts.
pub(crate) const NO_PARTS: &str = "SELECT 0 AS no_parts_to_copy";

/// The steps of one load transaction in the order [`PendingLoad::label`] reads back (COPY and reconcile of each
/// table, then the swaps), and which table and kind each step is.
#[allow(clippy::type_complexity)]
fn group_steps<'a>(
    c: &PrepareContext<'a>,
    prepared: &'a [Prepared<'a>],
    group: &[usize],
) -> Result<(Vec<Step<'a>>, Vec<(TableRef, StepKind)>), LoadError> {
    let mut steps = Vec::new();
    let mut labels = Vec::new();
    for &i in group {
        let p = &prepared[i];
        let copy = if p.files.is_empty() {
            // Every range was empty: no COPY, since Redshift's COPY ends in an error when its manifest lists no file
            // ("COPY will terminate if no files are found",
            // <https://docs.aws.amazon.com/redshift/latest/dg/loading-data-files-using-manifest.html>). A statement
            // that changes nothing keeps the step's place; the reconcile against 0 and the swap still run, so a
            // `replace` of an emptied source table empties its target.
            Step::Sql(NO_PARTS.to_string())
        } else {
            Step::Copy(CopyJob {
                staging: &p.staging,
                columns: &p.plan.columns,
                manifest_url: &p.load.manifest_url,
                files: p.files,
                stage: c.stage,
                truncate_long_text: c.options.long_text == LongText::Truncate,
            })
        };
        steps.extend([
            copy,
            Step::Reconcile {
                table: p.plan.table.clone(),
                staging: p.staging.clone(),
                expected: p.load.rows,
            },
        ]);
        labels.push((p.plan.table.clone(), StepKind::Copy));
        labels.push((p.plan.table.clone(), StepKind::Reconcile));
    }
    for &i in group {
        let swap = swap_sql(c.wh.dialect(), c.options, c.plan, &prepared[i])?;
        let table = &prepared[i].plan.table;
        labels.extend(swap.iter().map(|_| (table.clone(), StepKind::Swap)));
        steps.extend(swap.into_iter().map(|s| match s {
            // What the INSERT wrote, after the target's rules and triggers, is the run's rows (unless allowed).
            SwapSql::Insert(sql) if !c.options.allow_target_triggers => Step::Written {
                table: table.clone(),
                sql,
                expected: prepared[i].load.rows,
            },
            SwapSql::Insert(sql) | SwapSql::Plain(sql) => Step::Sql(sql),
        }));
        if c.options.mode == LoadMode::Replace
            && c.wh.dialect().has_rules_and_triggers()
            && !c.options.allow_target_triggers
        {
            // What reached the target, not only what staging held: a rule or trigger made since the check shows here.
            steps.push(Step::Reconcile {
                table: table.clone(),
                staging: table.clone(),
                expected: prepared[i].load.rows,
            });
            labels.push((table.clone(), StepKind::Reconcile));
        }
    }
    Ok((steps, labels))
}

/// The loader Lambda's handler: `{"action": "start", …LoadRequest}` (the default), `{"action": "check", "progress":
/// …}` or `{"action": "cleanup", "state": …}`.
pub async fn handle(ctx: &LoadContext, input: serde_json::Value) -> Result<serde_json::Value, LoadError> {
    let bad = |e: serde_json::Error| LoadError::InvalidRequest(format!("loader input: {e}"));
    let out = match LoaderInput::from_json(input).map_err(bad)? {
        LoaderInput::Preflight(req) => serde_json::to_value(preflight(ctx, req).await?),
        LoaderInput::Start(req) => serde_json::to_value(start(ctx, req).await?),
        LoaderInput::Check { progress } => serde_json::to_value(check(ctx, progress).await?),
        LoaderInput::Cleanup(req) => serde_json::to_value(cleanup(ctx, req).await?),
    };
    out.map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step Functions caps a state at 256 KiB: a load of many tables, all pending at once, must stay well inside it.
    #[test]
    fn the_state_of_a_thousand_pending_tables_stays_small() {
        let pending = (0..1000)
            .map(|i| PendingLoad {
                statement_id: uuid::Uuid::new_v4().to_string(),
                tables: vec![TableRef::new(
                    "sales_mart",
                    format!("fact_table_with_a_long_name_{i:04}"),
                )],
                rows: vec![123_456_789],
                swaps: Vec::new(),
            })
            .collect();
        let p = LoadProgress {
            done: false,
            plan_url: "s3://a-stage-bucket/pgshift/runs/20261124T031245Z-rds-orders-db-2026-11-24-03-05/plan.json"
                .into(),
            wait_seconds: 60,
            checks: 12,
            started_at: 1.0,
            pending,
            queued: Vec::new(),
            options: LoadOptions::default(),
            deadline: None,
            summary: LoadSummary::default(),
        };
        let bytes = serde_json::to_vec(&p).expect("json").len();
        assert!(bytes < 160 * 1024, "{bytes} bytes for 1000 pending tables");
        eprintln!("state of 1000 pending tables: {bytes} bytes");
        let back: LoadProgress = serde_json::from_slice(&serde_json::to_vec(&p).expect("json")).expect("round trip");
        assert_eq!(back.pending[999].label(1).expected, Some(123_456_789));
    }
}
