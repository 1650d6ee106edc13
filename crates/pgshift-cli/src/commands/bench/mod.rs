//! `pgshift bench extract`: the extractor against the raw binary COPY of the same range, in the same run.
//!
//! Each measurement runs in a child process (`pgshift bench once`), so wall time, client CPU and peak RSS belong to
//! that one run alone. Server CPU is the CPU of the backend that served the run, read from the postmaster's
//! accounting of exited children (when the server runs on this machine).

pub(crate) mod e2e;
mod incremental;
pub(crate) mod load;
pub(crate) mod plan;

use std::path::PathBuf;
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use futures_util::{pin_mut, StreamExt};
use pgshift::contract::model::{Bounds, KeyType, KeyValue};
use pgshift::contract::plan::{PlanRequest, PlanSettings};
use pgshift::source::{PgConnector, SourceConnector};
use pgshift::{ExtractContext, UrlStages};
use serde::{Deserialize, Serialize};

use crate::commands::flags::WriterArgs;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Build the orders table, then time raw binary COPY and the extractor over the same ranges, alternating.
    Extract(BenchArgs),
    /// Balance of the planner's ranges on every key shape, against an even stride; planning time.
    Plan(plan::BenchPlanArgs),
    /// The PostgreSQL warehouse load path against a plain binary COPY FROM STDIN of the same rows.
    Load(load::BenchLoadArgs),
    /// A whole `pgshift run` against a binary COPY pipe (source → warehouse) of the same tables, alternating.
    E2e(e2e::BenchE2eArgs),
    /// `--incremental diff` against a full run of a table with 1% changed (updates, inserts, deletes), and unchanged.
    Incremental(incremental::BenchIncrementalArgs),
    /// One measured run (used by `bench extract`).
    #[command(hide = true)]
    Once(OnceArgs),
    /// One measured COPY pipe (used by `bench e2e`).
    #[command(hide = true)]
    E2ePipe(e2e::PipeArgs),
    /// One measured `pgshift run` (used by `bench e2e`).
    #[command(hide = true)]
    E2eRun(e2e::RunOnceArgs),
    /// One measured load alone (used by `bench e2e`).
    #[command(hide = true)]
    E2eLoad(e2e::LoadOnceArgs),
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
    /// Rows in the orders table (built with the shared orders.sql when missing or of another size).
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Range sizes to measure, in rows from id 1 ("all" for the whole table).
    #[arg(long, value_delimiter = ',', default_value = "1000000,all")]
    sizes: Vec<String>,
    /// Alternating rounds per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The benchmark table's SQL (psql script taking -v rows=N).
    #[arg(long, default_value = "../shared/bench/orders.sql")]
    orders_sql: PathBuf,
    /// Rebuild the table even when it has the right size.
    #[arg(long)]
    rebuild: bool,
    /// Where the extractor writes (emptied after every run).
    #[arg(long)]
    stage_dir: Option<PathBuf>,
    #[command(flatten)]
    writer: WriterArgs,
}

#[derive(Clone, Copy, ValueEnum, Serialize, Deserialize, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Raw,
    Extract,
}

#[derive(Args)]
pub(crate) struct OnceArgs {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
    #[arg(long)]
    lower: i64,
    #[arg(long)]
    upper: i64,
    #[arg(long)]
    stage_dir: PathBuf,
    #[command(flatten)]
    writer: WriterArgs,
}

#[derive(Debug, Serialize, Deserialize)]
struct Sample {
    mode: Mode,
    rows: u64,
    source_bytes: u64,
    parquet_bytes: u64,
    wall: f64,
    client_cpu: f64,
    server_cpu: Option<f64>,
    peak_rss: u64,
}

pub(crate) async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Extract(args) => extract_bench(args).await,
        BenchCommand::Plan(args) => plan::run(args).await,
        BenchCommand::Load(args) => load::run(args).await,
        BenchCommand::E2e(args) => e2e::run(args).await,
        BenchCommand::Incremental(args) => incremental::run(args).await,
        BenchCommand::E2ePipe(args) => e2e::pipe_once(args).await,
        BenchCommand::E2eRun(args) => e2e::run_once(args).await,
        BenchCommand::E2eLoad(args) => e2e::load_once(args).await,
        BenchCommand::Once(args) => {
            let s = once(args).await?;
            out!("{}", serde_json::to_string(&s)?);
            Ok(())
        }
    }
}

