//! The planner: selects tables, introspects them in a handful of catalog queries, and splits each into key ranges of
//! equal row count (quantiles of the key, never an even stride, never a hash), with the number of parts tuned from
//! the data, the worker's limits and Redshift's slices. It writes the full plan and the task list to the stage and
//! returns a small summary (Step Functions payloads stay far below 256 KiB).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_postgres::Client;

use crate::contract::layout;
use crate::contract::model::{Bounds, ExtractTask, KeyType, KeyValue, TableRef};
use crate::contract::plan::*;
use crate::contract::sql;
use crate::contract::types::Cast;
use crate::source::{
    column_specs, describe_tables, key_columns, CatalogTable, SourceConnector, SourceError, SESSION_SETTINGS,
};
use crate::stage::Stage;
use crate::stage::StageOpener;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("invalid plan request: {0}")]
    InvalidRequest(String),
    #[error("table pattern {0:?} matches no table (system schemas are never matched)")]
    NoMatch(String),
    #[error("key column {column:?} of {table} holds NULLs; choose a NOT NULL key")]
    NullKey { table: TableRef, column: String },
    #[error("run {run_id:?} exists on the stage already: {detail}")]
    RunExists { run_id: String, detail: String },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Stage(#[from] crate::stage::StageError),
}

impl PlanError {
    pub fn name(&self) -> &'static str {
        match self {
            PlanError::InvalidRequest(_) => "Pipeline.Fatal.InvalidInput",
            PlanError::NoMatch(_) => "Pipeline.Fatal.NotFound",
            PlanError::NullKey { .. } => "Pipeline.Fatal.InvalidInput",
            PlanError::RunExists { .. } => "Pipeline.Fatal.RunExists",
            PlanError::Source(e) => e.name(),
            PlanError::Stage(e) => e.name(),
        }
    }
}

/// The ports the planner uses.
pub struct PlanContext {
    pub source: Arc<dyn SourceConnector>,
    pub stages: Arc<dyn StageOpener>,
}

/// The number of parts for a table of `bytes`: by size, raised so a part finishes inside the time budget at the
/// expected throughput, rounded up to a multiple of the slices when there are more parts than slices, capped.
pub fn part_count(bytes: u64, s: &PlanSettings) -> (u32, Option<String>) {
    if bytes == 0 {
        return (1, None);
    }
    if let Some(p) = s.parts {
        return (p.clamp(1, s.max_parts_per_table.max(1)), None);
    }
    let by_size = bytes.div_ceil(s.target_part_bytes.max(1));
    let by_time = bytes.div_ceil((s.throughput_bytes_per_sec.max(1)).saturating_mul(s.part_seconds_budget.max(1)));
    let mut p = by_size.max(by_time).max(1);
    let slices = s.slices.max(1) as u64;
    if p > slices && slices > 1 {
        p = p.div_ceil(slices) * slices;
    }
    let max = s.max_parts_per_table.max(1) as u64;
    if p > max {
        let capped = if max > slices && slices > 1 {
            max / slices * slices
        } else {
            max
        };
        let note = format!(
            "{p} parts wanted (size {by_size}, time budget {by_time}) but clamped to max_parts_per_table = {capped}"
        );
        return (capped as u32, Some(note));
    }
    (p as u32, None)
}

/// `*` and `?` glob over one name.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(&pattern.chars().collect::<Vec<_>>(), &name.chars().collect::<Vec<_>>())
}

fn matches(pattern: &TableRef, t: &TableRef) -> bool {
    glob(&pattern.schema, &t.schema) && glob(&pattern.name, &t.name)
}

struct Relation {
    oid: u32,
    table: TableRef,
    kind: char,
    unlogged: bool,
    is_partition: bool,
    rows: f64,
    bytes: u64,
    pages: u64,
    can_select: bool,
    heap_bytes: u64,
    total_bytes: u64,
}

