//! Rules and triggers on a target change what a load writes (a rule `DO INSTEAD NOTHING` drops every row, a
//! `BEFORE INSERT` trigger skips or rewrites rows), and no count of the run's rows can see it. A target with any on
//! INSERT, UPDATE or DELETE is refused by name before anything is extracted (the pre-flight) and again before
//! anything is loaded, unless the load allows them (`--allow-target-triggers`): then the table's outcome says that
//! its contents are its rules' and triggers' business. Redshift has neither, so nothing is asked of it.

use std::collections::BTreeMap;

use super::error::LoadError;
use crate::contract::load::{LoadOptions, TableLoad};
use crate::contract::model::TableRef;
use crate::contract::plan::Plan;
use crate::warehouse::{self, Warehouse};

/// The planned targets' rules and triggers: refused unless the load allows them (its own option, or the run's: the
/// plan's load options, as `run` gave them; `options` is set to what holds); allowed, the note each such table's
/// outcome carries.
pub(crate) async fn check(
    wh: &dyn Warehouse,
    plan: &Plan,
    options: &mut LoadOptions,
) -> Result<BTreeMap<TableRef, String>, LoadError> {
    options.allow_target_triggers |= plan.load.as_ref().is_some_and(|l| l.allow_target_triggers);
    let allowed = options.allow_target_triggers;
    let mut found = BTreeMap::new();
    for t in &plan.tables {
        let hooks = warehouse::target_hooks(wh, &t.table).await?;
        if !hooks.is_empty() {
            found.insert(t.table.clone(), hooks);
        }
    }
    if found.is_empty() {
        return Ok(BTreeMap::new());
    }
    if !allowed {
        return Err(LoadError::TargetTriggers(
            found.iter().map(|(t, h)| format!("{t}: {}", h.join(", "))).collect(),
        ));
    }
    tracing::warn!(
        tables = found.len(),
        "targets with rules or triggers, allowed by --allow-target-triggers"
    );
    Ok(found
        .into_iter()
        .map(|(t, h)| {
            let note = format!(
                "the target has {}, allowed by --allow-target-triggers: what it holds is their business; the \
                 reconciliation counts only what the load sent",
                h.join(", ")
            );
            (t, note)
        })
        .collect())
}

/// The note of each allowed target with rules or triggers, on its outcome (beside a swap's own note).
pub(crate) fn annotate(tables: &mut [TableLoad], notes: &BTreeMap<TableRef, String>) {
    for t in tables.iter_mut() {
        if let Some(note) = notes.get(&t.table) {
            t.swap_note = Some(t.swap_note.take().map_or(note.clone(), |s| format!("{s}; {note}")));
        }
    }
}
