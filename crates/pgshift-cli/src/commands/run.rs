//! `pgshift run`: the whole pipeline on this machine, through the same state machine definition AWS runs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use pgshift::contract::plan::PlanRequest;
use pgshift::entry::local::{LocalRun, DEFINITION};
use pgshift::source::PgConnector;
use pgshift::stage::StageOpener;
use pgshift::UrlStages;

use crate::commands::exit::{usage, Failed};
use crate::commands::flags::{self, need, ConfigArg, LoadFlags, PlanFlags, RunConfig};
use crate::commands::progress::{Live, ProgressMode};

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Source connection string (postgres://user:pass@host:port/db). Also PGSHIFT_SOURCE.
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true, help_heading = "Connections")]
    source: Option<String>,
    /// Warehouse: postgres://…, redshift://<cluster>/<db>?…, redshift-serverless://<workgroup>/<db>?…
    #[arg(
        long,
        env = "PGSHIFT_WAREHOUSE",
        hide_env_values = true,
        help_heading = "Connections"
    )]
    warehouse: Option<String>,
    #[command(flatten)]
    plan: PlanFlags,
    #[command(flatten)]
    load: LoadFlags,
    /// Run this state machine definition instead of the embedded statemachine/pipeline.asl.json.
    #[arg(long, help_heading = "Output")]
    definition: Option<PathBuf>,
    /// Live progress: a redrawn line on a terminal, log lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, help_heading = "Output")]
    progress: ProgressMode,
    /// Print one JSON document on standard output (the run id, status, error, the execution's output and the
    /// report); the summary then goes to standard error.
    #[arg(long, help_heading = "Output")]
    json: bool,
    /// Lambda memory (MB) the cost estimate assumes.
    #[arg(long, default_value_t = 2048, help_heading = "Output")]
    lambda_memory_mb: u32,
    /// Run from this snapshot (made by `pgshift snapshot create`): it is restored into a throwaway server, the run
    /// reads that server (with --source's credentials), and the server is removed on every path.
    #[arg(long, conflicts_with = "event", help_heading = "Snapshot")]
    snapshot: Option<String>,
    /// Run from an RDS-shaped snapshot event (EventBridge JSON) in this file, as the deployed rule would.
    #[arg(long, help_heading = "Snapshot")]
    event: Option<PathBuf>,
    /// Where snapshots and restored servers live (default $PGSHIFT_SNAPSHOT_DIR, else ~/.pgshift/snapshots).
    #[arg(long, help_heading = "Snapshot")]
    snapshot_dir: Option<PathBuf>,
    /// Status checks of a restore before it counts as never available (1 s apart locally).
    #[arg(long, default_value_t = 120, help_heading = "Snapshot")]
    restore_checks: u32,
    /// Also send the run's events (Run Succeeded or Run Failed, Table Loaded, Run Cost; their shapes: docs/events.md)
    /// here when it ends: a file (a path or file:///path, appended, one JSON line each) or an http(s):// endpoint
    /// (each POSTed, 5 s each). They are always written to <run>/events.jsonl on the stage.
    #[arg(long, value_name = "URL", help_heading = "Output")]
    events: Option<String>,
    /// Send the run's OpenLineage events here: START once its pre-flight passed (the run waits for it, 5 s at most),
    /// then COMPLETE, FAIL or ABORT; an http(s):// endpoint (Marquez: http://host:5000/api/v1/lineage) or a file.
    #[arg(long, value_name = "URL", help_heading = "Output")]
    openlineage: Option<String>,
    /// The RDS instance class the cost prices the restored server at (what the same run would cost on AWS).
    #[arg(long, default_value = "db.r6g.large", help_heading = "Snapshot")]
    restore_class: String,
}

/// What a run needs, from the flags over the config file.
#[derive(Debug)]
struct Resolved {
    source: String,
    warehouse: String,
    request: PlanRequest,
}

fn resolve(args: &RunArgs, config: RunConfig) -> Result<Resolved> {
    let source = need(&args.source, config.source.clone(), "source")?;
    let warehouse = need(&args.warehouse, config.warehouse.clone(), "warehouse")?;
    Ok(Resolved {
        source,
        warehouse,
        request: flags::request(config, &args.plan, Some(&args.load))?,
    })
}

