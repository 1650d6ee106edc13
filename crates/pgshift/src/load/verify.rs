//! What the loader checks before anything reaches the warehouse: the plan is the one that was planned (it still
//! hashes to its identity), each table's ranges cover its whole key space, every result is of this plan, and every
//! part on the stage is the one its extractor wrote (size and full-object CRC32). Any failure names what is wrong
//! and nothing loads.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use super::error::LoadError;
use crate::contract::layout;
use crate::contract::model::{display_key, Bounds, ExtractResult, ExtractTask, StagedFile, TableRef};
use crate::contract::plan::Plan;
use crate::stage::{FileProblem, Stage};

/// Parts checked on the stage at once (each a `HeadObject` on S3).
const CHECKS_AT_ONCE: usize = 16;

/// The plan is intact and covers every table whole.
pub(crate) fn check_plan(plan: &Plan, plan_url: &str) -> Result<(), LoadError> {
    let mut problems = Vec::new();
    let identity = plan.identity();
    if plan.plan_id != identity {
        problems.push(format!(
            "plan.json hashes to {identity}, not to its plan_id {:?}: it was changed after planning; plan the run \
             again (pgshift run … --restart)",
            plan.plan_id
        ));
    }
    for t in plan.tasks.iter().filter(|t| t.plan_id != plan.plan_id) {
        problems.push(format!(
            "{} range {}: the task names plan {:?}, not {:?}",
            t.table, t.range_index, t.plan_id, plan.plan_id
        ));
    }
    problems.extend(location_problems(plan, plan_url));
    problems.extend(coverage(plan));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LoadError::PlanMismatch {
            plan_url: plan_url.to_string(),
            problems,
        })
    }
}

/// The plan was read from where it says it lives, `<its stage>/<its run>/plan.json`: a plan.json copied over another
/// run's would load its own run's tables while the load's record is looked for in the other run. Refused, with the
/// URL to load it from.
pub(crate) fn location_problems(plan: &Plan, plan_url: &str) -> Vec<String> {
    let own = format!(
        "{}/{}",
        plan.stage.trim_end_matches('/'),
        layout::plan_key(&plan.run_id)
    );
    match layout::split_plan_url(plan_url) {
        Some((stage, run_dir))
            if run_dir == layout::key_segment(&plan.run_id)
                && stage.trim_end_matches('/') == plan.stage.trim_end_matches('/') =>
        {
            Vec::new()
        }
        _ => vec![format!(
            "this plan.json is run {:?}'s (it lives at {own}), not the plan of the run it was read from: it was \
             copied from another run; load run {:?} with --plan {own}, or plan this run again (pgshift run … \
             --restart)",
            plan.run_id, plan.run_id
        )],
    }
}

/// Gaps and overlaps in each table's ranges: indices 0..n, the first range open below, the last open above, each
/// upper bound the next one's lower bound (ctid ranges: pages from 0, contiguous, the last open).
pub(crate) fn coverage(plan: &Plan) -> Vec<String> {
    let mut by_table: BTreeMap<&TableRef, Vec<&ExtractTask>> = BTreeMap::new();
    for t in &plan.tasks {
        by_table.entry(&t.table).or_default().push(t);
    }
    let mut problems = Vec::new();
    for t in &plan.tables {
        let ranged = t.incremental.as_ref().is_some_and(|i| i.base.is_some());
        if !by_table.contains_key(&t.table) && !ranged {
            problems.push(format!("{}: the plan has no task for it", t.table));
        }
    }
    for t in plan.tables.iter().filter(|t| !by_table.contains_key(&t.table)) {
        problems.extend(
            t.incremental
                .iter()
                .flat_map(|i| incremental_coverage(&t.table, i, &[])),
        );
    }
    for (table, mut tasks) in by_table {
        let Some(t) = plan.tables.iter().find(|t| &t.table == table) else {
            problems.push(format!("{table}: tasks for a table the plan does not describe"));
            continue;
        };
        tasks.sort_by_key(|t| t.range_index);
        match &t.incremental {
            // An incremental load of some ranges: its ranges tile the key space, its tasks are the changed ones.
            Some(i)
                if i.base.is_some()
                    && i.cursor.is_none()
                    && !(i.ranges.len() == 1 && i.ranges[0].bounds == Bounds::ALL) =>
            {
                problems.extend(incremental_coverage(table, i, &tasks))
            }
            _ => {
                let ranges: Vec<(u32, &Bounds)> = tasks.iter().map(|t| (t.range_index, &t.bounds)).collect();
                problems.extend(table_coverage(table, &ranges))
            }
        }
    }
    problems
}

