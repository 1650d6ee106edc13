//! `pgshift bench incremental`: `--incremental diff` against a full run of the same table, in the same run and
//! alternating. Each round loads the orders table in full (its state removed first: the first run of a diff table),
//! changes about `--change-percent` of it (updates spread over the whole key space, inserts past the end, a block of
//! deletes in the middle), loads it again with `--incremental diff`, then once more with nothing changed. Every run is
//! a child process (`pgshift bench e2e-run`), so wall time, client CPU and peak RSS are its own; server CPU is the
//! postmaster's children's. Before each run both databases are settled ([`settle`]), so that no autovacuum or
//! checkpoint of an earlier run's writes lands in a timed one.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use pgshift::source::{PgConnector, SourceConnector};

use super::e2e::{child, psql_file, E2eSample, RunsFlags};

#[derive(Args)]
pub(crate) struct BenchIncrementalArgs {
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
    /// A PostgreSQL warehouse database: the orders table is loaded there as public.orders.
    #[arg(long)]
    warehouse: String,
    /// Rows of the orders table (built when missing or of another size; each round adds and deletes a few).
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Percent of the rows each round changes: 80% of it updates (every Nth key), 10% inserts, 10% deletes.
    #[arg(long, default_value_t = 1.0)]
    change_percent: f64,
    /// Alternating rounds (medians are reported).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// pgshift's --concurrency (extractors at once).
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    #[command(flatten)]
    runs: RunsFlags,
}

pub(crate) async fn run(args: BenchIncrementalArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    let stage = args.runs.stage_dir("pgshift-bench-incremental");
    let _ = std::fs::remove_dir_all(&stage);
    ensure_orders(&args).await?;
    out!(
        "pgshift bench incremental: public.orders, {} rows, {}% changed a round, {} alternating rounds, medians",
        args.rows,
        args.change_percent,
        args.rounds
    );
    let mut samples: [Vec<E2eSample>; 4] = Default::default();
    for round in 0..args.rounds {
        settle(&args).await?;
        samples[0].push(one_run(&exe, &args, &stage, &format!("binc-plain-{round}"), "full")?);
        // The state removed: the first run of a diff table is a full load that digests and keys its ranges.
        let _ = std::fs::remove_dir_all(stage.join(".state"));
        settle(&args).await?;
        samples[1].push(one_run(&exe, &args, &stage, &format!("binc-full-{round}"), "diff")?);
        change(&args, round).await?;
        settle(&args).await?;
        samples[2].push(one_run(&exe, &args, &stage, &format!("binc-diff-{round}"), "diff")?);
        settle(&args).await?;
        samples[3].push(one_run(&exe, &args, &stage, &format!("binc-same-{round}"), "diff")?);
    }
    let [plain, full, diff, same] = samples.map(|s| super::e2e::median(&s));
    print(&args, [&plain, &full, &diff, &same]);
    let _ = std::fs::remove_dir_all(&stage);
    Ok(())
}

/// Both databases settled before a timed run: the orders table vacuumed and analyzed, and a checkpoint where the
/// role may make one. (A plain `VACUUM` moves no row: the row versions a diff run compares stay as they are.)
async fn settle(args: &BenchIncrementalArgs) -> Result<()> {
    for url in [&args.source, &args.warehouse] {
        let db = PgConnector::new(url)?.connect().await?;
        let exists: bool = db
            .query_one("SELECT pg_catalog.to_regclass('public.orders') IS NOT NULL", &[])
            .await?
            .get(0);
        if exists {
            db.batch_execute("VACUUM (ANALYZE) public.orders").await?;
        }
        if let Err(e) = db.batch_execute("CHECKPOINT").await {
            tracing::debug!(error = %e, "no checkpoint before the run");
        }
    }
    Ok(())
}

/// The orders table of `--rows` rows on the source, built when missing or of another size.
async fn ensure_orders(args: &BenchIncrementalArgs) -> Result<()> {
    let src = PgConnector::new(&args.source)?.connect().await?;
    let have: Option<i64> = src
        .query_one("SELECT count(*) FROM public.orders", &[])
        .await
        .ok()
        .map(|r| r.get(0));
    if have != Some(args.rows as i64) {
        eprintln!(
            "building public.orders ({} rows) from {} ...",
            args.rows,
            args.runs.orders_sql.display()
        );
        psql_file(&args.source, &args.runs.orders_sql, args.rows)?;
    }
    Ok(())
}

