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
