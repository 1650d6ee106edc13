//! Snapshot runs through the definition, bound to the local RDS stand-in: the warehouse holds what the snapshot
//! holds, not the changed source; the restored server is removed on every path; `gc` removes what a killed run left
//! and nothing else; bad snapshots fail at once by name.

use std::sync::Arc;

use anyhow::Result;
use pgshift::contract::load::{LoadOptions, SchemaEvolution};
use pgshift::contract::snapshot::RestoreSettings;
use pgshift::entry::local::{LocalRun, RunOutcome, DEFINITION};
use pgshift::rds::local::LocalRds;
use pgshift::rds::Rds;
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::{PgConnector, UrlStages};
use pgshift_tests::{cluster, connect, stage_dir};
use serde_json::json;

use crate::load::fingerprint;
use crate::pipeline::{plan_of, request};

const SOURCE: &str = "
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id bigint PRIMARY KEY, name text NOT NULL, since date);
INSERT INTO shop.customers SELECT g, 'customer ' || g, DATE '2020-01-01' + g FROM generate_series(1, 3000) g;
CREATE TABLE shop.orders (id bigint PRIMARY KEY, customer bigint, total numeric(12,2), note text);
INSERT INTO shop.orders SELECT g, g % 3000 + 1, (g % 997) * 1.25, CASE WHEN g % 5 = 0 THEN NULL ELSE 'n' || g END
  FROM generate_series(1, 20000) g;";

const CHANGE: &str = "
INSERT INTO shop.customers SELECT g, 'late ' || g, NULL FROM generate_series(3001, 3100) g;
UPDATE shop.orders SET total = total + 1 WHERE id % 7 = 0;
DELETE FROM shop.orders WHERE id % 11 = 0;";

const TABLES: [&str; 2] = ["shop.customers", "shop.orders"];

fn rds_dir(name: &str) -> std::path::PathBuf {
    stage_dir(&format!("rds-{name}"))
}

/// A run of the definition from snapshot `id` (or any input), bound to the stand-in in `dir`.
async fn run_snapshot(
    source: &str,
    target: &str,
    stage: &str,
    input: serde_json::Value,
    rds: LocalRds,
    restore: RestoreSettings,
) -> Result<RunOutcome> {
    let run = snapshot_run(source, target, stage, input, rds, restore)?;
    Ok(run.start("snapshot")?.outcome.await?)
}

/// The run `run_snapshot` starts, for a test to change (its stages, its definition) before it starts it.
fn snapshot_run(
    source: &str,
    target: &str,
    stage: &str,
    input: serde_json::Value,
    rds: LocalRds,
    restore: RestoreSettings,
) -> Result<LocalRun> {
    let mut req = request(stage, &TABLES, 2);
    req.load = Some(LoadOptions {
        schema_evolution: SchemaEvolution::Refuse,
        ..LoadOptions::default()
    });
    Ok(LocalRun {
        definition: DEFINITION.to_string(),
        input: Some(input),
        request: req,
        source: Arc::new(PgConnector::new(source)?),
        stages: Arc::new(UrlStages::default()),
        warehouse: Arc::new(PgWarehouse::new(target)?),
        memory_mb: 1024,
        restore,
        rds: Some(Arc::new(rds)),
        load_budget: None,
        announce: Default::default(),
    })
}

