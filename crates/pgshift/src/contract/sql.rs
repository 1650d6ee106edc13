//! SQL text that pgshift sends. Identifiers are always double-quoted; values that cannot be bind parameters (COPY
//! takes none) go through [`literal`], the one audited function that renders a typed literal.

use std::fmt::Write;

use crate::contract::model::{Bounds, ColumnSpec, KeyValue, TableRef};
use crate::contract::types::Cast;

/// `"name"`, with embedded quotes doubled. A NUL cannot be part of a Postgres identifier.
pub fn ident(name: &str) -> Result<String, String> {
    if name.contains('\0') {
        return Err(format!("identifier {name:?} contains a NUL character"));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `"schema"."table"`.
pub fn table(t: &TableRef) -> Result<String, String> {
    Ok(format!("{}.{}", ident(&t.schema)?, ident(&t.name)?))
}

/// A typed literal: `'text'::type`. The text is a standard-conforming string (the session pins
/// `standard_conforming_strings = on`, so a backslash is an ordinary character) with single quotes doubled; the type
/// is one of a fixed set of names. Nothing in `value` can end the literal early.
pub fn literal(v: &KeyValue) -> Result<String, String> {
    if v.value.contains('\0') {
        return Err(format!("key value {:?} contains a NUL character", v.value));
    }
    Ok(format!("'{}'::{}", v.value.replace('\'', "''"), v.ty.sql_name()))
}

/// The SELECT-list expression of a column.
pub fn select_expr(c: &ColumnSpec) -> Result<String, String> {
    let col = ident(&c.name)?;
    Ok(match c.cast {
        None => col,
        // The type's own output function (what psql prints), which `::text` is not for every type: `inet`'s cast
        // adds the mask (`::1/128` for `::1`), `bool`'s spells `true` for `t`, `bpchar`'s trims the padding.
        Some(Cast::Text) => format!("CASE WHEN {col} IS NULL THEN NULL ELSE pg_catalog.format('%s', {col}) END"),
        Some(Cast::Json) => format!("pg_catalog.to_json({col})::pg_catalog.text"),
        Some(Cast::Numeric) => format!("{col}::pg_catalog.numeric"),
    })
}

fn select_list(columns: &[ColumnSpec]) -> Result<String, String> {
    Ok(columns
        .iter()
        .map(select_expr)
        .collect::<Result<Vec<_>, _>>()?
        .join(", "))
}

/// The range predicate: a plain comparison of the key columns against literals (row-value comparison for composite
/// keys), which the primary-key btree serves as an index range. No function is ever applied to the key.
pub fn predicate(key: &[String], bounds: &Bounds) -> Result<Option<String>, String> {
    match bounds {
        Bounds::Key { lower, upper } => {
            let mut parts = Vec::new();
            for (op, bound) in [(">=", lower), ("<", upper)] {
                let Some(values) = bound else { continue };
                if values.len() != key.len() {
                    return Err(format!(
                        "a bound has {} value(s) for a key of {} column(s) ({})",
                        values.len(),
                        key.len(),
                        key.join(", ")
                    ));
                }
                parts.push(compare(key, op, values)?);
            }
            Ok((!parts.is_empty()).then(|| parts.join(" AND ")))
        }
        Bounds::Ctid { first_page, end_page } => {
            let mut p = format!("ctid >= '({first_page},0)'::tid");
            if let Some(end) = end_page {
                write!(p, " AND ctid < '({end},0)'::tid").map_err(|e| e.to_string())?;
            }
            Ok(Some(p))
        }
    }
}

fn compare(key: &[String], op: &str, values: &[KeyValue]) -> Result<String, String> {
    let cols = key.iter().map(|k| ident(k)).collect::<Result<Vec<_>, _>>()?;
    let lits = values.iter().map(literal).collect::<Result<Vec<_>, _>>()?;
    Ok(if cols.len() == 1 {
        format!("{} {op} {}", cols[0], lits[0])
    } else {
        format!("({}) {op} ({})", cols.join(", "), lits.join(", "))
    })
}

/// The SELECT of a task. `only`: the relation is a plain table, read without the rows of tables that inherit from it
/// (`FROM ONLY`; each child is a table of its own). A declaratively partitioned table is read whole: its rows are all
/// in its partitions.
pub fn select(
    table_ref: &TableRef,
    columns: &[ColumnSpec],
    key: &[String],
    bounds: &Bounds,
    only: bool,
) -> Result<String, String> {
    select_since(table_ref, columns, (key, bounds), only, None)
}

/// [`select`], and of the rows only those whose cursor column is at or past the mark's watermark (cursor mode:
/// a plain comparison of the column, which an index on it serves).
pub fn select_since(
    table_ref: &TableRef,
    columns: &[ColumnSpec],
    (key, bounds): (&[String], &Bounds),
    only: bool,
    since: Option<&crate::contract::incremental::CursorMark>,
) -> Result<String, String> {
    let only = if only { "ONLY " } else { "" };
    let mut conditions = Vec::new();
    if let Some(m) = since {
        conditions.push(format!(
            "{} >= {}::pg_catalog.timestamptz",
            ident(&m.column)?,
            text_literal(&m.watermark)?
        ));
    }
    let from = format!("{only}{}", table(table_ref)?);
    select_range(&select_list(columns)?, &from, (key, bounds), conditions)
}

/// `SELECT <list> FROM <from>` of a key range: its predicate ([`predicate`]) and any further `conditions`.
pub fn select_range(
    list: &str,
    from: &str,
    (key, bounds): (&[String], &Bounds),
    mut conditions: Vec<String>,
) -> Result<String, String> {
    let mut q = format!("SELECT {list} FROM {from}");
    conditions.splice(0..0, predicate(key, bounds)?);
    if !conditions.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&conditions.join(" AND "));
    }
    Ok(q)
}