/// One measured `pgshift run` of the orders table, `--incremental mode`, its totals from its own run directory.
fn one_run(exe: &Path, args: &BenchIncrementalArgs, stage: &Path, run_id: &str, mode: &str) -> Result<E2eSample> {
    let sample = std::env::temp_dir().join("pgshift-bench-incremental-sample.json");
    let argv: Vec<String> = [
        "bench",
        "e2e-run",
        "--sample",
        &sample.display().to_string(),
        "--totals-of",
        &stage.join(run_id).display().to_string(),
        "--",
        "--source",
        &args.source,
        "--warehouse",
        &args.warehouse,
        "--stage",
        &format!("file://{}", stage.display()),
        "--tables",
        "public.orders",
        "--incremental",
        mode,
        "--static-source",
        "--concurrency",
        &args.concurrency.to_string(),
        "--run-id",
        run_id,
        "--progress",
        "none",
    ]
    .map(String::from)
    .to_vec();
    child(exe, &argv, &sample).with_context(|| format!("run {run_id}"))
}

/// About `--change-percent` of the table changed: every Nth key updated, a block of copies inserted past the end, a
/// block deleted in the middle (a new one each round).
async fn change(args: &BenchIncrementalArgs, round: usize) -> Result<()> {
    let n = args.rows as f64 * args.change_percent / 100.0;
    let every = ((args.rows as f64 / (n * 0.8)).round() as u64).max(1);
    let block = ((n * 0.1).round() as u64).max(1);
    let middle = args.rows / 2 + round as u64 * block;
    let sql = format!(
        "UPDATE public.orders SET quantity = quantity + 1 WHERE id % {every} = {r};
         CREATE TEMP TABLE bench_new AS SELECT * FROM public.orders WHERE id <= {block};
         UPDATE bench_new SET id = id + (SELECT max(id) FROM public.orders);
         INSERT INTO public.orders SELECT * FROM bench_new;
         DROP TABLE bench_new;
         DELETE FROM public.orders WHERE id > {middle} AND id <= {middle} + {block};
         ANALYZE public.orders;",
        r = round as u64 % every
    );
    PgConnector::new(&args.source)?
        .connect()
        .await?
        .batch_execute(&sql)
        .await?;
    Ok(())
}

fn print(args: &BenchIncrementalArgs, [plain, full, diff, same]: [&E2eSample; 4]) {
    out!(
        "  {:<34} {:>8} {:>9} {:>9} {:>10} {:>11} {:>12} {:>9} {:>9}",
        "run",
        "wall s",
        "client s",
        "server s",
        "source MB",
        "Parquet MB",
        "rows moved",
        "GB-s",
        "peak MiB"
    );
    let gbs = |s: &E2eSample| s.extract_seconds * args.runs.extractor_memory_mb as f64 / 1024.0;
    for (label, s) in [
        ("full (--incremental full)", plain),
        ("full (diff, first run: digests, keys)", full),
        ("diff, after the change", diff),
        ("diff, nothing changed", same),
    ] {
        out!(
            "  {label:<34} {:>8.2} {:>9.2} {:>9} {:>10.1} {:>11.2} {:>12} {:>9.1} {:>9.1}",
            s.wall,
            s.client_cpu,
            s.server_cpu.map(|c| format!("{c:.2}")).unwrap_or("n/a".into()),
            s.bytes as f64 / 1e6,
            s.parquet_bytes as f64 / 1e6,
            s.rows,
            gbs(s),
            s.peak_rss as f64 / 1048576.0
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    out!(
        "  ratios against the plain full run: diff wall {:.3} (goal <= 0.25), diff Parquet bytes {:.4} and rows {:.4} \
         (goal <= 0.03), unchanged wall {:.3} (goal <= 0.10); the first diff run's wall {:.3}",
        ratio(diff.wall, plain.wall),
        ratio(diff.parquet_bytes as f64, plain.parquet_bytes as f64),
        ratio(diff.rows as f64, plain.rows as f64),
        ratio(same.wall, plain.wall),
        ratio(full.wall, plain.wall)
    );
}
