//! Where a load stands: the state machine's checks of pending load transactions, each table's outcome recorded on
//! `<run>/load.json` as its transaction ends, and the error of a failed one named from the step that failed.

use bytes::Bytes;

use super::context::{stage_of, LoadContext};
use super::error::LoadError;
use super::setup::{PrepareContext, TableFacts};
use super::submit::advance;
use crate::contract::layout::load_key;
use crate::contract::load::*;
use crate::contract::model::TableRef;
use crate::stage::{run, Stage};
use crate::warehouse::{TxStatus, Warehouse, WarehouseError};

pub(super) fn summarize(r: &LoadResult) -> LoadSummary {
    LoadSummary {
        run_id: r.run_id.clone(),
        tables: r.tables.len(),
        loaded: r.tables.iter().filter(|t| t.loaded).count(),
        rows: r.tables.iter().map(|t| t.rows).sum(),
        bytes: r.tables.iter().map(|t| t.bytes).sum(),
        seconds: r.seconds,
    }
}

/// Targets the set-up just created, on the load's record before their load transactions are submitted: a run
/// stopped while they run (a signal, a dead invocation) is cleaned up by a Cleanup that knows to drop them, so a first
/// load that never committed leaves the warehouse as it was. Best effort, and only when a target was created.
pub(super) async fn note_created(stage: &dyn Stage, run_id: &str, prepared: &[super::setup::Prepared<'_>]) {
    let created: Vec<&TableLoad> = prepared.iter().map(|p| &p.load).filter(|l| l.created_target).collect();
    if created.is_empty() {
        return;
    }
    let mut load = match run::read_json::<LoadResult>(stage, &load_key(run_id)).await {
        Ok(Some(l)) => l,
        _ => LoadResult::unrecorded(run_id),
    };
    for c in created {
        match load.tables.iter_mut().find(|t| t.table == c.table) {
            Some(t) if t.status.is_committed() => {}
            Some(t) => t.created_target = true,
            None => load.tables.push(c.clone()),
        }
    }
    if let Err(e) = record(stage, &load).await {
        tracing::warn!(error = %e, "could not record the targets the set-up created");
    }
}

pub(super) async fn record(stage: &dyn Stage, result: &LoadResult) -> Result<(), LoadError> {
    let json = serde_json::to_vec(result).map_err(|e| LoadError::InvalidRequest(e.to_string()))?;
    crate::stage::put(stage, &load_key(&result.run_id), Bytes::from(json)).await?;
    Ok(())
}

/// A load call that fails cancels the transactions it leaves pending before it reports the error. The state machine
/// keeps the progress of the call before, so Cleanup would not see the transactions this call submitted, and they
/// could commit after the run is marked failed. Best effort: a transaction that ended already cannot be cancelled.
pub(super) async fn cancel_all(wh: &dyn Warehouse, pending: &[PendingLoad]) {
    for p in pending {
        match wh.cancel(&p.statement_id).await {
            Ok(()) => {
                tracing::warn!(statement = %p.statement_id, tables = ?p.tables, "cancelled after the load failed")
            }
            Err(e) => tracing::warn!(statement = %p.statement_id, error = %e, "could not cancel after the load failed"),
        }
    }
}

/// Seconds to wait before check number `checks + 1`: 2, 4, 8, 16, 32, then every 60.
pub(super) fn wait_seconds(checks: u32) -> u64 {
    (2u64 << checks.min(5)).min(60)
}

/// Checks the pending transactions of a load once, then sets up and submits queued tables into the free slots: done
/// when none runs and none waits any more; an error naming the table and the failing step when one failed, and
/// `Pipeline.Fatal.LoadTimeout` when transactions still run (or tables wait) at the load's deadline.
pub async fn check(ctx: &LoadContext, mut progress: LoadProgress) -> Result<LoadProgress, LoadError> {
    let began = std::time::Instant::now();
    let wh = ctx.warehouse.as_ref();
    let Polled {
        committed,
        times,
        mut failure,
    } = poll(wh, &mut progress).await?;
    if failure.is_none() {
        failure = past_deadline(&progress);
    }
    let mut prepared = Vec::new();
    if failure.is_none() && !progress.queued.is_empty() {
        let queued = continue_queued(ctx, &mut progress, ctx.budget.map(|b| began + b)).await;
        let (touched, f) = match queued {
            Ok(q) => q,
            Err(e) => {
                cancel_all(wh, &progress.pending).await;
                return Err(e);
            }
        };
        prepared = touched;
        failure = f.map(|e| {
            (
                prepared
                    .iter()
                    .filter(|t| t.status == TableStatus::Failed)
                    .map(|t| t.table.clone())
                    .collect(),
                e,
            )
        });
    }
    progress.checks += 1;
    progress.done = progress.pending.is_empty() && progress.queued.is_empty() && failure.is_none();
    progress.wait_seconds = next_wait(&progress);
    progress.summary.seconds = (crate::contract::clock::unix_now() - progress.started_at).max(0.0);
    if progress.done || !committed.is_empty() || failure.is_some() || !prepared.is_empty() {
        let ended = Ended {
            committed: &committed,
            times: &times,
            failure: failure.as_ref(),
            prepared,
            billed: crate::contract::ledger::Billed::here("loader", began.elapsed().as_secs_f64()),
        };
        let recorded = record_outcomes(ctx, &mut progress, ended).await;
        match (&failure, recorded) {
            // The load's own error is the one to report; the record is best effort then.
            (Some(_), Err(e)) => tracing::warn!(error = %e, "could not record the tables' outcomes"),
            (_, r) => r?,
        }
    }
    match failure {
        Some((_, e)) => {
            cancel_all(wh, &progress.pending).await;
            Err(e)
        }
        None => Ok(progress),
    }
}

/// What one look at the pending transactions found.
struct Polled {
    committed: Vec<TableRef>,
    times: Vec<(TableRef, StepTime)>,
    failure: Option<(Vec<TableRef>, LoadError)>,
}

/// Asks the warehouse for each pending transaction (until one failed): those still running stay pending, a
/// committed one gives its tables and its steps' times, a failed one the error of its step.
async fn poll(wh: &dyn Warehouse, progress: &mut LoadProgress) -> Result<Polled, LoadError> {
    let mut still = Vec::new();
    let mut out = Polled {
        committed: Vec::new(),
        times: Vec::new(),
        failure: None,
    };
    for p in std::mem::take(&mut progress.pending) {
        if out.failure.is_some() {
            still.push(p);
            continue;
        }
        match wh.status(&p.statement_id).await? {
            TxStatus::Running => still.push(p),
            TxStatus::Finished(timings) => {
                tracing::info!(statement = %p.statement_id, "load transaction committed");
                for (i, t) in timings.iter().enumerate() {
                    let l = p.label(i);
                    let step = StepTime {
                        step: l.kind,
                        started_at: t.started_at,
                        seconds: t.seconds,
                    };
                    out.times.push((l.table, step));
                }
                out.committed.extend(p.tables.iter().cloned());
            }
            TxStatus::Failed { step, detail, query_id } => {
                let e = failed_step(wh, &p, step, detail, query_id).await;
                out.failure = Some((p.tables.clone(), e));
            }
        }
    }
    progress.pending = still;
    Ok(out)
}

/// The load's failure when its deadline has passed with transactions still running or tables still waiting: the
/// tables it gives up on (Cleanup cancels their transactions; nothing of them was committed).
fn past_deadline(progress: &LoadProgress) -> Option<(Vec<TableRef>, LoadError)> {
    let deadline = progress.deadline?;
    let now = crate::contract::clock::unix_now();
    if now < deadline || (progress.pending.is_empty() && progress.queued.is_empty()) {
        return None;
    }
    let mut tables: Vec<TableRef> = progress.pending.iter().flat_map(|p| p.tables.iter().cloned()).collect();
    tables.extend(progress.queued.iter().cloned());
    let e = LoadError::Deadline {
        tables: tables.iter().map(ToString::to_string).collect(),
        hours: (now - progress.started_at).max(0.0) / 3600.0,
    };
    Some((tables, e))
}

/// The queued tables set up and submitted as slots and time allow, from the facts `start` left on the stage.
async fn continue_queued(
    ctx: &LoadContext,
    progress: &mut LoadProgress,
    until: Option<std::time::Instant>,
) -> Result<(Vec<TableLoad>, Option<LoadError>), LoadError> {
    let stage = stage_of(ctx, &progress.plan_url).await?;
    let plan = run::read_plan(stage.as_ref(), &progress.plan_url).await?;
    let key = crate::contract::layout::load_queue_key(&plan.run_id);
    let bytes = stage.get(&key).await?;
    let facts: Vec<TableFacts> = serde_json::from_slice(&bytes)
        .map_err(|e| LoadError::InvalidRequest(format!("{key}: the queued tables' facts: {e}")))?;
    let mut queue = std::collections::VecDeque::new();
    for table in &progress.queued {
        let t = plan.tables.iter().find(|t| &t.table == table);
        let f = facts.iter().find(|f| &f.table == table);
        match (t, f) {
            (Some(t), Some(f)) => queue.push_back((t, f)),
            _ => {
                return Err(LoadError::InvalidRequest(format!(
                    "{table} is queued for loading but not in the plan or in {key}"
                )))
            }
        }
    }
    let options = progress.options.clone();
    let pctx = PrepareContext {
        wh: ctx.warehouse.as_ref(),
        stage: stage.as_ref(),
        plan: &plan,
        options: &options,
        watch: ctx.watch.as_deref(),
    };
    let out = advance(&pctx, &mut queue, &mut progress.pending, until).await?;
    progress.queued = queue.iter().map(|(t, _)| t.table.clone()).collect();
    Ok(out)
}

/// The transactions that ended at a check: the tables committed, their steps' times, and a failure.
struct Ended<'a> {
    committed: &'a [TableRef],
    times: &'a [(TableRef, StepTime)],
    failure: Option<&'a (Vec<TableRef>, LoadError)>,
    /// Queued tables this check set up, as they stand (set-up step, swap kind, already loaded).
    prepared: Vec<TableLoad>,
    /// This check's invocation, as Lambda bills it.
    billed: crate::contract::ledger::Billed,
}

