//! Layer 4, the planner: selects tables, introspects them in a handful of catalog queries, and splits each into key
//! ranges of equal row count (quantiles of the key, never an even stride, never a hash), with the number of parts tuned
//! from the data, the worker's limits and Redshift's slices. It writes the full plan and the task list to the stage and
//! returns a small summary (Step Functions payloads stay far below 256 KiB).
//!
//! [`select`] picks the relations, [`catalog`] reads what else the source says of them, [`parts`] counts the parts,
//! [`table`] plans each table with the pure decisions of [`strategy`] and the boundary queries of [`boundaries`],
//! [`runs`] decides what a run id already on the stage allows.

mod boundaries;
mod catalog;
mod cursor;
mod digests;
pub(crate) mod incremental;
mod parts;
mod runs;
mod select;
mod strategy;
mod table;

use crate::contract::code::Code;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_postgres::Client;

use crate::contract::layout;
use crate::contract::model::{ExtractTask, TableRef};
use crate::contract::plan::{
    ObjectLocation, Plan, PlanRequest, PlanSettings, PlanSummary, ResultsLocation, SourceInfo, TablePlan,
};
use crate::contract::sql;
use crate::source::{describe_tables, CatalogTable, SourceConnector, SourceError, SESSION_SETTINGS};
use crate::stage::{Stage, StageOpener};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("invalid plan request: {0}")]
    InvalidRequest(String),
    #[error("table pattern {pattern:?} matches no table (system schemas are never matched){hint}")]
    NoMatch { pattern: String, hint: String },
    /// A table named outright that the source does not have (or does not show this user).
    #[error("table {table} not found (or not visible to this user){hint}")]
    NoTable { table: TableRef, hint: String },
    #[error("key column {column:?} of {table} holds NULLs; choose a NOT NULL key")]
    NullKey { table: TableRef, column: String },
    #[error("run {run_id:?} exists on the stage already: {detail}")]
    RunExists { run_id: String, detail: String },
    #[error(
        "{table}: this run's data is from {}, older than what its last incremental run ({state_run}) loaded, from {}: \
         refused, nothing extracted (pass --allow-older to load it anyway)",
        crate::contract::clock::rfc3339(*instant), crate::contract::clock::rfc3339(*state_at)
    )]
    OlderData {
        table: TableRef,
        instant: i64,
        state_at: i64,
        state_run: String,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Stage(#[from] crate::stage::StageError),
}

impl PlanError {
    pub fn code(&self) -> Code {
        match self {
            PlanError::InvalidRequest(_) => Code::FatalInvalidInput,
            PlanError::NoMatch { .. } | PlanError::NoTable { .. } => Code::FatalNotFound,
            PlanError::NullKey { .. } => Code::FatalInvalidInput,
            PlanError::RunExists { .. } => Code::FatalRunExists,
            PlanError::OlderData { .. } => Code::FatalOlderData,
            PlanError::Source(e) => e.code(),
            PlanError::Stage(e) => e.code(),
        }
    }

    /// The stable name of [`Self::code`].
    pub fn name(&self) -> &'static str {
        self.code().name()
    }
}

/// The ports the planner uses.
pub struct PlanContext {
    pub source: Arc<dyn SourceConnector>,
    pub stages: Arc<dyn StageOpener>,
}

/// Plans a run: reads the catalog, computes boundaries, and returns the plan (nothing is written).
pub async fn plan(client: &Client, req: &PlanRequest) -> Result<Plan, PlanError> {
    plan_on(client, None, req).await
}

