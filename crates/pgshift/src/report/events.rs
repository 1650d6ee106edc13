//! The events of a run that ended, from its one record and its one bill ([`crate::contract::events`]): `Run Succeeded`
//! or `Run Failed`, a `Table Loaded` per table the load committed, and `Run Cost`. Pure: what sends them is the events
//! port ([`crate::events`]).

use crate::contract::clock::rfc3339;
use crate::contract::events::*;
use crate::contract::ledger::Basis;
use crate::contract::load::TableStatus;

use super::cost::RunCost;
use super::record::{RunRecord, RunStatus};

/// The events of a run as its record and bill say, at `now` (seconds since the Unix epoch), for `stack`.
pub fn of(rec: &RunRecord, bill: &RunCost, stack: &str, now: f64) -> Vec<Event> {
    let common = common(rec, stack, now);
    let time = rfc3339(now as i64);
    let mut out = Vec::new();
    match (&rec.failure, rec.status()) {
        (Some((name, message)), _) => out.push(Event::new(RUN_FAILED, &time, &failed(rec, &common, name, message))),
        (None, RunStatus::Succeeded) => out.push(Event::new(
            RUN_SUCCEEDED,
            &time,
            &RunSucceeded {
                common: common.clone(),
                tables: rec.plan.tables.len(),
                rows: rec.results.iter().map(|r| r.rows).sum(),
                parquet_bytes: rec.results.iter().flat_map(|r| &r.files).map(|f| f.bytes).sum(),
                cost_dollars: bill.total,
            },
        )),
        // Neither: a run still going (a report asked for mid-run) announces nothing of its end.
        (None, _) => {}
    }
    out.extend(
        loaded(rec, &common)
            .into_iter()
            .map(|t| Event::new(TABLE_LOADED, &time, &t)),
    );
    out.push(Event::new(RUN_COST, &time, &cost(&common, bill)));
    out
}

fn common(rec: &RunRecord, stack: &str, now: f64) -> Common {
    let (started, _) = rec.span();
    let stage = rec.plan.stage.trim_end_matches('/');
    Common {
        version: VERSION,
        stack: stack.to_string(),
        run_id: rec.plan.run_id.clone(),
        stage: stage.to_string(),
        report_url: format!("{stage}/{}", crate::contract::layout::report_key(&rec.plan.run_id)),
        snapshot: rec.plan.snapshot.as_ref().map(|s| SnapshotRef {
            identifier: s.identifier.clone(),
            time: s.time.clone(),
        }),
        data_as_of: rfc3339(rec.plan.data_instant()),
        started_at: rfc3339(started as i64),
        ended_at: rfc3339(now as i64),
        seconds: (now - started).max(0.0),
    }
}

fn failed(rec: &RunRecord, common: &Common, name: &str, message: &str) -> RunFailed {
    let table = rec
        .load
        .iter()
        .flat_map(|l| &l.tables)
        .find(|t| t.error.is_some())
        .map(|t| t.table.to_string())
        .or_else(|| {
            rec.failed
                .iter()
                .find(|a| !rec.landed(&a.table, a.range_index))
                .map(|a| a.table.to_string())
        });
    RunFailed {
        common: common.clone(),
        error: name.to_string(),
        message: message.to_string(),
        failed_at: rec.failed_where().unwrap_or_default(),
        table,
        warehouse: rec.warehouse_now(),
        resume: rec.resume_hint().unwrap_or_default(),
        retryable: rec.may_pass_again().unwrap_or(false),
    }
}

/// A `Table Loaded` per table whose load committed.
fn loaded(rec: &RunRecord, common: &Common) -> Vec<TableLoaded> {
    let Some(load) = &rec.load else {
        return Vec::new();
    };
    load.tables
        .iter()
        .filter(|t| t.status.is_committed())
        .map(|t| {
            let parts = rec.results.iter().filter(|r| r.table == t.table);
            let (parquet, source) = parts.fold((0, 0), |(p, s), r| {
                (p + r.files.iter().map(|f| f.bytes).sum::<u64>(), s + r.source_bytes)
            });
            let rows = t.committed_rows.unwrap_or(t.rows);
            TableLoaded {
                common: common.clone(),
                table: t.table.to_string(),
                load: "full".into(),
                mode: format!("{:?}", load.mode).to_lowercase(),
                // Every load today writes the run's rows whole: a replace or an append inserts them all; a merge's
                // split into updated and inserted is not told apart by the warehouse's counts.
                rows_inserted: (load.mode != crate::contract::load::LoadMode::Merge).then_some(rows),
                rows_updated: None,
                rows_deleted: None,
                rows,
                parquet_bytes: parquet,
                source_bytes: source,
                load_seconds: t.steps.iter().map(|s| s.seconds).sum(),
                earlier_attempt: t.status == TableStatus::AlreadyLoaded,
            }
        })
        .collect()
}

fn cost(common: &Common, bill: &RunCost) -> RunCostEvent {
    RunCostEvent {
        common: common.clone(),
        status: bill.status.clone(),
        total_dollars: bill.total,
        prices: bill.prices.clone(),
        items: bill
            .items
            .iter()
            .map(|i| CostLine {
                table: i.table.as_ref().map(ToString::to_string),
                item: i.item.clone(),
                quantity: i.quantity,
                unit: i.unit.clone(),
                unit_price: i.unit_price,
                dollars: i.dollars,
                basis: match i.basis {
                    Basis::Actual => "actual".into(),
                    Basis::Estimated => "estimated".into(),
                },
            })
            .collect(),
    }
}
