//! The SQL of a load: the warehouse columns of the run's types, the set-up DDL (target, load log, staging), the
//! swap of each mode after COPY and reconcile, and the load log's lookups. Identifiers are always quoted; the only
//! literals are run ids, plan ids and catalog names, checked.

use std::collections::BTreeMap;

use super::error::LoadError;
use super::keyed::{merge_sql, new_keys_guard, unique_keys_guard};
use super::setup::Prepared;
use crate::contract::design::{TableDesign, NOT_WIDENABLE};
use crate::contract::load::{LoadMode, LoadOptions};
use crate::contract::model::{ColumnSpec, TableRef};
use crate::contract::plan::{Plan, TablePlan};
use crate::contract::sql;
use crate::contract::types::{char_length, oid, Mapping};
use crate::warehouse::{Dialect, RenameFacts};

/// The byte width of a Redshift VARCHAR or VARBYTE column. A declared `varchar(n)`/`char(n)` gets room for n
/// characters in UTF-8 (4 bytes each). Unbounded text is sized from the data: the longest value this run extracted
/// (bytes; the extractors record it per column per part) with half again as much headroom, rounded up to a power of
/// two, at least 256 and at most VARCHAR's 65,535. Redshift's own guidance is the smallest possible column size: it
/// allocates memory for sorts and hashes at the declared width
/// (<https://docs.aws.amazon.com/redshift/latest/dg/c_best-practices-smallest-column-size.html>); the declared width
/// costs no storage. A later run with longer values widens the target first (`ALTER COLUMN … TYPE`, outside the
/// load transaction), which Redshift refuses under some encodings: a column the user encodes so is sized at the
/// maximum from the start ([`NOT_WIDENABLE`]). bytea gets VARBYTE's maximum (only a VARCHAR can be altered:
/// <https://docs.aws.amazon.com/redshift/latest/dg/r_ALTER_TABLE.html>).
pub(crate) fn varchar_bytes(c: &ColumnSpec, observed: u64, design: &TableDesign) -> u64 {
    if c.mapping == Mapping::Binary {
        return VARBYTE_MAX;
    }
    let declared = match c.pg_type.oid {
        oid::VARCHAR | oid::BPCHAR => char_length(c.pg_type.typmod).map(|n| n as u64 * 4),
        _ => None,
    };
    let fixed = design
        .encoding_of(&c.name)
        .is_some_and(|e| NOT_WIDENABLE.contains(&e.as_str()));
    if fixed {
        return VARCHAR_MAX;
    }
    let sized = (observed + observed / 2).max(MIN_VARCHAR).next_power_of_two();
    declared.unwrap_or(sized).max(observed).clamp(1, VARCHAR_MAX)
}

/// The narrowest width pgshift gives an unbounded text column.
const MIN_VARCHAR: u64 = 256;

use crate::contract::types::{REDSHIFT_VARBYTE_MAX as VARBYTE_MAX, REDSHIFT_VARCHAR_MAX as VARCHAR_MAX};

pub(super) fn text_literal(s: &str) -> Result<String, LoadError> {
    sql::text_literal(s).map_err(LoadError::InvalidRequest)
}

pub(super) fn ident(s: &str) -> Result<String, LoadError> {
    sql::ident(s).map_err(LoadError::InvalidRequest)
}

pub(super) fn qualified(t: &TableRef) -> Result<String, LoadError> {
    sql::table(t).map_err(LoadError::InvalidRequest)
}

/// The staging table of a run: beside the target, named after it and the run (identifiers stay under 63 bytes).
/// What every staging table of a run has in its name: `__pgshift_<the run id's last 12 letters and digits>_`.
fn staging_mark(run_id: &str) -> String {
    let run: String = run_id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("__pgshift_{}_", &run[run.len().saturating_sub(12)..])
}