/// Every user relation that could be extracted, with its size (partitioned parents sum their leaves).
const RELATIONS_SQL: &str = "
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence = 'u', c.relispartition,
       CASE WHEN c.relkind = 'p' THEN
            (SELECT coalesce(sum(greatest(l.reltuples, 0)), 0)::float8 FROM pg_catalog.pg_partition_tree(c.oid) t
             JOIN pg_catalog.pg_class l ON l.oid = t.relid WHERE t.isleaf)
            ELSE c.reltuples::float8 END,
       CASE WHEN c.relkind = 'p' THEN
            (SELECT coalesce(sum(pg_catalog.pg_table_size(t.relid)), 0)::int8 FROM pg_catalog.pg_partition_tree(c.oid) t
             WHERE t.isleaf)
            WHEN c.relkind IN ('r', 'm', 't') THEN pg_catalog.pg_table_size(c.oid) ELSE 0 END,
       CASE WHEN c.relkind IN ('r', 'm') THEN
            pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int8 ELSE 0 END,
       pg_catalog.has_table_privilege(c.oid, 'SELECT'),
       CASE WHEN c.relkind = 'p' THEN
            (SELECT coalesce(sum(pg_catalog.pg_relation_size(t.relid)), 0)::int8 FROM pg_catalog.pg_partition_tree(c.oid) t)
            ELSE pg_catalog.pg_relation_size(c.oid) END,
       CASE WHEN c.relkind = 'p' THEN
            (SELECT coalesce(sum(pg_catalog.pg_total_relation_size(t.relid)), 0)::int8 FROM pg_catalog.pg_partition_tree(c.oid) t)
            ELSE pg_catalog.pg_total_relation_size(c.oid) END
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
ORDER BY n.nspname, c.relname";

/// Columns whose `pg_stats.n_distinct` is at most $2 (a negative n_distinct is a fraction of the rows).
const LOW_CARDINALITY_SQL: &str = "
SELECT c.oid, s.attname::text
FROM pg_catalog.pg_stats s
JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
WHERE c.oid = ANY($1)
  AND CASE WHEN s.n_distinct >= 0 THEN s.n_distinct ELSE -s.n_distinct * greatest(c.reltuples, 0) END BETWEEN 1 AND $2
ORDER BY c.oid, s.attname";

