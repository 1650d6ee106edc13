//! The effects of a state machine, bound by the caller: Task resources, Map item readers and result writers.

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::error::Failure;

/// One Task invocation.
#[derive(Debug, Clone)]
pub struct TaskCall {
    pub state: String,
    pub resource: String,
    /// The effective input: after InputPath and Parameters.
    pub input: Value,
    /// The Map item index when the Task runs inside a Map iteration.
    pub item: Option<usize>,
    /// 0 for the first attempt.
    pub attempt: u32,
}

/// The effects of a state machine: what Task resources, Map item readers and result writers do.
pub trait Resources: Send + Sync {
    fn invoke(&self, call: TaskCall) -> BoxFuture<'_, Result<Value, Failure>>;

    /// A Map's `ItemReader`: the items, from its resource and evaluated `Parameters`.
    fn read_items<'a>(
        &'a self,
        state: &'a str,
        resource: &'a str,
        parameters: Value,
        reader_config: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, Failure>> {
        let _ = (parameters, reader_config);
        Box::pin(async move {
            Err(Failure::new(
                "States.Runtime",
                format!("state {state:?}: no item reader is bound for {resource}"),
            ))
        })
    }

    /// A Map's `ResultWriter`: stores the iterations' results and returns the `ResultWriterDetails`.
    fn write_results<'a>(
        &'a self,
        state: &'a str,
        resource: &'a str,
        parameters: Value,
        results: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        let _ = (parameters, results);
        Box::pin(async move {
            Err(Failure::new(
                "States.Runtime",
                format!("state {state:?}: no result writer is bound for {resource}"),
            ))
        })
    }
}