pub fn staging_table(target: &TableRef, run_id: &str) -> TableRef {
    use sha2::Digest;
    let mark = staging_mark(run_id);
    // The target's name, cut to 30 bytes on a character boundary, is only for people reading a listing; the hash of
    // the whole target name (and the run id) is what keeps two tables' staging tables apart. At most
    // 30 + 10 + 12 + 1 + 8 = 61 bytes: inside PostgreSQL's 63 (and Redshift's 127).
    let mut name: String = target.name.chars().take(30).collect();
    while name.len() > 30 {
        name.pop();
    }
    let digest = sha2::Sha256::digest(format!("{}\0{}\0{run_id}", target.schema, target.name).as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    TableRef::new(target.schema.clone(), format!("{name}{mark}{hash}"))
}

pub(super) const LOG: &str = "\"pgshift\".\"load_log\"";

/// Every staging table a load created and has not dropped yet, with the run and stage it belongs to: what garbage
/// collection reads to find the staging tables of dead runs (a run killed, a load that failed without its Cleanup).
pub(super) const REGISTRY: &str = "\"pgshift\".\"staging\"";

/// [`REGISTRY`] as a table, to ask the warehouse whether it exists.
pub(super) fn registry_table() -> TableRef {
    TableRef::new("pgshift", "staging")
}

/// The registry (if missing) and this staging table's row in it, in the set-up transaction before the table is
/// created: no staging table exists that the registry does not name.
fn register_sql(plan: &Plan, target: &TableRef, staging: &TableRef) -> Result<Vec<String>, LoadError> {
    Ok(vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {REGISTRY} (schema_name VARCHAR(256) NOT NULL, table_name VARCHAR(256) NOT \
             NULL, target_schema VARCHAR(256) NOT NULL, target_name VARCHAR(256) NOT NULL, run_id VARCHAR(256) NOT \
             NULL, plan_id VARCHAR(64) NOT NULL, stage VARCHAR(1024) NOT NULL)"
        ),
        unregister_sql(staging)?,
        format!(
            "INSERT INTO {REGISTRY} (schema_name, table_name, target_schema, target_name, run_id, plan_id, stage) \
             VALUES ({}, {}, {}, {}, {}, {}, {})",
            text_literal(&staging.schema)?,
            text_literal(&staging.name)?,
            text_literal(&target.schema)?,
            text_literal(&target.name)?,
            text_literal(&plan.run_id)?,
            text_literal(&plan.plan_id)?,
            text_literal(&plan.stage)?
        ),
    ])
}

/// The registry's row of a staging table, deleted in the transaction that drops (or renames) the table.
pub(super) fn unregister_sql(staging: &TableRef) -> Result<String, LoadError> {
    Ok(format!(
        "DELETE FROM {REGISTRY} WHERE schema_name = {} AND table_name = {}",
        text_literal(&staging.schema)?,
        text_literal(&staging.name)?
    ))
}

/// A staging table dropped, if it is there, and its registry row with it (one transaction).
pub(super) fn drop_staging_sql(staging: &TableRef) -> Result<Vec<String>, LoadError> {
    Ok(vec![
        format!("DROP TABLE IF EXISTS {}", qualified(staging)?),
        unregister_sql(staging)?,
    ])
}

/// The tables whose name carries a run's staging mark, in one query whatever the run's table count (the caller keeps
/// only the run's own staging tables by name: `_` in the pattern matches any one character, itself included).
pub(super) fn marked_tables_sql(dialect: Dialect, run_id: &str) -> Result<String, LoadError> {
    Ok(format!(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables WHERE table_name LIKE {}",
        text_literal(&format!("%{}%", dialect.fold(&staging_mark(run_id))))?
    ))
}

/// Tables named in one DROP or one registry DELETE: 200 names are about 26 KB of SQL, well inside the Data API's
/// 100 KB a statement (<https://docs.aws.amazon.com/redshift/latest/mgmt/data-api.html>, "Considerations when calling
/// the Amazon Redshift Data API"); one DROP TABLE takes many tables
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_DROP_TABLE.html>).
const NAMES_PER_STATEMENT: usize = 200;

/// Staging tables one transaction drops: its DROPs and registry DELETEs fill one Data API batch of
/// [`crate::contract::load::REDSHIFT_BATCH_STATEMENTS`] statements.
pub(super) const STAGINGS_PER_TRANSACTION: usize =
    NAMES_PER_STATEMENT * crate::contract::load::REDSHIFT_BATCH_STATEMENTS as usize / 2;