/// An incremental table's ranges cover the key space, and its tasks are exactly its changed ranges, bound for bound.
fn incremental_coverage(
    table: &TableRef,
    inc: &crate::contract::incremental::TableIncremental,
    tasks: &[&ExtractTask],
) -> Vec<String> {
    let ranges: Vec<(u32, &Bounds)> = inc.ranges.iter().map(|r| (r.range_index, &r.bounds)).collect();
    let mut problems = table_coverage(table, &ranges);
    let wanted: Vec<(u32, &Bounds)> = inc
        .changed
        .iter()
        .filter_map(|&i| inc.ranges.get(i as usize).map(|r| (i, &r.bounds)))
        .collect();
    let got: Vec<(u32, &Bounds)> = tasks.iter().map(|t| (t.range_index, &t.bounds)).collect();
    if wanted != got {
        problems.push(format!(
            "{table}: the tasks are not the changed ranges ({:?} planned, {:?} listed)",
            inc.changed,
            tasks.iter().map(|t| t.range_index).collect::<Vec<_>>()
        ));
    }
    problems
}

fn table_coverage(table: &TableRef, tasks: &[(u32, &Bounds)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (index, _)) in tasks.iter().enumerate() {
        if *index as usize != i {
            problems.push(format!(
                "{table}: range {index} where range {i} belongs (a range is missing or listed twice)"
            ));
            return problems;
        }
    }
    let (Some(first), Some(last)) = (tasks.first(), tasks.last()) else {
        return problems;
    };
    match (first.1, last.1) {
        (Bounds::Key { lower: Some(l), .. }, _) => {
            problems.push(format!("{table}: range 0 starts at {}, not open below", display_key(l)))
        }
        (Bounds::Ctid { first_page, .. }, _) if *first_page != 0 => {
            problems.push(format!("{table}: range 0 starts at page {first_page}, not page 0"))
        }
        _ => {}
    }
    match last.1 {
        Bounds::Key { upper: Some(u), .. } => problems.push(format!(
            "{table}: range {} ends at {}, not open above",
            last.0,
            display_key(u)
        )),
        Bounds::Ctid { end_page: Some(p), .. } => {
            problems.push(format!("{table}: range {} ends at page {p}, not open above", last.0))
        }
        _ => {}
    }
    for w in tasks.windows(2) {
        let joined = match (w[0].1, w[1].1) {
            (Bounds::Key { upper: Some(u), .. }, Bounds::Key { lower: Some(l), .. }) => u == l,
            (Bounds::Ctid { end_page: Some(e), .. }, Bounds::Ctid { first_page, .. }) => e == first_page,
            _ => false,
        };
        if !joined {
            problems.push(format!(
                "{table}: range {} does not end where range {} starts",
                w[0].0, w[1].0
            ));
        }
    }
    problems
}

/// The result of every task, of this plan only. A result of another plan under the same run id (an earlier plan
/// whose files are still on the stage) is refused by name, never loaded.
pub(crate) fn match_results<'a>(
    plan: &Plan,
    results: &'a [ExtractResult],
) -> Result<BTreeMap<(TableRef, u32), &'a ExtractResult>, LoadError> {
    let mut by_part: BTreeMap<(TableRef, u32), &ExtractResult> = BTreeMap::new();
    let mut stale = BTreeMap::new();
    for r in results.iter().filter(|r| r.run_id == plan.run_id) {
        let key = (r.table.clone(), r.range_index);
        if r.plan_id == plan.plan_id {
            by_part.insert(key, r);
        } else {
            stale.insert(key, r.plan_id.as_str());
        }
    }
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for task in &plan.tasks {
        let key = (task.table.clone(), task.range_index);
        if let Some(r) = by_part.get(&key) {
            // Extracted for the plan's own task: its bounds, key, columns and casts, not an edited copy's.
            if !task.task_id.is_empty() && r.task_id != task.task_id {
                wrong.push(format!(
                    "{} range {}: the result was extracted from a task that differs from the plan's (task {:?}, not \
                     {:?}: tasks.json was edited?); extract the range again from the plan's tasks",
                    task.table, task.range_index, r.task_id, task.task_id
                ));
            }
            continue;
        }
        match stale.get(&key) {
            Some(other) => wrong.push(format!(
                "{} range {}: the result on the stage is of plan {other:?}, not of this plan {:?}; extract the range \
                 again",
                task.table, task.range_index, plan.plan_id
            )),
            None => missing.push(format!("{} range {}: no result", task.table, task.range_index)),
        }
    }
    if !wrong.is_empty() {
        return Err(LoadError::PlanMismatch {
            plan_url: format!("{}/{}/plan.json", plan.stage, plan.run_id),
            problems: wrong,
        });
    }
    if !missing.is_empty() {
        return Err(LoadError::PartsMissing(missing));
    }
    Ok(by_part)
}