/// Plans a run: reads the catalog, computes boundaries, and returns the plan (nothing is written).
pub async fn plan(client: &Client, req: &PlanRequest) -> Result<Plan, PlanError> {
    let started = Instant::now();
    if req.tables.is_empty() {
        return Err(PlanError::InvalidRequest("no table patterns".into()));
    }
    let settings = &req.settings;
    check_settings(settings)?;
    let src = |e| PlanError::from(SourceError::Unavailable(format!("planning: {e}")));
    client.batch_execute(SESSION_SETTINGS).await.map_err(src)?;
    let (created_at, compact) = crate::contract::clock::now_rfc3339();
    let run_id = req
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{compact}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let info = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4, current_database()::text",
            &[],
        )
        .await
        .map_err(src)?;
    let system_identifier = match client
        .query_one(
            "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
            &[],
        )
        .await
    {
        Ok(r) => Some(r.get::<_, String>(0)),
        Err(_) => None,
    };
    let source = SourceInfo {
        server_version: info.get(0),
        server_version_num: info.get(1),
        database: info.get(2),
        system_identifier,
    };

    // Select.
    let parse = |p: &String| TableRef::parse(p).map_err(PlanError::InvalidRequest);
    let includes = req.tables.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
    let excludes = req.exclude.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
    let relations: Vec<Relation> = client
        .query(RELATIONS_SQL, &[])
        .await
        .map_err(src)?
        .into_iter()
        .map(|r| {
            let kind: String = r.get(3);
            Relation {
                oid: r.get(0),
                table: TableRef::new(r.get::<_, String>(1), r.get::<_, String>(2)),
                kind: kind.chars().next().unwrap_or('r'),
                unlogged: r.get(4),
                is_partition: r.get(5),
                rows: r.get(6),
                bytes: r.get::<_, i64>(7).max(0) as u64,
                pages: r.get::<_, i64>(8).max(0) as u64,
                can_select: r.get(9),
                heap_bytes: r.get::<_, i64>(10).max(0) as u64,
                total_bytes: r.get::<_, i64>(11).max(0) as u64,
            }
        })
        .collect();
    let mut selected: Vec<&Relation> = Vec::new();
    for (pattern, raw) in includes.iter().zip(&req.tables) {
        let hits: Vec<&Relation> = relations
            .iter()
            .filter(|r| matches(pattern, &r.table))
            .filter(|r| settings.include_partitions || !r.is_partition || !raw.contains(['*', '?']))
            .filter(|r| !excludes.iter().any(|x| matches(x, &r.table)))
            .collect();
        if hits.is_empty() {
            return Err(if raw.contains(['*', '?']) {
                PlanError::NoMatch(raw.clone())
            } else {
                SourceError::TableNotFound(pattern.clone()).into()
            });
        }
        for h in hits {
            if !selected.iter().any(|s| s.oid == h.oid) {
                selected.push(h);
            }
        }
    }
    for r in &selected {
        if !r.can_select {
            return Err(SourceError::PermissionDenied {
                table: r.table.clone(),
                detail: "no SELECT privilege".into(),
            }
            .into());
        }
    }

    // Introspect all at once.
    let ids: Vec<(u32, TableRef, char)> = selected.iter().map(|r| (r.oid, r.table.clone(), r.kind)).collect();
    let catalogs = describe_tables(client, &ids).await.map_err(src)?;
    let oids: Vec<u32> = selected.iter().map(|r| r.oid).collect();
    let mut low_cardinality: std::collections::HashMap<u32, Vec<String>> = std::collections::HashMap::new();
    for r in client
        .query(
            LOW_CARDINALITY_SQL,
            &[&oids, &(settings.dictionary_max_distinct as f32)],
        )
        .await
        .map_err(src)?
    {
        low_cardinality.entry(r.get(0)).or_default().push(r.get(1));
    }

    // Parts per table, then the run-level cap.
    let mut wanted: Vec<(u32, Option<String>)> = selected
        .iter()
        .map(
            |r| match req.overrides.get(&r.table.to_string()).and_then(|o| o.parts) {
                Some(p) => (p.clamp(1, settings.max_parts_per_table.max(1)), None),
                None => part_count(r.bytes, settings),
            },
        )
        .collect();
    let mut notes = vec![consistency(settings).to_string()];
    let total: u64 = wanted.iter().map(|w| w.0 as u64).sum();
    if total > settings.max_parts_per_run as u64 {
        let scale = settings.max_parts_per_run as f64 / total as f64;
        for w in &mut wanted {
            w.0 = ((w.0 as f64 * scale).floor() as u32).max(1);
        }
        notes.push(format!(
            "{total} parts wanted in all, clamped to max_parts_per_run = {} by scaling every table down",
            settings.max_parts_per_run
        ));
    }

    let mut tables = Vec::new();
    let mut tasks = Vec::new();
    for ((rel, catalog), (parts, clamp_note)) in selected.iter().zip(catalogs).zip(wanted) {
        let dictionary = low_cardinality.remove(&rel.oid).unwrap_or_default();
        let table_plan = plan_table(
            client, req, &run_id, rel, &catalog, parts, clamp_note, &source, dictionary,
        )
        .await?;
        tasks.extend(table_plan.1);
        tables.push(table_plan.0);
    }
    Plan {
        run_id,
        plan_id: String::new(),
        request_id: req.identity(),
        created_at,
        source,
        stage: req.stage.trim_end_matches('/').to_string(),
        settings: settings.clone(),
        load: req.load.clone(),
        snapshot: req.snapshot.clone(),
        tables,
        tasks,
        notes,
        planning_seconds: started.elapsed().as_secs_f64(),
    }
    .seal()
    .map_err(|e| PlanError::InvalidRequest(format!("plan JSON: {e}")))
}

/// What the warehouse will reflect of the source, in words (`plan --explain` prints it; docs/planner.md).
pub fn consistency(settings: &PlanSettings) -> &'static str {
    if settings.static_source {
        "consistency: static source (a restored snapshot or a source nothing writes to during the run): every range \
         reads the same data, so the warehouse holds the source as it is"
    } else {
        "consistency: live source. Each range is read in its own REPEATABLE READ snapshot, taken when its extractor \
         starts, so a table is consistent within a range, not across ranges or tables: a row updated in place is read \
         as of its range's moment; a row whose key moves from a range not yet read into one already read is missed, \
         and one moving the other way is read twice; rows inserted or deleted during the run are in or out by range. \
         Tables without a key are read in one range. For one instant, run from a snapshot"
    }
}

