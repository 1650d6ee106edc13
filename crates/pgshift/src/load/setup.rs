//! One table made ready for its load transaction: target and staging set up, the target's columns evolved or
//! refused against the run's, older data refused, how `replace` swaps it in, and whether this plan loaded it already.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::contract::load::*;
use crate::contract::model::{StagedFile, TableRef};
use crate::contract::plan::{Plan, TablePlan};
use crate::stage::Stage;
use crate::warehouse::{self, Warehouse};

use super::drift;
use super::error::LoadError;
use super::statements::{
    self, drop_staging_sql, ident, logged_sql, qualified, setup_sql, staging_table, varchar_bytes,
};

/// What the stage says of one table's load, worked out once by `start` (and kept on the stage for the tables a
/// check sets up later): the files its extractors recorded, their rows, each column's longest value, its manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TableFacts {
    pub(super) table: TableRef,
    pub(super) files: Vec<StagedFile>,
    pub(super) rows: u64,
    pub(super) observed: BTreeMap<String, u64>,
    pub(super) manifest_url: String,
    pub(super) diff: Option<crate::contract::incremental::DiffCounts>,
}

impl TableFacts {
    /// The table's load before its set-up: pending, nothing known of the warehouse yet.
    pub(super) fn table_load(&self) -> TableLoad {
        let bytes = self.files.iter().map(|f| f.bytes).sum();
        let mut load = TableLoad::pending(
            self.table.clone(),
            (self.rows, self.files.len(), bytes),
            self.manifest_url.clone(),
        );
        load.diff = self.diff;
        load
    }
}

/// One table ready for its load transaction.
pub(super) struct Prepared<'a> {
    pub(super) plan: &'a TablePlan,
    pub(super) staging: TableRef,
    pub(super) load: TableLoad,
    pub(super) files: &'a [StagedFile],
    /// The parts' columns: the table's, and the deleted flag after them for a row-by-row comparison.
    pub(super) columns: Vec<crate::contract::model::ColumnSpec>,
    /// The target's JSON columns are SUPER: staging holds their text, the swap parses it.
    pub(super) super_columns: bool,
    /// `replace` swaps the staging table in by rename, carrying these (PostgreSQL, when nothing would be lost).
    pub(super) rename: Option<warehouse::RenameFacts>,
}

/// What preparing and submitting a run's tables needs.
pub(super) struct PrepareContext<'a> {
    pub(super) wh: &'a dyn Warehouse,
    pub(super) stage: &'a dyn Stage,
    pub(super) plan: &'a Plan,
    pub(super) options: &'a LoadOptions,
    pub(super) watch: Option<&'a dyn LoadWatch>,
}

/// One table made ready: target and staging set up, the target's columns checked against the run's, and the load
/// log asked whether this plan already loaded it.
pub(super) async fn prepare_table<'a>(
    c: &PrepareContext<'a>,
    t: &'a TablePlan,
    facts: &'a TableFacts,
) -> Result<Prepared<'a>, LoadError> {
    if let Some(w) = c.watch {
        w.step(&t.table, StepKind::Setup);
    }
    let (started_at, t0) = (crate::contract::clock::unix_now(), Instant::now());
    let mut p = set_up_table(c, t, facts).await?;
    p.load.add_step(StepKind::Setup, started_at, t0.elapsed().as_secs_f64());
    if let (Some(w), TableStatus::AlreadyLoaded) = (c.watch, p.load.status) {
        w.done(&t.table, p.load.status);
    }
    Ok(p)
}

/// Refuses a load whose data is older than what the target holds (an older snapshot after a newer one), unless
/// `allow_older`; a load log without the instant's column (set up by an earlier pgshift) gets it first.
async fn refuse_older_data(c: &PrepareContext<'_>, table: &TableRef) -> Result<(), LoadError> {
    let log = warehouse::columns(c.wh, &statements::log_table()).await?;
    if !log.is_empty() && !log.iter().any(|col| col.name == "data_at") {
        if let Err(e) = warehouse::execute(c.wh, vec![statements::log_instant_sql()]).await {
            // Another run may have added it meanwhile.
            let again = warehouse::columns(c.wh, &statements::log_table()).await?;
            if !again.iter().any(|col| col.name == "data_at") {
                return Err(e.into());
            }
        }
    }
    if c.options.allow_older {
        return Ok(());
    }
    let current = warehouse::count(c.wh, statements::data_at_sql(table)?).await?;
    let instant = c.plan.data_instant();
    if current > instant {
        return Err(LoadError::OlderData {
            table: table.clone(),
            instant,
            current,
        });
    }
    Ok(())
}

