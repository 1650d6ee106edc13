//! pgshift core: move PostgreSQL tables into Amazon Redshift through Parquet on a stage.
//!
//! This crate has no Lambda dependency: the `functions/*` binaries and the `pgshift` CLI are thin shells around the
//! handlers here. Modules, in data-flow order:
//! - [`model`]: the JSON contract between the pipeline's states;
//! - [`types`]: the Postgres → Arrow → Redshift type table;
//! - [`source`], [`sql`]: the source database and the SQL sent to it;
//! - [`decode`], [`pgtext`]: binary COPY → Arrow;
//! - [`parquet_out`], [`stage`]: Arrow → Parquet files on the stage;
//! - [`plan`]: the planner (balanced key ranges); [`extract`]: the extractor's handler; [`error`]: its error boundary.

pub mod config;
pub mod contract;
pub mod error;
pub mod extract;
pub mod load;
pub mod pgclient;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod source;
pub mod stage;
pub mod trigger;
pub mod warehouse;

pub use contract::model::{ExtractResult, ExtractTask};
pub use error::ExtractError;
pub use extract::{extract, ExtractContext};
pub use stage::UrlStages;
