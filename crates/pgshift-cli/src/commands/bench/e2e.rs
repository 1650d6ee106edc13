//! `pgshift bench e2e`: a whole `pgshift run` against the simplest thing a user could do instead, in the same run and
//! alternating: each table's `COPY … TO STDOUT (FORMAT binary)` from the source piped into `COPY … FROM STDIN (FORMAT
//! binary)` into an empty table of the warehouse database, tables one after another and then N at a time.
//!
//! Every measurement is a child process (`pgshift bench e2e-pipe`, `e2e-run`, `e2e-load`), so wall time, client CPU
//! and peak RSS are its own. Server CPU is what the postmaster's children (the backends that served it, source and
//! warehouse alike when both are on this server) used, read after they exited.

use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Parser};
use futures_util::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use pgshift::source::{PgConnector, SourceConnector};
use serde::{Deserialize, Serialize};

use super::proc_stat;
use crate::commands::run::RunArgs;

#[derive(Args)]
pub(crate) struct BenchE2eArgs {
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
    /// A PostgreSQL warehouse database: pgshift loads its targets there under the source's names; the pipe fills
    /// tables of its `pipe` schema (dropped and made anew before each pipe round).
    #[arg(long)]
    warehouse: String,
    /// Data sets: `demo` (the demo's sales schema, scripts/demo-schema.sql) and `orders` (../shared/bench/orders.sql).
    #[arg(long, value_delimiter = ',', default_value = "demo,orders")]
    datasets: Vec<String>,
    /// Rows of the orders table (built when missing or of another size).
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Fact rows of the demo schema.
    #[arg(long, default_value_t = 3_000_000)]
    demo_rows: u64,
    /// Alternating rounds (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tables piped at once in the parallel pipe, and pgshift's --concurrency (extractors at once).
    #[arg(long, default_value_t = 4)]
    parallel: u32,
    #[arg(long, default_value = "scripts/demo-schema.sql")]
    demo_sql: PathBuf,
    #[command(flatten)]
    runs: RunsFlags,
}

/// The flags of the benches that time whole pgshift runs over the orders table (`bench e2e`, `bench incremental`).
#[derive(Args)]
pub(crate) struct RunsFlags {
    /// The SQL that builds the orders table.
    #[arg(long, default_value = "../shared/bench/orders.sql")]
    pub(crate) orders_sql: PathBuf,
    /// Where pgshift's stage lives (emptied before the runs; a directory under the system's temporary one by
    /// default).
    #[arg(long)]
    pub(crate) stage_dir: Option<PathBuf>,
    /// Lambda memory (MB) the extractors' GB-s assume.
    #[arg(long, default_value_t = 2048)]
    pub(crate) extractor_memory_mb: u32,
}

impl RunsFlags {
    /// The stage directory: `--stage-dir`, else `name` under the system's temporary directory.
    pub(crate) fn stage_dir(&self, name: &str) -> PathBuf {
        self.stage_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(name))
    }
}

/// One measured child: the pipe (`parallel` tables at once), or a whole run, or a load alone.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct E2eSample {
    pub(super) wall: f64,
    pub(super) client_cpu: f64,
    pub(super) server_cpu: Option<f64>,
    pub(super) peak_rss: u64,
    /// Binary COPY bytes moved (pipe), or the run's source bytes.
    pub(super) bytes: u64,
    pub(super) rows: u64,
    /// The run's extractors: billed seconds (the sum of their durations) at the configured memory.
    pub(super) extract_seconds: f64,
    /// The run's Parquet parts, in bytes.
    #[serde(default)]
    pub(super) parquet_bytes: u64,
}

#[derive(Args)]
pub(crate) struct PipeArgs {
    #[arg(long)]
    source: String,
    #[arg(long)]
    warehouse: String,
    /// Tables `schema.table`, each piped into `pipe."schema__table"`.
    #[arg(long, num_args = 1..)]
    tables: Vec<String>,
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    #[arg(long)]
    sample: PathBuf,
}

#[derive(Args)]
pub(crate) struct RunOnceArgs {
    #[arg(long)]
    sample: PathBuf,
    /// Where the run's results are counted (default: the whole stage, emptied before the run).
    #[arg(long)]
    totals_of: Option<PathBuf>,
    /// The `pgshift run` command line after `--`.
    #[arg(last = true, num_args = 1..)]
    run: Vec<String>,
}

