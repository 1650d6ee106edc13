//! The statements of loads by key: `merge` (Redshift's `MERGE`, the guard against a key twice among the run's rows)
//! and a keyed `append`'s guard on Redshift, which enforces no key.

use super::error::LoadError;
use super::setup::Prepared;
use super::statements::{ident, key_list, key_match};

/// `merge` on Redshift: one `MERGE` (<https://docs.aws.amazon.com/redshift/latest/dg/r_MERGE.html>): each staging row
/// updates the target's row of its key, or is inserted. Every row is written once, and rows the run does not touch
/// are not rewritten, as a delete-then-insert's are. The same statement runs on PostgreSQL 15+, where the tests run it.
pub(super) fn merge_sql(p: &Prepared, target: &str, staging: &str) -> Result<String, LoadError> {
    let key: Vec<String> = p.plan.key.iter().map(|k| ident(k)).collect::<Result<_, _>>()?;
    let on = key_match(&p.plan.key, target, "s")?;
    let cols: Vec<(String, String)> = p
        .plan
        .columns
        .iter()
        .map(|c| {
            ident(&c.name).map(|n| {
                let v = match p.super_columns && crate::warehouse::is_json(c) {
                    true => format!("JSON_PARSE(s.{n})"),
                    false => format!("s.{n}"),
                };
                (n, v)
            })
        })
        .collect::<Result<_, _>>()?;
    // A table whose columns are all key columns has nothing to update: its key is set to itself.
    let set: Vec<String> = match cols.iter().filter(|(n, _)| !key.contains(n)).collect::<Vec<_>>() {
        rest if rest.is_empty() => vec![format!("{} = s.{}", key[0], key[0])],
        rest => rest.iter().map(|(n, v)| format!("{n} = {v}")).collect(),
    };
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    let values: Vec<&str> = cols.iter().map(|(_, v)| v.as_str()).collect();
    Ok(format!(
        "MERGE INTO {target} USING {staging} AS s ON {on} WHEN MATCHED THEN UPDATE SET {} WHEN NOT MATCHED THEN \
         INSERT ({}) VALUES ({})",
        set.join(", "),
        names.join(", "),
        values.join(", ")
    ))
}

/// Before a `MERGE`: the transaction fails (a division by zero, as the reconcile's) when two staging rows share a
/// key, which a live source can give (a row whose key moved between ranges while they were read): a `MERGE` would
/// match one target row with both, which the load refuses rather than pick one.
pub(super) fn unique_keys_guard(p: &Prepared, staging: &str) -> Result<String, LoadError> {
    let key = key_list(&p.plan.key)?;
    Ok(format!(
        "SELECT 1 / (CASE WHEN EXISTS (SELECT 1 FROM {staging} GROUP BY {key} HAVING COUNT(*) > 1) THEN 0 ELSE 1 END) \
         AS unique_keys_to_merge"
    ))
}

/// `append` of a keyed table on Redshift, which enforces no key
/// (<https://docs.aws.amazon.com/redshift/latest/dg/t_Defining_constraints.html>): fails the transaction when a key
/// of the run's rows is in the target already or twice among them, as PostgreSQL's primary key would, instead of
/// leaving the key twice in the target. It costs a join of the run's keys with the target's, on the key the target is
/// sorted by by default.
pub(super) fn new_keys_guard(p: &Prepared, target: &str, staging: &str) -> Result<String, LoadError> {
    let on = key_match(&p.plan.key, "t", "s")?;
    Ok(format!(
        "SELECT 1 / (CASE WHEN EXISTS (SELECT 1 FROM {target} t JOIN {staging} s ON {on}) OR EXISTS (SELECT 1 FROM \
         {staging} GROUP BY {} HAVING COUNT(*) > 1) THEN 0 ELSE 1 END) AS new_keys_to_append",
        key_list(&p.plan.key)?
    ))
}
