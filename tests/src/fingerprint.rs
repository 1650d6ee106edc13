//! What a table holds, seen value by value: its row count and, per column, an MD5 of every value's canonical text in
//! key order. Written for the tests alone: the SQL here is the test's own, never the extractor's select expressions,
//! so a wrong cast in pgshift cannot appear on both sides of a comparison.
//!
//! - A value's canonical text is PostgreSQL's own output function (`format('%s', v)`), under session settings pinned
//!   here; a numeric's trailing zeros are trimmed (`trim_scale`: a target `NUMERIC(38,18)` holds `1.5` as
//!   `1.500…0`), NULL is a marker no text can equal.
//! - The order is the key's canonical text in the "C" collation (the same on both sides whatever the key's type in
//!   the warehouse); a table without a key is ordered by its whole row's canonical text, so a value moved to another
//!   row still changes the hash.
//! - A column the extractor casts (`--cast`, the default casts of types Parquet has no type for) is compared as the
//!   cast's result, computed here by the test's own expression on the source side.
//! - A plain table is read without the rows of the tables that inherit from it (`FROM ONLY`).

use anyhow::{Context, Result};

use crate::connect;

/// How the source side renders a column whose values the extractor casts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    /// The type's own output function: the default.
    Output,
    /// `to_json(v)`'s text (arrays, composites, ranges cast to JSON).
    Json,
    /// The value as `numeric` (money).
    Numeric,
    /// ±infinity as NULL, every other value as itself (`--infinity null`).
    FiniteOrNull,
}

/// Settings that make every value's text independent of the server's and the role's defaults.
const SETTINGS: &str = "SET search_path = pg_catalog; SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET statement_timeout = 0";

/// A double-quoted identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The canonical text of column `col` (already quoted), numeric or not as the catalog says.
fn canonical(col: &str, canon: Canon, numeric: bool) -> String {
    let value = match canon {
        Canon::Json => format!("pg_catalog.to_json({col})"),
        Canon::Numeric => format!("pg_catalog.trim_scale({col}::pg_catalog.numeric)"),
        Canon::FiniteOrNull => format!("CASE WHEN pg_catalog.isfinite({col}) THEN {col} END"),
        Canon::Output if numeric => format!("pg_catalog.trim_scale({col})"),
        Canon::Output => col.to_string(),
    };
    format!("CASE WHEN {value} IS NULL THEN '~' ELSE '=' OPERATOR(pg_catalog.||) pg_catalog.format('%s', {value}) END")
}

/// The row count and `column=md5` for each of `columns` (all of the table's columns when empty) of `schema.table`,
/// in the order of `key` (no key: whole rows). `canon` names the columns rendered other than by their output
/// function.
pub async fn fingerprint_of(
    url: &str,
    (schema, table): (&str, &str),
    columns: &[String],
    key: &[String],
    canon: &[(String, Canon)],
) -> Result<Vec<String>> {
    let client = connect(url).await?;
    client.batch_execute(SETTINGS).await?;
    let catalog = client
        .query(
            "SELECT a.attname::text, COALESCE(bt.typcategory, t.typcategory) = 'N' \
               AND COALESCE(bt.typname, t.typname) = 'numeric' \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype AND t.typtype = 'd' \
             WHERE a.attrelid = (pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident($2))::pg_catalog.regclass \
               AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .with_context(|| format!("the columns of {schema}.{table}"))?;
    let numeric: std::collections::HashMap<String, bool> = catalog
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
        .collect();
    let names: Vec<String> = match columns.is_empty() {
        true => catalog.iter().map(|r| r.get(0)).collect(),
        false => columns.to_vec(),
    };
    let text_of = |name: &str| -> Result<String> {
        let is_numeric = *numeric
            .get(name)
            .with_context(|| format!("{schema}.{table} has no column {name:?}"))?;
        let how = canon.iter().find(|(c, _)| c == name).map_or(Canon::Output, |(_, h)| *h);
        Ok(canonical(&quote(name), how, is_numeric))
    };
    let texts = names.iter().map(|n| text_of(n)).collect::<Result<Vec<_>>>()?;
    let order = match key.is_empty() {
        true => vec![format!(
            "pg_catalog.concat_ws(E'\\x1e', {}) COLLATE \"C\"",
            texts.join(", ")
        )],
        false => key
            .iter()
            .map(|k| Ok(format!("{} COLLATE \"C\"", text_of(k)?)))
            .collect::<Result<Vec<_>>>()?,
    }
    .join(", ");
    let hashes: Vec<String> = texts
        .iter()
        .map(|t| format!("COALESCE(pg_catalog.md5(pg_catalog.string_agg({t}, E'\\x1f' ORDER BY {order})), 'empty')"))
        .collect();
    // A plain table without the rows of tables that inherit from it; a partitioned one with its partitions'.
    let kind: i8 = client
        .query_one(
            "SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = \
             (pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident($2))::pg_catalog.regclass",
            &[&schema, &table],
        )
        .await?
        .get(0);
    let only = if kind as u8 == b'r' { "ONLY " } else { "" };
    let sql = format!(
        "SELECT pg_catalog.count(*)::pg_catalog.text{} FROM {only}{}.{}",
        hashes.iter().map(|h| format!(", {h}")).collect::<String>(),
        quote(schema),
        quote(table)
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .with_context(|| format!("fingerprinting {schema}.{table}"))?;
    let mut out = vec![format!("rows={}", row.get::<_, String>(0))];
    out.extend(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}={}", row.get::<_, String>(i + 1))),
    );
    Ok(out)
}
