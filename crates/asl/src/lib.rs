//! A local interpreter for the subset of the Amazon States Language that `statemachine/pipeline.asl.json` uses, so
//! `pgshift run` executes the very definition AWS runs.
//!
//! Supported: Task, Map (inline and distributed: ItemReader, ItemsPath, ItemSelector, ItemProcessor, MaxConcurrency
//! and MaxConcurrencyPath, ResultWriter), Choice, Wait (Seconds, SecondsPath), Pass, Succeed, Fail; InputPath,
//! Parameters, ResultSelector, ResultPath, OutputPath; Retry (IntervalSeconds, MaxAttempts, BackoffRate,
//! MaxDelaySeconds, JitterStrategy) and Catch; TimeoutSeconds on Tasks and on the machine; the intrinsic functions of
//! [`intrinsics`]. The definition is parsed and checked whole before anything runs: any other field or construct is
//! an error naming the state ([`AslError`]), never skipped.
//!
//! Task resources are bound by the caller through [`Resources`]; Map iterations run as tokio tasks, so
//! `MaxConcurrency` is real parallelism. Semantics follow the AWS specification: `States.Runtime` errors are never
//! retried or caught, a Catch's `ResultPath` applies to the state's raw input, `States.TaskFailed` matches every error
//! but `States.Timeout`, only the first retrier whose `ErrorEquals` matches counts an attempt.

mod ast;
mod choice;
mod error;
mod interpreter;
pub mod intrinsics;
mod parse;
pub mod path;
mod resources;
mod template;

pub use ast::Machine;
pub use error::{AslError, Failure};
pub use interpreter::{Interpreter, HISTORY_LIMIT};
pub use resources::{Resources, TaskCall};

#[cfg(test)]
mod tests;
