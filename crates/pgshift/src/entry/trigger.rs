//! What starts a run: an EventBridge event of a finished RDS snapshot (DB instance snapshot, automated or manual;
//! Aurora cluster snapshot, automated or manual), or a manual input. Either becomes a [`PlanRequest`] over the
//! planner's configured defaults; a snapshot's identity is recorded in the run.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::plan::PlanRequest;
use crate::contract::snapshot::{restore_plan, RestorePlan, RestoreSettings, Snapshot, SnapshotKind};
use crate::plan::PlanError;

/// What the planner Lambda reads from its environment: the plan request a run starts from, and how snapshots are
/// restored.
#[derive(Debug, Clone, Default)]
pub struct PlannerDefaults {
    pub request: PlanRequest,
    pub restore: RestoreSettings,
}

/// The `Trigger` state's output: the run's request (its run id fixed), and what to restore first, if anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triggered {
    pub run_id: String,
    pub stage: String,
    pub request: PlanRequest,
    /// Absent for a run from the live source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestorePlan>,
    /// Another execution holds this run id and has not ended (a duplicate delivery of the same event): this one
    /// ends at once and touches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<crate::stage::run::RunLock>,
}

/// The trigger input (an RDS snapshot event, or a manual input that may name a snapshot) made into the run's
/// request and, for a snapshot, the restore the state machine runs before planning. A run from a snapshot reads a
/// source nothing writes to, so it is planned as a static source (keyless tables read in parallel ctid ranges).
pub(crate) fn triggered(input: &Value, defaults: &PlannerDefaults) -> Result<Triggered, PlanError> {
    let mut request = plan_request(input, &defaults.request)?;
    let run_id = request
        .run_id
        .get_or_insert_with(crate::contract::clock::new_run_id)
        .clone();
    let restore = match &request.snapshot {
        Some(s) if s.identifier.trim().is_empty() => {
            return Err(bad(
                "the input names a snapshot without an identifier: give \"snapshot\": {\"identifier\": \"…\"}".into(),
            ))
        }
        Some(s) => {
            check_identifier("snapshot.identifier", &s.identifier)?;
            Some(restore_plan(&defaults.restore, &run_id, s))
        }
        None => None,
    };
    if restore.is_some() {
        request.settings.static_source = true;
    }
    Ok(Triggered {
        run_id,
        stage: request.stage.clone(),
        request,
        restore,
        duplicate_of: None,
    })
}

/// The RDS events that mean "a snapshot is complete": (RDS event id, detail-type, kind, automated).
pub(crate) const SNAPSHOT_CREATED: &[(&str, &str, SnapshotKind, bool)] = &[
    ("RDS-EVENT-0042", "RDS DB Snapshot Event", SnapshotKind::Instance, false),
    ("RDS-EVENT-0091", "RDS DB Snapshot Event", SnapshotKind::Instance, true),
    (
        "RDS-EVENT-0075",
        "RDS DB Cluster Snapshot Event",
        SnapshotKind::Cluster,
        false,
    ),
    (
        "RDS-EVENT-0169",
        "RDS DB Cluster Snapshot Event",
        SnapshotKind::Cluster,
        true,
    ),
];

fn bad(m: String) -> PlanError {
    PlanError::InvalidRequest(m)
}

/// Whether the input is an EventBridge event (rather than a manual input).
fn is_event(input: &Value) -> bool {
    input.get("detail-type").is_some() && input.get("source").is_some()
}

