//! The built Lambda binaries, over the real Lambda Runtime API protocol: a runtime-API endpoint on loopback feeds
//! each binary fixture events, and the test checks what it answers and how it reports errors. The source and the
//! warehouse are real PostgreSQL databases, the stage a local directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgshift_tests::fingerprint::fingerprint_of;
use pgshift_tests::lambda_api::{Answer, RuntimeApi};
use pgshift_tests::{cluster, connect, stage_dir};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, placed timestamptz NOT NULL);
INSERT INTO sales.orders SELECT g, g / 100.0, TIMESTAMPTZ '2025-01-01' + g * INTERVAL '1 minute'
FROM generate_series(1, 5000) g;
CREATE TABLE sales.customers (id uuid PRIMARY KEY, name text);
INSERT INTO sales.customers SELECT md5(g::text)::uuid, 'c' || g FROM generate_series(1, 300) g;
ANALYZE;";

fn fixture(name: &str) -> Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/events")
        .join(name);
    Ok(serde_json::from_slice(
        &std::fs::read(&path).with_context(|| path.display().to_string())?,
    )?)
}

/// Starts a function binary against the runtime API, as Lambda would (its standard environment variables).
fn spawn(bin: &str, api: Option<&RuntimeApi>, env: &[(&str, &str)]) -> Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_FUNCTION_NAME", "pgshift-test")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/pgshift-test")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(api) = api {
        cmd.env("AWS_LAMBDA_RUNTIME_API", &api.address);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.spawn()?)
}

fn response(a: Answer) -> Result<Value> {
    match a {
        Answer::Response(v) => Ok(v),
        Answer::Error(t, m) => bail!("the function failed: {t}: {m}"),
    }
}

fn error(a: Answer) -> Result<(String, String)> {
    match a {
        Answer::Error(t, m) => Ok((t, m)),
        Answer::Response(v) => bail!("expected an error, got {v}"),
    }
}