/// Staging tables dropped and their registry rows deleted: one transaction per [`STAGINGS_PER_TRANSACTION`] tables
/// (in the order of `tables`).
pub(super) fn drop_stagings_sql(tables: &[TableRef]) -> Result<Vec<Vec<String>>, LoadError> {
    let mut txs = Vec::new();
    for group in tables.chunks(STAGINGS_PER_TRANSACTION) {
        let (mut drops, mut deletes) = (Vec::new(), Vec::new());
        for chunk in group.chunks(NAMES_PER_STATEMENT) {
            let names: Vec<String> = chunk.iter().map(qualified).collect::<Result<_, _>>()?;
            drops.push(format!("DROP TABLE IF EXISTS {}", names.join(", ")));
            let rows: Vec<String> = chunk
                .iter()
                .map(|t| {
                    let (s, n) = (text_literal(&t.schema)?, text_literal(&t.name)?);
                    Ok(format!("(schema_name = {s} AND table_name = {n})"))
                })
                .collect::<Result<_, LoadError>>()?;
            deletes.push(format!("DELETE FROM {REGISTRY} WHERE {}", rows.join(" OR ")));
        }
        drops.extend(deletes);
        txs.push(drops);
    }
    Ok(txs)
}

/// The registry's rows: staging schema and name, target schema and name, run id, stage.
pub(super) fn registry_sql() -> String {
    format!("SELECT schema_name, table_name, target_schema, target_name, run_id, stage FROM {REGISTRY}")
}

/// The instant of the newest data loaded into `table` (0 when none), by the load log.
pub(super) fn data_at_sql(table: &TableRef) -> Result<String, LoadError> {
    Ok(format!(
        "SELECT COALESCE(MAX(data_at), 0) FROM {LOG} WHERE schema_name = {} AND table_name = {}",
        text_literal(&table.schema)?,
        text_literal(&table.name)?
    ))
}

/// In the load transaction, once the target is locked: fails (a division by zero) when the target already holds
/// data newer than this run's, which another run committed since the set-up's check.
fn newer_guard_sql(plan: &Plan, table: &TableRef) -> Result<String, LoadError> {
    Ok(format!(
        "SELECT 1 / CASE WHEN COALESCE(MAX(data_at), 0) <= {} THEN 1 ELSE 0 END FROM {LOG} WHERE schema_name = {} \
         AND table_name = {}",
        plan.data_instant(),
        text_literal(&table.schema)?,
        text_literal(&table.name)?
    ))
}

/// The load log of a warehouse set up before it recorded the data's instant gets the column.
pub(super) fn log_instant_sql() -> String {
    format!("ALTER TABLE {LOG} ADD COLUMN data_at BIGINT")
}

/// A target the run's set-up created, dropped again after its load failed: locked, then dropped only if it is still
/// empty and the load log has no row of it (a division by zero fails the transaction otherwise).
pub(super) fn drop_created_target_sql(dialect: Dialect, table: &TableRef) -> Result<Vec<String>, LoadError> {
    let target = qualified(table)?;
    Ok(vec![
        dialect.lock_target(&target),
        format!("SELECT 1 / CASE WHEN EXISTS (SELECT 1 FROM {target}) THEN 0 ELSE 1 END"),
        format!(
            "SELECT 1 / CASE WHEN EXISTS (SELECT 1 FROM {LOG} WHERE schema_name = {} AND table_name = {}) THEN 0 ELSE 1 \
             END",
            text_literal(&table.schema)?,
            text_literal(&table.name)?
        ),
        format!("DROP TABLE {target}"),
    ])
}

/// The load log's table.
pub(super) fn log_table() -> TableRef {
    TableRef::new("pgshift", "load_log")
}

/// `what` (an aggregate) over the load log's rows for this plan's load of `table`.
pub(super) fn logged_sql(plan: &Plan, table: &TableRef, what: &str) -> Result<String, LoadError> {
    Ok(format!(
        "SELECT {what} FROM {LOG} WHERE run_id = {} AND plan_id = {} AND schema_name = {} AND table_name = {}",
        text_literal(&plan.run_id)?,
        text_literal(&plan.plan_id)?,
        text_literal(&table.schema)?,
        text_literal(&table.name)?
    ))
}

