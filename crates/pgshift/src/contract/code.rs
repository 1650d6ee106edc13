//! The stable error names: what a Lambda reports as `errorType` and the state machine's Retry and Catch lists match.
//! `Pipeline.Retryable.*` is worth another attempt; `Pipeline.Fatal.*` is not. One enum, so every name is listed once
//! and every error maps to one of them.

/// A stable error name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    FatalInvalidInput,
    FatalNotFound,
    FatalUnsupportedType,
    FatalSchemaChanged,
    FatalPermissionDenied,
    FatalBadValue,
    RetryableSourceUnavailable,
    RetryableTimeout,
    RetryableSource,
    FatalSource,
    RetryableProtocol,
    FatalInternal,
    RetryableStage,
    FatalStage,
    FatalPartsMissing,
    FatalReconcile,
    RetryableWarehouse,
    FatalWarehouse,
    FatalRunExists,
    FatalPlanMismatch,
    FatalPartCorrupt,
    FatalSchemaDrift,
    FatalOlderData,
    RetryableRds,
    FatalRds,
    FatalSnapshot,
    FatalRestore,
    FatalLoadTimeout,
    /// The target has rules or triggers that change what a load writes (`--allow-target-triggers` allows them).
    FatalTargetTriggers,
    /// A local run stopped by SIGINT or SIGTERM (its Cleanup ran; `--run-id` resumes it).
    FatalInterrupted,
    /// An incremental load's target is not what its last committed run left (changed by hand, loaded by another run).
    FatalTargetChanged,
}

impl Code {
    /// Every code, once.
    pub const ALL: &'static [Code] = &[
        Code::FatalInvalidInput,
        Code::FatalNotFound,
        Code::FatalUnsupportedType,
        Code::FatalSchemaChanged,
        Code::FatalPermissionDenied,
        Code::FatalBadValue,
        Code::RetryableSourceUnavailable,
        Code::RetryableTimeout,
        Code::RetryableSource,
        Code::FatalSource,
        Code::RetryableProtocol,
        Code::FatalInternal,
        Code::RetryableStage,
        Code::FatalStage,
        Code::FatalPartsMissing,
        Code::FatalReconcile,
        Code::RetryableWarehouse,
        Code::FatalWarehouse,
        Code::FatalRunExists,
        Code::FatalPlanMismatch,
        Code::FatalPartCorrupt,
        Code::FatalSchemaDrift,
        Code::FatalOlderData,
        Code::RetryableRds,
        Code::FatalRds,
        Code::FatalSnapshot,
        Code::FatalRestore,
        Code::FatalLoadTimeout,
        Code::FatalTargetTriggers,
        Code::FatalInterrupted,
        Code::FatalTargetChanged,
    ];

    /// The names the definition raises itself (a Pass state into Cleanup), not a handler: a snapshot pgshift cannot
    /// restore (not PostgreSQL, not available), a restore that failed or never became available.
    pub const RAISED_BY_DEFINITION: &'static [Code] = &[Code::FatalSnapshot, Code::FatalRestore];

    /// Names a local run reports by itself, not from an error of a function: a run stopped by a signal.
    pub const RAISED_BY_COMMAND_LINE: &'static [Code] = &[Code::FatalInterrupted];

    /// The name, as the definition's `ErrorEquals` lists it.
    pub fn name(self) -> &'static str {
        match self {
            Code::FatalInvalidInput => "Pipeline.Fatal.InvalidInput",
            Code::FatalNotFound => "Pipeline.Fatal.NotFound",
            Code::FatalUnsupportedType => "Pipeline.Fatal.UnsupportedType",
            Code::FatalSchemaChanged => "Pipeline.Fatal.SchemaChanged",
            Code::FatalPermissionDenied => "Pipeline.Fatal.PermissionDenied",
            Code::FatalBadValue => "Pipeline.Fatal.BadValue",
            Code::RetryableSourceUnavailable => "Pipeline.Retryable.SourceUnavailable",
            Code::RetryableTimeout => "Pipeline.Retryable.Timeout",
            Code::RetryableSource => "Pipeline.Retryable.Source",
            Code::FatalSource => "Pipeline.Fatal.Source",
            Code::RetryableProtocol => "Pipeline.Retryable.Protocol",
            Code::FatalInternal => "Pipeline.Fatal.Internal",
            Code::RetryableStage => "Pipeline.Retryable.Stage",
            Code::FatalStage => "Pipeline.Fatal.Stage",
            Code::FatalPartsMissing => "Pipeline.Fatal.PartsMissing",
            Code::FatalReconcile => "Pipeline.Fatal.Reconcile",
            Code::RetryableWarehouse => "Pipeline.Retryable.Warehouse",
            Code::FatalWarehouse => "Pipeline.Fatal.Warehouse",
            Code::FatalRunExists => "Pipeline.Fatal.RunExists",
            Code::FatalPlanMismatch => "Pipeline.Fatal.PlanMismatch",
            Code::FatalPartCorrupt => "Pipeline.Fatal.PartCorrupt",
            Code::FatalSchemaDrift => "Pipeline.Fatal.SchemaDrift",
            Code::FatalOlderData => "Pipeline.Fatal.OlderData",
            Code::RetryableRds => "Pipeline.Retryable.Rds",
            Code::FatalRds => "Pipeline.Fatal.Rds",
            Code::FatalSnapshot => "Pipeline.Fatal.Snapshot",
            Code::FatalRestore => "Pipeline.Fatal.Restore",
            Code::FatalLoadTimeout => "Pipeline.Fatal.LoadTimeout",
            Code::FatalTargetTriggers => "Pipeline.Fatal.TargetTriggers",
            Code::FatalInterrupted => "Pipeline.Fatal.Interrupted",
            Code::FatalTargetChanged => "Pipeline.Fatal.TargetChanged",
        }
    }

    pub fn is_retryable(self) -> bool {
        self.name().starts_with("Pipeline.Retryable.")
    }

    /// The code of a name, when it is one of pgshift's.
    pub fn of(name: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.name() == name)
    }
}

