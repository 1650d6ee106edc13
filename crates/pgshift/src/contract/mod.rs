//! Layer 0, the contract: the JSON model between the states (tasks, results, plans, loads, snapshots), the Postgres →
//! Arrow → Redshift type table, SQL quoting and value rendering, and where every object lives on the stage. It depends
//! on nothing else of pgshift; everything else may depend on it.

pub mod clock;
pub mod code;
pub mod design;
pub mod digest;
pub mod events;
pub mod incremental;
pub mod layout;
pub mod ledger;
pub mod load;
pub mod loader;
pub mod model;
pub mod pgtext;
pub mod plan;
pub mod snapshot;
pub mod sql;
pub mod types;
pub mod url;
