//! After a run whose every table committed: its Parquet parts deleted from the stage, unless `keep_parts`. The
//! plan, the results, the manifests, the ledger record and the report stay (what `pgshift report` and `pgshift cost`
//! read); a run that did not commit every table keeps its parts, which resume it.

use crate::contract::layout::table_dir;
use crate::contract::load::{LoadOptions, LoadResult, PartsDeleted};
use crate::stage::Stage;

/// What follows the commits a load call recorded, in both of the loader's commit paths (the one-call start and the
/// polled check): each committed table's statistics asked for ([`super::analyze`]), then, once every table
/// committed, the parts deleted.
pub(super) async fn after_commit(
    wh: &dyn crate::warehouse::Warehouse,
    stage: &dyn Stage,
    result: &mut LoadResult,
    options: &LoadOptions,
) {
    super::analyze::after_commit(wh, result).await;
    super::incremental::after_commit(stage, result).await;
    delete_after_commit(stage, result, options).await;
}

/// Deletes the parts of a done load whose every table committed, and records it in `result`. Best effort: a part
/// that cannot be deleted is logged and left to the stage's lifecycle rule.
async fn delete_after_commit(stage: &dyn Stage, result: &mut LoadResult, options: &LoadOptions) {
    let all_committed = !result.tables.is_empty() && result.tables.iter().all(|t| t.status.is_committed());
    if options.keep_parts || !result.done || !all_committed || result.parts_deleted.is_some() {
        return;
    }
    let (mut files, mut bytes) = (0u64, 0u64);
    for t in &result.tables {
        let dir = format!("{}/", table_dir(&result.run_id, &t.table));
        let listed = match stage.list(&dir).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, table = %t.table, "parts not deleted");
                continue;
            }
        };
        for (key, size) in listed.iter().filter(|(k, _)| k.ends_with(".parquet")) {
            match stage.delete_prefix(key).await {
                Ok(_) => {
                    files += 1;
                    bytes += size;
                }
                Err(e) => tracing::warn!(error = %e, key = %key, "part not deleted"),
            }
        }
    }
    tracing::info!(files, bytes, "the run's parts deleted after its load committed");
    result.parts_deleted = Some(PartsDeleted {
        at: crate::contract::clock::unix_now(),
        files,
        bytes,
    });
}
