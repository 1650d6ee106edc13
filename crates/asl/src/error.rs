//! What can go wrong: a definition the interpreter refuses, and how an execution or a state failed.

use serde::{Deserialize, Serialize};

/// A definition that is not valid ASL, or uses a construct the interpreter does not run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AslError {
    #[error("state machine definition: {0}")]
    Invalid(String),
    #[error("state {state:?}: {what}")]
    State { state: String, what: String },
    #[error("state {state:?}: {what} is not supported by the local interpreter")]
    Unsupported { state: String, what: String },
}

/// How an execution (or a state) failed: the error name the Retry/Catch lists match, and its cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
    pub cause: String,
}

impl Failure {
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            cause: cause.into(),
        }
    }

    pub(crate) fn runtime(state: &str, cause: impl std::fmt::Display) -> Self {
        Self::new("States.Runtime", format!("state {state:?}: {cause}"))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.cause)
    }
}