pub(crate) async fn run(args: RunArgs) -> Result<()> {
    if let (Some(event), Some(id)) = (&args.event, &args.plan.run_id) {
        return Err(usage(format!(
            "--run-id {id} with --event {}: a run from an RDS snapshot event takes its run id from the event (its time \
             and snapshot), so that a redelivered event is the same run; drop --run-id, or run the snapshot with \
             --snapshot IDENTIFIER --run-id {id} [Pipeline.Fatal.InvalidInput]",
            event.display()
        )));
    }
    let resolved = resolve(&args, args.config.read()?)?;
    let (stage, warehouse) = (resolved.request.stage.clone(), resolved.warehouse.clone());
    let run = local_run(&args, resolved).await?;
    // A run id given again is the same execution again (the local counterpart of a redrive), so the run's lock
    // (`<run>/lock.json`) lets it in; a fresh run gets a fresh name.
    let name = match &args.plan.run_id {
        Some(id) => execution_name_of(id),
        None => execution_name(),
    };
    let mut handle = run.start(&name)?;
    let mut live = Live::new(args.progress);
    let mut signals = Signals::new()?;
    let out = loop {
        tokio::select! {
            r = &mut handle.outcome => break r?,
            signal = signals.next() => {
                live.finish(&handle.progress);
                return stopped(handle, signal, signals).await;
            }
            _ = tokio::time::sleep(live.every()) => live.tick(&handle.progress),
        }
    };
    live.finish(&handle.progress);
    refuse_duplicate(&out.output)?;
    let summary = summary(&out, &stage, &warehouse).await;
    // With --json, standard output is the one JSON document; what a person reads goes to standard error.
    if args.json {
        eprintln!("{summary}");
        out!("{}", serde_json::to_string_pretty(&json_document(&out))?);
    } else {
        out!("{summary}");
    }
    ended(out)
}

/// The run's summary: its report, where its stage and warehouse are, and where its HTML report is.
async fn summary(out: &pgshift::entry::local::RunOutcome, stage: &str, warehouse: &str) -> String {
    let mut s = format!(
        "{}\nstage: {stage}   warehouse: {}",
        out.report.render(),
        redact(warehouse)
    );
    let key = pgshift::contract::layout::report_key(&out.report.run_id);
    if let Ok(st) = UrlStages::default().open(stage).await {
        if let Ok(Some(_)) = st.head(&key).await {
            s.push_str(&format!("\nreport: {}/{key}", stage.trim_end_matches('/')));
        }
    }
    s
}

/// `pgshift run --json`: the run id, how it ended (and the error's name and message), the execution's output, and
/// the report (the same as `pgshift report --json`).
fn json_document(out: &pgshift::entry::local::RunOutcome) -> serde_json::Value {
    let (status, error, output) = match &out.output {
        Ok(v) if out.report.reconciled() => ("succeeded", serde_json::Value::Null, v.clone()),
        Ok(v) => (
            "failed",
            serde_json::json!({"name": "Pipeline.Fatal.Reconcile", "message": "the run did not reconcile"}),
            v.clone(),
        ),
        Err(f) => (
            "failed",
            serde_json::json!({"name": f.error, "message": pgshift::entry::local::failure_message(f)}),
            serde_json::Value::Null,
        ),
    };
    serde_json::json!({
        "run_id": out.report.run_id,
        "status": status,
        "error": error,
        "output": output,
        "report": out.report,
    })
}