fn local_path(url: &str) -> PathBuf {
    PathBuf::from(url.strip_prefix("file://").expect("a file:// URL"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_binaries_answer_events_and_report_errors_by_name() -> Result<()> {
    let source = cluster().create_db("lambdasrc").await?;
    connect(&source).await?.batch_execute(SCHEMA).await?;
    let target = cluster().create_db("lambdawh").await?;
    let stage = format!("file://{}", stage_dir("lambda").display());

    // The planner: a manual input, then every RDS event shape; a non-creation event is refused by name.
    let api = RuntimeApi::start().await?;
    let _planner = spawn(
        env!("CARGO_BIN_EXE_planner"),
        Some(&api),
        &[
            ("PGSHIFT_SOURCE", &source),
            ("PGSHIFT_STAGE", &stage),
            ("PGSHIFT_TABLES", "sales.*"),
            ("PGSHIFT_MAX_CONCURRENCY", "3"),
        ],
    )?;
    let summary = response(api.call(fixture("manual-run.json")?, WAIT).await?)?;
    assert_eq!(summary["tables"], 2);
    assert_eq!(summary["max_concurrency"], 4, "the input overrides the environment");
    assert!(summary.get("snapshot").is_none());
    for (name, kind, automated) in [
        ("rds-db-snapshot-automated.json", "instance", true),
        ("rds-db-snapshot-manual.json", "instance", false),
        ("rds-cluster-snapshot-automated.json", "cluster", true),
        ("rds-cluster-snapshot-manual.json", "cluster", false),
    ] {
        let event = fixture(name)?;
        let s = response(api.call(event.clone(), WAIT).await?)?;
        assert_eq!(s["snapshot"]["kind"], kind, "{name}");
        assert_eq!(s["snapshot"]["automated"], automated, "{name}");
        assert_eq!(
            s["snapshot"]["identifier"], event["detail"]["SourceIdentifier"],
            "{name}"
        );
        assert_eq!(s["max_concurrency"], 3, "{name}: the environment's defaults");
        // The snapshot is recorded in the run's plan too.
        let plan: Value = serde_json::from_slice(&std::fs::read(local_path(s["plan_url"].as_str().expect("url")))?)?;
        assert_eq!(plan["snapshot"]["arn"], event["detail"]["SourceArn"], "{name}");
    }
    let (ty, msg) = error(api.call(fixture("rds-db-snapshot-creating.json")?, WAIT).await?)?;
    assert_eq!(ty, "Pipeline.Fatal.InvalidInput");
    assert!(msg.contains("RDS-EVENT-0040"), "{msg}");
    let (ty, msg) = error(api.call(json!({"tables": ["nosuch.*"]}), WAIT).await?)?;
    assert_eq!(ty, "Pipeline.Fatal.NotFound", "{msg}");

    // The extractor: every task of the manual run's plan; a malformed task is refused by name.
    let api = RuntimeApi::start().await?;
    let _extractor = spawn(
        env!("CARGO_BIN_EXE_extractor"),
        Some(&api),
        &[("PGSHIFT_SOURCE", &source)],
    )?;
    let tasks: Vec<Value> = serde_json::from_slice(&std::fs::read(local_path(
        summary["tasks_url"].as_str().expect("tasks_url"),
    ))?)?;
    assert_eq!(tasks.len(), 4, "2 tables of 2 parts");
    let mut rows = 0;
    for t in tasks {
        let r = response(api.call(t, WAIT).await?)?;
        rows += r["rows"].as_u64().expect("rows");
    }
    assert_eq!(rows, 5300);
    let (ty, msg) = error(api.call(json!({"run_id": "x"}), WAIT).await?)?;
    assert_eq!(ty, "Pipeline.Fatal.InvalidInput");
    assert!(msg.contains("extract task"), "{msg}");

    // The loader: start loads the run (PostgreSQL finishes at once); an unknown action is refused by name.
    let api = RuntimeApi::start().await?;
    let _loader = spawn(
        env!("CARGO_BIN_EXE_loader"),
        Some(&api),
        &[("PGSHIFT_WAREHOUSE", &target)],
    )?;
    let progress = response(
        api.call(json!({"action": "start", "plan_url": summary["plan_url"]}), WAIT)
            .await?,
    )?;
    assert_eq!(progress["done"], true);
    assert_eq!(progress["summary"]["rows"], 5300);
    assert_eq!(progress["summary"]["loaded"], 2);
    // What the Lambdas loaded equals the source, row count and every column's values in key order.
    for (table, key, rows) in [("orders", "id", "rows=5000"), ("customers", "id", "rows=300")] {
        let key = [key.to_string()];
        let loaded = fingerprint_of(&target, ("sales", table), &[], &key, &[]).await?;
        assert_eq!(
            loaded,
            fingerprint_of(&source, ("sales", table), &[], &key, &[]).await?,
            "{table}"
        );
        assert_eq!(loaded[0], rows, "{table}");
    }
    let (ty, _) = error(api.call(json!({"action": "frobnicate"}), WAIT).await?)?;
    assert_eq!(ty, "Pipeline.Fatal.InvalidInput");
    Ok(())
}

#[tokio::test]
async fn a_missing_setting_fails_the_cold_start_naming_it() -> Result<()> {
    for (bin, var) in [
        (env!("CARGO_BIN_EXE_planner"), "PGSHIFT_SOURCE"),
        (env!("CARGO_BIN_EXE_extractor"), "PGSHIFT_SOURCE"),
        (env!("CARGO_BIN_EXE_loader"), "PGSHIFT_WAREHOUSE"),
    ] {
        let api = RuntimeApi::start().await?;
        let child = spawn(bin, Some(&api), &[])?;
        let out = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
        assert!(!out.status.success(), "{bin} must not start without {var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{bin}: {stderr}");
    }
    let api = RuntimeApi::start().await?;
    let child = spawn(
        env!("CARGO_BIN_EXE_planner"),
        Some(&api),
        &[
            ("PGSHIFT_SOURCE", "postgres://u@h/db"),
            ("PGSHIFT_STAGE", "bucket-without-scheme"),
        ],
    )?;
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    assert!(String::from_utf8_lossy(&out.stderr).contains("PGSHIFT_STAGE"));
    Ok(())
}
