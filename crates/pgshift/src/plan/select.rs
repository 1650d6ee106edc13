//! Which relations a run plans: the patterns and excludes over every user relation the catalog lists, leaf partitions
//! under their parent unless asked for, and the SELECT privilege checked before anything is read.

use tokio_postgres::Client;

use super::PlanError;
use crate::contract::model::TableRef;
use crate::contract::plan::PlanRequest;
use crate::source::SourceError;

#[derive(Debug, Clone)]
pub(super) struct Relation {
    pub(super) oid: u32,
    pub(super) table: TableRef,
    pub(super) kind: char,
    pub(super) unlogged: bool,
    pub(super) is_partition: bool,
    pub(super) rows: f64,
    pub(super) bytes: u64,
    pub(super) pages: u64,
    pub(super) can_select: bool,
    pub(super) heap_bytes: u64,
    pub(super) total_bytes: u64,
}

impl Relation {
    /// A view or a materialized view: what it holds is a query's, not a table's.
    pub(super) fn is_view(&self) -> bool {
        matches!(self.kind, 'v' | 'm')
    }
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

/// Every user relation with its size and statistics (one catalog query).
pub(super) async fn relations(client: &Client) -> Result<Vec<Relation>, tokio_postgres::Error> {
    Ok(client
        .query(RELATIONS_SQL, &[])
        .await?
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
        .collect())
}

/// `; did you mean sales.orders?`: the relations (or, for a pattern, the schemas) nearest to what matched nothing, by
/// edit distance, at most three; empty when none is near.
fn did_you_mean(relations: &[Relation], pattern: &TableRef) -> String {
    let wild = |s: &str| s.contains(['*', '?']);
    let mut near: Vec<(usize, String)> = if wild(&pattern.name) && !wild(&pattern.schema) {
        let mut schemas: Vec<&str> = relations.iter().map(|r| r.table.schema.as_str()).collect();
        schemas.sort_unstable();
        schemas.dedup();
        schemas
            .into_iter()
            .map(|s| (distance(&pattern.schema, s), format!("{s}.{}", pattern.name)))
            .collect()
    } else {
        let want = format!("{}.{}", pattern.schema, pattern.name);
        relations
            .iter()
            .map(|r| {
                (
                    distance(&want, &format!("{}.{}", r.table.schema, r.table.name)),
                    r.table.to_string(),
                )
            })
            .collect()
    };
    let limit = (pattern.schema.len() + pattern.name.len()).div_ceil(4).clamp(1, 3);
    near.retain(|(d, _)| *d <= limit);
    near.sort();
    near.dedup_by(|a, b| a.1 == b.1);
    let names: Vec<String> = near.into_iter().take(3).map(|(_, n)| n).collect();
    if names.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", names.join(" or "))
    }
}

/// Levenshtein distance, case-insensitive.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.to_lowercase().chars().collect(), b.to_lowercase().chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The relations the request's patterns select, in pattern order, each once.
pub(super) fn select<'a>(relations: &'a [Relation], req: &PlanRequest) -> Result<Vec<&'a Relation>, PlanError> {
    let parse = |p: &String| TableRef::parse(p).map_err(PlanError::InvalidRequest);
    let includes = req.tables.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
    let excludes = req.exclude.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
    let mut selected: Vec<&Relation> = Vec::new();
    for (pattern, raw) in includes.iter().zip(&req.tables) {
        let hits: Vec<&Relation> = relations
            .iter()
            .filter(|r| matches(pattern, &r.table))
            .filter(|r| req.settings.include_partitions || !r.is_partition || !raw.contains(['*', '?']))
            .filter(|r| req.settings.include_views || !r.is_view() || !raw.contains(['*', '?']))
            .filter(|r| !excludes.iter().any(|x| matches(x, &r.table)))
            .collect();
        if hits.is_empty() {
            let hint = did_you_mean(relations, pattern);
            return Err(if raw.contains(['*', '?']) {
                PlanError::NoMatch {
                    pattern: raw.clone(),
                    hint,
                }
            } else {
                PlanError::NoTable {
                    table: pattern.clone(),
                    hint,
                }
            });
        }
        for h in hits {
            if !selected.iter().any(|s| s.oid == h.oid) {
                selected.push(h);
            }
        }
    }
    check_overrides(relations, req)?;
    if let Some(r) = selected.iter().find(|r| !r.can_select) {
        return Err(SourceError::PermissionDenied {
            table: r.table.clone(),
            detail: "no SELECT privilege".into(),
        }
        .into());
    }
    Ok(selected)
}