/// The run on this machine: the definition, the request checked against the warehouse's limits, the execution's
/// input, the RDS stand-in, and the ports.
async fn local_run(args: &RunArgs, resolved: Resolved) -> Result<LocalRun> {
    let Resolved {
        source,
        warehouse,
        mut request,
    } = resolved;
    let definition = match &args.definition {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => DEFINITION.to_string(),
    };
    let wh = pgshift::warehouse::warehouse(&warehouse)
        .await
        .map_err(|e| usage(format!("--warehouse: {e}")))?;
    // What the planner checks the run against (Redshift: 40 statements a transaction, case-folded names).
    request.warehouse = wh.dialect().limits();
    if request.settings.slices == 0 {
        // Not set: the warehouse's own count, where it says (a provisioned Redshift cluster).
        match wh.slices().await {
            Ok(Some((n, from))) => (request.settings.slices, request.settings.slices_from) = (n, Some(from)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the warehouse's slices not read; parts are not rounded to them"),
        }
    }
    let input = run_input(args, &request)?;
    let restore = pgshift::contract::snapshot::RestoreSettings {
        instance_class: args.restore_class.clone(),
        poll_seconds: 1,
        timeout_seconds: args.restore_checks.max(1),
        ..Default::default()
    };
    let rds: Arc<dyn pgshift::rds::Rds> = Arc::new(pgshift::rds::local::LocalRds::new(
        args.snapshot_dir
            .clone()
            .unwrap_or_else(pgshift::rds::local::default_dir),
    ));
    Ok(LocalRun {
        definition,
        request,
        input,
        restore,
        rds: Some(rds),
        load_budget: None,
        source: Arc::new(PgConnector::new(&source).map_err(|e| usage(format!("--source: {e}")))?),
        stages: Arc::new(UrlStages::default()),
        warehouse: wh,
        memory_mb: args.lambda_memory_mb,
        announce: local_announce(args, &source, &warehouse)?,
    })
}

/// `--events` and `--openlineage`, the datasets named from the source's and the warehouse's connection strings.
fn local_announce(args: &RunArgs, source: &str, warehouse: &str) -> Result<pgshift::entry::local::LocalAnnounce> {
    for (flag, url) in [("--events", &args.events), ("--openlineage", &args.openlineage)] {
        if let Some(u) = url {
            pgshift::events::check_target(u).map_err(|e| usage(format!("{flag} {e}")))?;
        }
    }
    let lineage = match &args.openlineage {
        None => None,
        Some(url) => {
            let region = std::env::var("AWS_REGION").ok();
            let ds = pgshift::entry::announce::datasets(source, warehouse, "pgshift-local", region.as_deref())
                .map_err(|e| usage(format!("--openlineage: {e}")))?;
            Some((url.clone(), ds))
        }
    };
    Ok(pgshift::entry::local::LocalAnnounce {
        events_url: args.events.clone(),
        lineage,
    })
}

/// The exit of a run that ended: success only when the warehouse holds exactly the rows extracted.
fn ended(out: pgshift::entry::local::RunOutcome) -> Result<()> {
    match out.output {
        Ok(_) if out.report.reconciled() => Ok(()),
        Ok(_) => Err(Failed {
            name: "Pipeline.Fatal.Reconcile".into(),
            message: "the run succeeded but did not reconcile".into(),
        }
        .into()),
        Err(f) => Err(Failed {
            message: format!(
                "the run failed: {} [{}] ({})",
                pgshift::entry::local::failure_message(&f),
                f.error,
                cleanup_said(out.cleanup.as_ref())
            ),
            // The exit code goes by what the failure stands for (a Map's by its items' error).
            name: pgshift::contract::code::effective_name(&f.error, &f.cause),
        }
        .into()),
    }
}

/// A run that ended at the Duplicate state (another live execution holds its run id) is refused by name, before
/// any report of a run it did not make.
fn refuse_duplicate<E>(output: &Result<serde_json::Value, E>) -> Result<()> {
    let Some(trigger) = output.as_ref().ok().and_then(|v| v.get("trigger")) else {
        return Ok(());
    };
    match trigger.get("duplicate_of") {
        Some(holder) => Err(Failed {
            name: "Pipeline.Fatal.RunExists".into(),
            message: format!(
                "{} [Pipeline.Fatal.RunExists]",
                held_by(trigger["run_id"].as_str().unwrap_or_default(), holder)
            ),
        }
        .into()),
        None => Ok(()),
    }
}

/// Why a run id is refused while another execution holds it: who holds it, since when, and what to do.
fn held_by(run_id: &str, holder: &serde_json::Value) -> String {
    let since = holder["taken_at"].as_str().unwrap_or("?");
    let who = match holder.get("process") {
        Some(p) if p.is_object() => format!(
            "process {} on {}",
            p["pid"].as_u64().unwrap_or(0),
            p["host"].as_str().unwrap_or("?")
        ),
        _ => format!("execution {}", holder["execution"].as_str().unwrap_or("?")),
    };
    format!(
        "run id {run_id:?} is being run by {who} (since {since}): nothing was done; wait for it to end (the same \
         command then resumes or refuses it), or use another --run-id"
    )
}

/// SIGINT (Ctrl-C) and SIGTERM, as the shell's exit codes: 130 and 143.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal: its name and the exit code it ends the process with.
    async fn next(&mut self) -> (&'static str, u8) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", 130),
            _ = self.term.recv() => ("SIGTERM", 143),
        }
    }
}

