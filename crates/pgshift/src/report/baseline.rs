//! What an incremental run cost for each table against what its last full load cost: that run's ledger record read
//! from the stage and priced by the same table, so the bill says what the comparison saved (docs/incremental.md).

use std::fmt::Write;

use crate::contract::layout::ledger_key;
use crate::contract::ledger::Ledger;
use crate::stage::{run, Stage};

use super::cost::{self, Baseline, PriceTable, RunCost};
use super::record::RunRecord;

/// Each incremental table of the run whose last full load's record is on the stage, with both costs.
pub(super) async fn of(stage: &dyn Stage, rec: &RunRecord, bill: &RunCost) -> Vec<Baseline> {
    let mut out = Vec::new();
    for t in &rec.plan.tables {
        let Some(full_run) = t
            .incremental
            .as_ref()
            .and_then(|i| i.base.as_ref())
            .and_then(|b| b.full_run.clone())
        else {
            continue;
        };
        let Ok(Some(l)) = run::read_json::<Ledger>(stage, &ledger_key(&full_run)).await else {
            continue;
        };
        let full = cost::run_cost(&l, &PriceTable::default()).table_total(&t.table);
        let bytes = |l: &Ledger| {
            l.tables
                .iter()
                .filter(|x| x.table == t.table)
                .map(|x| x.source_bytes)
                .sum()
        };
        out.push(Baseline {
            table: t.table.clone(),
            full_run,
            full,
            now: bill.table_total(&t.table),
            full_bytes: bytes(&l),
            now_bytes: rec
                .results
                .iter()
                .filter(|r| r.table == t.table)
                .map(|r| r.source_bytes)
                .sum(),
        });
    }
    out
}

/// The bill's lines of the comparisons.
pub(super) fn render(o: &mut String, baselines: &[Baseline]) {
    for b in baselines {
        let _ = writeln!(
            o,
            "  {}: ${:.6} in this run, against ${:.6} for its last full load (run {}); {:.1} MB read from the source \
             against {:.1} MB",
            b.table,
            b.now,
            b.full,
            b.full_run,
            b.now_bytes as f64 / 1e6,
            b.full_bytes as f64 / 1e6
        );
    }
}
