//! A load started: every part verified landed, each table's facts and manifest, dead runs' staging collected, then
//! the first tables set up and submitted ([`super::submit`]); and a load run to its end for the command line.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use crate::contract::layout::{load_queue_key, manifest_key};
use crate::contract::load::*;
use crate::contract::model::{ExtractResult, StagedFile, TableRef};
use crate::contract::plan::{Plan, TablePlan};
use crate::stage::{run, Stage};
use crate::warehouse::{self, Warehouse};

use super::context::{stage_of, LoadContext};
use super::error::LoadError;
use super::progress::{self, check, next_wait, record, summarize};
use super::setup::{PrepareContext, TableFacts};
use super::submit::advance;
use super::{gc, triggers, verify};

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
        parts_deleted: None,
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

/// Before any set-up changes a target (schema evolution commits its ALTERs first): a merge needs every table's key.
fn check_keys(plan: &Plan, options: &LoadOptions) -> Result<(), LoadError> {
    match plan
        .tables
        .iter()
        .find_map(|t| keyless_merge(options.mode, &t.table, &t.key))
    {
        Some(why) => Err(LoadError::InvalidRequest(why)),
        None => Ok(()),
    }
}

/// What the run's request said of deletes holds whatever the Load state passed on (it passes the plan's other options
/// by path).
fn plan_options(plan: &Plan, options: &mut LoadOptions) {
    if let Some(l) = plan.load.as_ref().filter(|_| options.deletes.is_hard()) {
        options.deletes = l.deletes;
    }
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
    check_options(wh, &req.options).and(check_keys(&plan, &req.options))?;
    plan_options(&plan, &mut req.options);
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
    let mut result = result;
    super::parts::after_commit(wh, stage.as_ref(), &mut result, &req.options).await;
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

/// Every task's result as the extractors left it beside their files (a range without one is named by the check).
async fn read_results(stage: &dyn Stage, plan: &Plan) -> Result<Vec<ExtractResult>, LoadError> {
    let mut out = Vec::new();
    for task in &plan.tasks {
        out.extend(run::read_result(stage, task).await?);
    }
    Ok(out)
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
        diff: parts.iter().filter_map(|r| r.diff).reduce(|a, b| a.plus(b)),
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