/// The row version columns a versioned row-by-row comparison reads after a row's own (`--incremental diff` on a
/// plain table, docs/incremental.md): where the row is and which transaction wrote it. System columns: no user
/// column can have these names.
pub const VERSION_COLUMNS: &str = "ctid, xmin";

/// A plain table's range as [`select`] reads it, each row followed by its version ([`VERSION_COLUMNS`]).
pub fn select_versioned(
    table_ref: &TableRef,
    columns: &[ColumnSpec],
    (key, bounds): (&[String], &Bounds),
) -> Result<String, String> {
    let list = format!("{}, {VERSION_COLUMNS}", select_list(columns)?);
    select_range(&list, &format!("ONLY {}", table(table_ref)?), (key, bounds), Vec::new())
}

/// The first pass of a versioned comparison: a plain table's range, of each row only its key (uncast, as the
/// extraction reads it) and its version.
pub fn select_key_versions(table_ref: &TableRef, key: &[String], bounds: &Bounds) -> Result<String, String> {
    let list = format!("{}, {VERSION_COLUMNS}", key_list(key)?);
    select_only(&list, table_ref, (key, bounds), Vec::new())
}

/// The key columns, quoted, as a SELECT list.
fn key_list(key: &[String]) -> Result<String, String> {
    Ok(key.iter().map(|k| ident(k)).collect::<Result<Vec<_>, _>>()?.join(", "))
}

/// [`select_range`] of a plain table's own rows (`ONLY`: no child table's).
fn select_only(
    list: &str,
    table_ref: &TableRef,
    range: (&[String], &Bounds),
    conditions: Vec<String>,
) -> Result<String, String> {
    select_range(list, &format!("ONLY {}", table(table_ref)?), range, conditions)
}

/// A windowed first pass ([`crate::source::sieve::Sieve::window_since`]): [`select_key_versions`] of only the rows
/// written by a transaction since `since` (the low 32 bits of an id, which this process formats): `age(xmin)` is a
/// row's distance back from the next id, `age(since)` the window's length.
pub fn select_recent_versions(
    table_ref: &TableRef,
    key: &[String],
    bounds: &Bounds,
    since: u32,
) -> Result<String, String> {
    let list = format!("{}, {VERSION_COLUMNS}", key_list(key)?);
    select_only(&list, table_ref, (key, bounds), vec![written_since("xmin", since)])
}