async fn extract_bench(args: BenchArgs) -> Result<()> {
    ensure_table(&args).await?;
    let stage_dir = args
        .stage_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("pgshift-bench-stage"));
    let exe = std::env::current_exe()?;
    out!(
        "pgshift bench extract: orders, {} rows; writer {:?}; {} alternating rounds per size; medians\n",
        args.rows,
        args.writer.settings(),
        args.rounds
    );
    out!(
        "{:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10} {:>9} {:>10} {:>9}",
        "rows",
        "mode",
        "wall s",
        "client s",
        "server s",
        "Mrows/s",
        "COPY MB/s",
        "peak MiB",
        "parquet MB",
        "wall/raw"
    );
    for size in &args.sizes {
        let n = if size == "all" {
            args.rows
        } else {
            size.parse::<u64>().context("--sizes")?.min(args.rows)
        };
        let range = (1i64, 1 + n as i64);
        let mut samples: Vec<Sample> = Vec::new();
        for _ in 0..args.rounds {
            for mode in [Mode::Raw, Mode::Extract] {
                let _ = std::fs::remove_dir_all(&stage_dir);
                samples.push(sample(&exe, &args, &stage_dir, mode, range)?);
            }
        }
        let _ = std::fs::remove_dir_all(&stage_dir);
        print_size(
            &median_sample(&samples, Mode::Raw),
            &median_sample(&samples, Mode::Extract),
        );
    }
    Ok(())
}

/// One measured round in a fresh process (`pgshift bench once`), so peak RSS and CPU are the round's own.
fn sample(
    exe: &std::path::Path,
    args: &BenchArgs,
    stage_dir: &std::path::Path,
    mode: Mode,
    (lower, upper): (i64, i64),
) -> Result<Sample> {
    let w = &args.writer;
    let out = Proc::new(exe)
        .args([
            "bench",
            "once",
            "--mode",
            if mode == Mode::Raw { "raw" } else { "extract" },
        ])
        .args(["--lower", &lower.to_string(), "--upper", &upper.to_string()])
        .arg("--stage-dir")
        .arg(stage_dir)
        .args(w.argv())
        .env("PGSHIFT_SOURCE", &args.source)
        .output()?;
    if !out.status.success() {
        bail!("bench run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("bench run output")
}

/// The medians of one range size: a line per mode, then the ratios.
fn print_size(raw: &Sample, ext: &Sample) {
    for s in [raw, ext] {
        out!(
            "{:>10} {:>8} {:>8.2} {:>9.2} {:>9} {:>9.2} {:>10.1} {:>9.1} {:>10.1} {:>9.3}",
            s.rows,
            format!("{:?}", s.mode).to_lowercase(),
            s.wall,
            s.client_cpu,
            s.server_cpu.map(|c| format!("{c:.2}")).unwrap_or("n/a".into()),
            s.rows as f64 / s.wall / 1e6,
            s.source_bytes as f64 / s.wall / 1e6,
            s.peak_rss as f64 / 1048576.0,
            s.parquet_bytes as f64 / 1e6,
            s.wall / raw.wall,
        );
    }
    out!(
        "{:>10} ratios: wall {:.3}x raw COPY; client CPU {:.2}x raw client{}",
        "",
        ext.wall / raw.wall,
        ext.client_cpu / raw.client_cpu.max(0.01),
        match ext.server_cpu {
            Some(sc) if sc > 0.0 => format!("; extractor CPU {:.2}x the server's", ext.client_cpu / sc),
            _ => String::new(),
        }
    );
}

/// Per-field medians of one mode's samples.
fn median_sample(samples: &[Sample], mode: Mode) -> Sample {
    let of = |f: &dyn Fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().filter(|s| s.mode == mode).map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let first = samples
        .iter()
        .find(|s| s.mode == mode)
        .expect("one sample per mode per round");
    Sample {
        mode,
        rows: first.rows,
        source_bytes: first.source_bytes,
        parquet_bytes: first.parquet_bytes,
        wall: of(&|s| s.wall),
        client_cpu: of(&|s| s.client_cpu),
        server_cpu: first.server_cpu.map(|_| of(&|s| s.server_cpu.unwrap_or(0.0))),
        peak_rss: of(&|s| s.peak_rss as f64) as u64,
    }
}

async fn ensure_table(args: &BenchArgs) -> Result<()> {
    let connector = PgConnector::new(&args.source)?;
    let client = connector.connect().await?;
    let have: Option<i64> = match client.query_one("SELECT count(*) FROM public.orders", &[]).await {
        Ok(row) => Some(row.get(0)),
        Err(_) => None,
    };
    if have == Some(args.rows as i64) && !args.rebuild {
        return Ok(());
    }
    eprintln!(
        "building orders with {} rows from {} ...",
        args.rows,
        args.orders_sql.display()
    );
    let status = Proc::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            &format!("rows={}", args.rows),
            "-f",
        ])
        .arg(&args.orders_sql)
        .arg(&args.source)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !status.success() {
        bail!("building the orders table failed");
    }
    Ok(())
}

