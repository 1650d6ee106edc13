//! What the loader Lambda is asked: one typed input per action of the definition's Task states.

use serde::{Deserialize, Serialize};

use super::load::*;

/// What the loader Lambda is asked, by the action the definition's Task state names: `{"action": "preflight",
/// "plan_url": …}`, `{"action": "start", …LoadRequest}` (the default when `action` is absent), `{"action": "check",
/// "progress": …}`, `{"action": "cleanup", "state": …}`, `{"action": "sweep"}` (restored instances dead runs left) or
/// `{"action": "finish", "state": …}` (the restore's record). An unknown action or field is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoaderInput {
    /// Before anything is extracted: the warehouse and the stage reached, and written, by the loader.
    Preflight(PreflightRequest),
    Start(LoadRequest),
    Check {
        progress: LoadProgress,
    },
    Cleanup(CleanupRequest),
    Sweep {},
    Finish(FinishRequest),
}

impl LoaderInput {
    /// The input as the state machine sends it; without `action`, a `start`.
    pub fn from_json(input: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(input)
    }

    /// The action's name, as the JSON carries it.
    pub fn action(&self) -> &'static str {
        match self {
            LoaderInput::Preflight(_) => "preflight",
            LoaderInput::Start(_) => "start",
            LoaderInput::Check { .. } => "check",
            LoaderInput::Cleanup(_) => "cleanup",
            LoaderInput::Sweep {} => "sweep",
            LoaderInput::Finish(_) => "finish",
        }
    }
}

impl<'de> Deserialize<'de> for LoaderInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = serde_json::Map::deserialize(d)?;
        m.entry("action").or_insert_with(|| "start".into());
        LoaderInput::deserialize(serde_json::Value::Object(m)).map_err(serde::de::Error::custom)
    }
}

impl Serialize for LoaderInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LoaderInput::serialize(self, s)
    }
}

/// What the state machine's last step hands the loader: the execution's whole state, for the restore's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    #[serde(default)]
    pub state: serde_json::Value,
}

/// What the state machine's cleanup step hands the loader: the whole state at the failure (the plan, a load in
/// progress and the error, as far as the run got).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupRequest {
    #[serde(default)]
    pub state: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Staging tables dropped.
    pub dropped: Vec<String>,
    /// Warehouse statements cancelled.
    pub cancelled: Vec<String>,
    /// `<stage>/<run>/status.json`, marking the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    /// `<stage>/<run>/plan.json`: the run's record is read by it (a run that failed before planning has none, and
    /// its record is its `status.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_url: Option<String>,
    /// What could not be cleaned (cleanup never fails on them: the run has failed already).
    pub notes: Vec<String>,
    /// Every table's outcome as the warehouse holds it: the load's record, corrected from the warehouse's load log
    /// where a commit landed that the record missed (its write after the commit failed, or the run died between).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableLoad>,
}

/// The run the pre-flight checks are for: its stage and run directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightRequest {
    pub plan_url: String,
}

/// What the pre-flight checks reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreflightResult {
    /// The warehouse answered and took a write (the pgshift schema).
    pub warehouse: String,
    /// The object written to the stage and read back.
    pub stage_object: String,
    pub seconds: f64,
}