/// Every table the load log says this plan committed, with the most rows it logged: one query for the whole run.
pub(super) fn logged_tables_sql(plan: &Plan) -> Result<String, LoadError> {
    Ok(format!(
        "SELECT schema_name, table_name, MAX(rows) FROM {LOG} WHERE run_id = {} AND plan_id = {} \
         GROUP BY schema_name, table_name",
        text_literal(&plan.run_id)?,
        text_literal(&plan.plan_id)?
    ))
}

/// Target (if missing), load log, and a fresh staging table in the Parquet column order.
pub(super) fn setup_sql(
    dialect: Dialect,
    plan: &Plan,
    t: &TablePlan,
    staging: &TableRef,
    observed: &BTreeMap<&str, u64>,
    json_as_super: bool,
) -> Result<Vec<String>, LoadError> {
    let (mut cols, mut staging_cols) = (Vec::new(), Vec::new());
    // A row-by-row comparison stages a row per deleted key (its key only) and the deleted flag.
    let flagged = t.incremental.as_ref().is_some_and(|i| i.flagged);
    for c in &t.columns {
        let bytes = varchar_bytes(c, observed.get(c.name.as_str()).copied().unwrap_or(0), &t.design) as u32;
        let not_null = if c.nullable { "" } else { " NOT NULL" };
        let staging_not_null = if flagged && !t.key.contains(&c.name) {
            ""
        } else {
            not_null
        };
        let name = ident(&c.name)?;
        let encode = dialect.encode_clause(&t.design, &c.name);
        cols.push(format!(
            "{name} {}{encode}{not_null}",
            dialect.column_type(c, bytes, json_as_super)
        ));
        // Staging holds JSON as the text it is in the Parquet part; the swap parses it into the target's SUPER.
        staging_cols.push(format!(
            "{name} {}{encode}{staging_not_null}",
            dialect.column_type(c, bytes, false)
        ));
    }
    if flagged {
        let flag = crate::contract::incremental::deleted_column();
        staging_cols.push(format!(
            "{} {} NOT NULL",
            ident(&flag.name)?,
            dialect.column_type(&flag, 0, false)
        ));
    }
    if plan.load.as_ref().is_some_and(|l| !l.deletes.is_hard()) {
        // Soft deletes: the instant a row left the source (NULL while it is live).
        cols.push(format!(
            "{} TIMESTAMPTZ",
            ident(crate::contract::incremental::DELETED_AT_COLUMN)?
        ));
    }
    let target_extra = dialect.key_constraint(&key_list(&t.key)?);
    let table_extra = dialect
        .table_clause(&t.design, &t.key, &t.columns)
        .map_err(LoadError::InvalidRequest)?;
    let schema = ident(&t.table.schema)?;
    let target = qualified(&t.table)?;
    let staging_ref = staging;
    let staging = qualified(staging)?;
    let (list, staging_list) = (cols.join(", "), staging_cols.join(", "));
    // Set-ups of every run on this warehouse take turns where the dialect needs it.
    let mut out: Vec<String> = dialect.setup_lock().into_iter().collect();
    out.extend([
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!("CREATE TABLE IF NOT EXISTS {target} ({list}{target_extra}){table_extra}"),
        "CREATE SCHEMA IF NOT EXISTS \"pgshift\"".to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS {LOG} (run_id VARCHAR(256) NOT NULL, schema_name VARCHAR(256) NOT NULL, \
             table_name VARCHAR(256) NOT NULL, mode VARCHAR(16) NOT NULL, rows BIGINT NOT NULL, \
             loaded_at TIMESTAMP NOT NULL, plan_id VARCHAR(64) NOT NULL, data_at BIGINT)"
        ),
    ]);
    out.extend(register_sql(plan, &t.table, staging_ref)?);
    out.extend([
        format!("DROP TABLE IF EXISTS {staging}"),
        format!("CREATE TABLE {staging} ({staging_list}){table_extra}"),
    ]);
    Ok(out)
}

/// The statements that change the target, after COPY and reconcile in the same transaction. The first locks the
/// target, so that two runs loading it serialize: the second waits, then its DELETE sees the first one's rows
/// ([`Dialect::lock_target`]: it comes after the COPY, so Redshift's ACCESS EXCLUSIVE lock does not block readers
/// during it).
/// One statement of a swap: the INSERT that writes the target is told apart (where the warehouse reports the rows a
/// statement wrote, they are reconciled with the run's).
pub(super) enum SwapSql {
    Plain(String),
    Insert(String),
}