async fn once(args: OnceArgs) -> Result<Sample> {
    let connector = Arc::new(PgConnector::new(&args.source)?);
    let control = connector.connect().await?;
    let backend: i32 = control.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let postmaster = proc_stat(backend as u32).map(|s| s.ppid);
    let server_before = postmaster.and_then(|p| proc_stat(p).map(|s| s.children_cpu));
    let task = match args.mode {
        Mode::Raw => None,
        Mode::Extract => Some(bench_task(&control, &args).await?),
    };
    let cpu_before = proc_stat(std::process::id()).map(|s| s.self_cpu).unwrap_or(0.0);
    let started = Instant::now();
    let (rows, source_bytes, parquet_bytes) = match task {
        None => raw_copy(&connector, &args).await?,
        Some(task) => {
            let ctx = ExtractContext {
                source: connector.clone(),
                stages: Arc::new(UrlStages::default()),
            };
            let r = pgshift::extract(&ctx, task).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            (r.rows, r.source_bytes, r.files.iter().map(|f| f.bytes).sum())
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let client_cpu = proc_stat(std::process::id()).map(|s| s.self_cpu).unwrap_or(0.0) - cpu_before;
    // The serving backend has exited; wait for the postmaster to reap it into its children's accounting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server_cpu = match (postmaster, server_before) {
        (Some(p), Some(before)) => proc_stat(p).map(|s| s.children_cpu - before),
        _ => None,
    };
    Ok(Sample {
        mode: args.mode,
        rows,
        source_bytes,
        parquet_bytes,
        wall,
        client_cpu,
        server_cpu,
        peak_rss: pgshift::extract::peak_memory_bytes().unwrap_or(0),
    })
}

/// Exactly what a planned run extracts: the planner's task for the table (its type mapping and its choice of
/// dictionary columns), with the bench's range and writer settings. Planned before the clock starts.
async fn bench_task(control: &tokio_postgres::Client, args: &OnceArgs) -> Result<pgshift::ExtractTask> {
    let req = PlanRequest {
        tables: vec!["public.orders".into()],
        settings: PlanSettings {
            parts: Some(1),
            ..PlanSettings::default()
        },
        stage: format!("file://{}", std::path::absolute(&args.stage_dir)?.display()),
        ..PlanRequest::default()
    };
    let mut task = pgshift::plan::plan(control, &req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .tasks
        .remove(0);
    let dictionary = std::mem::take(&mut task.writer.dictionary_columns);
    task.writer = args.writer.settings();
    task.writer.dictionary_columns.extend(dictionary);
    task.bounds = Bounds::Key {
        lower: Some(vec![KeyValue::new(KeyType::Int8, args.lower.to_string())]),
        upper: Some(vec![KeyValue::new(KeyType::Int8, args.upper.to_string())]),
    };
    task.statement_timeout_secs = 0;
    eprintln!("dictionary columns: {:?}", task.writer.dictionary_columns);
    Ok(task)
}

/// The reference: a raw binary `COPY` of the range, read and dropped. Rows, bytes, and no Parquet.
async fn raw_copy(connector: &PgConnector, args: &OnceArgs) -> Result<(u64, u64, u64)> {
    let client = connector.connect().await?;
    let q = format!(
        "COPY (SELECT * FROM public.orders WHERE id >= {} AND id < {}) TO STDOUT (FORMAT binary)",
        args.lower, args.upper
    );
    let stream = client.copy_out(&q).await?;
    pin_mut!(stream);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok(((args.upper - args.lower) as u64, bytes, 0))
}

struct ProcStat {
    ppid: u32,
    self_cpu: f64,
    children_cpu: f64,
}

/// Fields of `/proc/<pid>/stat` (Linux), CPU in seconds.
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let tick = clock_ticks();
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        self_cpu: (num(11)? + num(12)?) / tick,
        children_cpu: (num(13)? + num(14)?) / tick,
    })
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Proc::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
