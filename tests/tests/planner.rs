//! The planner against real tables: every row in exactly one range, balanced parts for every key shape, the plan on
//! the stage, and bad input named.

use std::sync::Arc;

use anyhow::Result;
use pgshift::contract::model::{Bounds, ExtractTask};
use pgshift::contract::plan::{Plan, PlanRequest, PlanSettings, Strategy, TableOverride};
use pgshift::plan::{count_rows, PlanContext, PlanError};
use pgshift::source::PgConnector;
use pgshift::UrlStages;
use pgshift_tests::{connect, stage_dir};

use super::{ctx, db};

fn request(tables: &[&str], parts: u32) -> PlanRequest {
    PlanRequest {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        settings: PlanSettings {
            parts: Some(parts),
            ..PlanSettings::default()
        },
        stage: format!("file://{}", stage_dir("plan").display()),
        ..PlanRequest::default()
    }
}

async fn plan(url: &str, req: PlanRequest) -> Result<Plan, PlanError> {
    let ctx = PlanContext {
        source: Arc::new(PgConnector::new(url)?),
        stages: Arc::new(UrlStages::default()),
    };
    pgshift::plan::handle(&ctx, req).await.map(|(p, _)| p)
}

/// Every row is in exactly one range: the counts add up to the table, and no row is outside all ranges.
async fn assert_cover_exactly_once(url: &str, plan: &Plan, table: &str) -> Result<Vec<u64>> {
    let client = connect(url).await?;
    let tasks: Vec<&ExtractTask> = plan.tasks.iter().filter(|t| t.table.to_string() == table).collect();
    let mut counts = Vec::new();
    for t in &tasks {
        counts.push(count_rows(&client, t).await?);
    }
    let total: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    assert_eq!(
        counts.iter().sum::<u64>(),
        total as u64,
        "{table}: the ranges' rows add up to the table"
    );
    let preds: Vec<String> = tasks
        .iter()
        .filter_map(|t| {
            pgshift::contract::sql::predicate(&t.key, &t.bounds)
                .ok()
                .flatten()
                .map(|p| format!("({p})"))
        })
        .collect();
    if preds.len() == tasks.len() {
        let q = format!("SELECT count(*) FROM {table} WHERE NOT ({})", preds.join(" OR "));
        let outside: i64 = client.query_one(&q, &[]).await?.get(0);
        assert_eq!(outside, 0, "{table}: no row outside every range");
    }
    Ok(counts)
}