/// Every per-table section of the settings (`[table."schema.name"]`) names a table of the source, as the plan names
/// it: a misspelt or differently cased name would otherwise be ignored, and its key or design silently not applied.
fn check_overrides(relations: &[Relation], req: &PlanRequest) -> Result<(), PlanError> {
    for name in req.overrides.keys() {
        if relations.iter().any(|r| r.table.to_string() == *name) {
            continue;
        }
        let hint = TableRef::parse(name)
            .map(|t| did_you_mean(relations, &t))
            .unwrap_or_default();
        let lower = name.to_lowercase();
        let cased = relations
            .iter()
            .find(|r| r.table.to_string().to_lowercase() == lower)
            .map(|r| format!("; did you mean [table.\"{}\"] (names are case-sensitive)?", r.table))
            .unwrap_or(hint);
        return Err(PlanError::InvalidRequest(format!(
            "[table.\"{name}\"] in the settings names no table of the source, so its settings would apply to \
             nothing{cased}"
        )));
    }
    Ok(())
}

/// The views and materialized views a wildcard matched and [`select`] left out (`include_views` off): the plan says
/// so, by name, instead of leaving them out silently.
pub(super) fn skipped_views(relations: &[Relation], req: &PlanRequest) -> Vec<String> {
    let parse = |p: &String| TableRef::parse(p).ok();
    let excludes: Vec<TableRef> = req.exclude.iter().filter_map(parse).collect();
    if req.settings.include_views {
        return Vec::new();
    }
    relations
        .iter()
        .filter(|r| r.is_view() && !excludes.iter().any(|x| matches(x, &r.table)))
        .filter(|r| {
            let hit = |wild: bool| {
                req.tables
                    .iter()
                    .filter(|raw| raw.contains(['*', '?']) == wild)
                    .filter_map(parse)
                    .any(|p| matches(&p, &r.table))
            };
            hit(true) && !hit(false)
        })
        .map(|r| r.table.to_string())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(schema: &str, name: &str, oid: u32, partition: bool) -> Relation {
        Relation {
            oid,
            table: TableRef::new(schema, name),
            kind: 'r',
            unlogged: false,
            is_partition: partition,
            rows: 1.0,
            bytes: 1,
            pages: 1,
            can_select: true,
            heap_bytes: 1,
            total_bytes: 1,
        }
    }

    #[test]
    fn globs_match_names() {
        assert!(glob("*", "orders"));
        assert!(glob("ord*", "orders"));
        assert!(glob("o?ders", "orders"));
        assert!(!glob("order", "orders"));
        assert!(glob("*s", "orders"));
    }

    #[test]
    fn patterns_select_once_excludes_and_partitions_apply() {
        let all = [
            rel("sales", "orders", 1, false),
            rel("sales", "orders_2024", 2, true),
            rel("sales", "tmp_x", 3, false),
        ];
        let req = |tables: &[&str], exclude: &[&str]| PlanRequest {
            tables: tables.iter().map(|t| t.to_string()).collect(),
            exclude: exclude.iter().map(|t| t.to_string()).collect(),
            ..PlanRequest::default()
        };
        let names = |r: Result<Vec<&Relation>, PlanError>| -> Vec<String> {
            r.expect("selected").iter().map(|r| r.table.name.clone()).collect()
        };
        // A wildcard skips leaf partitions; a literal name selects one; a table matched twice is planned once.
        assert_eq!(names(select(&all, &req(&["sales.*"], &["sales.tmp_*"]))), ["orders"]);
        assert_eq!(
            names(select(
                &all,
                &req(&["sales.orders_2024", "sales.*", "sales.orders"], &[])
            )),
            ["orders_2024", "orders", "tmp_x"]
        );
        assert!(matches!(
            select(&all, &req(&["sales.nope*"], &[])),
            Err(PlanError::NoMatch { .. })
        ));
        assert!(matches!(
            select(&all, &req(&["sales.nope"], &[])),
            Err(PlanError::NoTable { .. })
        ));
        // A typo is answered with the names nearest to it; nothing near, nothing suggested.
        let said = |p: &str| {
            select(&all, &req(&[p], &[]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            said("sales.ordrs").ends_with("; did you mean sales.orders?"),
            "{}",
            said("sales.ordrs")
        );
        assert!(
            said("sale.*").ends_with("; did you mean sales.*?"),
            "{}",
            said("sale.*")
        );
        assert!(!said("zzz.qqqqqq").contains("did you mean"), "{}", said("zzz.qqqqqq"));
        let mut hidden = all.clone();
        hidden[0].can_select = false;
        assert!(matches!(
            select(&hidden, &req(&["sales.orders"], &[])),
            Err(PlanError::Source(SourceError::PermissionDenied { .. }))
        ));
    }
}