/// Whether the row version whose `xmin` is `xmin` (a column reference) was written by a transaction at or after
/// `since` (the low 32 bits of an id, which this process formats): `age(xmin)` is a row's distance back from the next
/// id, `age(since)` the window's length.
pub(crate) fn written_since(xmin: &str, since: u32) -> String {
    format!(
        "pg_catalog.age({xmin}) OPERATOR(pg_catalog.>=) 0 AND pg_catalog.age({xmin}) OPERATOR(pg_catalog.<=) \
         pg_catalog.age('{since}'::pg_catalog.xid)"
    )
}

/// The first pass of a range whose recent rows the planner listed ([`crate::contract::incremental::RecentRows`]):
/// [`select_key_versions`] of the rows at these tuple ids (a TID scan; the ids are numbers this process formats).
pub fn select_key_versions_at(table_ref: &TableRef, key: &[String], tids: &[(u32, u16)]) -> Result<String, String> {
    let list = format!("{}, {VERSION_COLUMNS}", key_list(key)?);
    at_tids(&list, table_ref, tids)
}

/// `SELECT <list> FROM ONLY <table> WHERE ctid = ANY (<the ids>)`.
fn at_tids(list: &str, table_ref: &TableRef, tids: &[(u32, u16)]) -> Result<String, String> {
    let mut array = String::with_capacity(tids.len() * 16);
    for (i, (page, item)) in tids.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        write!(array, "{sep}\"({page},{item})\"").map_err(|e| e.to_string())?;
    }
    Ok(format!(
        "SELECT {list} FROM ONLY {} WHERE ctid = ANY ('{{{array}}}'::pg_catalog.tid[])",
        table(table_ref)?
    ))
}

/// A plain table's range, of each row only its key: the pass that tells which keys of a windowed comparison are gone.
pub fn select_keys(table_ref: &TableRef, key: &[String], bounds: &Bounds) -> Result<String, String> {
    select_only(&key_list(key)?, table_ref, (key, bounds), Vec::new())
}

/// The rows of a plain table's range, counted.
pub fn count_range(table_ref: &TableRef, key: &[String], bounds: &Bounds) -> Result<String, String> {
    select_only("pg_catalog.count(*)", table_ref, (key, bounds), Vec::new())
}

/// A plain table's rows at these tuple ids, read as [`select_versioned`] reads them: a TID scan, one page fetch a row.
/// The ids are numbers this process formats (read from the server in the same snapshot), never user text.
pub fn select_tids(table_ref: &TableRef, columns: &[ColumnSpec], tids: &[(u32, u16)]) -> Result<String, String> {
    at_tids(
        &format!("{}, {VERSION_COLUMNS}", select_list(columns)?),
        table_ref,
        tids,
    )
}

/// `COPY (<select>) TO STDOUT (FORMAT binary)`.
pub fn copy_out(select: &str) -> String {
    format!("COPY ({select}) TO STDOUT (FORMAT binary)")
}

/// A string literal PostgreSQL and Redshift read the same way: quotes doubled, and no backslash or NUL (the values
/// pgshift renders this way are run ids, plan ids and catalog names, checked).
pub fn text_literal(s: &str) -> Result<String, String> {
    if s.contains(['\\', '\0']) {
        return Err(format!("{s:?}: backslashes and NULs are not allowed here"));
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::model::KeyType;

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert!(ident("a\0b").is_err());
    }

    #[test]
    fn literals_double_quotes_only() {
        let v = KeyValue::new(KeyType::Text, "it's a \\ 'test' ünï😀");
        assert_eq!(literal(&v).unwrap(), "'it''s a \\ ''test'' ünï😀'::text");
    }

    #[test]
    fn composite_predicate_is_a_row_comparison() {
        let key = vec!["a".to_string(), "b".to_string()];
        let b = Bounds::Key {
            lower: Some(vec![
                KeyValue::new(KeyType::Int8, "1"),
                KeyValue::new(KeyType::Int2, "2"),
            ]),
            upper: None,
        };
        assert_eq!(
            predicate(&key, &b).unwrap().unwrap(),
            "(\"a\", \"b\") >= ('1'::int8, '2'::int2)"
        );
        assert_eq!(predicate(&key, &Bounds::ALL).unwrap(), None);
        let bad = Bounds::Key {
            lower: Some(vec![KeyValue::new(KeyType::Int8, "1")]),
            upper: None,
        };
        assert!(predicate(&key, &bad).is_err());
    }
}