/// Sets the outcome of the tables whose transactions ended on `<run>/load.json`.
async fn record_outcomes(ctx: &LoadContext, progress: &mut LoadProgress, ended: Ended<'_>) -> Result<(), LoadError> {
    let Ended {
        committed,
        times,
        failure,
        prepared,
        billed,
    } = ended;
    {
        let mut result = run::read_load(ctx.stages.as_ref(), &progress.plan_url)
            .await?
            .ok_or_else(|| LoadError::InvalidRequest(format!("{}: no load.json", progress.plan_url)))?;
        for l in prepared {
            if let Some(t) = result.tables.iter_mut().find(|t| t.table == l.table) {
                *t = l;
            }
        }
        for t in result.tables.iter_mut() {
            if committed.contains(&t.table) {
                t.status = TableStatus::Committed;
                t.committed_rows = Some(t.rows);
                let own: Vec<StepTime> = times.iter().filter(|(x, _)| x == &t.table).map(|(_, st)| *st).collect();
                for st in own {
                    t.add_step(st.step, st.started_at, st.seconds);
                }
            }
            if let Some(w) = &ctx.watch {
                if committed.contains(&t.table) {
                    w.done(&t.table, t.status);
                }
            }
            if let Some((tables, e)) = failure {
                if tables.contains(&t.table) {
                    t.status = TableStatus::Failed;
                    t.error = Some(format!("{}: {e}", e.name()));
                }
            }
        }
        result.done = progress.done;
        result.seconds = progress.summary.seconds;
        result.billed.push(billed);
        progress.summary.loaded = result.tables.iter().filter(|t| t.loaded).count();
        let stage = stage_of(ctx, &progress.plan_url).await?;
        super::parts::after_commit(ctx.warehouse.as_ref(), stage.as_ref(), &mut result, &progress.options).await;
        record(stage.as_ref(), &result).await
    }
}

