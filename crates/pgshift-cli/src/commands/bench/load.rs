//! `pgshift bench load`: the PostgreSQL warehouse path (stage → Parquet → binary COPY into staging → reconcile →
//! swap) against a plain binary `COPY FROM STDIN` of the same rows into the same warehouse, alternating, in one run.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use futures_util::{pin_mut, SinkExt, StreamExt};
use pgshift::contract::load::{Atomicity, LoadMode, LoadOptions, LoadRequest};
use pgshift::contract::plan::{PlanRequest, PlanSettings};
use pgshift::load::LoadContext;
use pgshift::plan::PlanContext;
use pgshift::source::{PgConnector, SourceConnector};
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::{ExtractContext, UrlStages};

#[derive(Args)]
pub(crate) struct BenchLoadArgs {
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
    /// A PostgreSQL warehouse database (its public.orders_load_bench and public.orders_raw_copy are replaced).
    #[arg(long)]
    warehouse: String,
    /// Rows of public.orders (the extraction bench's table) to load.
    #[arg(long, default_value_t = 1_000_000)]
    rows: i64,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

pub(crate) async fn run(args: BenchLoadArgs) -> Result<()> {
    let source = Arc::new(PgConnector::new(&args.source)?);
    let src = source.connect().await?;
    ensure_table(&src, args.rows).await?;
    let staged = stage_parts(source).await?;
    let chunks = raw_stream(&src).await?;
    let wh = PgConnector::new(&args.warehouse)?.connect().await?;
    out!(
        "pgshift bench load: {} rows ({:.1} MB binary COPY, {:.1} MB Parquet in {} parts) into a PostgreSQL warehouse\n",
        args.rows,
        chunks.iter().map(|c| c.len()).sum::<usize>() as f64 / 1e6,
        staged.parquet_bytes as f64 / 1e6,
        staged.plan.tasks.len(),
    );
    let ddl = column_ddl(&staged.plan);
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        raw.push(raw_round(&wh, &ddl, &chunks).await?);
        ours.push(pgshift_round(&wh, &args.warehouse, &staged).await?);
    }
    print_results(args.rows, args.rounds, median(&mut raw), median(&mut ours));
    Ok(())
}

/// The bench table: the first `rows` rows of public.orders, built once and kept between runs.
async fn ensure_table(src: &tokio_postgres::Client, rows: i64) -> Result<()> {
    let have: Option<i64> = src
        .query_one("SELECT count(*) FROM public.orders_load_bench", &[])
        .await
        .ok()
        .map(|r| r.get(0));
    if have == Some(rows) {
        return Ok(());
    }
    eprintln!("building public.orders_load_bench ({rows} rows of public.orders) ...");
    src.batch_execute(&format!(
        "DROP TABLE IF EXISTS public.orders_load_bench;
         CREATE TABLE public.orders_load_bench AS SELECT * FROM public.orders WHERE id <= {rows};
         ALTER TABLE public.orders_load_bench ADD PRIMARY KEY (id);"
    ))
    .await
    .context("building the bench table (run `pgshift bench extract` first to create public.orders)")?;
    src.batch_execute("VACUUM ANALYZE public.orders_load_bench").await?;
    Ok(())
}

/// A run planned and extracted once (not timed): the parts every load round reads.
struct Staged {
    plan: pgshift::Plan,
    plan_url: String,
    stages: Arc<UrlStages>,
    parquet_bytes: u64,
}

async fn stage_parts(source: Arc<PgConnector>) -> Result<Staged> {
    let dir = std::env::temp_dir().join("pgshift-bench-load");
    let _ = std::fs::remove_dir_all(&dir);
    let stages = Arc::new(UrlStages::default());
    let req = PlanRequest {
        tables: vec!["public.orders_load_bench".into()],
        settings: PlanSettings {
            parts: Some(4),
            ..PlanSettings::default()
        },
        stage: format!("file://{}", dir.display()),
        ..PlanRequest::default()
    };
    let pctx = PlanContext {
        source: source.clone(),
        stages: stages.clone(),
    };
    let (plan, summary) = pgshift::plan::handle(&pctx, req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ectx = ExtractContext {
        source,
        stages: stages.clone(),
    };
    let mut parquet_bytes = 0u64;
    for t in &plan.tasks {
        let r = pgshift::extract(&ectx, t.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        parquet_bytes += r.files.iter().map(|f| f.bytes).sum::<u64>();
    }
    Ok(Staged {
        plan,
        plan_url: summary.plan_url,
        stages,
        parquet_bytes,
    })
}

/// The table's binary COPY stream, read once into memory (not timed) and coalesced into 1 MiB messages, as the
/// loader sends them (row-sized messages would measure the client instead).
async fn raw_stream(src: &tokio_postgres::Client) -> Result<Vec<Bytes>> {
    let copy = src
        .copy_out("COPY public.orders_load_bench TO STDOUT (FORMAT binary)")
        .await?;
    pin_mut!(copy);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    while let Some(c) = copy.next().await {
        buf.extend_from_slice(&c?);
        if buf.len() >= 1 << 20 {
            chunks.push(buf.split().freeze());
        }
    }
    chunks.push(buf.split().freeze());
    Ok(chunks)
}

/// The source table's columns as a CREATE TABLE lists them.
fn column_ddl(plan: &pgshift::Plan) -> String {
    plan.tables[0]
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                pgshift::contract::sql::ident(&c.name).unwrap_or_default(),
                c.pg_type.name
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One timed plain binary `COPY FROM STDIN` into a fresh table: seconds.
async fn raw_round(wh: &tokio_postgres::Client, ddl: &str, chunks: &[Bytes]) -> Result<f64> {
    wh.batch_execute(&format!(
        "DROP TABLE IF EXISTS public.orders_raw_copy; CREATE TABLE public.orders_raw_copy ({ddl}, PRIMARY KEY (id))"
    ))
    .await?;
    let started = Instant::now();
    let sink = wh
        .copy_in::<_, Bytes>("COPY public.orders_raw_copy FROM STDIN (FORMAT binary)")
        .await?;
    pin_mut!(sink);
    for c in chunks {
        sink.send(c.clone()).await?;
    }
    sink.finish().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// One timed pgshift load of the staged run into an empty warehouse: seconds.
async fn pgshift_round(wh: &tokio_postgres::Client, url: &str, staged: &Staged) -> Result<f64> {
    wh.batch_execute("DROP TABLE IF EXISTS public.orders_load_bench; DROP SCHEMA IF EXISTS pgshift CASCADE")
        .await?;
    let lctx = LoadContext::new(staged.stages.clone(), Arc::new(PgWarehouse::new(url)?));
    let lreq = LoadRequest {
        plan_url: staged.plan_url.clone(),
        options: LoadOptions {
            mode: LoadMode::Replace,
            atomic: Atomicity::Table,
            ..LoadOptions::default()
        },
        ..LoadRequest::default()
    };
    let started = Instant::now();
    pgshift::load::load(&lctx, lreq)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(started.elapsed().as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_results(rows: i64, rounds: usize, raw: f64, ours: f64) {
    out!("{:<44} {:>8} {:>12}", "path", "wall s", "rows/s");
    out!(
        "{:<44} {raw:>8.2} {:>12.0}",
        "plain binary COPY FROM STDIN",
        rows as f64 / raw
    );
    out!(
        "{:<44} {ours:>8.2} {:>12.0}",
        "pgshift load (Parquet → staging → swap)",
        rows as f64 / ours
    );
    out!(
        "ratio: pgshift load takes {:.2}x the plain COPY's wall time (medians of {rounds} rounds)",
        ours / raw
    );
}
