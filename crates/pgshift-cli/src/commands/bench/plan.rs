//! `pgshift bench plan`: balance of the planner's ranges on every key shape, measured by counting the rows of each
//! range with the extractor's own predicate, next to what an even stride between min and max (Spark's JDBC
//! partitioning) gives on the same table; and planning time for a large table and for many small ones.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pgshift::contract::plan::{PlanRequest, PlanSettings, Strategy};
use pgshift::plan::{count_rows, PlanContext};
use pgshift::source::{PgConnector, SourceConnector};
use pgshift::UrlStages;

#[derive(Args)]
pub(crate) struct BenchPlanArgs {
    #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true)]
    source: String,
    /// Rows per key-shape table.
    #[arg(long, default_value_t = 3_000_000)]
    rows: u64,
    /// Parts per table.
    #[arg(long, default_value_t = 16)]
    parts: u32,
    /// Small tables for the many-tables planning time.
    #[arg(long, default_value_t = 500)]
    many: u32,
    /// Reuse the tables of an earlier run.
    #[arg(long)]
    reuse: bool,
}

/// Shape name, key-generating SQL (from g = 1..rows), and the even-stride expression (a number derived from the key
/// the way a JDBC partitioner would stride it), or None when Spark cannot stride the key at all.
const SHAPES: &[(&str, &str, Option<&str>)] = &[
    ("dense_bigint", "CREATE TABLE {t} (id int8 PRIMARY KEY, pad text); INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series(1, {n}) g", Some("id")),
    ("sparse_bigint", "CREATE TABLE {t} (id int8 PRIMARY KEY, pad text); INSERT INTO {t} SELECT DISTINCT ON (k) k, md5(k::text) FROM (SELECT CASE WHEN g % 10 < 9 THEN 1000000 + g ELSE abs(hashint8extended(g, 1)) % 1000000000000000 END AS k FROM generate_series(1, {n}) g) s", Some("id")),
    ("uuid_v4", "CREATE TABLE {t} (id uuid PRIMARY KEY, pad text); INSERT INTO {t} SELECT md5('u' || g)::uuid, md5(g::text) FROM generate_series(1, {n}) g", Some("('x' || substr(replace(id::text, '-', ''), 1, 15))::bit(60)::int8")),
    ("uuid_v7", "CREATE TABLE {t} (id uuid PRIMARY KEY, pad text); INSERT INTO {t} SELECT (lpad(to_hex(1700000000000 + g * 37), 12, '0') || '7' || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))::uuid, md5(g::text) FROM generate_series(1, {n}) g", Some("('x' || substr(replace(id::text, '-', ''), 1, 15))::bit(60)::int8")),
    ("text_prefix", "CREATE TABLE {t} (id text PRIMARY KEY, pad text); INSERT INTO {t} SELECT 'tenant-0042/region-eu-west-1/customer/' || md5(g::text), md5(g::text) FROM generate_series(1, {n}) g", None),
    ("composite", "CREATE TABLE {t} (a int8, b int2, pad text, PRIMARY KEY (a, b)); INSERT INTO {t} SELECT abs(hashint8extended(g / 8, 3)) % 100000000, (g % 8)::int2, md5(g::text) FROM generate_series(1, {n}) g ON CONFLICT DO NOTHING", Some("a")),
    ("heap_no_key", "CREATE TABLE {t} (v int8, pad text); INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series(1, {n}) g", None),
];

pub(crate) async fn run(args: BenchPlanArgs) -> Result<()> {
    let connector = Arc::new(PgConnector::new(&args.source)?);
    let client = connector.connect().await?;
    build_shapes(&client, &args).await?;
    let b = Bench {
        ctx: PlanContext {
            source: connector.clone(),
            stages: Arc::new(UrlStages::default()),
        },
        stage: format!("file://{}", std::env::temp_dir().join("pgshift-bench-plan").display()),
        client,
        args,
    };
    out!(
        "pgshift bench plan: {} rows per table, {} parts; rows per part counted with the extractor's predicate\n",
        b.args.rows,
        b.args.parts
    );
    out!(
        "{:<14} {:<14} {:>8} {:>9} {:>10} {:>10} | {:>13} {:>13}",
        "shape",
        "strategy",
        "plan s",
        "max/mean",
        "emptiest",
        "sampled",
        "stride max/mn",
        "stride empty"
    );
    for (name, _, stride) in SHAPES {
        shape_line(&b, name, *stride).await?;
    }
    planning_times(&b).await
}

/// What every line of the bench shares.
struct Bench {
    ctx: PlanContext,
    stage: String,
    client: tokio_postgres::Client,
    args: BenchPlanArgs,
}

/// The shapes' tables, built unless `--reuse` finds them.
async fn build_shapes(client: &tokio_postgres::Client, args: &BenchPlanArgs) -> Result<()> {
    client
        .batch_execute("CREATE SCHEMA IF NOT EXISTS pgshift_bench")
        .await?;
    for (name, ddl, _) in SHAPES {
        let t = format!("pgshift_bench.{name}");
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t])
            .await?
            .get(0);
        if !args.reuse || !exists {
            eprintln!("building {t} ({} rows) ...", args.rows);
            client.batch_execute(&format!("DROP TABLE IF EXISTS {t}")).await?;
            client
                .batch_execute(&ddl.replace("{t}", &t).replace("{n}", &args.rows.to_string()))
                .await?;
            client.batch_execute(&format!("VACUUM ANALYZE {t}")).await?;
        }
    }
    Ok(())
}