fn skew(counts: &[u64]) -> f64 {
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    *counts.iter().max().unwrap_or(&0) as f64 / mean
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_is_in_exactly_one_range_for_random_keys() -> Result<()> {
    // Random key distributions, deterministic per seed: uniform, a narrow dense band plus a sparse tail, clustered
    // runs. Part counts vary with the seed.
    let url = db("cover", "").await?;
    let client = connect(&url).await?;
    for seed in 1..=6i64 {
        let table = format!("k{seed}");
        let expr = match seed % 3 {
            0 => "hashint8extended(g, $S)",
            1 => "CASE WHEN g % 10 < 9 THEN g ELSE abs(hashint8extended(g, $S)) % 1000000000000000 END",
            _ => "(g / 50) * 1000000 + g % 50 + abs(hashint8extended(g / 50, $S)) % 1000",
        }
        .replace("$S", &seed.to_string());
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id int8 PRIMARY KEY, v int4);
                 INSERT INTO {table} SELECT DISTINCT ON (k) k, 0 FROM (SELECT {expr} AS k FROM generate_series(1, 20000) g) s;
                 ANALYZE {table};"
            ))
            .await?;
        let parts = 2 + (seed as u32 * 7) % 15;
        let mut req = request(&[&table], parts);
        req.settings.samples_per_part = 40; // a real sample, not the whole table
        let p = plan(&url, req).await?;
        assert!(matches!(
            p.tables[0].strategy,
            Strategy::KeyQuantiles { .. } | Strategy::KeyPageProbes { .. }
        ));
        assert_cover_exactly_once(&url, &p, &format!("public.{table}")).await?;
        // Rows added after planning, below and above every boundary, still land in exactly one range.
        client
            .batch_execute(&format!(
                "INSERT INTO {table} VALUES (-9223372036854775808, 1), (9223372036854775807, 1) ON CONFLICT DO NOTHING"
            ))
            .await?;
        assert_cover_exactly_once(&url, &p, &format!("public.{table}")).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_balanced_for_every_key_shape() -> Result<()> {
    let url = db(
        "shapes",
        "CREATE TABLE dense (id int8 PRIMARY KEY, pad text);
         INSERT INTO dense SELECT g, repeat('x', 40) FROM generate_series(1, 100000) g;
         CREATE TABLE sparse (id int8 PRIMARY KEY, pad text);
         INSERT INTO sparse SELECT DISTINCT ON (k) k, repeat('x', 40) FROM (SELECT CASE WHEN g % 10 < 9 THEN 1000000 + g
              ELSE abs(hashint8extended(g, 1)) % 1000000000000000 END AS k FROM generate_series(1, 100000) g) s;
         CREATE TABLE uuids (id uuid PRIMARY KEY, pad text);
         INSERT INTO uuids SELECT md5('u' || g)::uuid, repeat('x', 40) FROM generate_series(1, 100000) g;
         CREATE TABLE texts (id text PRIMARY KEY, pad text);
         INSERT INTO texts SELECT 'customer/eu-west/2024/account-' || lpad(g::text, 9, '0'), 'x' FROM generate_series(1, 100000) g;
         CREATE TABLE comp (a int8, b int2, pad text, PRIMARY KEY (a, b));
         INSERT INTO comp SELECT g / 4, (g % 4)::int2, repeat('x', 40) FROM generate_series(1, 100000) g;
         CREATE TABLE heap (v int8, pad text);
         INSERT INTO heap SELECT g, repeat('x', 40) FROM generate_series(1, 100000) g;
         ANALYZE;",
    )
    .await?;
    // Default sampling, then small samples (deterministic: TABLESAMPLE ... REPEATABLE) with a looser bound.
    // Physically ordered keys take page probes; the bench measures both at scale.
    for (samples_per_part, bound) in [(2000, 1.10), (300, 1.25)] {
        for (table, want) in [
            ("dense", "key"),
            ("sparse", "key"),
            ("uuids", "key"),
            ("texts", "key"),
            ("comp", "key"),
            ("heap", "ctid"),
        ] {
            let mut req = request(&[table], 8);
            req.settings.samples_per_part = samples_per_part;
            // Nothing writes to these tables while they are read: the keyless one may be split by ctid.
            req.settings.static_source = true;
            let p = plan(&url, req).await?;
            match (&p.tables[0].strategy, want) {
                (Strategy::KeyQuantiles { .. } | Strategy::KeyPageProbes { .. }, "key") => {}
                (Strategy::CtidPages { .. }, "ctid") => {}
                (s, _) => panic!("{table}: unexpected strategy {s:?}"),
            }
            let counts = assert_cover_exactly_once(&url, &p, &format!("public.{table}")).await?;
            assert_eq!(counts.len(), 8, "{table}");
            let sk = skew(&counts);
            assert!(
                sk <= bound,
                "{table} ({samples_per_part} samples/part): max/mean {sk:.3} over {counts:?}"
            );
            assert!(counts.iter().all(|c| *c > 0), "{table}: no empty part: {counts:?}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_on_the_stage_extracts_every_row_once() -> Result<()> {
    let url = db(
        "planrun",
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text);
         INSERT INTO sales.orders SELECT g, g / 100.0, CASE WHEN g % 3 = 0 THEN 'n' || g END FROM generate_series(1, 30000) g;
         CREATE TABLE sales.customers (id uuid PRIMARY KEY, name text NOT NULL);
         INSERT INTO sales.customers SELECT md5('c' || g)::uuid, 'c' || g FROM generate_series(1, 5000) g;
         CREATE TABLE sales.empty (id int4 PRIMARY KEY);
         CREATE TABLE sales.events (at timestamptz NOT NULL, kind text) PARTITION BY RANGE (at);
         CREATE TABLE sales.events_2024 PARTITION OF sales.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE TABLE sales.events_2025 PARTITION OF sales.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         INSERT INTO sales.events SELECT TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 hour', 'k' FROM generate_series(0, 9000) g;
         ANALYZE;",
    )
    .await?;
    let mut req = request(&["sales.*"], 4);
    req.exclude = vec!["sales.customers".into()];
    let ctx_plan = PlanContext {
        source: Arc::new(PgConnector::new(&url)?),
        stages: Arc::new(UrlStages::default()),
    };
    let (p, summary) = pgshift::plan::handle(&ctx_plan, req).await?;
    let names: Vec<String> = p.tables.iter().map(|t| t.table.to_string()).collect();
    assert_eq!(
        names,
        ["sales.empty", "sales.events", "sales.orders"],
        "leaves and excluded tables are not planned"
    );
    let empty = &p.tables[0];
    assert_eq!(
        (empty.parts.len(), &empty.strategy),
        (1, &Strategy::Single),
        "an empty table is one part"
    );
    assert!(
        p.tables[1].notes.iter().any(|n| n.contains("partitioned")),
        "the plan says how it planned a parent"
    );

    // The task list on the stage is what the Map state reads.
    let tasks_path = summary.tasks_url.strip_prefix("file://").expect("file url");
    let tasks: Vec<ExtractTask> = serde_json::from_slice(&std::fs::read(tasks_path)?)?;
    assert_eq!(tasks, p.tasks);
    assert!(
        serde_json::to_vec(&summary)?.len() < 1024,
        "the state payload stays small"
    );

    let client = connect(&url).await?;
    for table in ["sales.orders", "sales.events"] {
        let mut extracted = 0;
        for t in tasks.iter().filter(|t| t.table.to_string() == table) {
            extracted += pgshift::extract(&ctx(&url), t.clone()).await?.rows;
        }
        let total: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        assert_eq!(extracted, total as u64, "{table}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plan_input_is_named() -> Result<()> {
    let url = db(
        "badplan",
        "CREATE TABLE n (id int8, v text);
         INSERT INTO n VALUES (1, 'a'), (NULL, 'b');
         CREATE TABLE f (id float8 PRIMARY KEY);",
    )
    .await?;
    let e = plan(&url, request(&["nosuch.*"], 2)).await.expect_err("no match");
    assert!(
        matches!(e, PlanError::NoMatch { .. }) && e.to_string().contains("nosuch.*"),
        "{e}"
    );
    let e = plan(&url, request(&["public.missing"], 2))
        .await
        .expect_err("not found");
    assert!(
        e.to_string().contains("public.missing") && e.name() == "Pipeline.Fatal.NotFound",
        "{e}"
    );
    assert!(
        plan(&url, request(&["pg_catalog.*"], 2)).await.is_err(),
        "system schemas are never matched"
    );

    let mut req = request(&["n"], 2);
    req.overrides.insert(
        "public.n".into(),
        TableOverride {
            key: Some(vec!["id".into()]),
            ..Default::default()
        },
    );
    let e = plan(&url, req).await.expect_err("nulls in the key");
    assert!(
        matches!(e, PlanError::NullKey { .. }) && e.to_string().contains("\"id\""),
        "{e}"
    );

    let mut req = request(&["f"], 2);
    req.settings.parts = Some(2);
    let e = plan(&url, req).await.expect_err("float key");
    assert_eq!(e.name(), "Pipeline.Fatal.UnsupportedType", "{e}");

    // No SELECT privilege: named before anything is sampled.
    connect(&url)
        .await?
        .batch_execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'planner_nopriv') THEN
                CREATE ROLE planner_nopriv LOGIN; END IF; END $$;",
        )
        .await?;
    let nopriv = url.replace("postgres://postgres@", "postgres://planner_nopriv@");
    let e = plan(&nopriv, request(&["f"], 2)).await.expect_err("no privilege");
    assert!(
        e.name() == "Pipeline.Fatal.PermissionDenied" && e.to_string().contains("public.f"),
        "{e}"
    );

    // Past the maxima: clamped, and the plan says so.
    let client = connect(&url).await?;
    client
        .batch_execute(
            "CREATE TABLE big (id int8 PRIMARY KEY); INSERT INTO big SELECT generate_series(1, 5000); ANALYZE big;",
        )
        .await?;
    let mut req = request(&["big"], 1);
    req.settings = PlanSettings {
        target_part_bytes: 1024,
        max_parts_per_table: 5,
        ..PlanSettings::default()
    };
    let p = plan(&url, req).await?;
    assert_eq!(p.tasks.len(), 5);
    assert!(
        p.tables[0].notes.iter().any(|n| n.contains("clamped")),
        "{:?}",
        p.tables[0].notes
    );
    assert!(
        matches!(p.tasks[0].bounds, Bounds::Key { lower: None, .. }),
        "the first range is open below"
    );
    assert!(
        matches!(p.tasks[4].bounds, Bounds::Key { upper: None, .. }),
        "the last range is open above"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_low_cardinality_columns_are_dictionary_encoded() -> Result<()> {
    let url = db(
        "dictionary",
        "CREATE TABLE d (id int8 PRIMARY KEY, status text NOT NULL, note text NOT NULL);
         INSERT INTO d SELECT g, (ARRAY['new', 'paid', 'shipped'])[g % 3 + 1], md5(g::text) FROM generate_series(1, 20000) g;
         ANALYZE d;",
    )
    .await?;
    let p = plan(&url, request(&["d"], 1)).await?;
    let task = p.tasks[0].clone();
    assert_eq!(task.writer.dictionary_columns, ["status"], "from pg_stats.n_distinct");
    let r = pgshift::extract(&ctx(&url), task).await?;
    let path = r.files[0].url.strip_prefix("file://").unwrap_or_default().to_string();
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(path)?)?;
    let meta = parquet::file::reader::FileReader::metadata(&reader);
    let dictionary: Vec<bool> = meta
        .row_group(0)
        .columns()
        .iter()
        .map(|c| c.dictionary_page_offset().is_some())
        .collect();
    assert_eq!(dictionary, [false, true, false], "id, status, note");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_settings_no_extractor_could_use_are_refused_at_plan_time_by_flag() -> Result<()> {
    use pgshift::contract::model::{Compression, WriterSettings};
    let url = db(
        "badwriter",
        "CREATE TABLE w (id int8 PRIMARY KEY); INSERT INTO w VALUES (1);",
    )
    .await?;
    let mib = 1024 * 1024;
    let cases = [
        (Compression::Zstd { level: 100 }, 16 * mib, 256 * mib, "--zstd-level"),
        (Compression::Zstd { level: 0 }, 16 * mib, 256 * mib, "--zstd-level"),
        (Compression::Snappy, 0, 256 * mib, "--row-group-mib"),
        (Compression::Snappy, 64 * mib, 32 * mib, "--file-mib"),
    ];
    for (compression, row_group_bytes, target_file_bytes, flag) in cases {
        let mut req = request(&["public.w"], 1);
        req.writer = WriterSettings {
            compression,
            row_group_bytes,
            target_file_bytes,
            ..WriterSettings::default()
        };
        let e = plan(&url, req).await.expect_err("refused");
        assert_eq!(e.name(), "Pipeline.Fatal.InvalidInput", "{e}");
        assert!(e.to_string().contains(flag), "{e} should name {flag}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_matched_by_a_wildcard_are_left_out_by_name_unless_included() -> Result<()> {
    let url = db(
        "views",
        "CREATE SCHEMA s; CREATE TABLE s.t (id int8 PRIMARY KEY); INSERT INTO s.t SELECT generate_series(1, 10);
         CREATE VIEW s.v AS SELECT id FROM s.t WHERE id > 5; CREATE MATERIALIZED VIEW s.m AS SELECT id FROM s.t;
         ANALYZE;",
    )
    .await?;
    let names = |p: &Plan| p.tables.iter().map(|t| t.table.to_string()).collect::<Vec<_>>();
    let p = plan(&url, request(&["s.*"], 1)).await?;
    assert_eq!(names(&p), ["s.t"]);
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("views matched by a pattern and left out: s.m, s.v")),
        "{:?}",
        p.notes
    );
    // Named exactly, a view is planned, and the plan says what it is.
    let p = plan(&url, request(&["s.*", "s.v"], 1)).await?;
    assert_eq!(names(&p), ["s.t", "s.v"]);
    assert!(p.notes.iter().any(|n| n.contains("s.m")) && p.notes.iter().any(|n| n.contains("s.v is a view")));
    let mut req = request(&["s.*"], 1);
    req.settings.include_views = true;
    let p = plan(&url, req).await?;
    assert_eq!(names(&p), ["s.m", "s.t", "s.v"]);
    assert!(
        p.notes.iter().any(|n| n.contains("s.m is a materialized view")),
        "{:?}",
        p.notes
    );
    // A table without columns is refused at plan time, by name, with the flag that leaves it out.
    connect(&url).await?.batch_execute("CREATE TABLE s.empty ()").await?;
    let e = plan(&url, request(&["s.*"], 1)).await.expect_err("no columns");
    assert!(
        e.to_string().contains("s.empty has no columns") && e.to_string().contains("--exclude s.empty"),
        "{e}"
    );
    Ok(())
}

/// Issue 27 item 6: past the planning budget (here 0 s), a static source's keyed tables are split by heap pages,
/// reading no key (a restored instance's cold pages cost a first read from S3), and the plan says so; every row is
/// still in exactly one range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_planning_budget_a_static_source_is_split_by_pages_and_the_plan_says_so() -> Result<()> {
    let url = db(
        "budget",
        "CREATE TABLE public.b (id int8 PRIMARY KEY, pad text);
         INSERT INTO public.b SELECT g, repeat('x', 200) FROM generate_series(1, 40000) g; ANALYZE;",
    )
    .await?;
    let mut req = request(&["public.b"], 4);
    req.settings.static_source = true;
    req.settings.planning_budget_seconds = 0;
    let spent = plan(&url, req.clone()).await?;
    let t = &spent.tables[0];
    assert_eq!(t.strategy.kind(), "ctid_pages", "{:?}", t.strategy);
    assert!(t.reason.contains("planning budget"), "{}", t.reason);
    assert!(
        spent
            .notes
            .iter()
            .any(|n| n.contains("planning budget (0 s) was spent: 1 of 1")),
        "{:?}",
        spent.notes
    );
    let counts = assert_cover_exactly_once(&url, &spent, "public.b").await?;
    assert_eq!(counts.len(), 4);
    // Within the budget, the key is read as always.
    req.settings.planning_budget_seconds = 120;
    req.run_id = Some("within".into());
    let within = plan(&url, req).await?;
    assert_ne!(within.tables[0].strategy.kind(), "ctid_pages");
    assert!(!within.notes.iter().any(|n| n.contains("planning budget")));
    Ok(())
}