/// The snapshot of an EventBridge RDS event, or an error naming what the event is instead.
pub(crate) fn snapshot_of(event: &Value) -> Result<Snapshot, PlanError> {
    let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let source = s("source");
    let detail_type = s("detail-type");
    if source != "aws.rds" {
        return Err(bad(format!(
            "event from {source:?} ({detail_type:?}) is not an RDS snapshot event"
        )));
    }
    let detail = event
        .get("detail")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("{detail_type} event {:?} has no detail", s("id"))))?;
    let d = |k: &str| detail.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    // EventBridge gives "RDS-EVENT-0042"; SNS-shaped messages give the documentation URL ending in "#RDS-EVENT-0042".
    let rds_event_id = d("EventID").rsplit('#').next().unwrap_or_default().to_string();
    let Some((_, _, kind, automated)) = SNAPSHOT_CREATED
        .iter()
        .find(|(id, dt, _, _)| *id == rds_event_id && *dt == detail_type)
    else {
        return Err(bad(format!(
            "{detail_type} {rds_event_id:?} ({:?}) is not a snapshot-created event; pgshift starts on {}",
            d("Message"),
            SNAPSHOT_CREATED
                .iter()
                .map(|(id, _, _, _)| *id)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let identifier = d("SourceIdentifier");
    if identifier.is_empty() {
        return Err(bad(format!("{detail_type} {rds_event_id}: no SourceIdentifier")));
    }
    check_identifier("SourceIdentifier", &identifier)?;
    for (name, value, max) in [
        ("SourceArn", d("SourceArn"), MAX_ARN),
        (
            "resources[0]",
            event
                .pointer("/resources/0")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            MAX_ARN,
        ),
        ("id", s("id"), MAX_SHORT),
        ("time", s("time"), MAX_SHORT),
        ("account", s("account"), MAX_SHORT),
        ("region", s("region"), MAX_SHORT),
        ("Message", d("Message"), MAX_MESSAGE),
    ] {
        check_len(name, &value, max)?;
    }
    let arn = match d("SourceArn") {
        a if !a.is_empty() => a,
        _ => event
            .pointer("/resources/0")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    Ok(Snapshot {
        kind: *kind,
        automated: *automated,
        identifier,
        arn,
        event_id: s("id"),
        rds_event_id,
        message: d("Message"),
        time: s("time"),
        account: s("account"),
        region: s("region"),
    })
}

/// AWS's own limits on what an RDS event names, checked before anything of it is used (a run id, a stage key, an
/// RDS request): a DB or cluster snapshot identifier is 1 to 255 letters, digits and hyphens, an automated one
/// prefixed `rds:` (<https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBSnapshot.html>,
/// <https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBClusterSnapshot.html>); an ARN is at most
/// 2,048 characters (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html>). Event ids, times,
/// accounts and regions are far shorter than 256; an RDS event message is a sentence.
const MAX_IDENTIFIER: usize = 255;
const MAX_ARN: usize = 2048;
const MAX_SHORT: usize = 256;
const MAX_MESSAGE: usize = 4096;

/// A snapshot identifier within AWS's limits, or an error naming the field and showing only its start.
pub(crate) fn check_identifier(name: &str, value: &str) -> Result<(), PlanError> {
    check_len(name, value, MAX_IDENTIFIER)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == ':'))
    {
        return Err(bad(format!(
            "the snapshot identifier in {name} ({:?}) holds {c:?}: RDS identifiers are letters, digits and hyphens \
             (an automated snapshot's prefixed rds:)",
            start_of(value)
        )));
    }
    Ok(())
}

fn check_len(name: &str, value: &str, max: usize) -> Result<(), PlanError> {
    let n = value.chars().count();
    if n <= max {
        return Ok(());
    }
    Err(bad(format!(
        "the event's {name} is {n} characters, more than AWS allows ({max}): not an RDS event pgshift runs from; it \
         starts {:?}",
        start_of(value)
    )))
}

/// The first characters of a value, for a message.
fn start_of(value: &str) -> String {
    let mut s: String = value.chars().take(40).collect();
    if value.chars().count() > 40 {
        s.push('…');
    }
    s
}

/// A run id for a snapshot: deterministic, so a redelivered event (EventBridge delivers at least once) makes the same
/// run, whose load is then a no-op.
fn run_id_for(s: &Snapshot) -> String {
    let time: String = s.time.chars().filter(char::is_ascii_alphanumeric).collect();
    let id: String = s
        .identifier
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{time}-{}", id.trim_matches('-'))
}

/// The plan request for a trigger input over the planner's defaults: an RDS snapshot event takes the defaults as they
/// are (and records the snapshot); a manual input is merged over them ([`PlanRequest::merged`]: objects field by
/// field). Unknown fields are an error naming them.
pub(crate) fn plan_request(input: &Value, defaults: &PlanRequest) -> Result<PlanRequest, PlanError> {
    if is_event(input) {
        let snapshot = snapshot_of(input)?;
        let mut req = defaults.clone();
        req.run_id = Some(run_id_for(&snapshot));
        req.snapshot = Some(snapshot);
        return Ok(req);
    }
    let Value::Object(fields) = input else {
        return Err(bad(format!(
            "the run input must be a JSON object (a manual input or an RDS snapshot event), not {input}"
        )));
    };
    defaults.merged(fields).map_err(|e| bad(format!("run input: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(detail_type: &str, event_id: &str, message: &str) -> Value {
        json!({
            "version": "0", "id": "e-1", "detail-type": detail_type, "source": "aws.rds",
            "account": "123456789012", "time": "2026-11-24T03:10:00Z", "region": "eu-west-1",
            "resources": ["arn:aws:rds:eu-west-1:123456789012:snapshot:rds:orders-2026-11-24-03-05"],
            "detail": {"EventCategories": ["creation"], "SourceType": "SNAPSHOT",
                       "SourceArn": "arn:aws:rds:eu-west-1:123456789012:snapshot:rds:orders-2026-11-24-03-05",
                       "Date": "2026-11-24T03:10:00.123Z", "Message": message,
                       "SourceIdentifier": "rds:orders-2026-11-24-03-05", "EventID": event_id}
        })
    }

    #[test]
    fn manual_input_overrides_the_defaults_field_by_field() {
        let defaults = PlanRequest {
            tables: vec!["sales.*".into()],
            stage: "s3://b/p".into(),
            ..PlanRequest::default()
        };
        let req = plan_request(&json!({"tables": ["public.t"], "settings": {"parts": 4}}), &defaults).expect("ok");
        assert_eq!(req.tables, vec!["public.t".to_string()]);
        assert_eq!(req.stage, "s3://b/p");
        assert_eq!(req.settings.parts, Some(4));
        assert_eq!(
            req.settings.max_parts_per_table, 256,
            "other settings keep their defaults"
        );
        let e = plan_request(&json!({"table": ["x"]}), &defaults).expect_err("typo");
        assert!(e.to_string().contains("table"), "{e}");
        assert!(plan_request(&json!(["x"]), &defaults).is_err());
    }

    #[test]
    fn a_snapshot_event_or_a_manual_snapshot_makes_a_restore_of_a_static_source() {
        let defaults = PlannerDefaults {
            request: PlanRequest {
                stage: "s3://b/p".into(),
                ..PlanRequest::default()
            },
            restore: RestoreSettings::default(),
        };
        let t = triggered(
            &event("RDS DB Snapshot Event", "RDS-EVENT-0042", "Manual snapshot created"),
            &defaults,
        )
        .expect("event");
        let r = t.restore.expect("a restore");
        assert_eq!(r.snapshot, "rds:orders-2026-11-24-03-05");
        assert_eq!(r.instance, crate::contract::snapshot::instance_name(&t.run_id));
        assert!(t.request.settings.static_source);
        assert_eq!(t.request.run_id.as_deref(), Some(t.run_id.as_str()));
        let m = triggered(
            &json!({"snapshot": {"identifier": "nightly", "kind": "cluster"}}),
            &defaults,
        )
        .expect("manual");
        assert_eq!(m.restore.expect("restore").kind, SnapshotKind::Cluster);
        let live = triggered(&json!({"tables": ["public.t"]}), &defaults).expect("live");
        assert!(live.restore.is_none() && !live.request.settings.static_source);
        assert!(!live.run_id.is_empty());
        let e = triggered(&json!({"snapshot": {"identifier": " "}}), &defaults).expect_err("empty id");
        assert!(e.to_string().contains("identifier"), "{e}");
        let e = triggered(&json!({"snapshot": {"id": "x"}}), &defaults).expect_err("typo");
        assert!(e.to_string().contains("id"), "{e}");
    }

    #[test]
    fn only_snapshot_created_events_start_a_run() {
        let defaults = PlanRequest::default();
        let req = plan_request(
            &event("RDS DB Snapshot Event", "RDS-EVENT-0091", "Automated snapshot created"),
            &defaults,
        )
        .expect("automated snapshot");
        let s = req.snapshot.expect("snapshot recorded");
        assert!(s.automated && s.kind == SnapshotKind::Instance);
        assert_eq!(
            req.run_id.as_deref(),
            Some("20261124T031000Z-rds-orders-2026-11-24-03-05")
        );
        let e = plan_request(
            &event("RDS DB Snapshot Event", "RDS-EVENT-0040", "Creating manual snapshot"),
            &defaults,
        )
        .expect_err("not a created event");
        assert!(e.to_string().contains("RDS-EVENT-0040"), "{e}");
        // The right id under the wrong detail-type is refused too.
        assert!(plan_request(
            &event("RDS DB Cluster Snapshot Event", "RDS-EVENT-0091", "x"),
            &defaults
        )
        .is_err());
        let mut other = event("EC2 Instance State-change Notification", "x", "");
        other["source"] = json!("aws.ec2");
        let e = plan_request(&other, &defaults).expect_err("not RDS");
        assert!(e.to_string().contains("aws.ec2"), "{e}");
    }
}