/// [`plan`], with the stage its `--incremental diff` tables' states are read from: a table with a usable state keeps
/// its boundaries, and no key quantiles are read for it.
async fn plan_on(client: &Client, stage: Option<&dyn Stage>, req: &PlanRequest) -> Result<Plan, PlanError> {
    let started = Instant::now();
    if req.tables.is_empty() {
        return Err(PlanError::InvalidRequest("no table patterns".into()));
    }
    let settings = &req.settings;
    check_settings(settings)?;
    req.writer.check().map_err(PlanError::InvalidRequest)?;
    let src = |e: tokio_postgres::Error| PlanError::from(planning_error(e));
    client.batch_execute(SESSION_SETTINGS).await.map_err(src)?;
    let (created_at, _) = crate::contract::clock::now_rfc3339();
    let started_at = crate::contract::clock::unix_now();
    let run_id = req.run_id.clone().unwrap_or_else(crate::contract::clock::new_run_id);
    let source = catalog::source_info(client).await.map_err(src)?;
    let relations = select::relations(client).await.map_err(src)?;
    let selected = select::select(&relations, req)?;
    if let Some(load) = &req.load {
        crate::contract::load::check_batch(load, selected.len(), req.warehouse.batch_statements)
            .map_err(PlanError::InvalidRequest)?;
    }
    // Introspect all at once.
    let ids: Vec<(u32, TableRef, char)> = selected.iter().map(|r| (r.oid, r.table.clone(), r.kind)).collect();
    let catalogs = describe_tables(client, &ids).await.map_err(src)?;
    if let Some(c) = catalogs.iter().find(|c| c.columns.is_empty()) {
        return Err(PlanError::InvalidRequest(format!(
            "{} has no columns: there is nothing to extract; leave it out with --exclude {}",
            c.table, c.table
        )));
    }
    if req.warehouse.folds_case {
        check_case_folding(&catalogs)?;
    }
    let oids: Vec<u32> = selected.iter().map(|r| r.oid).collect();
    check_row_security(&catalog::row_security(client, &oids).await.map_err(src)?, &catalogs)?;
    let mut low_cardinality = catalog::low_cardinality(client, &oids, settings.dictionary_max_distinct)
        .await
        .map_err(src)?;
    let (wanted, run_note) = parts::wanted_parts(&selected, req);
    let mut notes = plan_notes(req, &relations, &selected, run_note);
    let each = Each {
        client,
        stage,
        req,
        run_id: &run_id,
        source: &source,
        started,
    };
    let (tables, tasks) = plan_tables(&each, &selected, catalogs, wanted, &mut low_cardinality, &mut notes).await?;
    Plan {
        run_id,
        plan_id: String::new(),
        request_id: req.identity(),
        created_at,
        source,
        stage: req.stage.trim_end_matches('/').to_string(),
        // The slices the parts were sized to (0, "not asked", sizes as 1).
        settings: PlanSettings {
            slices: settings.slices.max(1),
            ..settings.clone()
        },
        load: req.load.clone(),
        snapshot: req.snapshot.clone(),
        tables,
        tasks,
        notes,
        started_at,
        planning_seconds: started.elapsed().as_secs_f64(),
        billed: Some(crate::contract::ledger::Billed::here(
            "planner",
            started.elapsed().as_secs_f64(),
        )),
        request: serde_json::to_value(req.bare()).ok(),
    }
    .seal()
    .map_err(|e| PlanError::InvalidRequest(format!("plan JSON: {e}")))
}

/// What planning every table shares.
struct Each<'a> {
    client: &'a Client,
    stage: Option<&'a dyn Stage>,
    req: &'a PlanRequest,
    run_id: &'a str,
    source: &'a SourceInfo,
    started: Instant,
}

/// Every selected table planned in turn, each told whether the planning budget is spent by then; the plan's note
/// says how many tables that changed.
async fn plan_tables(
    each: &Each<'_>,
    selected: &[&select::Relation],
    catalogs: Vec<CatalogTable>,
    wanted: Vec<(u32, Option<String>)>,
    low_cardinality: &mut std::collections::HashMap<u32, Vec<String>>,
    notes: &mut Vec<String>,
) -> Result<(Vec<TablePlan>, Vec<ExtractTask>), PlanError> {
    let budget = each.req.settings.planning_budget_seconds;
    let (mut tables, mut tasks, mut spent) = (Vec::new(), Vec::new(), 0usize);
    for ((rel, catalog), (parts, clamp_note)) in selected.iter().zip(&catalogs).zip(wanted) {
        let over_budget = each.started.elapsed().as_secs() >= budget;
        let (t, ts) = table::plan_table(table::TableContext {
            client: each.client,
            req: each.req,
            run_id: each.run_id,
            rel,
            catalog,
            parts,
            clamp_note,
            source: each.source,
            low_cardinality: low_cardinality.remove(&rel.oid).unwrap_or_default(),
            over_budget,
            stage: each.stage,
        })
        .await?;
        spent += usize::from(over_budget && t.strategy.kind() == "ctid_pages" && !t.key.is_empty());
        tables.push(t);
        tasks.extend(ts);
    }
    if spent > 0 {
        notes.push(format!(
            "the planning budget ({budget} s) was spent: {spent} of {} tables were split by equal heap-page (ctid) \
             ranges of the static source instead of key quantiles (parts as even as the rows are over the pages)",
            selected.len()
        ));
    }
    Ok((tables, tasks))
}