pub(super) fn swap_sql(
    dialect: Dialect,
    options: &LoadOptions,
    plan: &Plan,
    p: &Prepared,
) -> Result<Vec<SwapSql>, LoadError> {
    let mut out = Vec::new();
    let (pre, insert, post) = swap_parts(dialect, options, plan, p)?;
    out.extend(pre.into_iter().map(SwapSql::Plain));
    out.extend(insert.map(SwapSql::Insert));
    out.extend(post.into_iter().map(SwapSql::Plain));
    Ok(out)
}

/// The swap's statements before its INSERT into the target, the INSERT (none for a swap by rename), and after.
#[allow(clippy::type_complexity)]
fn swap_parts(
    dialect: Dialect,
    options: &LoadOptions,
    plan: &Plan,
    p: &Prepared,
) -> Result<(Vec<String>, Option<String>, Vec<String>), LoadError> {
    // A cursor table on a state merges its rows by key, whatever the run's mode.
    let merged = super::incremental::merged(p.plan);
    let mode = if merged.is_some() {
        LoadMode::Merge
    } else {
        options.mode
    };
    let target = qualified(&p.plan.table)?;
    let staging = qualified(&p.staging)?;
    let cols = p
        .plan
        .columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let values = select_list(p)?;
    let mut out = vec![dialect.lock_target(&target)];
    if !options.allow_older {
        out.push(newer_guard_sql(plan, &p.plan.table)?);
    }
    if let Some(inc) = merged {
        out.push(super::incremental::guard_sql(p.plan, inc)?);
    }
    if let Some(inc) = super::incremental::ranged(p.plan) {
        // Only the changed ranges' rows replaced, once the target is as the state's run left it.
        let changes = super::incremental::Changes {
            staging: &staging,
            cols: &cols,
            values: &values,
            staged: !p.files.is_empty(),
            soft_at: (!options.deletes.is_hard()).then(|| plan.data_instant()),
        };
        let (changes, insert) = super::incremental::ranged_swap(p.plan, inc, &changes)?;
        out.extend(changes);
        return Ok((out, insert, post_sql(dialect, mode, plan, p)?));
    }
    if let (LoadMode::Replace, Some(facts)) = (mode, &p.rename) {
        out.extend(rename_sql(&p.plan.table, &p.staging, facts)?);
        out.push(log_sql(dialect, mode, plan, p)?);
        out.push(unregister_sql(&p.staging)?);
        return Ok((out, None, Vec::new()));
    }
    match mode {
        // Soft deletes: the rows the run does not hold are marked, the others replaced; the target stays.
        LoadMode::Replace if !options.deletes.is_hard() => out.extend(super::soft::replace_sql(
            &p.plan.table,
            &staging,
            &p.plan.key,
            plan.data_instant(),
        )?),
        LoadMode::Replace => out.push(format!("DELETE FROM {target}")),
        LoadMode::Append if dialect == Dialect::Redshift && !p.plan.key.is_empty() => {
            out.push(new_keys_guard(p, &target, &staging)?)
        }
        LoadMode::Append => {}
        LoadMode::Merge => {
            if let Some(why) = crate::contract::load::keyless_merge(mode, &p.plan.table, &p.plan.key) {
                return Err(LoadError::InvalidRequest(why));
            }
            // Either warehouse: a key twice in the run's rows would make a merge ambiguous (MERGE) or duplicate the
            // key (DELETE … USING + INSERT).
            out.push(unique_keys_guard(p, &staging)?);
            if dialect == Dialect::Redshift {
                return Ok((
                    out,
                    Some(merge_sql(p, &target, &staging)?),
                    post_sql(dialect, mode, plan, p)?,
                ));
            }
            let on = key_match(&p.plan.key, &target, &staging)?;
            out.push(format!("DELETE FROM {target} USING {staging} WHERE {on}"));
        }
    }
    let insert = format!("INSERT INTO {target} ({cols}) SELECT {values} FROM {staging}");
    Ok((out, Some(insert), post_sql(dialect, mode, plan, p)?))
}

