//! A run as OpenLineage run events (spec 2-0-2, <https://openlineage.io/spec/2-0-2/OpenLineage.json>): `START` when
//! its pre-flight passed, `COMPLETE` or `FAIL` when it ended, for the job `pgshift` / the run's stack. Inputs are the
//! source tables (with the snapshot, when the run read one), outputs the warehouse's tables with their schema, their
//! column lineage (each column from the source's column of its name: `DIRECT`/`IDENTITY`, or a named cast) and the
//! rows the run committed. The run id is a UUID derived from pgshift's run id, so every event of a run names the same
//! run. Pure.

use serde_json::{json, Value};

use crate::contract::plan::{Plan, TablePlan};

use super::record::RunRecord;

const SPEC: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const PRODUCER: &str = "https://github.com/pgshift/pgshift";
const SCHEMA_FACET: &str = "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const COLUMN_LINEAGE: &str =
    "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet";
const OUTPUT_STATISTICS: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
const ERROR_MESSAGE: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";

/// Where the datasets are, in OpenLineage's naming: the source's `postgres://host:port` and database, the
/// warehouse's namespace (`redshift://cluster.region:5439`, or `postgres://host:port`) and database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datasets {
    pub source_namespace: String,
    pub source_database: String,
    pub warehouse_namespace: String,
    pub warehouse_database: String,
    /// The job's namespace (the stack, or `local`).
    pub job_namespace: String,
}

/// The OpenLineage run id of a pgshift run: a version-4-shaped UUID from the SHA-256 of the run id (the same for
/// every event of the run).
pub fn run_uuid(run_id: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(run_id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

fn facet(schema_url: &str, body: Value) -> Value {
    let mut v = json!({"_producer": PRODUCER, "_schemaURL": schema_url});
    if let (Some(o), Value::Object(b)) = (v.as_object_mut(), body) {
        o.extend(b);
    }
    v
}

fn fields(t: &TablePlan) -> Value {
    Value::Array(
        t.columns
            .iter()
            .map(|c| json!({"name": c.name, "type": c.pg_type.name}))
            .collect(),
    )
}

/// An output's fields in the warehouse's types (what a cast column became, not the source's type).
fn warehouse_fields(t: &TablePlan, ds: &Datasets) -> Value {
    let redshift = ds.warehouse_namespace.starts_with("redshift://");
    Value::Array(
        t.columns
            .iter()
            .map(|c| {
                let ty = match redshift {
                    true => c.mapping.redshift_type(65_535),
                    false => c.mapping.postgres_type(),
                };
                json!({"name": c.name, "type": ty.to_lowercase()})
            })
            .collect(),
    )
}

fn inputs(plan: &Plan, ds: &Datasets) -> Value {
    Value::Array(
        plan.tables
            .iter()
            .map(|t| {
                json!({
                    "namespace": ds.source_namespace,
                    "name": format!("{}.{}.{}", ds.source_database, t.table.schema, t.table.name),
                    "facets": {"schema": facet(SCHEMA_FACET, json!({"fields": fields(t)}))},
                })
            })
            .collect(),
    )
}

/// Each output column from the source column of its name: identity, or the cast the plan names.
fn column_lineage(t: &TablePlan, ds: &Datasets) -> Value {
    let input = format!("{}.{}.{}", ds.source_database, t.table.schema, t.table.name);
    let mut fields = serde_json::Map::new();
    for c in &t.columns {
        let transformation = match &c.cast {
            None => json!({"type": "DIRECT", "subtype": "IDENTITY", "description": "copied as is", "masking": false}),
            Some(cast) => json!({
                "type": "DIRECT",
                "subtype": "TRANSFORMATION",
                "description": format!("cast from {} to {cast:?}", c.pg_type.name).to_lowercase(),
                "masking": false,
            }),
        };
        fields.insert(
            c.name.clone(),
            json!({"inputFields": [{
                "namespace": ds.source_namespace,
                "name": input,
                "field": c.name,
                "transformations": [transformation],
            }]}),
        );
    }
    facet(COLUMN_LINEAGE, json!({"fields": fields}))
}

fn outputs(plan: &Plan, ds: &Datasets, rows: &dyn Fn(&TablePlan) -> Option<u64>) -> Value {
    Value::Array(
        plan.tables
            .iter()
            .map(|t| {
                let mut o = json!({
                    "namespace": ds.warehouse_namespace,
                    "name": format!("{}.{}.{}", ds.warehouse_database, t.table.schema, t.table.name),
                    "facets": {
                        "schema": facet(SCHEMA_FACET, json!({"fields": warehouse_fields(t, ds)})),
                        "columnLineage": column_lineage(t, ds),
                    },
                });
                if let Some(n) = rows(t) {
                    o["outputFacets"] = json!({"outputStatistics": facet(OUTPUT_STATISTICS, json!({"rowCount": n}))});
                }
                o
            })
            .collect(),
    )
}

fn event(kind: &str, plan: &Plan, ds: &Datasets, now: f64, run_facets: Value, outs: Value) -> Value {
    json!({
        "eventType": kind,
        "eventTime": chrono::DateTime::from_timestamp_millis((now * 1000.0) as i64)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "run": {"runId": run_uuid(&plan.run_id), "facets": run_facets},
        "job": {"namespace": ds.job_namespace, "name": "pgshift"},
        "inputs": inputs(plan, ds),
        "outputs": outs,
        "producer": PRODUCER,
        "schemaURL": SPEC,
    })
}

/// `START`: the run's plan, its inputs and the outputs it will write.
pub fn started(plan: &Plan, ds: &Datasets, now: f64) -> Value {
    event("START", plan, ds, now, json!({}), outputs(plan, ds, &|_| None))
}

/// `COMPLETE` with the rows each table committed, or `FAIL` with the error.
pub fn ended(rec: &RunRecord, ds: &Datasets, now: f64) -> Value {
    let committed = |t: &TablePlan| {
        rec.load
            .iter()
            .flat_map(|l| &l.tables)
            .find(|l| l.table == t.table && l.status.is_committed())
            .map(|l| l.committed_rows.unwrap_or(l.rows))
    };
    match &rec.failure {
        None => event(
            "COMPLETE",
            &rec.plan,
            ds,
            now,
            json!({}),
            outputs(&rec.plan, ds, &committed),
        ),
        // A run stopped by a signal was aborted, not failed: it resumes as it is.
        Some((name, _)) if name == crate::contract::code::Code::FatalInterrupted.name() => event(
            "ABORT",
            &rec.plan,
            ds,
            now,
            json!({}),
            outputs(&rec.plan, ds, &committed),
        ),
        Some((name, message)) => {
            let error = facet(
                ERROR_MESSAGE,
                json!({"message": format!("{name}: {message}"), "programmingLanguage": "rust"}),
            );
            event(
                "FAIL",
                &rec.plan,
                ds,
                now,
                json!({"errorMessage": error}),
                outputs(&rec.plan, ds, &committed),
            )
        }
    }
}
