//! Statistics after the swap (Redshift): the COPY into the staging table runs with `STATUPDATE OFF` (a staging
//! table's statistics are of no use once it is swapped in, and COPY would compute them inside the load transaction),
//! so once a table's load commits its target gets `ANALYZE … PREDICATE COLUMNS`: the columns queries have filtered,
//! joined or grouped on, or every column of a table no query has used yet
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_ANALYZE.html>). It is submitted on its own, outside the load
//! transaction and after its commit, so its work holds no lock the swap needs, and not awaited: Redshift's automatic
//! analyze would otherwise get to the table in the background, in its own time
//! (<https://docs.aws.amazon.com/redshift/latest/dg/t_Analyzing_tables.html>). Whether ANALYZE may run inside a
//! transaction block, the docs do not say; pgshift never asks it to. A failed submission is logged and leaves the
//! table to automatic analyze: the data is committed either way.

use crate::contract::load::{LoadResult, TableStatus};
use crate::warehouse::{Batch, Dialect, Step, Until, Warehouse};

use super::statements::qualified;

/// Submits `ANALYZE` for each table this load committed, once; records it on the table.
pub(super) async fn after_commit(wh: &dyn Warehouse, result: &mut LoadResult) {
    if wh.dialect() != Dialect::Redshift {
        return;
    }
    for t in result.tables.iter_mut() {
        if t.status != TableStatus::Committed || !t.loaded || t.analyzed {
            continue;
        }
        let Ok(sql) = analyze_sql(&t.table) else {
            continue;
        };
        match wh.submit(Batch::new(vec![Step::Sql(sql)], Until::Submitted)).await {
            Ok(_) => t.analyzed = true,
            Err(e) => {
                tracing::warn!(table = %t.table, error = %e, "ANALYZE not submitted: automatic analyze will do it")
            }
        }
    }
}

pub(super) fn analyze_sql(table: &crate::contract::model::TableRef) -> Result<String, super::error::LoadError> {
    Ok(format!("ANALYZE {} PREDICATE COLUMNS", qualified(table)?))
}