async fn set_up_table<'a>(
    c: &PrepareContext<'a>,
    t: &'a TablePlan,
    facts: &'a TableFacts,
) -> Result<Prepared<'a>, LoadError> {
    let dialect = c.wh.dialect();
    let observed: BTreeMap<&str, u64> = facts.observed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let staging = staging_table(&t.table, &c.plan.run_id);
    let json_as_super = c.options.json_as_super && dialect.has_super();
    let existed = !warehouse::columns(c.wh, &t.table).await?.is_empty();
    warehouse::execute(c.wh, setup_sql(dialect, c.plan, t, &staging, &observed, json_as_super)?).await?;
    refuse_older_data(c, &t.table).await?;
    let already = match warehouse::count(c.wh, logged_sql(c.plan, &t.table, "count(*)")?).await? {
        0 => -1,
        _ => warehouse::count(c.wh, logged_sql(c.plan, &t.table, "max(rows)")?).await?,
    };
    let mut load = facts.table_load();
    load.loaded = already < 0;
    load.created_target = !existed;
    let mut rename = None;
    let super_columns = json_as_super && t.columns.iter().any(warehouse::is_json);
    if c.options.mode == LoadMode::Replace && already < 0 && super_columns {
        // Staging holds the JSON as text: only INSERT … SELECT JSON_PARSE(…) makes it the target's SUPER.
        (load.swap, load.swap_note) = (
            Some(SwapKind::Rows),
            Some("rows replaced, not renamed: JSON columns are parsed into SUPER".into()),
        );
    } else if let (Some(inc), true) = (super::incremental::on_state(t), already < 0) {
        // Only the changed ranges' rows are replaced: the target stays the table it is.
        (load.swap, load.swap_note) = (Some(SwapKind::Rows), Some(super::incremental::note(inc, load.diff)));
    } else if c.options.mode == LoadMode::Replace && already < 0 && !c.options.deletes.is_hard() {
        // Soft deletes keep the target and its marked rows.
        (load.swap, load.swap_note) = (
            Some(SwapKind::Rows),
            Some("soft deletes: rows the source no longer holds are kept, marked in _pgshift_deleted_at".into()),
        );
    } else if c.options.mode == LoadMode::Replace && already < 0 {
        let (kind, note, facts) = replace_swap(c.wh, t, &staging).await?;
        (load.swap, load.swap_note, rename) = (Some(kind), note, facts);
    } else if existed && already < 0 && t.design.sets_keys() && dialect == warehouse::Dialect::Redshift {
        // Append and merge keep the table: a design of other keys than it has would need a deep copy.
        if let Some(f) = warehouse::rename_facts(c.wh, &t.table, &staging, true).await? {
            if f.keys_differ {
                return Err(design_refused(&t.table, "append and merge keep the existing table"));
            }
        }
    }
    if let Some(why) = t.incremental.as_ref().and_then(|i| i.full_because.as_deref()) {
        let full = format!("incremental: a full load, since {why}");
        load.swap_note = Some(match load.swap_note.take() {
            Some(n) => format!("{full}; {n}"),
            None => full,
        });
    }
    if existed {
        // The target's drift is checked either way; its ALTERs are made only where its rows stay: a replace by
        // rename makes a new table of the run's columns and widths, and a table already loaded is left as it is.
        let apply = rename.is_none() && already < 0;
        load.evolved = evolve_target(c, t, &staging, &observed, apply).await?;
    }
    if already >= 0 {
        tracing::info!(table = %t.table, rows = already, "already loaded by this plan");
        load.status = TableStatus::AlreadyLoaded;
        load.committed_rows = Some(already as u64);
        let drop = drop_staging_sql(&staging)?;
        warehouse::execute(c.wh, drop).await?;
    }
    Ok(Prepared {
        plan: t,
        staging,
        load,
        files: &facts.files,
        columns: match t.incremental.as_ref().is_some_and(|i| i.flagged) {
            true => crate::contract::incremental::diff_columns(&t.columns, &t.key),
            false => t.columns.clone(),
        },
        super_columns,
        rename,
    })
}

/// Under soft deletes, an existing target without `_pgshift_deleted_at` gets it (committed on its own, as schema
/// evolution is); the column is then left out of the target's columns the drift check compares.
async fn soft_column(
    c: &PrepareContext<'_>,
    t: &TablePlan,
    target: &mut Vec<warehouse::WarehouseColumn>,
) -> Result<(), LoadError> {
    let name = c.wh.dialect().fold(crate::contract::incremental::DELETED_AT_COLUMN);
    let had = target.iter().any(|col| col.name == name);
    target.retain(|col| col.name != name);
    if !had && !target.is_empty() {
        let sql = format!(
            "ALTER TABLE {} ADD COLUMN {} TIMESTAMPTZ",
            qualified(&t.table)?,
            ident(crate::contract::incremental::DELETED_AT_COLUMN)?
        );
        warehouse::execute(c.wh, vec![sql]).await?;
    }
    Ok(())
}