/// How many items of a list an error names before it says how many more there are.
pub const FEW: usize = 5;

/// The first [`FEW`] of `items` joined by `sep`, and how many more: an error names what is wrong without growing
/// with the size of a schema (a drift of 1,199 columns is one line of a few hundred bytes, not 200 KB).
pub fn first_few(items: &[String], sep: &str) -> String {
    let mut s = items.iter().take(FEW).map(String::as_str).collect::<Vec<_>>().join(sep);
    if items.len() > FEW {
        s.push_str(&format!("{sep}and {} more", items.len() - FEW));
    }
    s
}

/// An error's cause in words: a Lambda function error's `errorMessage` (Step Functions' cause is the function's
/// error as JSON), else the cause as it is.
pub fn in_words(cause: &str) -> String {
    if let Some(m) = serde_json::from_str::<serde_json::Value>(cause)
        .ok()
        .and_then(|v| v.get("errorMessage").and_then(|m| m.as_str()).map(str::to_string))
    {
        return m;
    }
    // A Map's failure quotes its item's error inside its own cause: that error's message, after the Map's words.
    match cause.find("{\"errorMessage\"") {
        Some(at) => {
            let inner = serde_json::Deserializer::from_str(&cause[at..])
                .into_iter::<serde_json::Value>()
                .next()
                .and_then(Result::ok)
                .and_then(|v| v.get("errorMessage").and_then(|m| m.as_str()).map(str::to_string));
            match inner {
                Some(m) => format!("{}{m}", cause[..at].trim_end_matches(['"', '\\', ' '])),
                None => cause.to_string(),
            }
        }
        None => cause.to_string(),
    }
}

/// The name a failure is by what caused it: a state machine's own error (`States.ExceedToleratedFailureThreshold`:
/// the Map's items failed) stands for the pipeline error its cause names, when it names one; else the error itself.
pub fn effective_name(error: &str, cause: &str) -> String {
    if !error.starts_with("States.") {
        return error.to_string();
    }
    let first = ["Pipeline.Fatal.", "Pipeline.Retryable."]
        .iter()
        .filter_map(|p| cause.find(p))
        .min();
    match first {
        Some(at) => {
            let name: String = cause[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            name.trim_end_matches('.').to_string()
        }
        None => error.to_string(),
    }
}

/// Whether the same command may pass as it is: a retryable error, a timeout, or a run stopped by a signal.
pub fn may_pass_again(name: &str) -> bool {
    name.starts_with("Pipeline.Retryable.") || name == "States.Timeout" || name == Code::FatalInterrupted.name()
}

#[cfg(test)]
mod effective_tests {
    #[test]
    fn a_maps_failure_stands_for_its_items_error_in_words() {
        let cause = "The specified tolerated failure threshold was exceeded: {\"errorMessage\":\"source unavailable: reset\",\"errorType\":\"Pipeline.Retryable.SourceUnavailable\"}";
        assert_eq!(
            super::effective_name("States.ExceedToleratedFailureThreshold", cause),
            "Pipeline.Retryable.SourceUnavailable"
        );
        assert_eq!(
            super::effective_name("Pipeline.Fatal.NotFound", cause),
            "Pipeline.Fatal.NotFound"
        );
        assert_eq!(
            super::effective_name("States.Timeout", "no name here"),
            "States.Timeout"
        );
        let words = super::in_words(cause);
        assert!(
            words.ends_with("source unavailable: reset") && !words.contains("errorType"),
            "{words}"
        );
        assert!(
            super::may_pass_again("Pipeline.Fatal.Interrupted") && !super::may_pass_again("Pipeline.Fatal.NotFound")
        );
    }
}
