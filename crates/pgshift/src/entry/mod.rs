//! Layer 5, the entry points: the Lambda handlers, the configuration read once at cold start, the triggers (RDS
//! snapshot events, manual input), the state machine bound to the in-process handlers for a local run, and the list of
//! every error name the handlers report.

pub mod announce;
pub mod config;
pub mod handlers;
pub(crate) mod names;
pub use names::Named;
pub mod local;
#[cfg(test)]
mod template_tests;
pub mod trigger;