/// After a swap's INSERT: the load log's row, the staging table dropped and unregistered.
fn post_sql(dialect: Dialect, mode: LoadMode, plan: &Plan, p: &Prepared) -> Result<Vec<String>, LoadError> {
    Ok(vec![
        log_sql(dialect, mode, plan, p)?,
        format!("DROP TABLE {}", qualified(&p.staging)?),
        unregister_sql(&p.staging)?,
    ])
}

/// The key's columns, quoted, separated by commas.
pub(super) fn key_list(key: &[String]) -> Result<String, LoadError> {
    Ok(key.iter().map(|k| ident(k)).collect::<Result<Vec<_>, _>>()?.join(", "))
}

/// `left.k = right.k AND …` over the key's columns, quoted: how two relations' rows are matched by key.
pub(super) fn key_match(key: &[String], left: &str, right: &str) -> Result<String, LoadError> {
    let on: Vec<String> = key
        .iter()
        .map(|k| ident(k).map(|k| format!("{left}.{k} = {right}.{k}")))
        .collect::<Result<_, _>>()?;
    Ok(on.join(" AND "))
}

/// The staging columns as the target takes them: JSON text parsed into SUPER when the target's JSON columns are
/// SUPER (a string copied straight into SUPER would stay a string,
/// <https://docs.aws.amazon.com/redshift/latest/dg/ingest-super.html>: "If the json_parse function is missing in the
/// query, Amazon Redshift treats the value as a single string"), else the columns themselves.
fn select_list(p: &Prepared) -> Result<String, LoadError> {
    Ok(p.plan
        .columns
        .iter()
        .map(|c| {
            ident(&c.name).map(|n| match p.super_columns && crate::warehouse::is_json(c) {
                true => format!("JSON_PARSE({n})"),
                false => n,
            })
        })
        .collect::<Result<Vec<_>, _>>()?
        .join(", "))
}

/// The load log's row of a table's load.
fn log_sql(dialect: Dialect, mode: LoadMode, plan: &Plan, p: &Prepared) -> Result<String, LoadError> {
    let mode_name = match mode {
        _ if super::incremental::ranged(p.plan).is_some() => "diff",
        _ if super::incremental::merged(p.plan).is_some() => "cursor",
        LoadMode::Replace => "replace",
        LoadMode::Append => "append",
        LoadMode::Merge => "merge",
    };
    Ok(format!(
        "INSERT INTO {LOG} (run_id, schema_name, table_name, mode, rows, loaded_at, plan_id, data_at) VALUES ({}, \
         {}, {}, '{mode_name}', {}, {}, {}, {})",
        text_literal(&plan.run_id)?,
        text_literal(&p.plan.table.schema)?,
        text_literal(&p.plan.table.name)?,
        p.load.rows,
        dialect.now(),
        text_literal(&plan.plan_id)?,
        plan.data_instant()
    ))
}