/// How `replace` will swap a table in: by rename where the target would lose nothing (with the facts the rename
/// carries over), else by replacing its rows, and why. A design the user set that the target does not have yet is
/// applied by the rename; where a rename is not possible, the load is refused rather than keep the old design.
async fn replace_swap(
    wh: &dyn Warehouse,
    t: &TablePlan,
    staging: &TableRef,
) -> Result<(SwapKind, Option<String>, Option<warehouse::RenameFacts>), LoadError> {
    let target = &t.table;
    let keys_set = t.design.sets_keys();
    Ok(match warehouse::rename_facts(wh, target, staging, keys_set).await? {
        None => (SwapKind::Rows, None, None),
        Some(f) => match f.blocker.clone() {
            None => (SwapKind::Rename, None, Some(f)),
            Some(why) if keys_set && f.keys_differ => {
                return Err(design_refused(
                    target,
                    &format!("the new table cannot replace it by rename: {why}"),
                ))
            }
            Some(why) => {
                tracing::info!(table = %target, reason = %why, "replace by DELETE + INSERT: a rename would lose something");
                (SwapKind::Rows, Some(format!("rows replaced, not renamed: {why}")), None)
            }
        },
    })
}

/// The design set for a table differs from its existing target's, and this load cannot make the table anew.
fn design_refused(table: &TableRef, why: &str) -> LoadError {
    LoadError::InvalidRequest(format!(
        "{table}: the diststyle, distkey or sortkey set for it differ from the existing target's, and {why}; load it \
         once with --mode replace (the new table gets the design), or recreate the target with the design, or drop \
         the setting from pgshift.toml"
    ))
}

/// An existing target against the run's columns (the staging table made from them): the changes the schema-evolution
/// setting allows are made now, before the load transaction; any other difference fails the load by column.
async fn evolve_target(
    c: &PrepareContext<'_>,
    t: &TablePlan,
    staging: &TableRef,
    observed: &BTreeMap<&str, u64>,
    apply: bool,
) -> Result<Vec<String>, LoadError> {
    let dialect = c.wh.dialect();
    // The catalog's names are the warehouse's (Redshift's folded to lower case); the plan's are the source's.
    let spec_of = |name: &str| t.columns.iter().find(|s| dialect.fold(&s.name) == name);
    let observed_of = |name: &str| observed.iter().find(|(k, _)| dialect.fold(k) == name).map(|(_, n)| *n);
    let target = warehouse::columns(c.wh, &t.table).await?;
    let mut target = target;
    if !c.options.deletes.is_hard() {
        // The soft deletes' column is the target's own, never the run's.
        soft_column(c, t, &mut target).await?;
    } else if target
        .iter()
        .any(|col| col.name == dialect.fold(crate::contract::incremental::DELETED_AT_COLUMN))
    {
        return Err(LoadError::SchemaDrift(vec![format!(
            "{}: the target keeps soft deletes (_pgshift_deleted_at, with the rows the source deleted) and this run \
             deletes hard: run with --deletes soft, or drop the column and its marked rows first",
            t.table
        )]));
    }
    let mut run = warehouse::columns(c.wh, staging).await?;
    // The deleted flag of a row-by-row comparison is staging's own, never the target's.
    run.retain(|col| col.name != dialect.fold(crate::contract::incremental::DELETED_COLUMN));
    if c.options.json_as_super && dialect.has_super() {
        // Staging holds JSON as text for the swap to parse: the run's column is the SUPER it becomes.
        for col in run.iter_mut() {
            if spec_of(&col.name).is_some_and(warehouse::is_json) {
                (col.data_type, col.char_length) = ("super".into(), None);
            }
        }
    }
    let run_columns: Vec<drift::RunColumn<'_>> = run
        .iter()
        .map(|col| drift::RunColumn {
            column: col,
            // Only Redshift sizes VARCHAR from the data (in bytes); PostgreSQL's lengths are characters, declared.
            observed_bytes: observed_of(&col.name).filter(|_| dialect == warehouse::Dialect::Redshift),
        })
        .collect();
    let changes =
        drift::compare(&t.table, &target, &run_columns, c.options.schema_evolution).map_err(LoadError::SchemaDrift)?;
    let json_as_super = c.options.json_as_super && dialect.has_super();
    let mut applied = Vec::new();
    for change in changes.into_iter().filter(|_| apply) {
        let name = match &change {
            drift::Change::Add(n) | drift::Change::Widen(n) => n,
        };
        let Some(spec) = spec_of(name) else {
            continue;
        };
        let bytes = varchar_bytes(spec, observed_of(name).unwrap_or(0), &t.design) as u32;
        let ty = dialect.column_type(spec, bytes, json_as_super);
        let sql = match change {
            drift::Change::Add(_) => format!("ALTER TABLE {} ADD COLUMN {} {ty}", qualified(&t.table)?, ident(name)?),
            drift::Change::Widen(_) => format!(
                "ALTER TABLE {} ALTER COLUMN {} TYPE {ty}",
                qualified(&t.table)?,
                ident(name)?
            ),
        };
        tracing::warn!(table = %t.table, sql = %sql, "schema evolution");
        // One statement at a time: Redshift runs ALTER COLUMN … TYPE outside a transaction block only.
        warehouse::execute(c.wh, vec![sql.clone()]).await?;
        applied.push(sql);
    }
    Ok(applied)
}
