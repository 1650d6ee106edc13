//! The boundary keys of a table's ranges, read from the source: key quantiles of a page sample, or the first keys of
//! evenly spaced heap pages for a physically ordered key; and the key's correlation that chooses between them.

use tokio_postgres::Client;

use super::PlanError;
use crate::contract::model::{KeyType, KeyValue, TableRef};
use crate::contract::sql;
use crate::source::SourceError;

/// The key columns as an ORDER BY list, and as a SELECT list of their text forms. The text columns are aliased, so
/// that an outer ORDER BY binds to the typed key columns, not to their text.
fn key_lists(key: &[String]) -> Result<(String, String), PlanError> {
    let idents = key
        .iter()
        .map(|k| sql::ident(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PlanError::InvalidRequest)?;
    let texts = idents
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c}::text AS pgshift_k{i}"))
        .collect::<Vec<_>>();
    Ok((idents.join(", "), texts.join(", ")))
}

/// `parts - 1` boundary keys: the first key of every `ntile` bucket but the first, over a page sample ordered by the
/// key (its own collation and type ordering), rendered as the key types' text input form.
pub(super) async fn key_quantiles(
    client: &Client,
    table: &TableRef,
    key: &[String],
    types: &[KeyType],
    parts: u32,
    percent: f64,
) -> Result<(Vec<Vec<KeyValue>>, u64), PlanError> {
    let bad = PlanError::InvalidRequest;
    let (cols, texts) = key_lists(key)?;
    // Numbers we format ourselves: no user text in the statement but quoted identifiers.
    let sample = if percent >= 100.0 {
        String::new()
    } else {
        format!(" TABLESAMPLE SYSTEM ({percent:.6}) REPEATABLE (7)")
    };
    let q = format!(
        "SELECT {texts}, pgshift_n FROM (
           SELECT {cols}, pgshift_bucket, pgshift_n,
                  lag(pgshift_bucket) OVER (ORDER BY {cols}) AS pgshift_prev FROM (
             SELECT {cols}, ntile({parts}) OVER (ORDER BY {cols}) AS pgshift_bucket, count(*) OVER () AS pgshift_n
             FROM {}{sample}
           ) pgshift_s
         ) pgshift_q
         WHERE pgshift_prev IS NOT NULL AND pgshift_prev <> pgshift_bucket
         ORDER BY {cols}",
        sql::table(table).map_err(bad)?
    );
    let rows = client
        .query(&q, &[])
        .await
        .map_err(|e| SourceError::from_pg(table, 0, e))?;
    let mut sampled = 0u64;
    let mut out: Vec<Vec<KeyValue>> = Vec::new();
    for r in rows {
        let kv: Vec<KeyValue> = types
            .iter()
            .enumerate()
            .map(|(i, t)| KeyValue::new(*t, r.get::<_, String>(i)))
            .collect();
        sampled = r.get::<_, i64>(types.len()) as u64;
        if out.last() != Some(&kv) {
            out.push(kv);
        }
    }
    if out.is_empty() && sampled == 0 {
        // The sample found nothing (or the boundaries collapsed): count what a full read of the key would see.
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {}", sql::table(table).map_err(bad)?),
                &[],
            )
            .await
            .map_err(|e| SourceError::from_pg(table, 0, e))?
            .get(0);
        sampled = n as u64;
    }
    Ok((out, sampled))
}

/// `pg_stats.correlation` of a column: how closely the physical row order follows the column's order.
pub(super) async fn key_correlation(client: &Client, table: &TableRef, column: &str) -> Option<f64> {
    let row = client
        .query_opt(
            "SELECT correlation::float8 FROM pg_catalog.pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3",
            &[&table.schema, &table.name, &column],
        )
        .await
        .ok()??;
    row.get::<_, Option<f64>>(0)
}

/// For a physically ordered key: the smallest key on each of `parts - 1` evenly spaced heap pages (a TID range scan
/// over a few pages each). `None` when the probes are not strictly increasing (the table is not as ordered as its
/// statistics say), so the caller samples instead. Ranges built from sorted boundaries cover every row exactly once
/// whatever the physical order; ordering only matters for balance.
pub(super) async fn page_probes(
    client: &Client,
    table: &TableRef,
    key: &[String],
    types: &[KeyType],
    parts: u32,
    pages: u64,
) -> Result<Option<Vec<Vec<KeyValue>>>, PlanError> {
    let bad = PlanError::InvalidRequest;
    let (cols, texts) = key_lists(key)?;
    let from = sql::table(table).map_err(bad)?;
    let mut out: Vec<Vec<KeyValue>> = Vec::new();
    for i in 1..parts as u64 {
        let page = pages * i / parts as u64;
        // Page numbers we compute: no user text in the statement but quoted identifiers.
        let q = format!(
            "SELECT {texts} FROM {from} WHERE ctid >= '({page},0)'::tid AND ctid < '({},0)'::tid ORDER BY {cols} LIMIT 1",
            page + 8
        );
        let Some(r) = client
            .query_opt(&q, &[])
            .await
            .map_err(|e| SourceError::from_pg(table, 0, e))?
        else {
            continue;
        };
        let kv: Vec<KeyValue> = types
            .iter()
            .enumerate()
            .map(|(i, t)| KeyValue::new(*t, r.get::<_, String>(i)))
            .collect();
        if out.last() != Some(&kv) {
            out.push(kv);
        }
    }
    // Strictly increasing, as Postgres compares the typed values (no text key types here: no collation involved).
    let row = |k: &[KeyValue]| -> Result<String, PlanError> {
        Ok(format!(
            "ROW({})",
            k.iter()
                .map(sql::literal)
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?
                .join(", ")
        ))
    };
    if out.len() >= 2 {
        let mut checks = Vec::new();
        for w in out.windows(2) {
            checks.push(format!("{} < {}", row(&w[0])?, row(&w[1])?));
        }
        let ok: bool = client
            .query_one(&format!("SELECT {}", checks.join(" AND ")), &[])
            .await
            .map_err(|e| SourceError::from_pg(table, 0, e))?
            .get(0);
        if !ok {
            return Ok(None);
        }
    }
    Ok(Some(out))
}
