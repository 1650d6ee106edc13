//! The load transactions submitted: tables set up from the front of the queue, then COPY, reconcile and swap of a
//! table (or of every table) as one transaction each, a bounded number at a time.

use std::collections::VecDeque;
use std::time::Instant;

use futures_util::StreamExt;

use crate::contract::load::*;
use crate::contract::model::TableRef;
use crate::contract::plan::TablePlan;
use crate::warehouse::{self, Batch, CopyJob, Step, Submission, Until, WarehouseError};

use super::error::LoadError;
use super::setup::{prepare_table, PrepareContext, Prepared, TableFacts};
use super::statements::{swap_sql, SwapSql};

/// Sets tables up and submits their transactions from the front of `queue`: every table at once for `atomic: run`;
/// else while fewer than `concurrency` are pending and, past `until`, once at least one table was set up. The
/// tables it touched, as they stand, and the first failure (set-up or submit), after which it stops.
pub(super) async fn advance<'a>(
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
            super::progress::note_created(c.stage, &c.plan.run_id, &prepared).await;
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
                columns: &p.columns,
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
                // A row per deleted key is staged, and not inserted.
                expected: prepared[i].load.rows - prepared[i].load.diff.map_or(0, |d| d.deleted),
            },
            SwapSql::Insert(sql) | SwapSql::Plain(sql) => Step::Sql(sql),
        }));
        let ranged = super::incremental::ranged(prepared[i].plan);
        let soft = !c.options.deletes.is_hard();
        if ranged.is_some_and(|inc| inc.changed.is_empty()) {
            // Nothing changed: the pre-flight counted the target against the state, whose rows are the source's;
            // nothing writes it here.
        } else if let Some(inc) = ranged {
            // The target holds the source's rows: the unchanged ranges' and the changed ones' (either warehouse).
            steps.push(Step::Sql(super::incremental::holds_source_sql(
                prepared[i].plan,
                inc,
                soft,
            )?));
            labels.push((table.clone(), StepKind::Reconcile));
        } else if soft && c.options.mode == LoadMode::Replace {
            // Soft deletes: the target's live rows are the source's (marked rows stay beside them).
            steps.push(Step::Sql(super::soft::live_rows_sql(table, prepared[i].load.rows)?));
            labels.push((table.clone(), StepKind::Reconcile));
        } else if c.options.mode == LoadMode::Replace
            && super::incremental::merged(prepared[i].plan).is_none()
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