#[derive(Parser)]
struct RunLine {
    #[command(flatten)]
    run: RunArgs,
}

struct Dataset {
    name: &'static str,
    tables: Vec<String>,
    pattern: &'static str,
}

pub(crate) async fn run(args: BenchE2eArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    let stage_dir = args.runs.stage_dir("pgshift-bench-e2e");
    out!(
        "pgshift bench e2e: {} alternating rounds, medians; parallel pipe and pgshift --concurrency {}\n",
        args.rounds,
        args.parallel
    );
    for name in &args.datasets {
        let ds = ensure_dataset(&args, name).await?;
        create_pipe_tables(&args, &ds.tables).await?;
        let mut samples: [Vec<E2eSample>; 3] = Default::default();
        for round in 0..args.rounds {
            samples[0].push(pipe(&exe, &args, &ds, 1)?);
            samples[1].push(pipe(&exe, &args, &ds, args.parallel as usize)?);
            samples[2].push(pgshift_run(&exe, &args, &ds, &stage_dir, round)?);
        }
        let load = load_alone(&exe, &args, &ds, &stage_dir).await?;
        let [seq, par, ours] = samples.map(|s| median(&s));
        print_dataset(&args, &ds, [&seq, &par, &ours], &load);
    }
    let _ = std::fs::remove_dir_all(&stage_dir);
    Ok(())
}

/// The data set's tables, built on the source when missing or of another size.
async fn ensure_dataset(args: &BenchE2eArgs, name: &str) -> Result<Dataset> {
    let (ds, probe, want, sql, rows) = match name {
        "demo" => (
            Dataset {
                name: "demo",
                tables: ["customers", "products", "stores", "days", "orders"]
                    .map(|t| format!("sales.{t}"))
                    .to_vec(),
                pattern: "sales.*",
            },
            "sales.orders",
            args.demo_rows,
            &args.demo_sql,
            args.demo_rows,
        ),
        "orders" => (
            Dataset {
                name: "orders",
                tables: vec!["public.orders".into()],
                pattern: "public.orders",
            },
            "public.orders",
            args.rows,
            &args.runs.orders_sql,
            args.rows,
        ),
        other => bail!("--datasets: unknown data set {other:?}; use demo and/or orders"),
    };
    let src = PgConnector::new(&args.source)?.connect().await?;
    let have: Option<i64> = match src.query_one(&format!("SELECT count(*) FROM {probe}"), &[]).await {
        Ok(r) => Some(r.get(0)),
        Err(_) => None,
    };
    if have != Some(want as i64) {
        eprintln!("building {name} ({rows} rows) from {} ...", sql.display());
        if name == "demo" {
            src.batch_execute("DROP SCHEMA IF EXISTS sales CASCADE").await?;
        }
        psql_file(&args.source, sql, rows)?;
    }
    Ok(ds)
}

pub(super) fn psql_file(url: &str, sql: &Path, rows: u64) -> Result<()> {
    let status = Proc::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", &format!("rows={rows}"), "-f"])
        .arg(sql)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !status.success() {
        bail!("building the data set from {} failed", sql.display());
    }
    Ok(())
}