/// The plan's notes: what it reflects of the source, the run's part cap, the views left out and those planned.
fn plan_notes(
    req: &PlanRequest,
    relations: &[select::Relation],
    selected: &[&select::Relation],
    run_note: Option<String>,
) -> Vec<String> {
    let mut notes = vec![consistency(&req.settings).to_string()];
    notes.extend(run_note);
    let s = &req.settings;
    let fixed = match s.parts {
        Some(_) => " (a part count set by --parts is kept as it is)",
        None => "",
    };
    notes.push(match (&s.slices_from, s.slices) {
        (Some(from), n) => {
            format!("part counts are rounded up to multiples of the warehouse's {n} slices (from {from}){fixed}")
        }
        (None, 0) => "slices: 1 (the warehouse's count was not asked or not known; --slices sets it)".to_string(),
        (None, n) => format!("part counts are rounded up to multiples of {n} slices (--slices){fixed}"),
    });
    let views = select::skipped_views(relations, req);
    if !views.is_empty() {
        notes.push(format!(
            "views matched by a pattern and left out: {} (name them, or set include_views, to plan them)",
            views.join(", ")
        ));
    }
    notes.extend(selected.iter().filter(|r| r.is_view()).map(|r| {
        format!(
            "{} is a {}: it is read by running its query, as of the extraction's snapshot",
            r.table,
            if r.kind == 'm' { "materialized view" } else { "view" }
        )
    }));
    notes
}

/// What the warehouse will reflect of the source, in words (`plan --explain` prints it; docs/planner.md).
pub fn consistency(settings: &PlanSettings) -> &'static str {
    if settings.static_source {
        "consistency: static source (a restored snapshot or a source nothing writes to during the run): every range \
         reads the same data, so the warehouse holds the source as it is"
    } else {
        "consistency: live source. Each range is read in its own REPEATABLE READ snapshot, taken when its extractor \
         starts, so a table is consistent within a range, not across ranges or tables: a row updated in place is read \
         as of its range's moment; a row whose key moves from a range not yet read into one already read is missed, \
         and one moving the other way is read twice; rows inserted or deleted during the run are in or out by range. \
         Tables without a key are read in one range. For one instant, run from a snapshot"
    }
}