/// `replace` by rename, after the target is locked: the old target dropped, the staging table renamed to it, its
/// primary key, owner and grants as the old one had them ([`RenameFacts`]).
pub(super) fn rename_sql(target: &TableRef, staging: &TableRef, f: &RenameFacts) -> Result<Vec<String>, LoadError> {
    let (new, old) = (qualified(target)?, qualified(staging)?);
    let mut out = vec![
        format!("DROP TABLE {new}"),
        format!("ALTER TABLE {old} RENAME TO {}", ident(&target.name)?),
    ];
    if let Some((name, cols)) = &f.primary_key {
        let cols = cols.iter().map(|c| ident(c)).collect::<Result<Vec<_>, _>>()?.join(", ");
        out.push(format!(
            "ALTER TABLE {new} ADD CONSTRAINT {} PRIMARY KEY ({cols})",
            ident(name)?
        ));
    }
    if let Some(owner) = &f.owner {
        out.push(format!("ALTER TABLE {new} OWNER TO {}", ident(owner)?));
    }
    for r in &f.staging_grantees {
        out.push(format!("REVOKE ALL ON {new} FROM {r}"));
    }
    let mut grants: BTreeMap<(&str, bool), Vec<&str>> = BTreeMap::new();
    for g in &f.grants {
        grants.entry((&g.grantee, g.grantable)).or_default().push(&g.privilege);
    }
    for ((grantee, grantable), privileges) in grants {
        let with = if grantable { " WITH GRANT OPTION" } else { "" };
        out.push(format!("GRANT {} ON {new} TO {grantee}{with}", privileges.join(", ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::model::PgType;

    fn col(oid: u32, typmod: i32, mapping: Mapping) -> ColumnSpec {
        ColumnSpec {
            name: "c".into(),
            pg_type: PgType {
                name: "t".into(),
                oid,
                typmod,
                declared: None,
            },
            nullable: true,
            cast: None,
            mapping,
        }
    }

    #[test]
    fn staging_names_are_distinct_per_table_and_fit_postgres_identifiers() {
        let run = "20261203T171500Z-rds-orders-2026-12-03-03-05";
        let long = "é".repeat(40);
        let names = [
            TableRef::new("s", format!("{}_a", "x".repeat(60))),
            TableRef::new("s", format!("{}_b", "x".repeat(60))),
            TableRef::new("t", format!("{}_a", "x".repeat(60))),
            TableRef::new("s", long.clone()),
            TableRef::new("s", "orders"),
        ];
        let staged: Vec<String> = names.iter().map(|t| staging_table(t, run).name).collect();
        for (i, a) in staged.iter().enumerate() {
            assert!(a.len() <= 63, "{a}: {} bytes", a.len());
            assert!(a.contains("__pgshift_"), "{a}");
            for b in &staged[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The same table and run always stage into the same table (Cleanup and a retried load find it again).
        assert_eq!(staging_table(&names[0], run), staging_table(&names[0], run));
        assert_ne!(staging_table(&names[0], run), staging_table(&names[0], "another-run"));
    }

    #[test]
    fn unbounded_text_is_sized_from_the_data_with_headroom_and_declared_widths_hold_their_characters() {
        let d = TableDesign::default();
        // Unbounded text: the longest value and half again, a power of two, at least 256, at most 65,535.
        assert_eq!(varchar_bytes(&col(oid::TEXT, -1, Mapping::Text), 3, &d), 256);
        assert_eq!(varchar_bytes(&col(oid::TEXT, -1, Mapping::Text), 0, &d), 256);
        assert_eq!(varchar_bytes(&col(oid::TEXT, -1, Mapping::Text), 1000, &d), 2048);
        assert_eq!(varchar_bytes(&col(oid::TEXT, -1, Mapping::Text), 1400, &d), 4096);
        assert_eq!(varchar_bytes(&col(oid::TEXT, -1, Mapping::Text), 50_000, &d), 65_535);
        assert_eq!(varchar_bytes(&col(oid::TEXT, -1, Mapping::Text), 65_535, &d), 65_535);
        // An encoding that ALTER COLUMN … TYPE refuses: the maximum from the start.
        let mut fixed = TableDesign::default();
        fixed.encode.insert("c".into(), "bytedict".into());
        assert_eq!(varchar_bytes(&col(oid::TEXT, -1, Mapping::Text), 3, &fixed), 65_535);
        // Declared too: a source that later widens varchar(10) could not widen the target.
        assert_eq!(
            varchar_bytes(&col(oid::VARCHAR, 10 + 4, Mapping::Text), 3, &fixed),
            65_535
        );
        // varchar(10): 10 characters of up to 4 bytes; char(20) likewise.
        assert_eq!(varchar_bytes(&col(oid::VARCHAR, 10 + 4, Mapping::Text), 3, &d), 40);
        assert_eq!(varchar_bytes(&col(oid::BPCHAR, 20 + 4, Mapping::Text), 80, &d), 80);
        // varchar(20000): 80,000 bytes would be more than VARCHAR holds.
        assert_eq!(
            varchar_bytes(&col(oid::VARCHAR, 20_000 + 4, Mapping::Text), 3, &d),
            65_535
        );
        // bytea: VARBYTE's own maximum, not VARCHAR's.
        assert_eq!(varchar_bytes(&col(oid::BYTEA, -1, Mapping::Binary), 10, &d), 16_777_216);
        assert_eq!(Mapping::Binary.redshift_type(16_777_216), "VARBYTE(16777216)");
    }
}