/// One shape: plans it, counts the rows of every part, and prints the skew beside an even stride's.
async fn shape_line(b: &Bench, name: &str, stride: Option<&str>) -> Result<()> {
    let table = format!("pgshift_bench.{name}");
    let req = PlanRequest {
        tables: vec![table.clone()],
        settings: PlanSettings {
            parts: Some(b.args.parts),
            // The bench tables are not written to while it runs: the keyless one is split by ctid too.
            static_source: true,
            ..PlanSettings::default()
        },
        stage: b.stage.clone(),
        ..PlanRequest::default()
    };
    let started = Instant::now();
    let (plan, _) = pgshift::plan::handle(&b.ctx, req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let mut counts = Vec::new();
    for task in &plan.tasks {
        counts.push(count_rows(&b.client, task).await.map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let (strategy, sampled) = match &plan.tables[0].strategy {
        Strategy::KeyQuantiles {
            sampled_rows,
            sample_percent,
        } => ("key_quantiles", format!("{sample_percent:.1}% {sampled_rows}")),
        Strategy::KeyPageProbes { correlation, .. } => ("page_probes", format!("corr {correlation:.3}")),
        Strategy::CtidPages { pages } => ("ctid_pages", format!("{pages} pages")),
        Strategy::Single => ("single", String::new()),
        Strategy::Kept { run_id } => ("kept", run_id.clone()),
    };
    let (stride_skew, stride_min) = match stride {
        Some(expr) => {
            let c = stride_counts(&b.client, &table, expr, b.args.parts).await?;
            (
                format!("{:.2}", skew(&c)),
                c.iter().min().copied().unwrap_or(0).to_string(),
            )
        }
        None => ("n/a".into(), "n/a".into()),
    };
    out!(
        "{name:<14} {strategy:<14} {secs:>8.3} {:>9.3} {:>10} {sampled:>10} | {stride_skew:>13} {stride_min:>13}",
        skew(&counts),
        counts.iter().min().copied().unwrap_or(0),
    );
    Ok(())
}

/// Planning time: the 10M-row orders table of the extraction bench, when present, and many small tables.
async fn planning_times(b: &Bench) -> Result<()> {
    let orders: bool = b
        .client
        .query_one("SELECT to_regclass('public.orders') IS NOT NULL", &[])
        .await?
        .get(0);
    if orders {
        let (plan, secs) = timed_plan(&b.ctx, "public.orders", &b.stage).await?;
        out!(
            "\nplanning public.orders ({} rows, {:.1} GB, {} parts by default settings): {secs:.3} s",
            plan.tables[0].estimates.rows,
            plan.tables[0].estimates.bytes as f64 / 1e9,
            plan.tasks.len(),
        );
    }
    build_many(&b.client, b.args.many).await?;
    let (plan, secs) = timed_plan(&b.ctx, "pgshift_bench_many.*", &b.stage).await?;
    out!(
        "planning {} small tables in one run: {secs:.3} s ({} tasks)",
        plan.tables.len(),
        plan.tasks.len()
    );
    Ok(())
}

/// `many` tables of ten rows in schema pgshift_bench_many, unless they are there.
async fn build_many(client: &tokio_postgres::Client, many: u32) -> Result<()> {
    let have: i64 = client
        .query_one("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgshift_bench_many' AND c.relkind = 'r'", &[])
        .await?
        .get(0);
    if have == many as i64 {
        return Ok(());
    }
    client
        .batch_execute("DROP SCHEMA IF EXISTS pgshift_bench_many CASCADE; CREATE SCHEMA pgshift_bench_many")
        .await?;
    let mut ddl = String::new();
    for i in 0..many {
        ddl.push_str(&format!("CREATE TABLE pgshift_bench_many.t{i} (id int8 PRIMARY KEY, v text, at timestamptz); INSERT INTO pgshift_bench_many.t{i} SELECT g, 'v', now() FROM generate_series(1, 10) g;"));
    }
    client.batch_execute(&ddl).await?;
    Ok(())
}

/// Plans one pattern with the default settings; returns the plan and the seconds it took.
async fn timed_plan(ctx: &PlanContext, pattern: &str, stage: &str) -> Result<(pgshift::contract::plan::Plan, f64)> {
    let req = PlanRequest {
        tables: vec![pattern.into()],
        stage: stage.into(),
        ..PlanRequest::default()
    };
    let started = Instant::now();
    let (plan, _) = pgshift::plan::handle(ctx, req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((plan, started.elapsed().as_secs_f64()))
}

fn skew(c: &[u64]) -> f64 {
    let mean = c.iter().sum::<u64>() as f64 / c.len().max(1) as f64;
    c.iter().copied().max().unwrap_or(0) as f64 / mean.max(1.0)
}

/// Rows per part of an even stride between min and max of `expr` (one scan).
async fn stride_counts(client: &tokio_postgres::Client, table: &str, expr: &str, parts: u32) -> Result<Vec<u64>> {
    let q = format!(
        "WITH b AS (SELECT min({expr})::numeric AS lo, max({expr})::numeric + 1 AS hi FROM {table})
         SELECT width_bucket(({expr})::numeric, b.lo, b.hi, {parts}) AS k, count(*) FROM {table}, b GROUP BY 1"
    );
    let mut c = vec![0u64; parts as usize];
    for r in client.query(&q, &[]).await? {
        let k: i32 = r.get(0);
        let n: i64 = r.get(1);
        if (1..=parts as i32).contains(&k) {
            c[k as usize - 1] = n as u64;
        }
    }
    Ok(c)
}
