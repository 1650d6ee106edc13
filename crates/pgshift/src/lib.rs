//! pgshift core: move PostgreSQL tables into Amazon Redshift through Parquet on a stage.
//!
//! This crate has no Lambda dependency: the `functions/*` binaries and the `pgshift` CLI are thin shells around the
//! handlers of [`entry`]. Its modules are in layers, and each uses only the layers below it (checked by a test;
//! docs/architecture.md):
//! 1. [`contract`]: the JSON model between the states, the type table, SQL quoting and value rendering, and the
//!    layout of every object on the stage;
//! 2. [`pgclient`] and [`awsclient`]: PostgreSQL connections (TLS) and error classification, AWS SDK error
//!    classification; then the ports and their adapters:
//!    [`stage`] (local, S3, the Parquet writer), [`source`] (the source database, the binary COPY decoder) and
//!    [`warehouse`] (PostgreSQL, Redshift), [`rds`] (the RDS control plane: the local stand-in, the AWS SDK);
//! 3. the use cases, which never use each other: [`plan`], [`extract`](mod@extract), [`load`], [`report`],
//!    [`sweep`];
//! 4. [`entry`]: the Lambda handlers, the cold-start configuration, the triggers and the local pipeline.
//!
//! Visibility is deliberate: a module is `pub` when the Lambdas, the CLI or the tests reach into it, and its items
//! are `pub(crate)` unless they do; the most used names are re-exported here.

pub(crate) mod awsclient;
pub mod contract;
pub mod entry;
pub mod events;
pub mod executions;
pub mod extract;
pub mod load;
pub(crate) mod pgclient;
pub mod plan;
pub mod rds;
pub mod report;
pub mod source;
pub mod stage;
pub mod sweep;
pub mod warehouse;

// The façade: what a shell around the core (the Lambdas, the CLI) names most, at the top. Items are `pub(crate)`
// unless something outside the crate uses them (the `unreachable_pub` lint keeps that true).
pub use contract::load::{LoadRequest, LoadResult};
pub use contract::model::{ExtractResult, ExtractTask};
pub use contract::plan::{Plan, PlanRequest};
pub use entry::local::LocalRun;
pub use extract::{extract, ExtractContext, ExtractError};
pub use load::{LoadContext, LoadError};
pub use plan::{PlanContext, PlanError};
pub use source::{PgConnector, SourceError};
pub use stage::{Stage, StageError, UrlStages};
pub use warehouse::{Warehouse, WarehouseError};

#[cfg(test)]
mod layers;
#[cfg(test)]
mod sizes;