/// Every file a result names is one its own task writes: under the run, schema, table and range of the task, on this
/// stage. A result edited to name another run's or another table's Parquet (whose sizes and CRC32s are valid) is
/// refused by name, never loaded.
pub(crate) fn check_file_keys(
    stage: &dyn Stage,
    plan: &Plan,
    by_part: &BTreeMap<(TableRef, u32), &ExtractResult>,
) -> Result<(), LoadError> {
    let mut problems = Vec::new();
    for task in &plan.tasks {
        let Some(r) = by_part.get(&(task.table.clone(), task.range_index)) else {
            continue;
        };
        for f in &r.files {
            if !stage.key_of(&f.url).is_some_and(|k| layout::is_part_file_key(task, k)) {
                problems.push(format!(
                    "{} range {}: its result names {}, which is not a file of this range ({}-<n>.parquet on {}); \
                     extract the range again",
                    task.table,
                    task.range_index,
                    f.url,
                    layout::file_key_prefix(task),
                    stage.url()
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(LoadError::PlanMismatch {
        plan_url: format!("{}/{}/plan.json", plan.stage, plan.run_id),
        problems,
    })
}

/// Every file of every result is on the stage with the size and CRC32 its extractor recorded.
pub(crate) async fn verify_parts(
    stage: &dyn Stage,
    by_part: &BTreeMap<(TableRef, u32), &ExtractResult>,
) -> Result<(), LoadError> {
    let files: Vec<_> = by_part.values().flat_map(|r| r.files.iter()).collect();
    let checks: Vec<BoxFuture<'_, _>> = files.into_iter().map(|f| check_file(stage, f)).collect();
    let checks = futures_util::stream::iter(checks)
        .buffered(CHECKS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let (mut missing, mut corrupt) = (Vec::new(), Vec::new());
    for c in checks {
        match c? {
            Some(FileProblem::Missing(m)) => missing.push(m),
            Some(FileProblem::Corrupt(m)) => corrupt.push(m),
            None => {}
        }
    }
    if !corrupt.is_empty() {
        return Err(LoadError::PartCorrupt(corrupt));
    }
    if !missing.is_empty() {
        return Err(LoadError::PartsMissing(missing));
    }
    Ok(())
}

/// One part against the stage. Boxed with a named lifetime: a stream of closures' async blocks borrowing the stage
/// is not provably `Send` across the handler's await points.
fn check_file<'a>(stage: &'a dyn Stage, f: &'a StagedFile) -> BoxFuture<'a, Result<Option<FileProblem>, LoadError>> {
    Box::pin(async move { Ok(crate::stage::file_problem(stage, f).await?) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::model::{KeyType, KeyValue};

    fn task(i: u32, bounds: Bounds) -> ExtractTask {
        serde_json::from_value(serde_json::json!({
            "run_id": "r", "table": {"schema": "s", "name": "t"}, "columns": [], "range_index": i,
            "bounds": bounds, "stage": "file:///x"
        }))
        .expect("task")
    }

    fn key(v: &str) -> Option<Vec<KeyValue>> {
        Some(vec![KeyValue::new(KeyType::Int8, v)])
    }

    fn problems(tasks: &[ExtractTask]) -> Vec<String> {
        let refs: Vec<(u32, &Bounds)> = tasks.iter().map(|t| (t.range_index, &t.bounds)).collect();
        table_coverage(&TableRef::new("s", "t"), &refs)
    }

    #[test]
    fn ranges_must_tile_the_key_space() {
        let k = |i, lo: &str, hi: &str| {
            task(
                i,
                Bounds::Key {
                    lower: (!lo.is_empty()).then(|| key(lo)).flatten(),
                    upper: (!hi.is_empty()).then(|| key(hi)).flatten(),
                },
            )
        };
        assert!(problems(&[k(0, "", "10"), k(1, "10", "20"), k(2, "20", "")]).is_empty());
        assert!(problems(&[k(0, "", "")]).is_empty());
        // A task removed from the middle, the end, the start; a bound moved.
        assert_eq!(problems(&[k(0, "", "10"), k(2, "20", "")]).len(), 1);
        assert!(problems(&[k(0, "", "10"), k(1, "10", "20")])[0].contains("not open above"));
        assert!(problems(&[k(1, "10", "20"), k(2, "20", "")])[0].contains("range 1 where range 0"));
        assert!(problems(&[k(0, "", "10"), k(1, "11", "")])[0].contains("does not end where"));
        let c = |i, first, end| {
            task(
                i,
                Bounds::Ctid {
                    first_page: first,
                    end_page: end,
                },
            )
        };
        assert!(problems(&[c(0, 0, Some(5)), c(1, 5, None)]).is_empty());
        assert!(!problems(&[c(0, 0, Some(5)), c(1, 6, None)]).is_empty());
        assert!(!problems(&[c(0, 1, None)]).is_empty());
    }
}
