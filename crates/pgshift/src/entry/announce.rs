//! What a run's end tells its owners, from its one record and its one bill: its events ([`crate::report::events`]) to
//! every sink (EventBridge on AWS, `<run>/events.jsonl` on the stage, `--events URL`), its metrics as EMF lines on
//! standard output where Lambda sends them to CloudWatch ([`crate::report::metrics`]), and, with an OpenLineage
//! endpoint, its lineage ([`crate::report::lineage`]). Deployed, the loader's Finish state announces; locally,
//! `pgshift run` does, once the execution ended and its ledger holds the counted transitions. Nothing here fails a run.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::contract::model::TableRef;
use crate::events::{Fanout, RunAt};
use crate::report::cost::RunCost;
use crate::report::record::RunRecord;
use crate::stage::StageOpener;
use crate::warehouse::Warehouse;

/// Where a run's end is told.
pub struct Announce {
    /// The stack (deployed), or `local`: the events' `stack`, the metrics' `Stack` dimension.
    pub stack: String,
    pub sinks: Fanout,
    /// Print EMF lines on standard output (on Lambda).
    pub metrics: bool,
    /// An OpenLineage endpoint (HTTP) or file, and the datasets' names.
    pub lineage: Option<(String, crate::report::lineage::Datasets)>,
    /// Whether the Finish state announces (deployed); else the caller does once the execution ended (local).
    pub at_finish: bool,
}

/// What was told, and what could not be.
#[derive(Debug, Default)]
pub struct Told {
    pub events: usize,
    pub metric_lines: Vec<Value>,
    pub errors: Vec<String>,
}

impl Announce {
    /// Tells the end of a run, from its record and bill as [`crate::report::publish`] wrote them. `warehouse`, when
    /// given, is asked for each table's rows before this run (the metrics' drop).
    pub async fn run_ended(&self, rec: &RunRecord, bill: &RunCost, warehouse: Option<&dyn Warehouse>) -> Told {
        let mut told = Told::default();
        let now = crate::contract::clock::unix_now();
        let events = crate::report::events::of(rec, bill, &self.stack, now);
        let at = RunAt {
            stage: &rec.plan.stage,
            run_id: &rec.plan.run_id,
        };
        told.errors.extend(
            self.sinks
                .send_all(at, &events)
                .await
                .into_iter()
                .map(|e| e.to_string()),
        );
        told.events = events.len();
        if self.metrics {
            let previous = match warehouse {
                Some(wh) => previous_rows(wh, rec).await,
                None => BTreeMap::new(),
            };
            told.metric_lines = crate::report::metrics::run_lines(rec, bill, &self.stack, now, &previous);
            for l in &told.metric_lines {
                // EMF: one JSON document a line on standard output, which Lambda sends to CloudWatch Logs.
                println!("{l}");
            }
        }
        if let Some((url, ds)) = &self.lineage {
            let ev = crate::report::lineage::ended(rec, ds, now);
            let body = serde_json::to_vec(&ev).unwrap_or_default();
            if let Err(e) = crate::events::deliver(url, &[body]).await {
                told.errors.push(e.to_string());
            }
        }
        told
    }

    /// Tells that the run started (its pre-flight passed): OpenLineage's START, with an endpoint.
    pub async fn run_started(&self, stages: &dyn StageOpener, plan_url: &str) -> Vec<String> {
        let Some((url, ds)) = &self.lineage else {
            return Vec::new();
        };
        let stage = match crate::stage::run::stage_of(stages, plan_url).await {
            Ok(s) => s,
            Err(e) => return vec![format!("opening the stage for lineage: {e}")],
        };
        let plan = match crate::stage::run::read_plan(stage.as_ref(), plan_url).await {
            Ok(p) => p,
            Err(e) => return vec![format!("reading the plan for lineage: {e}")],
        };
        let ev = crate::report::lineage::started(&plan, ds, crate::contract::clock::unix_now());
        match crate::events::deliver(url, &[serde_json::to_vec(&ev).unwrap_or_default()]).await {
            Ok(()) => Vec::new(),
            Err(e) => vec![e.to_string()],
        }
    }
}

/// Each committed table's rows before this run, from the warehouse's load log (its latest load by another run).
async fn previous_rows(wh: &dyn Warehouse, rec: &RunRecord) -> BTreeMap<TableRef, u64> {
    let mut out = BTreeMap::new();
    let Ok(run) = crate::contract::sql::text_literal(&rec.plan.run_id) else {
        return out;
    };
    for t in rec
        .load
        .iter()
        .flat_map(|l| &l.tables)
        .filter(|t| t.status.is_committed())
    {
        let (Ok(schema), Ok(name)) = (
            crate::contract::sql::text_literal(&t.table.schema),
            crate::contract::sql::text_literal(&t.table.name),
        ) else {
            continue;
        };
        let sql = format!(
            "SELECT \"rows\" FROM \"pgshift\".\"load_log\" WHERE schema_name = {schema} AND table_name = {name} \
             AND run_id <> {run} ORDER BY loaded_at DESC LIMIT 1"
        );
        if let Ok(rows) = wh.query(sql).await {
            if let Some(crate::warehouse::Cell::Int(n)) = rows.first().and_then(|r| r.first()) {
                out.insert(t.table.clone(), (*n).max(0) as u64);
            }
        }
    }
    out
}

/// The datasets' names in OpenLineage's naming (<https://openlineage.io/docs/spec/naming>) from the source's and the
/// warehouse's connection strings: `postgres://host:port` with `db.schema.table`; a Redshift cluster as
/// `redshift://cluster.region:5439`, a Serverless workgroup as `redshift://workgroup.region:5439` (`region`: the
/// AWS region the run is in).
pub fn datasets(
    source_url: &str,
    warehouse_url: &str,
    job_namespace: &str,
    region: Option<&str>,
) -> Result<crate::report::lineage::Datasets, String> {
    let pg = |url: &str| -> Result<(String, String), String> {
        let p = crate::pgclient::tls::config(url)?;
        let db = p
            .config
            .get_dbname()
            .or(p.config.get_user())
            .unwrap_or_default()
            .to_string();
        Ok((format!("postgres://{}", crate::pgclient::endpoint(&p.config)), db))
    };
    let (source_namespace, source_database) = pg(source_url)?;
    let (warehouse_namespace, warehouse_database) = if warehouse_url.starts_with("redshift") {
        let t = crate::warehouse::redshift::RedshiftTarget::parse(warehouse_url).map_err(|e| e.to_string())?;
        let name = t.cluster_identifier.or(t.workgroup_name).unwrap_or_default();
        let region = region.unwrap_or("unknown-region");
        (format!("redshift://{name}.{region}:5439"), t.database)
    } else {
        pg(warehouse_url)?
    };
    Ok(crate::report::lineage::Datasets {
        source_namespace,
        source_database,
        warehouse_namespace,
        warehouse_database,
        job_namespace: job_namespace.to_string(),
    })
}
