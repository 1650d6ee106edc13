//! `--deletes soft`: a target's row whose key the source no longer holds stays, marked with the instant of the run's
//! data in `_pgshift_deleted_at` (NULL on live rows); a key that comes back is a live row again. The statements are
//! the same on both warehouses (`UPDATE … FROM`, <https://docs.aws.amazon.com/redshift/latest/dg/r_UPDATE.html>;
//! `NOT EXISTS` with a correlated subquery in the WHERE clause). Counts of the target are of its live rows.

use crate::contract::incremental::{DELETED_AT_COLUMN, DELETED_COLUMN};
use crate::contract::model::TableRef;

use super::error::LoadError;
use super::statements::{ident, qualified};

/// The instant of the run's data as a literal both warehouses read as `TIMESTAMPTZ`.
pub(super) fn instant_literal(secs: i64) -> String {
    let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    format!("'{}'::timestamptz", t.format("%Y-%m-%d %H:%M:%S+00"))
}

/// `target.k = staging.k AND …` over the key.
fn on(key: &[String], target: &str, staging: &str) -> Result<String, LoadError> {
    Ok(key
        .iter()
        .map(|k| ident(k).map(|k| format!("{target}.{k} = {staging}.{k}")))
        .collect::<Result<Vec<_>, _>>()?
        .join(" AND "))
}

/// The live rows of `target` (within `within`, a predicate, when given) whose key staging does not hold, marked.
pub(super) fn mark_missing_sql(
    table: &TableRef,
    staging: &str,
    key: &[String],
    within: Option<&str>,
    at: i64,
) -> Result<String, LoadError> {
    let target = qualified(table)?;
    let col = ident(DELETED_AT_COLUMN)?;
    let within = within.map_or(String::new(), |p| format!(" AND ({p})"));
    Ok(format!(
        "UPDATE {target} SET {col} = {} WHERE {col} IS NULL{within} AND NOT EXISTS (SELECT 1 FROM {staging} WHERE {})",
        instant_literal(at),
        on(key, &target, staging)?
    ))
}

/// The live rows of `target` whose key staging flags as deleted (a row-by-row comparison's deletes), marked.
pub(super) fn mark_flagged_sql(table: &TableRef, staging: &str, key: &[String], at: i64) -> Result<String, LoadError> {
    let target = qualified(table)?;
    let col = ident(DELETED_AT_COLUMN)?;
    Ok(format!(
        "UPDATE {target} SET {col} = {} FROM {staging} WHERE {} AND {staging}.{} AND {target}.{col} IS NULL",
        instant_literal(at),
        on(key, &target, staging)?,
        ident(DELETED_COLUMN)?
    ))
}

/// The target's rows (live or marked) of the keys staging holds as rows, deleted before those rows are inserted.
pub(super) fn delete_staged_sql(
    table: &TableRef,
    staging: &str,
    key: &[String],
    flagged: bool,
) -> Result<String, LoadError> {
    let target = qualified(table)?;
    let rows_only = match flagged {
        true => format!(" AND NOT {staging}.{}", ident(DELETED_COLUMN)?),
        false => String::new(),
    };
    Ok(format!(
        "DELETE FROM {target} USING {staging} WHERE {}{rows_only}",
        on(key, &target, staging)?
    ))
}

/// A `replace` under soft deletes: the live rows the run does not hold marked, then the rows of the keys it holds
/// deleted (the INSERT follows); the target stays the table it is.
pub(super) fn replace_sql(table: &TableRef, staging: &str, key: &[String], at: i64) -> Result<Vec<String>, LoadError> {
    Ok(vec![
        mark_missing_sql(table, staging, key, None, at)?,
        delete_staged_sql(table, staging, key, false)?,
    ])
}

/// The check that the target's live rows are the source's: a division by zero fails the transaction otherwise.
pub(super) fn live_rows_sql(table: &TableRef, expected: u64) -> Result<String, LoadError> {
    Ok(format!(
        "SELECT 1 / CASE WHEN count(*) = {expected} THEN 1 ELSE 0 END AS live_rows_as_the_source FROM {} WHERE {} IS \
         NULL",
        qualified(table)?,
        ident(DELETED_AT_COLUMN)?
    ))
}

/// `WHERE "_pgshift_deleted_at" IS NULL`: a count of live rows only, under soft deletes.
pub(super) fn live_only(soft: bool) -> Result<String, LoadError> {
    Ok(match soft {
        true => format!(" WHERE {} IS NULL", ident(DELETED_AT_COLUMN)?),
        false => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instant_is_a_timestamptz_literal_in_utc() {
        assert_eq!(instant_literal(0), "'1970-01-01 00:00:00+00'::timestamptz");
        let s = mark_missing_sql(&TableRef::new("s", "t"), "\"s\".\"st\"", &["id".into()], Some("x"), 0).unwrap();
        assert!(
            s.starts_with("UPDATE \"s\".\"t\" SET \"_pgshift_deleted_at\" = '1970-01-01"),
            "{s}"
        );
        assert!(s.contains("IS NULL AND (x) AND NOT EXISTS (SELECT 1 FROM \"s\".\"st\" WHERE \"s\".\"t\".\"id\" = \"s\".\"st\".\"id\")"), "{s}");
    }
}
