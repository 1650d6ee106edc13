//! The load's guards that `run` and `load` take the same way: what a load may do that it refuses by default, and the
//! limits it checks values against.

use clap::Args;
use pgshift::contract::load::{LoadOptions, WarehouseDialect};

#[derive(Args, Clone, Default, Debug)]
pub(crate) struct GuardArgs {
    /// Load even when the run's data is older than what the target holds (an older snapshot after a newer one).
    #[arg(long)]
    pub(crate) allow_older: bool,
    /// Check every value against this warehouse's limits too: `redshift` makes a run into a local PostgreSQL fail
    /// where the same run into Redshift would (text past VARCHAR(65535), binary past VARBYTE's maximum).
    #[arg(long, value_enum)]
    pub(crate) warehouse_dialect: Option<WarehouseDialect>,
    /// Load into targets that have rules or triggers on INSERT, UPDATE or DELETE (refused by default, before
    /// anything is extracted: they change what the load writes); what such a target holds is then theirs.
    #[arg(long)]
    pub(crate) allow_target_triggers: bool,
}

impl GuardArgs {
    /// The flags given, over `load` (from `pgshift.toml` or the defaults): a flag only ever loosens or adds a check.
    pub(crate) fn apply(&self, load: &mut LoadOptions) {
        load.allow_older |= self.allow_older;
        load.allow_target_triggers |= self.allow_target_triggers;
        if let Some(d) = self.warehouse_dialect {
            load.warehouse_dialect = Some(d);
        }
    }
}