/// Settings that would make a run misbehave are refused before anything is read.
fn check_settings(s: &PlanSettings) -> Result<(), PlanError> {
    if s.max_concurrency == 0 {
        // Step Functions reads MaxConcurrency 0 as "no limit": every range at once against the source.
        return Err(PlanError::InvalidRequest(
            "max_concurrency (--concurrency) is 0, which Step Functions reads as unlimited: give the number of \
             extractors the source may serve at once, 1 or more"
                .into(),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn plan_table(
    client: &Client,
    req: &PlanRequest,
    run_id: &str,
    rel: &Relation,
    catalog: &CatalogTable,
    parts: u32,
    clamp_note: Option<String>,
    source: &SourceInfo,
    low_cardinality: Vec<String>,
) -> Result<(TablePlan, Vec<ExtractTask>), PlanError> {
    let table = &rel.table;
    let over = req.overrides.get(&table.to_string()).cloned().unwrap_or_default();
    let policies = over.policies.clone().unwrap_or_else(|| req.policies.clone());
    let casts: Vec<(String, Cast)> = over.casts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let columns = column_specs(catalog, &policies, &casts)?;
    let mut notes: Vec<String> = clamp_note.into_iter().collect();
    let kind = match rel.kind {
        'p' => "partitioned table",
        'v' => "view",
        'm' => "materialized view",
        'f' => "foreign table",
        _ => "table",
    };
    if rel.kind == 'p' {
        notes.push(
            "partitioned: planned as its parent (the key range prunes partitions); leaves not planned separately"
                .into(),
        );
    }

    let key = match &over.key {
        Some(k) => k.clone(),
        None => catalog.key.clone(),
    };
    let mut key_types = Vec::new();
    for (c, ty) in key_columns(catalog, table, &key)? {
        let k = &c.name;
        if !c.not_null {
            let q = format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS NULL)",
                sql::table(table).map_err(PlanError::InvalidRequest)?,
                sql::ident(k).map_err(PlanError::InvalidRequest)?
            );
            let has_null: bool = client
                .query_one(&q, &[])
                .await
                .map_err(|e| SourceError::from_pg(table, 0, e))?
                .get(0);
            if has_null {
                return Err(PlanError::NullKey {
                    table: table.clone(),
                    column: k.clone(),
                });
            }
        }
        key_types.push(ty);
    }

    let heap = matches!(rel.kind, 'r' | 'm');
    let rows_est = rel.rows.max(0.0) as u64;
    let (strategy, bounds, reason, rows_total): (Strategy, Vec<Bounds>, String, u64) = if parts <= 1 {
        let why = if rel.bytes <= req.settings.target_part_bytes && req.settings.parts.is_none() {
            "fits in one part"
        } else {
            "one part wanted"
        };
        (
            Strategy::Single,
            vec![Bounds::ALL],
            format!("{} bytes: {why}", rel.bytes),
            rows_est,
        )
    } else if !key.is_empty() && rel.kind != 'f' && rel.kind != 'v' {
        // How independent are the rows of one page? A physically ordered key (correlation ±1) makes a sampled page
        // worth one key; a scattered key makes every row of it an independent sample.
        let corr = key_correlation(client, table, &key[0])
            .await
            .unwrap_or(1.0)
            .abs()
            .min(1.0);
        let total_pages = if rel.kind == 'p' { rel.bytes / 8192 } else { rel.pages };
        let rows_per_page = (rel.rows.max(1.0) / total_pages.max(1) as f64).max(1.0);
        let probeable = key_types
            .iter()
            .all(|t| !matches!(t, KeyType::Text | KeyType::Varchar | KeyType::Bpchar));
        let probes = if heap
            && corr >= 0.99
            && probeable
            && source.server_version_num >= 140_000
            && rel.pages >= 2 * parts as u64
        {
            page_probes(client, table, &key, &key_types, parts, rel.pages).await?
        } else {
            None
        };
        let (boundaries, sampled, strategy, how) = match probes {
            Some(b) => {
                let how = format!(
                    "the first key on {} evenly spaced heap pages (key correlation {corr:.3})",
                    parts - 1
                );
                (
                    b,
                    rows_est,
                    Strategy::KeyPageProbes {
                        pages: rel.pages,
                        correlation: corr,
                    },
                    how,
                )
            }
            None => {
                // Rows written together often share a key prefix (clustering that the correlation statistic does
                // not see), so a page's rows are less independent than |correlation| says: count a quarter of them.
                let keys_per_page = (1.0 + (rows_per_page - 1.0) * (1.0 - corr)) / 4.0;
                let keys_per_page = keys_per_page.max(1.0);
                let pages_wanted = req.settings.samples_per_part as f64 * parts as f64 / keys_per_page;
                let percent = if total_pages == 0 {
                    100.0
                } else {
                    (100.0 * pages_wanted / total_pages as f64).min(100.0)
                };
                let (b, sampled) = key_quantiles(client, table, &key, &key_types, parts, percent).await?;
                let how =
                    format!("key quantiles of a {percent:.2}% page sample ({sampled} keys, key correlation {corr:.3})");
                let total = if percent < 100.0 {
                    rows_est.max(sampled)
                } else {
                    sampled
                };
                (
                    b,
                    total,
                    Strategy::KeyQuantiles {
                        sampled_rows: sampled,
                        sample_percent: percent,
                    },
                    how,
                )
            }
        };
        let rows_total = sampled;
        let got = boundaries.len() as u32 + 1;
        if got < parts {
            notes.push(format!(
                "{parts} parts wanted; the key has {got} distinct quantiles in the sample"
            ));
        }
        let mut b = Vec::new();
        let mut lower: Option<Vec<KeyValue>> = None;
        for upper in boundaries.into_iter().map(Some).chain(std::iter::once(None)) {
            b.push(Bounds::Key {
                lower: lower.clone(),
                upper: upper.clone(),
            });
            lower = upper;
        }
        let reason = format!("{} bytes ⇒ {parts} parts; boundaries at {how}", rel.bytes);
        (strategy, b, reason, rows_total)
    } else if key.is_empty() && heap && !req.settings.static_source {
        (
            Strategy::Single,
            vec![Bounds::ALL],
            format!(
                "one part: no primary key or unique NOT NULL index on a live source ({parts} wanted). Ranges by ctid \
                 are read in separate snapshots, and a row an UPDATE moves between them is read twice or not at all; \
                 add a key, or run from a snapshot (settings.static_source) to split it"
            ),
            rows_est,
        )
    } else if heap && source.server_version_num >= 140_000 && rel.pages > 0 {
        let pages = rel.pages;
        let n = (parts as u64).min(pages).max(1);
        let b = (0..n)
            .map(|i| Bounds::Ctid {
                first_page: (pages * i / n) as u32,
                end_page: (i + 1 < n).then(|| (pages * (i + 1) / n) as u32),
            })
            .collect();
        let reason = format!("no primary key or unique NOT NULL index: {n} equal ranges of {pages} heap pages by ctid");
        (Strategy::CtidPages { pages }, b, reason, rows_est)
    } else {
        let why = if key.is_empty() && heap {
            "no usable key and PostgreSQL < 14 (no TID range scans)"
        } else if key.is_empty() {
            "no usable key and not a heap table"
        } else {
            "views and foreign tables are read whole"
        };
        (
            Strategy::Single,
            vec![Bounds::ALL],
            format!("one part: {why}"),
            rows_est,
        )
    };

    let n = bounds.len() as u64;
    let parts_est: Vec<PartEstimate> = (0..n)
        .map(|i| PartEstimate {
            range_index: i as u32,
            rows: rows_total / n,
            bytes: rel.bytes / n,
        })
        .collect();
    // Dictionary encoding for the columns with few distinct values (and whatever the request names).
    let mut writer = req.writer.clone();
    for c in &columns {
        if low_cardinality.contains(&c.name) && !writer.dictionary_columns.contains(&c.name) {
            writer.dictionary_columns.push(c.name.clone());
        }
    }
    let tasks: Vec<ExtractTask> = bounds
        .into_iter()
        .enumerate()
        .map(|(i, b)| ExtractTask {
            run_id: run_id.to_string(),
            plan_id: String::new(),
            table: table.clone(),
            columns: columns.clone(),
            key: if matches!(b, Bounds::Ctid { .. }) {
                Vec::new()
            } else {
                key.clone()
            },
            range_index: i as u32,
            bounds: b,
            stage: req.stage.trim_end_matches('/').to_string(),
            writer: writer.clone(),
            statement_timeout_secs: req.settings.statement_timeout_secs,
        })
        .collect();
    let plan = TablePlan {
        table: table.clone(),
        kind: kind.into(),
        unlogged: rel.unlogged,
        key,
        strategy,
        reason,
        columns,
        estimates: Estimates {
            rows: rows_total,
            bytes: rel.bytes,
            heap_bytes: rel.heap_bytes,
            total_bytes: rel.total_bytes,
            avg_row_bytes: rel.bytes / rows_total.max(1),
        },
        parts: parts_est,
        notes,
    };
    Ok((plan, tasks))
}

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
async fn key_quantiles(
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
async fn key_correlation(client: &Client, table: &TableRef, column: &str) -> Option<f64> {
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
async fn page_probes(
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

/// The planner's handler: plan, write `plan.json` and `tasks.json` to the stage, return the summary.
pub async fn handle(ctx: &PlanContext, req: PlanRequest) -> Result<(Plan, PlanSummary), PlanError> {
    if req.stage.is_empty() {
        return Err(PlanError::InvalidRequest(
            "no stage: give \"stage\" in the input or set PGSHIFT_STAGE".into(),
        ));
    }
    let span = tracing::info_span!("plan", tables = tracing::field::Empty, tasks = tracing::field::Empty);
    tracing::Instrument::instrument(write_plan(ctx, req, span.clone()), span).await
}

async fn write_plan(
    ctx: &PlanContext,
    req: PlanRequest,
    span: tracing::Span,
) -> Result<(Plan, PlanSummary), PlanError> {
    let stage = ctx.stages.open(&req.stage).await?;
    let existing = match &req.run_id {
        Some(id) => existing_run(stage.as_ref(), id, &req).await?,
        None => None,
    };
    let plan = match existing {
        Some(plan) => {
            tracing::info!(run = %plan.run_id, plan = %plan.plan_id, "the same request planned this run: plan kept");
            plan
        }
        None => {
            let client = ctx.source.connect().await?;
            plan(&client, &req).await?
        }
    };

    let tasks_json = serde_json::to_vec(&plan.tasks).map_err(|e| PlanError::InvalidRequest(e.to_string()))?;
    let plan_json = serde_json::to_vec_pretty(&plan).map_err(|e| PlanError::InvalidRequest(e.to_string()))?;
    let tasks_url = crate::stage::put(
        stage.as_ref(),
        &layout::tasks_key(&plan.run_id),
        Bytes::from(tasks_json),
    )
    .await?
    .url;
    let plan_url = crate::stage::put(stage.as_ref(), &layout::plan_key(&plan.run_id), Bytes::from(plan_json))
        .await?
        .url;
    span.record("tables", plan.tables.len());
    span.record("tasks", plan.tasks.len());
    let summary = PlanSummary {
        run_id: plan.run_id.clone(),
        plan_url,
        tasks_url,
        tables: plan.tables.len(),
        tasks: plan.tasks.len(),
        estimated_rows: plan.tables.iter().map(|t| t.estimates.rows).sum(),
        estimated_bytes: plan.tables.iter().map(|t| t.estimates.bytes).sum(),
        max_concurrency: req.settings.max_concurrency,
        task_list: {
            let (bucket, key) = layout::object_location(stage.url(), &layout::tasks_key(&plan.run_id));
            ObjectLocation { bucket, key }
        },
        results: {
            let (bucket, prefix) = layout::object_location(stage.url(), &layout::map_results_prefix(&plan.run_id));
            ResultsLocation { bucket, prefix }
        },
        load: req.load.clone().unwrap_or_default(),
        snapshot: plan.snapshot.clone(),
    };
    tracing::info!(seconds = plan.planning_seconds, "planned");
    Ok((plan, summary))
}

/// What is on the stage under a run id that is planned again. `--restart` clears it; the same request before any
/// load keeps its plan (a retried Plan state, an interrupted run); anything else is refused, so a run id is loaded
/// once, from one plan.
async fn existing_run(stage: &dyn Stage, run_id: &str, req: &PlanRequest) -> Result<Option<Plan>, PlanError> {
    if req.restart {
        let n = stage.delete_prefix(&layout::run_prefix(run_id)).await?;
        tracing::warn!(run = %run_id, objects = n, "restart: the run's objects on the stage deleted");
        return Ok(None);
    }
    let bytes = match stage.get(&layout::plan_key(run_id)).await {
        Ok(b) => b,
        Err(crate::stage::StageError::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let plan: Plan = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            let why = format!("its plan.json does not parse ({e}); start it over with --restart");
            return Err(run_exists(run_id, why));
        }
    };
    if stage.head(&layout::load_key(run_id)).await?.is_some() {
        return Err(run_exists(
            run_id,
            format!(
            "it was loaded (or is loading) from plan {} of {}; a run id loads once: use a new --run-id, or --restart \
             to extract and load it again",
            plan.plan_id, plan.created_at
        ),
        ));
    }
    if plan.request_id != req.identity() || plan.plan_id != plan.identity() {
        return Err(run_exists(
            run_id,
            format!(
                "it was planned at {} with other settings (plan {}); use a new --run-id, or --restart to plan it anew \
             (its extracted parts are deleted)",
                plan.created_at, plan.plan_id
            ),
        ));
    }
    Ok(Some(plan))
}

fn run_exists(run_id: &str, detail: String) -> PlanError {
    PlanError::RunExists {
        run_id: run_id.to_string(),
        detail,
    }
}

/// Counts the rows a task's range holds, with the extractor's own predicate (for `--verify` and the balance bench).
pub async fn count_rows(client: &Client, task: &ExtractTask) -> Result<u64, PlanError> {
    let mut q = format!(
        "SELECT count(*) FROM {}",
        sql::table(&task.table).map_err(PlanError::InvalidRequest)?
    );
    if let Some(p) = sql::predicate(&task.key, &task.bounds).map_err(PlanError::InvalidRequest)? {
        q.push_str(" WHERE ");
        q.push_str(&p);
    }
    let n: i64 = client
        .query_one(&q, &[])
        .await
        .map_err(|e| SourceError::from_pg(&task.table, 0, e))?
        .get(0);
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_count_follows_size_time_and_slices() {
        let s = PlanSettings {
            target_part_bytes: 100,
            throughput_bytes_per_sec: 1,
            part_seconds_budget: 1000,
            ..Default::default()
        };
        assert_eq!(part_count(0, &s).0, 1, "an empty table is one part");
        assert_eq!(part_count(50, &s).0, 1, "a tiny table is one part");
        assert_eq!(part_count(1000, &s).0, 10);
        let slow = PlanSettings {
            throughput_bytes_per_sec: 1,
            part_seconds_budget: 50,
            ..s.clone()
        };
        assert_eq!(part_count(1000, &slow).0, 20, "raised to finish inside the time budget");
        let sliced = PlanSettings { slices: 4, ..s.clone() };
        assert_eq!(
            part_count(1000, &sliced).0,
            12,
            "rounded up to a multiple of the slices"
        );
        assert_eq!(
            part_count(300, &sliced).0,
            3,
            "fewer parts than slices stay as they are"
        );
        let capped = PlanSettings {
            slices: 4,
            max_parts_per_table: 10,
            ..s
        };
        let (p, note) = part_count(5000, &capped);
        assert_eq!(p, 8);
        assert!(note.is_some_and(|n| n.contains("clamped")));
        let fixed = PlanSettings {
            parts: Some(6),
            ..Default::default()
        };
        assert_eq!(part_count(10, &fixed), (6, None));
    }

    #[test]
    fn globs_match_names() {
        assert!(glob("*", "orders"));
        assert!(glob("ord*", "orders"));
        assert!(glob("o?ders", "orders"));
        assert!(!glob("order", "orders"));
        assert!(glob("*s", "orders"));
    }
}