/// A run stopped by a signal: its tasks dropped, Cleanup run (staging tables dropped, the run marked failed on the
/// stage), then the process ends with the signal's code. A second signal during Cleanup ends it at once.
async fn stopped(
    handle: pgshift::entry::local::RunHandle,
    (name, code): (&'static str, u8),
    mut signals: Signals,
) -> Result<()> {
    // A run whose execution ended is only telling its end (events, lineage): its record stands as it ended.
    let phase = handle.progress.snapshot().phase;
    if matches!(phase, "succeeded" | "failed") {
        eprintln!("{name}: the run had {phase}; stopped telling its end (its record on the stage stands)");
        std::process::exit(code.into());
    }
    eprintln!("{name}: stopping the run and cleaning up (again to force)");
    let cause = format!("stopped by {name}");
    let cleanup = handle.stop(pgshift::contract::code::Code::FatalInterrupted.name(), &cause);
    let said = tokio::select! {
        r = cleanup => match r {
            Ok(Some(c)) => cleanup_said(Some(&c)),
            Ok(None) => "it had no plan yet; nothing to clean".into(),
            Err(e) => format!("cleanup failed: {e}; pgshift gc --warehouse drops what is left"),
        },
        (again, code) = signals.next() => {
            eprintln!("{again}: forced; staging tables may be left (pgshift gc --warehouse drops them)");
            std::process::exit(code.into());
        }
    };
    eprintln!("stopped: {said}; pgshift run --run-id with the same settings resumes it");
    std::process::exit(code.into())
}

/// The execution's input: the request, naming the snapshot to restore (`--snapshot`), or an RDS event (`--event`)
/// whose run takes the request's settings as the planner's defaults.
fn run_input(args: &RunArgs, request: &PlanRequest) -> Result<Option<serde_json::Value>> {
    if let Some(id) = &args.snapshot {
        let mut v = serde_json::to_value(request)?;
        v["snapshot"] = serde_json::json!({"identifier": id});
        return Ok(Some(v));
    }
    let Some(path) = &args.event else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --event {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("--event {}: not JSON", path.display()))?;
    Ok(Some(v))
}

/// What the Cleanup state did, as it reported it: nothing is claimed that it did not do.
fn cleanup_said(c: Option<&pgshift::contract::load::CleanupResult>) -> String {
    let Some(c) = c else {
        return "the Cleanup state did not run".into();
    };
    let mut said = match c.dropped.as_slice() {
        [] if c.notes.is_empty() => "the Cleanup state ran; no staging table was left to drop".to_string(),
        [] => "the Cleanup state ran".to_string(),
        d => format!("the Cleanup state dropped the staging tables {}", d.join(", ")),
    };
    if let Some(url) = &c.status_url {
        said.push_str(&format!("; the run's outcome per table is in {url}"));
    }
    for n in &c.notes {
        said.push_str(&format!("; {n}"));
    }
    said
}

/// A connection string without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A run id in the characters Step Functions takes in an execution name (letters, digits, `-`, `_`), at most `max`.
pub(crate) fn name_chars(run_id: &str, max: usize) -> String {
    run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// An execution name from a run id: at most 80 characters in all.
fn execution_name_of(run_id: &str) -> String {
    format!("run-{}", name_chars(run_id, 76))
}

/// A unique execution name, as Step Functions would generate one.
fn execution_name() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("local-{t:x}")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use pgshift::contract::load::{Atomicity, LoadMode};
    use pgshift::contract::types::{Cast, InfinityPolicy};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["pgshift"];
        argv.extend(flags);
        Cli::try_parse_from(argv).expect("flags").run
    }

    const CONFIG: &str = r#"
source = "postgres://u@db:5432/src"
tables = ["sales.*"]
stage = "s3://bucket/stage"
warehouse = "redshift://c/dw?db_user=u&iam_role=arn:aws:iam::1:role/r"
concurrency = 6

[load]
mode = "merge"

[settings]
slices = 4
target_part_bytes = 1048576
"#;

    #[test]
    fn flags_override_the_config_file() {
        let config: RunConfig = toml::from_str(CONFIG).expect("config");
        let r = resolve(
            &args(&["--tables", "public.t", "--concurrency", "2", "--atomic", "run"]),
            config,
        )
        .expect("resolved");
        assert_eq!(r.source, "postgres://u@db:5432/src");
        assert_eq!(r.request.tables, vec!["public.t".to_string()]);
        assert_eq!(r.request.stage, "s3://bucket/stage");
        assert_eq!(r.request.settings.max_concurrency, 2);
        assert_eq!(r.request.settings.slices, 4);
        assert_eq!(r.request.settings.target_part_bytes, 1 << 20);
        let load = r.request.load.expect("load");
        assert_eq!((load.mode, load.atomic), (LoadMode::Merge, Atomicity::Run));
    }

    #[test]
    fn type_policies_reach_the_request_from_flags_and_the_config_file() {
        let config: RunConfig = toml::from_str(
            "[policies]\ninfinity = \"null\"\n[table.\"sales.orders\"]\ncasts = { location = \"text\" }\nparts = 3\n",
        )
        .expect("config");
        let r = resolve(
            &args(&[
                "--source",
                "postgres://u@h/db",
                "--stage",
                "file:///s",
                "--warehouse",
                "postgres://u@h/w",
                "--tables",
                "sales.*",
                "--cast",
                "sales.orders.tags=json",
                "--numeric-as-text",
            ]),
            config,
        )
        .expect("resolved");
        let o = &r.request.overrides["sales.orders"];
        assert_eq!(
            (o.casts["location"], o.casts["tags"], o.parts),
            (Cast::Text, Cast::Json, Some(3))
        );
        assert_eq!(r.request.policies.infinity, InfinityPolicy::Null);
        assert!(r.request.policies.unconstrained_numeric_as_text);
        let flag = resolve(
            &args(&[
                "--source",
                "postgres://u@h/db",
                "--stage",
                "file:///s",
                "--warehouse",
                "postgres://u@h/w",
                "--tables",
                "t",
                "--infinity",
                "clamp",
            ]),
            toml::from_str("[policies]\ninfinity = \"null\"").expect("config"),
        )
        .expect("resolved");
        assert_eq!(flag.request.policies.infinity, InfinityPolicy::Clamp, "the flag wins");
    }

    #[test]
    fn zero_extractors_at_once_is_refused_by_the_flag() {
        let mut argv = vec!["pgshift", "--concurrency", "0"];
        let e = Cli::try_parse_from(argv.clone()).err().expect("0 is refused");
        assert!(e.to_string().contains("--concurrency"), "{e}");
        argv[2] = "1";
        assert!(Cli::try_parse_from(argv).is_ok());
    }

    #[test]
    fn missing_and_unknown_settings_are_named() {
        let e = resolve(&args(&["--tables", "t"]), RunConfig::default()).expect_err("no source");
        assert!(e.to_string().contains("--source"), "{e}");
        let e = toml::from_str::<RunConfig>("sauce = \"x\"").expect_err("typo");
        assert!(e.to_string().contains("sauce"), "{e}");
        let e = toml::from_str::<RunConfig>("[settings]\nslice = 4").expect_err("typo");
        assert!(e.to_string().contains("slice"), "{e}");
    }
}