/// Names a case-folding warehouse would make one: two columns of a table, or two tables of the run, that differ only in
/// case. Refused at plan time, by name, before anything is extracted or created.
fn check_case_folding(tables: &[CatalogTable]) -> Result<(), PlanError> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<(String, String), &TableRef> = BTreeMap::new();
    for t in tables {
        let folded = (t.table.schema.to_lowercase(), t.table.name.to_lowercase());
        if let Some(first) = seen.insert(folded, &t.table) {
            problems.push(format!("tables {first} and {} are one table in Redshift", t.table));
        }
        let mut columns: BTreeMap<String, &str> = BTreeMap::new();
        for c in &t.columns {
            if let Some(first) = columns.insert(c.name.to_lowercase(), &c.name) {
                problems.push(format!(
                    "{}: columns {first:?} and {:?} are one column in Redshift",
                    t.table, c.name
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(PlanError::InvalidRequest(format!(
        "{}. Redshift folds identifiers to lower case (enable_case_sensitive_identifier is off by default): \
         exclude one of each pair (--exclude), or rename it in the source",
        crate::contract::code::first_few(&problems, "; ")
    )))
}

/// Settings that would make a run misbehave are refused before anything is read.
/// A driver error met while planning, by the server's own message and SQLSTATE (never only "db error"): retryable
/// only when the server may answer differently next time; a broken connection as the source being unavailable.
fn planning_error(e: tokio_postgres::Error) -> SourceError {
    let Some(db) = e.as_db_error() else {
        let detail = format!("planning: {}", crate::pgclient::chain(&e));
        return SourceError::Unavailable {
            detail,
            driver: Some(e),
        };
    };
    let detail = format!("while planning: {} (SQLSTATE {})", db.message(), db.code().code());
    match crate::pgclient::transient(db.code()) {
        true => SourceError::Unavailable {
            detail,
            driver: Some(e),
        },
        false => SourceError::Server {
            detail,
            driver: Some(e),
        },
    }
}

/// Refuses a table whose rows a row-level security policy would hide from the role: pgshift reads every row or none
/// (its sessions set `row_security = off`, so the read would fail anyway; this names the policies first).
fn check_row_security(hidden: &[catalog::Hidden], catalogs: &[CatalogTable]) -> Result<(), PlanError> {
    for c in catalogs {
        let Some(h) = hidden.iter().find(|h| h.oid == c.oid) else {
            continue;
        };
        let named = match h.policies.is_empty() {
            true => "row-level security (no policy: it hides every row)".to_string(),
            false => format!("row-level security policy {}", h.policies),
        };
        let (role, table) = (&h.role, &c.table);
        let remedy = match h.forced_on_owner {
            true => format!(
                "the table forces it on its owner: ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY, or let the role \
                 bypass it (ALTER ROLE {role} BYPASSRLS)"
            ),
            false => format!("let the role bypass it (ALTER ROLE {role} BYPASSRLS), or run as the table's owner"),
        };
        return Err(PlanError::from(SourceError::PermissionDenied {
            table: table.clone(),
            detail: format!(
                "{named} would hide rows from role {role:?}; pgshift reads every row or none: {remedy}, or leave the \
                 table out (--exclude {table})"
            ),
        }));
    }
    Ok(())
}

fn check_settings(s: &PlanSettings) -> Result<(), PlanError> {
    if s.max_concurrency == 0 {
        // Step Functions reads MaxConcurrency 0 as "no limit": every range at once against the source.
        return Err(PlanError::InvalidRequest(
            "max_concurrency (--concurrency) is 0, which Step Functions reads as unlimited: give the number of \
             extractors the source may serve at once, 1 or more"
                .into(),
        ));
    }
    let zero: Vec<&str> = [
        ("target_part_bytes (--target-part-mib)", s.target_part_bytes == 0),
        (
            "max_parts_per_table (--max-parts-per-table)",
            s.max_parts_per_table == 0,
        ),
        ("parts (--parts)", s.parts == Some(0)),
    ]
    .into_iter()
    .filter_map(|(name, bad)| bad.then_some(name))
    .collect();
    if !zero.is_empty() {
        return Err(PlanError::InvalidRequest(format!(
            "{} is 0: give 1 or more (or leave it out for the default)",
            zero.join(", ")
        )));
    }
    Ok(())
}

/// The planner's handler: plan, write `plan.json` and `tasks.json` to the stage, return the summary.
pub async fn handle(ctx: &PlanContext, req: PlanRequest) -> Result<(Plan, PlanSummary), PlanError> {
    if req.stage.is_empty() {
        return Err(PlanError::InvalidRequest(
            "no stage: give \"stage\" in the input or set PGSHIFT_STAGE".into(),
        ));
    }
    let span = tracing::info_span!("plan", tables = tracing::field::Empty, tasks = tracing::field::Empty);
    tracing::Instrument::instrument(write_plan(ctx, req, span.clone(), false), span).await
}

/// The planner's handler for the `Plan anew` state: the run planned again over its own plan (its incremental tables
/// whose states the pre-flight set aside are then loaded in full), its lock and records kept.
pub async fn replan(ctx: &PlanContext, req: PlanRequest) -> Result<(Plan, PlanSummary), PlanError> {
    let span = tracing::info_span!("replan", tables = tracing::field::Empty, tasks = tracing::field::Empty);
    tracing::Instrument::instrument(write_plan(ctx, req, span.clone(), true), span).await
}

async fn write_plan(
    ctx: &PlanContext,
    req: PlanRequest,
    span: tracing::Span,
    anew: bool,
) -> Result<(Plan, PlanSummary), PlanError> {
    let stage = ctx.stages.open(&req.stage).await?;
    let existing = match &req.run_id {
        Some(id) if !anew => runs::existing_run(stage.as_ref(), id, &req).await?,
        _ => None,
    };
    let plan = match existing {
        Some(plan) => {
            let source = crate::source::connector_for(&ctx.source, req.source_endpoint.as_ref())?;
            let client = source.connect_first().await?;
            client.batch_execute(SESSION_SETTINGS).await.map_err(planning_error)?;
            let now = catalog::source_info(&client).await.map_err(planning_error)?;
            runs::same_source(&plan, &now)?;
            tracing::info!(run = %plan.run_id, plan = %plan.plan_id, "the same request planned this run: plan kept");
            // A snapshot restored again is read where it is now.
            let mut plan = plan;
            for t in &mut plan.tasks {
                t.source_endpoint.clone_from(&req.source_endpoint);
            }
            plan
        }
        None => {
            let source = crate::source::connector_for(&ctx.source, req.source_endpoint.as_ref())?;
            let client = source.connect_first().await?;
            let planned = plan_on(&client, Some(stage.as_ref()), &req).await?;
            incremental::apply((&client, source.as_ref()), stage.as_ref(), &req, planned).await?
        }
    };

    let tasks_json = serde_json::to_vec(&plan.tasks).map_err(|e| PlanError::InvalidRequest(e.to_string()))?;
    let plan_json = serde_json::to_vec_pretty(&plan).map_err(|e| PlanError::InvalidRequest(e.to_string()))?;
    let tasks_url = crate::stage::put(
        stage.as_ref(),
        &layout::tasks_key(&plan.run_id),
        Bytes::from(tasks_json),
    )
    .await?
    .url;
    let plan_url = crate::stage::put(stage.as_ref(), &layout::plan_key(&plan.run_id), Bytes::from(plan_json))
        .await?
        .url;
    span.record("tables", plan.tables.len());
    span.record("tasks", plan.tasks.len());
    let summary = PlanSummary {
        run_id: plan.run_id.clone(),
        plan_url,
        tasks_url,
        tables: plan.tables.len(),
        tasks: plan.tasks.len(),
        estimated_rows: plan.tables.iter().map(|t| t.estimates.rows).sum(),
        estimated_bytes: plan.tables.iter().map(|t| t.estimates.bytes).sum(),
        max_concurrency: req.settings.max_concurrency,
        task_list: {
            let (bucket, key) = layout::object_location(stage.url(), &layout::tasks_key(&plan.run_id));
            ObjectLocation { bucket, key }
        },
        results: {
            let (bucket, prefix) = layout::object_location(stage.url(), &layout::map_results_prefix(&plan.run_id));
            ResultsLocation { bucket, prefix }
        },
        load: {
            // The Load state passes `concurrency` on as it is: always present, the default when the request had none.
            let mut load = req.load.clone().unwrap_or_default();
            load.concurrency = Some(load.concurrency() as u32);
            load
        },
        snapshot: plan.snapshot.clone(),
    };
    tracing::info!(seconds = plan.planning_seconds, "planned");
    Ok((plan, summary))
}

/// Counts the rows a task's range holds, with the extractor's own predicate (for `--verify` and the balance bench).
pub async fn count_rows(client: &Client, task: &ExtractTask) -> Result<u64, PlanError> {
    let mut q = format!(
        "SELECT count(*) FROM {}",
        sql::table(&task.table).map_err(PlanError::InvalidRequest)?
    );
    if let Some(p) = sql::predicate(&task.key, &task.bounds).map_err(PlanError::InvalidRequest)? {
        q.push_str(" WHERE ");
        q.push_str(&p);
    }
    let n: i64 = client
        .query_one(&q, &[])
        .await
        .map_err(|e| SourceError::from_pg(&task.table, 0, e))?
        .get(0);
    Ok(n as u64)
}