/// The definition with every retry shortened to milliseconds: the same states and the same paths, without minutes
/// of backoff in a test that makes the retries fail.
fn fast_retries() -> Result<String> {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match k.as_str() {
                        "IntervalSeconds" => *x = json!(0.01),
                        "MaxDelaySeconds" => *x = json!(0.05),
                        _ => walk(x),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut d: serde_json::Value = serde_json::from_str(DEFINITION)?;
    walk(&mut d);
    Ok(d.to_string())
}

fn fast() -> RestoreSettings {
    RestoreSettings {
        poll_seconds: 1,
        timeout_seconds: 120,
        ..RestoreSettings::default()
    }
}

async fn instances(rds: &LocalRds) -> Result<Vec<String>> {
    let v = rds.call("describeDBInstances", json!({})).await?;
    Ok(v["DbInstances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["DbInstanceIdentifier"].as_str().map(str::to_string))
        .collect())
}

/// A seeded source on the snapshot tests' own cluster (what a snapshot copies whole).
async fn snap_db(prefix: &str) -> Result<String> {
    crate::db_on(pgshift_tests::snapshot_cluster(), prefix, SOURCE).await
}

/// A test's source (seeded), warehouse, stage and RDS stand-in, with snapshot `id` of the source taken.
struct Fixture {
    source: String,
    target: String,
    stage_path: std::path::PathBuf,
    stage: String,
    rds: LocalRds,
    snapshot: serde_json::Value,
    rds_path: std::path::PathBuf,
}

/// A snapshot is a base backup of the whole test cluster (every test's database): gone with its test, so that the
/// suite's disk stays bounded.
impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.rds_path);
    }
}

async fn fixture(name: &str, id: &str, cluster_snapshot: bool) -> Result<Fixture> {
    let source = snap_db(&format!("snap{name}")).await?;
    let target = cluster().create_db(&format!("snap{name}wh")).await?;
    let stage_path = stage_dir(&format!("snapshot-{name}"));
    let stage = format!("file://{}", stage_path.display());
    let rds_dir_path = rds_dir(name);
    let rds = LocalRds::new(rds_dir_path.clone());
    let (src, r, id) = (source.clone(), rds.clone(), id.to_string());
    let snapshot = tokio::task::spawn_blocking(move || r.create_snapshot(&src, &id, cluster_snapshot)).await??;
    Ok(Fixture {
        source,
        target,
        stage_path,
        stage,
        rds,
        snapshot,
        rds_path: rds_dir_path,
    })
}

