//! The stable names at the handlers' boundary: [`Named`] for what each Lambda reports as `errorType`; the names
//! themselves are [`crate::contract::code::Code`], and a test checks every error enum against them.

/// An error with a stable name: what a Lambda reports as `errorType`, and the state machine's Retry/Catch lists match.
pub trait Named {
    fn name(&self) -> &'static str;
}

impl Named for crate::plan::PlanError {
    fn name(&self) -> &'static str {
        crate::plan::PlanError::name(self)
    }
}

impl Named for crate::extract::ExtractError {
    fn name(&self) -> &'static str {
        crate::extract::ExtractError::name(self)
    }
}

impl Named for crate::entry::handlers::LoaderError {
    fn name(&self) -> &'static str {
        crate::entry::handlers::LoaderError::name(self)
    }
}

impl Named for crate::load::LoadError {
    fn name(&self) -> &'static str {
        crate::load::LoadError::name(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::contract::code::Code;
    use crate::contract::model::TableRef;
    use crate::extract::ExtractError;
    use crate::load::LoadError;
    use crate::plan::PlanError;
    use crate::source::SourceError;
    use crate::stage::StageError;

    #[test]
    fn every_reported_name_is_listed_and_retryability_follows_the_name() {
        let t = || TableRef::new("s", "t");
        let io = |kind| StageError::Io {
            location: "x".into(),
            source: std::io::Error::from(kind),
        };
        let extract = vec![
            ExtractError::InvalidTask(String::new()),
            ExtractError::Source(SourceError::TableNotFound(t())),
            ExtractError::Source(SourceError::ColumnNotFound {
                table: t(),
                column: String::new(),
            }),
            ExtractError::Source(SourceError::UnsupportedType {
                table: t(),
                column: String::new(),
                ty: String::new(),
            }),
            ExtractError::Source(SourceError::UnsupportedKeyType {
                table: t(),
                column: String::new(),
                ty: String::new(),
            }),
            ExtractError::Source(SourceError::SchemaChanged {
                table: t(),
                column: String::new(),
                expected: String::new(),
                actual: String::new(),
            }),
            ExtractError::Source(SourceError::PermissionDenied {
                table: t(),
                detail: String::new(),
            }),
            ExtractError::Value {
                table: t(),
                column: String::new(),
                key: String::new(),
                reason: String::new(),
            },
            ExtractError::Source(SourceError::Unavailable {
                detail: String::new(),
                driver: None,
            }),
            ExtractError::Source(SourceError::Timeout { table: t(), secs: 1 }),
            ExtractError::Source(SourceError::Sql {
                table: t(),
                detail: String::new(),
                retryable: true,
                driver: None,
            }),
            ExtractError::Source(SourceError::BadUrl(String::new())),
            ExtractError::Source(SourceError::Sql {
                table: t(),
                detail: String::new(),
                retryable: false,
                driver: None,
            }),
            ExtractError::Protocol {
                table: t(),
                detail: String::new(),
            },
            ExtractError::Parquet {
                table: t(),
                source: crate::extract::ParquetFailure::EncoderStopped,
            },
            ExtractError::Stage(io(std::io::ErrorKind::ConnectionReset)),
            ExtractError::Stage(io(std::io::ErrorKind::PermissionDenied)),
            ExtractError::Stage(StageError::Missing {
                location: String::new(),
            }),
            ExtractError::Stage(StageError::Remote {
                location: String::new(),
                detail: String::new(),
                retryable: true,
            }),
            ExtractError::Stage(StageError::BadUrl {
                url: String::new(),
                reason: String::new(),
            }),
        ];
        let plan = [
            PlanError::InvalidRequest(String::new()),
            PlanError::NoMatch {
                pattern: String::new(),
                hint: String::new(),
            },
            PlanError::NoTable {
                table: t(),
                hint: String::new(),
            },
            PlanError::NullKey {
                table: t(),
                column: String::new(),
            },
            PlanError::RunExists {
                run_id: String::new(),
                detail: String::new(),
            },
        ];
        let load = [
            LoadError::InvalidRequest(String::new()),
            LoadError::PartsMissing(Vec::new()),
            LoadError::Reconcile {
                table: t(),
                staged: Some(0),
                expected: 1,
            },
            LoadError::TooLong {
                table: t(),
                column: String::new(),
                bytes: 1,
                limit: String::new(),
                what: "",
            },
            LoadError::Warehouse(crate::warehouse::WarehouseError::Sql {
                detail: String::new(),
                retryable: true,
            }),
            LoadError::Warehouse(crate::warehouse::WarehouseError::Sql {
                detail: String::new(),
                retryable: false,
            }),
            LoadError::Warehouse(crate::warehouse::WarehouseError::Connect {
                context: String::new(),
                at: String::new(),
                cause: String::new(),
                hint: String::new(),
                not_found: false,
            }),
            LoadError::PartCorrupt(Vec::new()),
            LoadError::PlanMismatch {
                plan_url: String::new(),
                problems: Vec::new(),
            },
            LoadError::SchemaDrift(Vec::new()),
            LoadError::OlderData {
                table: t(),
                instant: 0,
                current: 1,
            },
            LoadError::TargetTriggers(Vec::new()),
            LoadError::TargetChanged(Vec::new()),
            LoadError::Deadline {
                tables: Vec::new(),
                hours: 23.5,
            },
            LoadError::Warehouse(crate::warehouse::WarehouseError::Invalid(String::new())),
            LoadError::Warehouse(crate::warehouse::WarehouseError::Reconcile {
                table: t(),
                staged: 0,
                expected: 1,
                counted: crate::warehouse::COUNTED_STAGING,
            }),
        ];
        let sweep = [
            crate::sweep::SweepError::Rds(crate::rds::RdsError::new("Rds.ThrottlingException", "")),
            crate::sweep::SweepError::Rds(crate::rds::RdsError::new("Rds.AccessDeniedException", "")),
        ];
        let names: Vec<&str> = extract
            .iter()
            .map(ExtractError::name)
            .chain(plan.iter().map(PlanError::name))
            .chain(load.iter().map(LoadError::name))
            .chain(sweep.iter().map(crate::sweep::SweepError::name))
            .chain(Code::RAISED_BY_DEFINITION.iter().map(|c| c.name()))
            .chain(Code::RAISED_BY_COMMAND_LINE.iter().map(|c| c.name()))
            .collect();
        for n in &names {
            assert!(Code::of(n).is_some(), "{n} is reported but not a Code");
        }
        for listed in Code::ALL.iter().map(|c| c.name()) {
            assert!(names.contains(&listed), "{listed} is listed but never reported");
        }
        for e in &extract {
            assert_eq!(e.is_retryable(), e.name().starts_with("Pipeline.Retryable."));
        }
    }
}
