//! Run ids: a run id is loaded once, from one plan. What the stage already holds under a run id decides whether it is
//! planned again (the same request before its load), refused, or cleared first (`restart`).

use super::PlanError;
use crate::contract::layout;
use crate::contract::load::LoadResult;
use crate::contract::plan::{Plan, PlanRequest, SourceInfo};
use crate::stage::Stage;

/// What is on the stage under a run id that is planned again. `--restart` clears it; the same request before any
/// load keeps its plan (a retried Plan state, an interrupted run); anything else is refused, so a run id is loaded
/// once, from one plan.
pub(super) async fn existing_run(
    stage: &dyn Stage,
    run_id: &str,
    req: &PlanRequest,
) -> Result<Option<Plan>, PlanError> {
    if let Some(h) = crate::stage::run::live_holder(stage, run_id).await? {
        let pid = h.process.as_ref().map_or(0, |p| p.pid);
        return Err(run_exists(
            run_id,
            format!(
                "it is held by {}, which still runs; nothing was deleted: wait for it to end, or stop it (kill \
                 {pid}), before --restart or a new attempt",
                h.holder()
            ),
        ));
    }
    if req.restart {
        let n = stage.delete_prefix(&layout::run_prefix(run_id)).await?;
        tracing::warn!(run = %run_id, objects = n, "restart: the run's objects on the stage deleted");
        return Ok(None);
    }
    let bytes = match stage.get(&layout::plan_key(run_id)).await {
        Ok(b) => b,
        Err(crate::stage::StageError::Missing { .. }) => {
            // An attempt that failed before its plan left its record (status, ledger, report): this attempt's replace it.
            for key in [
                layout::status_key(run_id),
                layout::ledger_key(run_id),
                layout::report_key(run_id),
            ] {
                stage.delete_prefix(&key).await?;
            }
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let plan: Plan = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            let why = format!("its plan.json does not parse ({e}); start it over with --restart");
            return Err(run_exists(run_id, why));
        }
    };
    let load = match stage.get(&layout::load_key(run_id)).await {
        Ok(b) => Some(serde_json::from_slice::<LoadResult>(&b).map(|l| l.done).unwrap_or(true)),
        Err(crate::stage::StageError::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if load == Some(true) {
        return Err(run_exists(
            run_id,
            format!(
                "it was loaded from plan {} of {}; a run id loads once: use a new --run-id, or --restart \
             to extract and load it again",
                plan.plan_id, plan.created_at
            ),
        ));
    }
    if plan.request_id != req.identity() || plan.plan_id != plan.identity() {
        return Err(run_exists(
            run_id,
            format!(
                "it was planned at {} with other settings (plan {}){}; give the same settings to resume it, use a new \
                 --run-id, or --restart to plan it anew (its extracted parts are deleted)",
                plan.created_at,
                plan.plan_id,
                differences(&plan, req)
            ),
        ));
    }
    // Resumed: the plan is kept, and so is every range whose result landed and verifies (the extractors keep them);
    // the tables the interrupted load committed are in the warehouse's load log, which makes their load a no-op.
    // The interrupted run's failure record and queue are its own, not this run's.
    for key in [layout::status_key(run_id), layout::load_queue_key(run_id)] {
        stage.delete_prefix(&key).await?;
    }
    tracing::info!(run = %run_id, plan = %plan.plan_id, interrupted_load = load.is_some(), "resuming the run with its plan");
    Ok(Some(plan))
}

/// A resumed run reads the source it was planned on: the same database of the same server (its system identifier,
/// which a restored snapshot or a base backup keeps), or it would load ranges of two databases as one table.
pub(super) fn same_source(plan: &Plan, now: &SourceInfo) -> Result<(), PlanError> {
    let was = &plan.source;
    let other_server = match (&was.system_identifier, &now.system_identifier) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    if was.database == now.database && !other_server {
        return Ok(());
    }
    let id = |s: &SourceInfo| match &s.system_identifier {
        Some(i) => format!("database {:?} of the server with system identifier {i}", s.database),
        None => format!("database {:?}", s.database),
    };
    Err(run_exists(
        &plan.run_id,
        format!(
            "it was planned on {} and --source now reaches {}: a run reads one source; point --source back at it to \
             resume, or use a new --run-id",
            id(was),
            id(now)
        ),
    ))
}

/// `: tables: … → …, settings.max_concurrency: 16 → 4`: what differs from the request that planned the run.
fn differences(plan: &Plan, req: &PlanRequest) -> String {
    let (Some(was), Ok(now)) = (&plan.request, serde_json::to_value(req.bare())) else {
        return String::new();
    };
    let d = crate::contract::plan::request_differences(was, &now, 6);
    if d.is_empty() {
        String::new()
    } else {
        format!(": {}", d.join(", "))
    }
}

fn run_exists(run_id: &str, detail: String) -> PlanError {
    PlanError::RunExists {
        run_id: run_id.to_string(),
        detail,
    }
}
