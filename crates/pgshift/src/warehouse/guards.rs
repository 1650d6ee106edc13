//! The load's guard statements, named: each divides by zero to abort its transaction, and its alias says which
//! it was, so that either warehouse's failure is told in words.

/// What a guard statement of the load means when it fails (it divides by zero to abort the transaction): named by
/// the alias the loader gives it, so that both warehouses say why, not "division by zero".
pub(crate) fn guard_named(sql: &str) -> Option<&'static str> {
    if sql.contains("AS unique_keys_to_merge") {
        return Some(
            "a key is in the run's rows more than once, and a merge matches one target row per key: make the table's \
             key unique (its primary key, or [table] key in pgshift.toml), or load it with --mode replace; nothing was \
             changed",
        );
    }
    if sql.contains("AS target_as_its_last_run_left_it") {
        return Some(
            "an incremental target was loaded by another run since its state's (two runs of one target at once): \
             nothing was changed; run again with --restart (or a new --run-id): its pre-flight sets the state aside, \
             and the table is loaded in full",
        );
    }
    if sql.contains("AS target_holds_the_source_rows") {
        return Some(
            "after an incremental table's changes, the target's row count or key sum is not the source's: the target \
             was changed during the load (by hand, or by a writer other than pgshift); nothing was changed; run again \
             with --restart (or a new --run-id): its pre-flight sets the state aside, and the table is loaded in full",
        );
    }
    sql.contains("AS new_keys_to_append").then_some(
        "a key of the run's rows is in the target already, or twice among them, and an append would leave it twice \
         (Redshift enforces no key): load with --mode merge to update such rows, or --mode replace; nothing was changed",
    )
}