/// The pipe's targets: `pipe."schema__table"` with the source's column types (enums as text, domains as their base
/// type: what a user's plain target would hold), no keys or indexes.
async fn create_pipe_tables(args: &BenchE2eArgs, tables: &[String]) -> Result<()> {
    let src = PgConnector::new(&args.source)?.connect().await?;
    let mut ddl = vec![
        "DROP SCHEMA IF EXISTS pipe CASCADE".to_string(),
        "CREATE SCHEMA pipe".into(),
    ];
    for t in tables {
        let cols: Vec<String> = src
            .query(
                "SELECT format('%I %s', a.attname, CASE ty.typtype WHEN 'e' THEN 'text' \
                 WHEN 'd' THEN format_type(ty.typbasetype, ty.typtypmod) ELSE format_type(a.atttypid, a.atttypmod) END) \
                 FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid \
                 WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[t],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ddl.push(format!("CREATE TABLE {} ({})", pipe_table(t)?, cols.join(", ")));
    }
    PgConnector::new(&args.warehouse)?
        .connect()
        .await?
        .batch_execute(&ddl.join(";\n"))
        .await?;
    Ok(())
}

/// A data set's table, `schema.table`, quoted.
fn source_table(t: &str) -> Result<String> {
    let (schema, name) = t.split_once('.').with_context(|| format!("{t}: not schema.table"))?;
    pgshift::contract::sql::table(&pgshift::contract::model::TableRef::new(schema, name)).map_err(anyhow::Error::msg)
}

/// The pipe's target of a table: `pipe."schema__table"`, quoted.
fn pipe_table(t: &str) -> Result<String> {
    pgshift::contract::sql::table(&pgshift::contract::model::TableRef::new("pipe", t.replace('.', "__")))
        .map_err(anyhow::Error::msg)
}

/// A child process that writes its sample to a file; its stdout is dropped.
pub(super) fn child(exe: &Path, args: &[String], sample: &Path) -> Result<E2eSample> {
    let _ = std::fs::remove_file(sample);
    let out = Proc::new(exe).args(args).stdout(std::process::Stdio::null()).output()?;
    if !out.status.success() {
        bail!(
            "bench child {:?} failed: {}",
            args.first(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(sample).context("the child's sample")?;
    serde_json::from_str(&text).context("the child's sample")
}

fn pipe(exe: &Path, args: &BenchE2eArgs, ds: &Dataset, parallel: usize) -> Result<E2eSample> {
    let sample = std::env::temp_dir().join("pgshift-bench-e2e-sample.json");
    let mut argv: Vec<String> = [
        "bench",
        "e2e-pipe",
        "--source",
        &args.source,
        "--warehouse",
        &args.warehouse,
    ]
    .map(String::from)
    .to_vec();
    argv.extend(["--parallel".into(), parallel.to_string(), "--sample".into()]);
    argv.push(sample.display().to_string());
    argv.push("--tables".into());
    argv.extend(ds.tables.iter().cloned());
    child(exe, &argv, &sample)
}

fn pgshift_run(exe: &Path, args: &BenchE2eArgs, ds: &Dataset, stage_dir: &Path, round: usize) -> Result<E2eSample> {
    let _ = std::fs::remove_dir_all(stage_dir);
    let sample = std::env::temp_dir().join("pgshift-bench-e2e-sample.json");
    let run_id = format!("bench-e2e-{}-{}-{round}", ds.name, std::process::id());
    let argv: Vec<String> = [
        "bench",
        "e2e-run",
        "--sample",
        &sample.display().to_string(),
        "--",
        "--source",
        &args.source,
        "--warehouse",
        &args.warehouse,
        "--stage",
        &format!("file://{}", stage_dir.display()),
        "--tables",
        ds.pattern,
        "--mode",
        "replace",
        "--concurrency",
        &args.parallel.to_string(),
        "--run-id",
        &run_id,
        "--progress",
        "none",
    ]
    .map(String::from)
    .to_vec();
    child(exe, &argv, &sample)
}

/// The loader alone on the data set, in a process of its own (planned and extracted first, untimed): its peak RSS.
async fn load_alone(exe: &Path, args: &BenchE2eArgs, ds: &Dataset, stage_dir: &Path) -> Result<E2eSample> {
    let plan = prepare(args, ds, stage_dir).await?;
    let sample = std::env::temp_dir().join("pgshift-bench-e2e-sample.json");
    let argv: Vec<String> = [
        "bench",
        "e2e-load",
        "--source",
        &args.source,
        "--warehouse",
        &args.warehouse,
        "--plan",
        &plan,
        "--sample",
        &sample.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    child(exe, &argv, &sample)
}

pub(super) fn median(samples: &[E2eSample]) -> E2eSample {
    let of = |f: &dyn Fn(&E2eSample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    E2eSample {
        wall: of(&|s| s.wall),
        client_cpu: of(&|s| s.client_cpu),
        server_cpu: samples[0].server_cpu.map(|_| of(&|s| s.server_cpu.unwrap_or(0.0))),
        peak_rss: of(&|s| s.peak_rss as f64) as u64,
        bytes: samples[0].bytes,
        rows: of(&|s| s.rows as f64) as u64,
        extract_seconds: of(&|s| s.extract_seconds),
        parquet_bytes: of(&|s| s.parquet_bytes as f64) as u64,
    }
}

fn print_dataset(args: &BenchE2eArgs, ds: &Dataset, [seq, par, ours]: [&E2eSample; 3], load: &E2eSample) {
    out!(
        "{}: {} ({} tables), {} rows, {:.1} MB binary COPY",
        ds.name,
        ds.pattern,
        ds.tables.len(),
        seq.rows,
        seq.bytes as f64 / 1e6
    );
    out!(
        "  {:<40} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "path",
        "wall s",
        "client s",
        "server s",
        "peak MiB",
        "wall/pipe"
    );
    let n = args.parallel;
    for (label, s) in [
        ("COPY pipe, one table after another".to_string(), seq),
        (format!("COPY pipe, {n} tables at once"), par),
        (format!("pgshift run (replace, --concurrency {n})"), ours),
    ] {
        out!(
            "  {label:<40} {:>8.2} {:>9.2} {:>9} {:>9.1} {:>10.3}",
            s.wall,
            s.client_cpu,
            s.server_cpu.map(|c| format!("{c:.2}")).unwrap_or("n/a".into()),
            s.peak_rss as f64 / 1048576.0,
            s.wall / seq.wall
        );
    }
    let gb = ours.bytes as f64 / 1e9;
    out!(
        "  ratios: pgshift run {:.3}x the sequential pipe, {:.3}x the parallel pipe; the loader alone peaks at {:.1} MiB\n  \
         extractors: {:.1} Lambda GB-s per GB of source at {} MB from their summed durations (on this machine they \
         share its cores with each other and the server; `bench extract` times one alone)\n",
        ours.wall / seq.wall,
        ours.wall / par.wall,
        load.peak_rss as f64 / 1048576.0,
        ours.extract_seconds * args.runs.extractor_memory_mb as f64 / 1024.0 / gb.max(1e-9),
        args.runs.extractor_memory_mb,
    );
}

/// The postmaster serving `url` and its children's CPU so far (the server must run on this machine).
async fn server_cpu(url: &str) -> Result<Option<(u32, f64)>> {
    let c = PgConnector::new(url)?.connect().await?;
    let backend: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    drop(c);
    Ok(proc_stat(backend as u32)
        .map(|s| s.ppid)
        .and_then(|p| proc_stat(p).map(|s| (p, s.children_cpu))))
}

/// Measures `work` in this process: wall, CPU, peak RSS and the server's CPU over it.
async fn measure<F>(source: &str, work: F) -> Result<E2eSample>
where
    F: std::future::Future<Output = Result<E2eSample>>,
{
    let server_before = server_cpu(source).await?;
    // The control connection's backend has to exit and be counted before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server_before = server_before.and_then(|(p, _)| proc_stat(p).map(|s| (p, s.children_cpu)));
    let cpu_before = proc_stat(std::process::id()).map(|s| s.self_cpu).unwrap_or(0.0);
    let started = Instant::now();
    let mut s = work.await?;
    s.wall = started.elapsed().as_secs_f64();
    s.client_cpu = proc_stat(std::process::id()).map(|s| s.self_cpu).unwrap_or(0.0) - cpu_before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.server_cpu = server_before.and_then(|(p, before)| proc_stat(p).map(|st| st.children_cpu - before));
    s.peak_rss = pgshift::extract::peak_memory_bytes().unwrap_or(0);
    Ok(s)
}

fn write_sample(path: &Path, s: &E2eSample) -> Result<()> {
    std::fs::write(path, serde_json::to_vec(s)?).with_context(|| format!("writing {}", path.display()))
}

pub(crate) async fn pipe_once(args: PipeArgs) -> Result<()> {
    let s = measure(&args.source, async {
        let moved: Vec<(u64, u64)> = futures_util::stream::iter(args.tables.iter().map(|t| pipe_table_once(&args, t)))
            .buffer_unordered(args.parallel.max(1))
            .try_collect()
            .await?;
        Ok(E2eSample {
            bytes: moved.iter().map(|m| m.0).sum(),
            rows: moved.iter().map(|m| m.1).sum(),
            ..E2eSample::default()
        })
    })
    .await?;
    write_sample(&args.sample, &s)
}

/// One table through the pipe: the source's binary COPY out, its messages coalesced into 1 MiB sends (as psql's
/// `\copy … | \copy …` would write them), into the empty pipe table. Bytes and rows.
async fn pipe_table_once(args: &PipeArgs, table: &str) -> Result<(u64, u64)> {
    let (src, wh) = (
        PgConnector::new(&args.source)?.connect().await?,
        PgConnector::new(&args.warehouse)?.connect().await?,
    );
    let (from, into) = (source_table(table)?, pipe_table(table)?);
    wh.batch_execute(&format!("TRUNCATE {into}")).await?;
    let out = src.copy_out(&format!("COPY {from} TO STDOUT (FORMAT binary)")).await?;
    let sink = wh
        .copy_in::<_, Bytes>(&format!("COPY {into} FROM STDIN (FORMAT binary)"))
        .await?;
    pin_mut!(out, sink);
    let (mut bytes, mut buf) = (0u64, bytes::BytesMut::with_capacity(1 << 20));
    while let Some(chunk) = out.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        buf.extend_from_slice(&chunk);
        if buf.len() >= 1 << 20 {
            sink.send(buf.split().freeze()).await?;
        }
    }
    sink.send(buf.split().freeze()).await?;
    let rows = sink.finish().await?;
    Ok((bytes, rows))
}

pub(crate) async fn run_once(args: RunOnceArgs) -> Result<()> {
    let line = RunLine::try_parse_from(std::iter::once("run".to_string()).chain(args.run.iter().cloned()))?;
    let stage = match &args.totals_of {
        Some(dir) => dir.clone(),
        None => stage_of(&args.run).context("the run's --stage")?,
    };
    let source = value_of(&args.run, "--source").context("the run's --source")?;
    let s = measure(&source, async {
        crate::commands::run::run(line.run).await?;
        run_totals(&stage)
    })
    .await?;
    write_sample(&args.sample, &s)
}

fn value_of(argv: &[String], flag: &str) -> Option<String> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .cloned()
}

fn stage_of(argv: &[String]) -> Option<PathBuf> {
    value_of(argv, "--stage").and_then(|s| s.strip_prefix("file://").map(PathBuf::from))
}

/// The run's source bytes, rows and extractor seconds, from the part results it left on the stage.
fn run_totals(stage: &Path) -> Result<E2eSample> {
    let mut s = E2eSample::default();
    let mut dirs = vec![stage.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".result.json") {
                let r: pgshift::ExtractResult = serde_json::from_slice(&std::fs::read(&p)?)?;
                s.bytes += r.source_bytes;
                s.rows += r.rows;
                s.parquet_bytes += r.files.iter().map(|f| f.bytes).sum::<u64>();
                s.extract_seconds += r.seconds;
            }
        }
    }
    Ok(s)
}

#[derive(Args)]
pub(crate) struct LoadOnceArgs {
    #[arg(long)]
    source: String,
    #[arg(long)]
    warehouse: String,
    /// The planned and extracted run to load.
    #[arg(long)]
    plan: String,
    #[arg(long)]
    sample: PathBuf,
}

/// Plans and extracts the data set's tables onto a fresh stage (in the bench's own process, untimed): the plan URL.
async fn prepare(args: &BenchE2eArgs, ds: &Dataset, stage_dir: &Path) -> Result<String> {
    let _ = std::fs::remove_dir_all(stage_dir);
    let stages = Arc::new(pgshift::UrlStages::default());
    let source = Arc::new(PgConnector::new(&args.source)?);
    let req = pgshift::contract::plan::PlanRequest {
        tables: vec![ds.pattern.to_string()],
        stage: format!("file://{}", stage_dir.display()),
        ..Default::default()
    };
    let pctx = pgshift::plan::PlanContext {
        source: source.clone(),
        stages: stages.clone(),
    };
    let (plan, summary) = pgshift::plan::handle(&pctx, req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ectx = pgshift::ExtractContext { source, stages };
    futures_util::stream::iter(plan.tasks.iter().map(|t| pgshift::extract(&ectx, t.clone())))
        .buffer_unordered(args.parallel as usize)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(summary.plan_url)
}

/// A fresh process that only loads a planned and extracted run: the loader's own peak RSS.
pub(crate) async fn load_once(args: LoadOnceArgs) -> Result<()> {
    use pgshift::contract::load::{LoadOptions, LoadRequest};
    let s = measure(&args.source, async {
        let wh = pgshift::warehouse::warehouse(&args.warehouse).await?;
        let ctx = pgshift::load::LoadContext::new(Arc::new(pgshift::UrlStages::default()), wh);
        let r = pgshift::load::load(
            &ctx,
            LoadRequest {
                plan_url: args.plan.clone(),
                options: LoadOptions::default(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(E2eSample {
            rows: r.tables.iter().map(|t| t.rows).sum(),
            ..E2eSample::default()
        })
    })
    .await?;
    write_sample(&args.sample, &s)
}