/// What the snapshot holds, fingerprinted on the source before it changes (by a live run's plan); then the source
/// changes.
async fn fingerprints_then_change(
    f: &Fixture,
    name: &str,
) -> Result<(pgshift::contract::plan::Plan, Vec<Vec<String>>)> {
    let probe = crate::pipeline::run_local(
        &f.source,
        request(
            &format!("file://{}", stage_dir(&format!("snapshot-{name}-probe")).display()),
            &TABLES,
            1,
        ),
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(
            &cluster().create_db(&format!("snap{name}probe")).await?,
        )?),
    )
    .await?;
    let plan = plan_of(probe.output.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?).await?;
    let mut at_snapshot = Vec::new();
    for t in TABLES {
        at_snapshot.push(fingerprint(&f.source, &plan, t, true).await?);
    }
    connect(&f.source).await?.batch_execute(CHANGE).await?;
    Ok((plan, at_snapshot))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_run_loads_what_the_snapshot_holds_not_the_changed_source_and_removes_its_server() -> Result<()> {
    let f = fixture("run", "nightly", false).await?;
    let (source, target, stage, stage_path, rds) = (&f.source, &f.target, &f.stage, &f.stage_path, &f.rds);
    let (plan, at_snapshot) = fingerprints_then_change(&f, "run").await?;

    let input = json!({"snapshot": {"identifier": "nightly"}});
    let out = run_snapshot(source, target, stage, input, rds.clone(), fast()).await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert!(output["restored_deleted"]["deleted_at"].is_string(), "{output:#}");
    for (t, want) in TABLES.iter().zip(&at_snapshot) {
        let got = fingerprint(target, &plan, t, false).await?;
        assert_eq!(&got, want, "{t}: the warehouse holds the snapshot");
        let live = fingerprint(source, &plan, t, true).await?;
        assert_ne!(&live, want, "{t}: the source changed after the snapshot");
    }
    assert!(instances(rds).await?.is_empty(), "the restored server is removed");
    // The run recorded its restore: the snapshot, the instance, when it was available and deleted.
    let run_id = output["trigger"]["run_id"].as_str().expect("run id");
    let record_path = stage_path.join(run_id).join("restore.json");
    let record: pgshift::contract::snapshot::RestoreRecord = serde_json::from_slice(&std::fs::read(&record_path)?)?;
    assert_eq!(record.snapshot, "nightly");
    assert!(record.snapshot_created_at.is_some() && record.available_at.is_some() && record.deleted_at.is_some());
    let (wait, life) = record.durations();
    assert!(wait.is_some() && life >= wait, "{record:?}");
    // The report and the cost say how long it waited and lived, and what its minutes cost (10 at least).
    let cost = out.report.restore.as_ref().expect("the restore is in the report");
    assert_eq!(cost.record, record);
    assert!(cost.billed_seconds >= 600.0 && cost.dollars > 0.0, "{cost:?}");
    let item = out
        .report
        .bill
        .items
        .iter()
        .find(|i| i.item == "restored snapshot instance");
    assert_eq!(
        item.map(|i| i.dollars),
        Some(cost.dollars),
        "the bill prices the restore"
    );
    // And the storage RDS provisioned for it (the stand-in's: 20 GiB of gp3), from the restore to its deletion.
    assert_eq!(
        (record.allocated_gb, record.storage_type.as_deref()),
        (Some(20), Some("gp3"))
    );
    let storage = out
        .report
        .bill
        .items
        .iter()
        .find(|i| i.item == "restored instance storage");
    let storage = storage.expect("the bill prices the restore's storage");
    assert!(storage.quantity > 0.0 && storage.unit_price == 0.115, "{storage:?}");
    let text = out.report.render();
    assert!(
        text.contains("snapshot nightly") && text.contains("restored snapshot instance"),
        "{text}"
    );
    let html = std::fs::read_to_string(stage_path.join(run_id).join("report.html"))?;
    assert!(
        html.contains("id=\"restore\"") && html.contains("restored snapshot instance"),
        "the HTML report too"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aurora_cluster_snapshot_run_restores_a_cluster_and_its_instance_and_removes_both() -> Result<()> {
    let f = fixture("aurora", "aurora-nightly", true).await?;
    let (source, target, stage, stage_path, rds) = (&f.source, &f.target, &f.stage, &f.stage_path, &f.rds);
    let (plan, at_snapshot) = fingerprints_then_change(&f, "aurora").await?;

    // The event EventBridge delivers for an Aurora cluster snapshot.
    let event = json!({
        "version": "0", "id": "e1", "source": "aws.rds", "detail-type": "RDS DB Cluster Snapshot Event",
        "account": "123456789012", "region": "us-east-1", "time": "2026-12-03T01:00:00Z",
        "resources": ["arn:aws:rds:us-east-1:123456789012:cluster-snapshot:aurora-nightly"],
        "detail": {"EventCategories": ["backup"], "SourceType": "CLUSTER_SNAPSHOT",
                   "SourceArn": "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:aurora-nightly",
                   "Date": "2026-12-03T01:00:00Z", "SourceIdentifier": "aurora-nightly",
                   "Message": "Manual cluster snapshot created", "EventID": "RDS-EVENT-0075"}
    });
    let out = run_snapshot(source, target, stage, event, rds.clone(), fast()).await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    for (t, want) in TABLES.iter().zip(&at_snapshot) {
        assert_eq!(
            &fingerprint(target, &plan, t, false).await?,
            want,
            "{t}: the warehouse holds the snapshot"
        );
    }
    assert!(instances(rds).await?.is_empty(), "the cluster's instance is removed");
    let clusters = rds.call("describeDBClusters", json!({})).await?;
    assert_eq!(clusters["DbClusters"], json!([]), "the cluster is removed");
    let run_id = output["trigger"]["run_id"].as_str().expect("run id");
    let record: pgshift::contract::snapshot::RestoreRecord =
        serde_json::from_slice(&std::fs::read(stage_path.join(run_id).join("restore.json"))?)?;
    assert_eq!(record.snapshot, "aurora-nightly");
    assert_eq!(record.engine.as_deref(), Some("aurora-postgresql"));
    assert!(
        record.cluster.as_deref().is_some_and(|c| c.starts_with("pgshift-")),
        "{record:?}"
    );
    assert!(record.deleted_at.is_some(), "{record:?}");
    Ok(())
}

/// Kills the restored server (SIGKILL to its postmaster, as a crashed instance) as the first part is created.
fn kill_restored_server(
    dir: std::path::PathBuf,
    killed: Arc<std::sync::atomic::AtomicBool>,
) -> pgshift_tests::hooked::Hook {
    Arc::new(move |key: &str| {
        if !key.ends_with(".parquet") || killed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for e in std::fs::read_dir(dir.join("instances")).into_iter().flatten().flatten() {
            let pid = std::fs::read_to_string(e.path().join("data").join("postmaster.pid")).unwrap_or_default();
            if let Some(pid) = pid.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_run_whose_server_dies_mid_extraction_fails_by_name_and_still_removes_it() -> Result<()> {
    let f = fixture("die", "s", false).await?;
    let (source, target, stage, rds) = (&f.source, &f.target, &f.stage, &f.rds);
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stages = Arc::new(pgshift_tests::hooked::HookedStages::watched(
        Arc::new(UrlStages::default()),
        kill_restored_server(rds.dir().to_path_buf(), killed.clone()),
    ));
    // Four ranges, at most three at once: when the first part is created the fourth has not started, so at least
    // one range reads from a dead server.
    let mut run = snapshot_run(
        source,
        target,
        stage,
        json!({"snapshot": {"identifier": "s"}}),
        rds.clone(),
        fast(),
    )?;
    (run.stages, run.definition) = (stages, fast_retries()?);
    let out = run.start("snapshot")?.outcome.await?;
    assert!(
        killed.load(std::sync::atomic::Ordering::SeqCst),
        "the server was killed mid-extraction"
    );
    let f = out.output.expect_err("the extraction fails");
    // The Map fails as Step Functions' does, naming the range's own error.
    assert_eq!(f.error, "States.ExceedToleratedFailureThreshold", "{f:?}");
    assert!(
        f.cause.contains("Pipeline.Retryable.SourceUnavailable"),
        "named as the source's: {f:?}"
    );
    assert!(
        instances(rds).await?.is_empty(),
        "the dead server's instance is removed"
    );
    assert!(
        out.report.tables.iter().all(|t| t.loaded_rows.is_none()),
        "nothing was loaded"
    );
    let tables: i64 = connect(target)
        .await?
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'shop'", &[])
        .await?
        .get(0);
    assert_eq!(tables, 0, "the warehouse is untouched");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_run_that_fails_at_load_still_removes_its_server() -> Result<()> {
    let f = fixture("fail", "before", false).await?;
    let (source, target, stage, rds) = (&f.source, &f.target, &f.stage, &f.rds);
    // A target whose columns differ: with schema_evolution = fail the load refuses it.
    connect(target)
        .await?
        .batch_execute("CREATE SCHEMA shop; CREATE TABLE shop.orders (id bigint, other text);")
        .await?;
    let out = run_snapshot(
        source,
        target,
        stage,
        json!({"snapshot": {"identifier": "before"}}),
        rds.clone(),
        fast(),
    )
    .await?;
    let f = out.output.expect_err("the load fails");
    assert_eq!(f.error, "Pipeline.Fatal.SchemaDrift", "{f:?}");
    assert!(
        instances(rds).await?.is_empty(),
        "the restored server is removed after a failure"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_snapshots_fail_at_once_by_name_and_leave_nothing_running() -> Result<()> {
    let f = fixture("bad", "ok", false).await?;
    let (source, target, stage, rds) = (&f.source, &f.target, &f.stage, &f.rds);
    // A snapshot record that is still being created, and one of another engine.
    let snaps = rds.dir().join("snapshots");
    for (id, engine, status) in [("busy", "postgres", "creating"), ("mysql", "mysql", "available")] {
        std::fs::create_dir_all(snaps.join(id))?;
        std::fs::write(
            snaps.join(id).join("snapshot.json"),
            json!({"DbSnapshotIdentifier": id, "DbInstanceIdentifier": "shop", "Engine": engine, "Status": status})
                .to_string(),
        )?;
    }
    let cases = [
        ("missing", "Rds.DbSnapshotNotFoundException", "missing"),
        ("busy", "Pipeline.Fatal.Snapshot", "creating"),
        ("mysql", "Pipeline.Fatal.Snapshot", "mysql"),
    ];
    for (id, name, said) in cases {
        let t0 = std::time::Instant::now();
        let out = run_snapshot(
            source,
            target,
            stage,
            json!({"snapshot": {"identifier": id}}),
            rds.clone(),
            fast(),
        )
        .await?;
        let f = out.output.expect_err("refused");
        assert_eq!(f.error, name, "{id}: {f:?}");
        assert!(f.cause.contains(said), "{id}: {}", f.cause);
        assert!(t0.elapsed().as_secs() < 30, "{id} failed at once");
    }
    // A restore that never becomes available: the cap fails the run, and the instance is deleted.
    let mut held = rds.clone();
    held.hold_creating = true;
    let capped = RestoreSettings {
        poll_seconds: 1,
        timeout_seconds: 3,
        ..RestoreSettings::default()
    };
    let out = run_snapshot(
        source,
        target,
        stage,
        json!({"snapshot": {"identifier": "ok"}}),
        held,
        capped,
    )
    .await?;
    let f = out.output.expect_err("timed out");
    assert_eq!(f.error, "Pipeline.Fatal.Restore", "{f:?}");
    assert!(f.cause.contains("RestoreTimeoutMinutes"), "{}", f.cause);
    assert!(instances(rds).await?.is_empty(), "nothing left running");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_database_this_stack_does_not_load_ends_the_run_before_any_restore() -> Result<()> {
    let f = fixture("other", "theirs", false).await?;
    let (source, target, stage, rds, snap) = (&f.source, &f.target, &f.stage, &f.rds, &f.snapshot);
    let db = snap["DbInstanceIdentifier"]
        .as_str()
        .expect("the snapshot's database")
        .to_string();
    let only = |sources: &[&str]| RestoreSettings {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        ..fast()
    };
    let input = json!({"snapshot": {"identifier": "theirs"}});
    let out = run_snapshot(
        source,
        target,
        stage,
        input.clone(),
        rds.clone(),
        only(&["orders-prod"]),
    )
    .await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert_eq!(output["skipped"]["source"], json!(db), "{output:#}");
    assert!(
        output.get("restored").is_none() && output.get("plan").is_none(),
        "nothing restored or planned"
    );
    assert!(instances(rds).await?.is_empty());
    // Listed, it runs; `*` is any database.
    for sources in [vec![db.as_str()], vec!["*"]] {
        let out = run_snapshot(source, target, stage, input.clone(), rds.clone(), only(&sources)).await?;
        let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
        assert!(
            output.get("skipped").is_none() && output["plan"].is_object(),
            "{sources:?}: {output:#}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_what_a_killed_run_left_and_nothing_else() -> Result<()> {
    let source = snap_db("snapgc").await?;
    let rds = LocalRds::new(rds_dir("gc"));
    let dir = rds.dir().to_path_buf();
    let (src, r) = (source.clone(), rds.clone());
    tokio::task::spawn_blocking(move || r.create_snapshot(&src, "s", false)).await??;
    let tags = |stack: &str| json!([{"Key": "pgshift:stack", "Value": stack}, {"Key": "pgshift:run", "Value": "r1"}]);
    for (id, stack) in [
        ("pgshift-dead", "pgshift"),
        ("orders-replica", "pgshift"),
        ("pgshift-other", "prod"),
        ("pgshift-live", "pgshift"),
    ] {
        rds.call(
            "restoreDBInstanceFromDBSnapshot",
            json!({"DbInstanceIdentifier": id, "DbSnapshotIdentifier": "s", "Tags": tags(stack)}),
        )
        .await?;
    }
    // Wait until the servers are up, then make three of them look like a killed process's.
    for _ in 0..120 {
        let v = rds.call("describeDBInstances", json!({})).await?;
        if v["DbInstances"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["DbInstanceStatus"] == "available"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    for id in ["pgshift-dead", "orders-replica", "pgshift-other"] {
        let path = dir.join("instances").join(id).join("instance.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        v["OwnerPid"] = json!(u32::MAX);
        std::fs::write(&path, v.to_string())?;
    }
    let req = pgshift::sweep::SweepRequest {
        stack: "pgshift".into(),
        max_age_secs: 0.0,
        dry_run: false,
    };
    let out = pgshift::sweep::sweep(&rds, &req).await?;
    assert_eq!(out.deleted_instances, vec!["pgshift-dead".to_string()], "{out:?}");
    let mut left = instances(&rds).await?;
    left.sort();
    assert_eq!(left, ["orders-replica", "pgshift-live", "pgshift-other"]);
    for id in left {
        rds.call("deleteDBInstance", json!({"DbInstanceIdentifier": id}))
            .await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// An interrupted snapshot run resumes with the same command (issue "never load wrong data, round two", 13). Its
/// first attempt fails mid-extraction; then, as a killed process leaves it, the run's instance exists again (restored
/// under the run's own name, at another address). The same command adopts that instance instead of failing with
/// `DbInstanceAlreadyExists`, keeps its plan and the ranges that landed although the server's address changed, loads
/// what the snapshot holds and removes the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_snapshot_run_resumes_with_the_same_command() -> Result<()> {
    use pgshift_tests::hooked::{Gate, HookedStages, Op, Verdict};
    let f = fixture("resume", "s", false).await?;
    let (source, target, stage, rds) = (&f.source, &f.target, &f.stage, &f.rds);
    let (plan, at_snapshot) = fingerprints_then_change(&f, "resume").await?;
    let input = json!({"snapshot": {"identifier": "s"}, "run_id": "snap-resume"});
    let gate: Gate = Arc::new(|op| match op {
        Op::Create(key) if key.contains("part-00001.result.json") => Verdict::Fail(pgshift::stage::StageError::Io {
            location: key.to_string(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        }),
        _ => Verdict::Pass,
    });
    let mut run = snapshot_run(source, target, stage, input.clone(), rds.clone(), fast())?;
    run.stages = Arc::new(HookedStages {
        inner: Arc::new(UrlStages::default()),
        gate,
    });
    let first = run.start("snapshot")?.outcome.await?;
    assert!(first.output.is_err(), "the first attempt fails mid-extraction");
    let plan_path = f.stage_path.join("snap-resume").join("plan.json");
    let planned: pgshift::contract::plan::Plan = serde_json::from_slice(&std::fs::read(&plan_path)?)?;
    let instance = pgshift::contract::snapshot::instance_name("snap-resume");
    rds.call(
        "restoreDBInstanceFromDBSnapshot",
        json!({"DbInstanceIdentifier": instance, "DbSnapshotIdentifier": "s",
               "Tags": [{"Key": "pgshift:stack", "Value": "pgshift"}, {"Key": "pgshift:run", "Value": "snap-resume"}]}),
    )
    .await?;
    let again = run_snapshot(source, target, stage, input, rds.clone(), fast()).await?;
    again.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    for (t, want) in TABLES.iter().zip(&at_snapshot) {
        assert_eq!(
            &fingerprint(target, &plan, t, false).await?,
            want,
            "{t}: the warehouse holds the snapshot"
        );
    }
    let resumed: pgshift::contract::plan::Plan = serde_json::from_slice(&std::fs::read(&plan_path)?)?;
    assert_eq!(
        resumed.plan_id, planned.plan_id,
        "the plan is kept although the server moved"
    );
    assert!(instances(rds).await?.is_empty(), "the adopted instance is removed");
    Ok(())
}

/// An EventBridge RDS event: manual DB snapshot `id` created.
fn event_of(id: &str) -> serde_json::Value {
    let arn = format!("arn:aws:rds:eu-west-1:123456789012:snapshot:{id}");
    json!({
        "version": "0", "id": "e-redelivered", "detail-type": "RDS DB Snapshot Event", "source": "aws.rds",
        "account": "123456789012", "time": "2026-11-24T03:10:00Z", "region": "eu-west-1", "resources": [arn],
        "detail": {"EventCategories": ["creation"], "SourceType": "SNAPSHOT", "SourceArn": arn,
                   "Date": "2026-11-24T03:10:00.123Z", "Message": "Manual snapshot created",
                   "SourceIdentifier": id, "EventID": "RDS-EVENT-0042"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_refused_before_any_restore_and_event_identifiers_are_bounded() -> Result<()> {
    let f = fixture("redeliver", "nightly", false).await?;
    let (source, target, stage, stage_path, rds) = (&f.source, &f.target, &f.stage, &f.stage_path, &f.rds);
    let first = run_snapshot(source, target, stage, event_of("nightly"), rds.clone(), fast()).await?;
    let output = first.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    let run_id = output["trigger"]["run_id"].as_str().expect("run id").to_string();
    let plan = plan_of(&output).await?;
    let mut loaded = Vec::new();
    for t in TABLES {
        loaded.push(fingerprint(target, &plan, t, false).await?);
    }
    let record_path = stage_path.join(&run_id).join("restore.json");
    let record = std::fs::read(&record_path)?;

    // Delivered again: refused by name before anything is restored, with advice an event run can follow.
    let again = run_snapshot(source, target, stage, event_of("nightly"), rds.clone(), fast()).await?;
    let failure = again.output.expect_err("a loaded event run is refused");
    assert_eq!(failure.error, "Pipeline.Fatal.RunExists", "{}", failure.cause);
    assert!(
        failure.cause.contains("nothing was restored") && failure.cause.contains("--snapshot nightly"),
        "{}",
        failure.cause
    );
    assert_eq!(std::fs::read(&record_path)?, record, "no second restore was recorded");
    assert!(instances(rds).await?.is_empty());
    for (t, want) in TABLES.iter().zip(&loaded) {
        assert_eq!(&fingerprint(target, &plan, t, false).await?, want, "{t}");
    }

    // A 5 MB SourceIdentifier is refused by name, in a short message, before anything reaches the stage.
    let empty = stage_dir("snapshot-huge");
    let out = run_snapshot(
        source,
        target,
        &format!("file://{}", empty.display()),
        event_of(&"a".repeat(5 << 20)),
        rds.clone(),
        fast(),
    )
    .await?;
    let failure = out.output.expect_err("refused");
    assert_eq!(
        failure.error,
        "Pipeline.Fatal.InvalidInput",
        "{}",
        &failure.cause[..200.min(failure.cause.len())]
    );
    assert!(
        failure.cause.contains("SourceIdentifier") && failure.cause.len() < 1_000,
        "{} bytes: {}",
        failure.cause.len(),
        &failure.cause[..200.min(failure.cause.len())]
    );
    assert!(pgshift_tests::list_files(&empty).is_empty(), "nothing on the stage");
    assert!(instances(rds).await?.is_empty());
    Ok(())
}

/// An automated snapshot (an `rds:` name, what a stack's default `SnapshotTypes` sees first) is described with
/// `SnapshotType: automated`, as the RDS API requires of an automated snapshot's identifier (the stand-in refuses it
/// otherwise, as RDS does), and loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automated_snapshot_is_described_as_automated_and_loads() -> Result<()> {
    let f = fixture("automated", "rds:orders-2026-12-06", false).await?;
    let (source, target, stage, rds) = (&f.source, &f.target, &f.stage, &f.rds);
    let (plan, at_snapshot) = fingerprints_then_change(&f, "automated").await?;
    let input = json!({"snapshot": {"identifier": "rds:orders-2026-12-06"}});
    let out = run_snapshot(source, target, stage, input, rds.clone(), fast()).await?;
    out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    for (t, want) in TABLES.iter().zip(&at_snapshot) {
        assert_eq!(&fingerprint(target, &plan, t, false).await?, want, "{t}");
    }
    assert!(instances(rds).await?.is_empty());
    Ok(())
}