/// The error of a failed load transaction, named from the step that failed.
async fn failed_step(
    wh: &dyn Warehouse,
    p: &PendingLoad,
    step: Option<usize>,
    detail: String,
    query_id: Option<i64>,
) -> LoadError {
    let tables = p.tables.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    match step.map(|i| p.label(i)) {
        Some(StepLabel {
            table,
            kind: StepKind::Reconcile,
            expected,
        }) => LoadError::Reconcile {
            table,
            staged: None,
            expected: expected.unwrap_or_default(),
        },
        Some(StepLabel {
            table,
            kind: StepKind::Copy,
            ..
        }) => {
            let why = match query_id {
                Some(q) => wh.explain(q).await,
                None => "no query id to look up load errors".into(),
            };
            LoadError::Warehouse(WarehouseError::Sql {
                detail: format!("COPY into {table} failed, nothing swapped ({tables}): {detail}; load errors: {why}"),
                retryable: false,
            })
        }
        _ => LoadError::Warehouse(WarehouseError::Sql {
            detail: format!("load transaction of {tables} failed and rolled back: {detail}"),
            retryable: false,
        }),
    }
}

/// Seconds before the next check: soon when tables wait for a free slot that is free now, else the backoff.
pub(super) fn next_wait(p: &LoadProgress) -> u64 {
    if !p.queued.is_empty() && p.pending.len() < p.options.concurrency() {
        1
    } else {
        wait_seconds(p.checks)
    }
}
