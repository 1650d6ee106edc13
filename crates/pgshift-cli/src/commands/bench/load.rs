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
    let have: Option<i64> = src
        .query_one("SELECT count(*) FROM public.orders_load_bench", &[])
        .await
        .ok()
        .map(|r| r.get(0));
    if have != Some(args.rows) {
        eprintln!(
            "building public.orders_load_bench ({} rows of public.orders) ...",
            args.rows
        );
        src.batch_execute(&format!(
            "DROP TABLE IF EXISTS public.orders_load_bench;
             CREATE TABLE public.orders_load_bench AS SELECT * FROM public.orders WHERE id <= {};
             ALTER TABLE public.orders_load_bench ADD PRIMARY KEY (id);",
            args.rows
        ))
        .await
        .context("building the bench table (run `pgshift bench extract` first to create public.orders)")?;
        src.batch_execute("VACUUM ANALYZE public.orders_load_bench").await?;
    }
    // Plan and extract once (not timed): the parts every load round reads.
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
        source: source.clone(),
        stages: stages.clone(),
    };
    let mut parquet = 0u64;
    for t in &plan.tasks {
        let r = pgshift::extract(&ectx, t.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        parquet += r.files.iter().map(|f| f.bytes).sum::<u64>();
    }
    // The raw stream, read once into memory (not timed).
    let copy = src
        .copy_out("COPY public.orders_load_bench TO STDOUT (FORMAT binary)")
        .await?;
    pin_mut!(copy);
    // Coalesced into 1 MiB messages, as the loader sends them (row-sized messages would measure the client instead).
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    while let Some(c) = copy.next().await {
        buf.extend_from_slice(&c?);
        if buf.len() >= 1 << 20 {
            chunks.push(buf.split().freeze());
        }
    }
    chunks.push(buf.split().freeze());
    let raw_bytes: usize = chunks.iter().map(|c| c.len()).sum();
    let ddl = plan.tables[0]
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
        .join(", ");
    let wh = PgConnector::new(&args.warehouse)?.connect().await?;
    println!(
        "pgshift bench load: {} rows ({:.1} MB binary COPY, {:.1} MB Parquet in {} parts) into a PostgreSQL warehouse\n",
        args.rows,
        raw_bytes as f64 / 1e6,
        parquet as f64 / 1e6,
        plan.tasks.len(),
    );
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        wh.batch_execute(&format!(
            "DROP TABLE IF EXISTS public.orders_raw_copy; CREATE TABLE public.orders_raw_copy ({ddl}, PRIMARY KEY (id))"
        ))
        .await?;
        let started = Instant::now();
        let sink = wh
            .copy_in::<_, Bytes>("COPY public.orders_raw_copy FROM STDIN (FORMAT binary)")
            .await?;
        pin_mut!(sink);
        for c in &chunks {
            sink.send(c.clone()).await?;
        }
        sink.finish().await?;
        raw.push(started.elapsed().as_secs_f64());

        wh.batch_execute("DROP TABLE IF EXISTS public.orders_load_bench; DROP SCHEMA IF EXISTS pgshift CASCADE")
            .await?;
        let lctx = LoadContext {
            stages: stages.clone(),
            warehouse: Arc::new(PgWarehouse::new(&args.warehouse)?),
        };
        let lreq = LoadRequest {
            plan_url: summary.plan_url.clone(),
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
        ours.push(started.elapsed().as_secs_f64());
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, o) = (med(&mut raw), med(&mut ours));
    println!("{:<44} {:>8} {:>12}", "path", "wall s", "rows/s");
    println!(
        "{:<44} {r:>8.2} {:>12.0}",
        "plain binary COPY FROM STDIN",
        args.rows as f64 / r
    );
    println!(
        "{:<44} {o:>8.2} {:>12.0}",
        "pgshift load (Parquet → staging → swap)",
        args.rows as f64 / o
    );
    println!(
        "ratio: pgshift load takes {:.2}x the plain COPY's wall time (medians of {} rounds)",
        o / r,
        args.rounds
    );
    Ok(())
}
