//! One module a command: `run`, `plan`, `extract`, `load`, `report`, `snapshot` and `gc`, and the benchmarks under `bench`.

pub(crate) mod bench;
pub(crate) mod exit;
pub(crate) mod extract;
pub(crate) mod flags;
pub(crate) mod ledger;
pub(crate) mod load;
pub(crate) mod plan;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod snapshot;
pub(crate) mod start;
pub(crate) mod types;
