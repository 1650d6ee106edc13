//! The loader into the PostgreSQL warehouse: source → plan → extract → load, target equal to source in every mode,
//! failures leaving the target as it was, reruns adding nothing.

use std::sync::Arc;

use anyhow::Result;
use pgshift::contract::load::{Atomicity, LoadMode, LoadOptions, LoadRequest};
use pgshift::contract::model::ExtractTask;
use pgshift::contract::model::TableRef;
use pgshift::contract::plan::{Plan, PlanRequest, PlanSettings};
use pgshift::contract::types::Cast;
use pgshift::load::{LoadContext, LoadError};
use pgshift::plan::PlanContext;
use pgshift::source::PgConnector;
use pgshift::stage::s3::S3Options;
use pgshift::stage::Stage;
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::{Batch, Step, Until, Warehouse};
use pgshift::UrlStages;
use pgshift_tests::fingerprint::{fingerprint_of, Canon};
use pgshift_tests::{cluster, connect, s3_server, stage_dir};

use super::hooked::{is_sql, Edit, Hooked};
use super::{db, ALL_TYPES};

pub(crate) const SALES: &str = "
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text, placed timestamptz NOT NULL);
INSERT INTO sales.orders SELECT g, (g % 100000) / 100.0, CASE WHEN g % 3 = 0 THEN 'n' || g END,
    TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 minute' FROM generate_series(1, 20000) g;
CREATE TABLE sales.items (order_id int8, line int2, qty int4 NOT NULL, sku uuid NOT NULL, PRIMARY KEY (order_id, line));
INSERT INTO sales.items SELECT g / 3, (g % 3)::int2, g % 7, md5('s' || g)::uuid FROM generate_series(3, 30002) g;
ANALYZE;";

/// What `table` holds in the database at `url`: its row count and a hash of every column's values in key order,
/// computed by the tests' own SQL (`pgshift_tests::fingerprint`). On the source side (`source`), the columns the plan
/// casts are rendered as the cast's result by the test's expression, not the extractor's.
pub(crate) async fn fingerprint(url: &str, plan: &Plan, table: &str, source: bool) -> Result<Vec<String>> {
    let t = plan
        .tables
        .iter()
        .find(|t| t.table.to_string() == table)
        .expect("planned table");
    let names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
    let canon: Vec<(String, Canon)> = match source {
        false => Vec::new(),
        true => t
            .columns
            .iter()
            .filter_map(|c| Some((c.name.clone(), canon_of(c)?)))
            .collect(),
    };
    fingerprint_of(url, (&t.table.schema, &t.table.name), &names, &t.key, &canon).await
}

/// How the test renders a source column the extractor casts, or whose values a policy changes.
fn canon_of(c: &pgshift::contract::model::ColumnSpec) -> Option<Canon> {
    if c.mapping.nulls_values() {
        return Some(Canon::FiniteOrNull);
    }
    Some(match c.cast? {
        Cast::Text => Canon::Output,
        Cast::Json => Canon::Json,
        Cast::Numeric => Canon::Numeric,
    })
}

pub(crate) async fn plan_and_extract(
    source: &str,
    tables: &[&str],
    stage: &str,
    stages: Arc<UrlStages>,
) -> Result<Plan> {
    let req = PlanRequest {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        settings: PlanSettings {
            parts: Some(3),
            ..PlanSettings::default()
        },
        stage: stage.to_string(),
        ..PlanRequest::default()
    };
    plan_and_extract_request(source, req, stages).await
}

/// Plans `req` and runs every extraction task.
pub(crate) async fn plan_and_extract_request(source: &str, req: PlanRequest, stages: Arc<UrlStages>) -> Result<Plan> {
    let pctx = PlanContext {
        source: Arc::new(PgConnector::new(source)?),
        stages: stages.clone(),
    };
    let (plan, _) = pgshift::plan::handle(&pctx, req).await?;
    let ectx = pgshift::ExtractContext {
        source: Arc::new(PgConnector::new(source)?),
        stages,
    };
    for t in &plan.tasks {
        pgshift::extract(&ectx, t.clone()).await?;
    }
    Ok(plan)
}

fn stage_key<'a>(stage: &str, url: &'a str) -> &'a str {
    url.strip_prefix(stage).and_then(|k| k.strip_prefix('/')).unwrap_or(url)
}

pub(crate) fn plan_url(plan: &Plan) -> String {
    format!("{}/{}/plan.json", plan.stage, plan.run_id)
}

pub(crate) async fn load(
    wh: Arc<dyn Warehouse>,
    plan: &Plan,
    mode: LoadMode,
    atomic: Atomicity,
) -> Result<pgshift::contract::load::LoadResult, LoadError> {
    let lctx = LoadContext::new(Arc::new(UrlStages::default()), wh);
    let req = LoadRequest {
        plan_url: plan_url(plan),
        // Kept: these tests load one extracted plan several times, in several modes.
        options: LoadOptions {
            mode,
            atomic,
            keep_parts: true,
            ..LoadOptions::default()
        },
        ..LoadRequest::default()
    };
    pgshift::load::load(&lctx, req).await
}

/// A warehouse that makes the load transaction fail after its COPY, reconcile and swap statements ran: a real
/// rollback in Postgres.
fn fail_swap(url: &str) -> Result<Hooked> {
    let edit: Edit = Box::new(|steps| {
        if steps
            .iter()
            .any(|s| is_sql(s, "INSERT INTO \"pgshift\".\"load_log\"", ""))
        {
            steps.push(Step::Sql("SELECT 1 / 0".into()));
        }
    });
    Ok(Hooked::new(PgWarehouse::new(url)?, edit))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_leaves_the_target_equal_to_the_source() -> Result<()> {
    let source = db("loadsrc", &format!("{ALL_TYPES}{SALES}")).await?;
    let target = cluster().create_db("warehouse").await?;
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let stage = format!("file://{}", stage_dir("load").display());
    let tables = [r#""Odd ""Schema""".all_types"#, "sales.*"];
    let names = [r#"Odd "Schema".all_types"#, "sales.orders", "sales.items"];

    let plan = plan_and_extract(&source, &tables, &stage, Arc::new(UrlStages::default())).await?;
    let r = load(wh.clone(), &plan, LoadMode::Replace, Atomicity::Table).await?;
    assert!(r.tables.iter().all(|t| t.loaded));
    for t in names {
        assert_eq!(
            fingerprint(&target, &plan, t, false).await?,
            fingerprint(&source, &plan, t, true).await?,
            "{t}"
        );
    }

    // Append into an empty warehouse gives the source too.
    let empty = cluster().create_db("warehouse").await?;
    load(
        Arc::new(PgWarehouse::new(&empty)?),
        &plan,
        LoadMode::Append,
        Atomicity::Run,
    )
    .await?;
    for t in names {
        assert_eq!(
            fingerprint(&empty, &plan, t, false).await?,
            fingerprint(&source, &plan, t, true).await?,
            "{t}"
        );
    }

    // A rerun of the same run adds nothing, even in append mode.
    let again = load(wh.clone(), &plan, LoadMode::Append, Atomicity::Table).await?;
    assert!(again.tables.iter().all(|t| !t.loaded));
    assert_eq!(
        fingerprint(&target, &plan, "sales.orders", false).await?,
        fingerprint(&source, &plan, "sales.orders", true).await?
    );

    // Appending the same rows again: the target's primary key refuses them, and the target is unchanged.
    let run2 = plan_and_extract(&source, &["sales.orders"], &stage, Arc::new(UrlStages::default())).await?;
    let e = load(wh.clone(), &run2, LoadMode::Append, Atomicity::Table)
        .await
        .expect_err("duplicate keys");
    assert!(e.to_string().contains("duplicate key"), "{e}");
    assert_eq!(
        fingerprint(&target, &run2, "sales.orders", false).await?,
        fingerprint(&source, &run2, "sales.orders", true).await?
    );
    // Merge of the next run, after changes at the source, equals the source.
    let src = connect(&source).await?;
    src.batch_execute("UPDATE sales.orders SET note = 'changed' WHERE id % 10 = 0; INSERT INTO sales.orders VALUES (99999, 1.5, 'new', now());").await?;
    let run3 = plan_and_extract(&source, &["sales.orders"], &stage, Arc::new(UrlStages::default())).await?;
    load(wh.clone(), &run3, LoadMode::Merge, Atomicity::Table).await?;
    assert_eq!(
        fingerprint(&target, &run3, "sales.orders", false).await?,
        fingerprint(&source, &run3, "sales.orders", true).await?
    );
    // A merge by a key that is not unique in the run's rows (a key set in pgshift.toml) is refused by name, on
    // PostgreSQL as on Redshift, and changes nothing.
    let by_amount = PlanRequest {
        tables: vec!["sales.orders".into()],
        overrides: [(
            "sales.orders".to_string(),
            pgshift::contract::plan::TableOverride {
                // 1.50: the order with id 150, and the one inserted above.
                key: Some(vec!["amount".into()]),
                ..Default::default()
            },
        )]
        .into(),
        stage: stage.clone(),
        ..PlanRequest::default()
    };
    let run_by_amount = plan_and_extract_request(&source, by_amount, Arc::new(UrlStages::default())).await?;
    let e = load(wh.clone(), &run_by_amount, LoadMode::Merge, Atomicity::Table)
        .await
        .expect_err("amount 1.50 is in two rows");
    assert!(
        e.to_string().contains("a key is in the run's rows more than once"),
        "{e}"
    );
    assert_eq!(
        fingerprint(&target, &run3, "sales.orders", false).await?,
        fingerprint(&source, &run3, "sales.orders", true).await?
    );

    // A failure after the swap's statements ran, with every table in one transaction: nothing changes.
    src.batch_execute("DELETE FROM sales.orders WHERE id <= 100; DELETE FROM sales.items WHERE order_id <= 100;")
        .await?;
    let before: Vec<Vec<String>> = vec![
        fingerprint(&target, &run3, "sales.orders", false).await?,
        fingerprint(&target, &plan, "sales.items", false).await?,
    ];
    let run4 = plan_and_extract(&source, &["sales.*"], &stage, Arc::new(UrlStages::default())).await?;
    let failing: Arc<dyn Warehouse> = Arc::new(fail_swap(&target)?);
    let e = load(failing, &run4, LoadMode::Replace, Atomicity::Run)
        .await
        .expect_err("the swap fails");
    assert_eq!(e.name(), "Pipeline.Fatal.Warehouse", "{e}");
    let after = vec![
        fingerprint(&target, &run3, "sales.orders", false).await?,
        fingerprint(&target, &plan, "sales.items", false).await?,
    ];
    assert_eq!(after, before, "the target is exactly as it was");
    // The same run, retried without the fault, lands.
    load(wh.clone(), &run4, LoadMode::Replace, Atomicity::Run).await?;
    for t in ["sales.orders", "sales.items"] {
        assert_eq!(
            fingerprint(&target, &run4, t, false).await?,
            fingerprint(&source, &run4, t, true).await?,
            "{t}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_verified_before_anything_loads_and_s3_stages_load_too() -> Result<()> {
    let source = db("loadparts", SALES).await?;
    let target = cluster().create_db("warehouse").await?;
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);

    // From the S3-compatible server.
    let server = s3_server();
    let s3 = Arc::new(UrlStages::with_s3_client(server.client(), S3Options::default()));
    let plan = plan_and_extract(
        &source,
        &["sales.*"],
        &format!("s3://{}/stage", server.bucket("load")),
        s3.clone(),
    )
    .await?;
    let lctx = LoadContext::new(s3, wh.clone());
    pgshift::load::load(
        &lctx,
        LoadRequest {
            plan_url: plan_url(&plan),
            options: LoadOptions {
                keep_parts: true,
                ..LoadOptions::default()
            },
            ..LoadRequest::default()
        },
    )
    .await?;
    for t in ["sales.orders", "sales.items"] {
        assert_eq!(
            fingerprint(&target, &plan, t, false).await?,
            fingerprint(&source, &plan, t, true).await?,
            "{t}"
        );
    }

    // The manifest lists exactly the parts, mandatory, with their content lengths.
    let stage = pgshift::stage::s3::S3Stage::new(server.client(), &plan.stage, S3Options::default())?;
    let manifest: serde_json::Value = serde_json::from_slice(
        &stage
            .get(&format!("{}/sales/orders/manifest.json", plan.run_id))
            .await?,
    )?;
    let entries = manifest["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        entries.len(),
        plan.tasks
            .iter()
            .filter(|t| t.table.to_string() == "sales.orders")
            .count()
    );
    for e in entries {
        let url = e["url"].as_str().unwrap_or_default();
        assert_eq!(e["mandatory"], serde_json::json!(true));
        let size = stage.head(stage_key(&plan.stage, url)).await?;
        assert_eq!(size, e["meta"]["content_length"].as_u64(), "{url}");
    }

    // A part gone from the stage: named, and nothing loads.
    let dir = stage_dir("loadmissing");
    let plan = plan_and_extract(
        &source,
        &["sales.orders"],
        &format!("file://{}", dir.display()),
        Arc::new(UrlStages::default()),
    )
    .await?;
    let victim: &ExtractTask = &plan.tasks[1];
    let file = dir
        .join(&plan.run_id)
        .join("sales/orders")
        .join(format!("part-{:05}-000.parquet", victim.range_index));
    std::fs::remove_file(&file)?;
    connect(&target)
        .await?
        .batch_execute("DELETE FROM sales.orders WHERE id > 10000")
        .await?;
    let before = fingerprint(&target, &plan, "sales.orders", false).await?;
    let e = load(wh, &plan, LoadMode::Replace, Atomicity::Table)
        .await
        .expect_err("a part is missing");
    assert!(
        matches!(e, LoadError::PartsMissing(_)) && e.to_string().contains("part-00001-000.parquet"),
        "{e}"
    );
    assert_eq!(fingerprint(&target, &plan, "sales.orders", false).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_guard_fails_the_transaction_unless_the_count_matches() -> Result<()> {
    // The statement Redshift runs inside its load batch, run for real: the dialects agree on it.
    let url = db(
        "guard",
        "CREATE SCHEMA s; CREATE TABLE s.t (id int); INSERT INTO s.t SELECT generate_series(1, 7);",
    )
    .await?;
    let client = connect(&url).await?;
    let staging = TableRef::new("s", "t");
    client
        .batch_execute(&pgshift::warehouse::reconcile_sql(&staging, 7)?)
        .await?;
    let e = client
        .batch_execute(&pgshift::warehouse::reconcile_sql(&staging, 8)?)
        .await
        .expect_err("a short staging table fails the guard");
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO));
    // Empty staging, expected 0: passes (an empty range loads nothing, and that is right).
    client.batch_execute("TRUNCATE s.t").await?;
    client
        .batch_execute(&pgshift::warehouse::reconcile_sql(&staging, 0)?)
        .await?;
    Ok(())
}

/// The grants of a warehouse table to others than its owner, its owner, its primary key's name and its oid.
async fn shape(url: &str, table: &str) -> Result<(Vec<String>, String, Option<String>, u32)> {
    let c = connect(url).await?;
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let grants = c
        .query(
            &format!(
                "SELECT format('%s %s %s', pg_get_userbyid(a.grantee), a.privilege_type, a.is_grantable) \
                 FROM pg_class r, aclexplode(r.relacl) a WHERE r.oid = {}::regclass AND a.grantee <> r.relowner \
                 ORDER BY 1",
                lit(table)
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let row = c
        .query_one(
            &format!(
                "SELECT pg_get_userbyid(relowner)::text, (SELECT conname::text FROM pg_constraint \
                 WHERE conrelid = r.oid AND contype = 'p'), oid FROM pg_class r WHERE oid = {}::regclass",
                lit(table)
            ),
            &[],
        )
        .await?;
    Ok((grants, row.get(0), row.get(1), row.get(2)))
}

/// `replace` swaps the staging table in by rename, carrying owner, grants and primary key; where a rename would
/// lose something of the target (here a view on it), it replaces the rows instead and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_by_rename_keeping_owner_grants_and_key_and_falls_back_where_a_rename_would_lose_something(
) -> Result<()> {
    use pgshift::contract::load::SwapKind;
    let source = db("renamesrc", SALES).await?;
    let target = cluster().create_db("warehouse").await?;
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let stage = format!("file://{}", stage_dir("rename").display());
    let stages = || Arc::new(UrlStages::default());
    let n = std::process::id();
    let (owner, reader, other) = (
        format!("rn_owner_{n}"),
        format!("rn_reader_{n}"),
        format!("rn_other_{n}"),
    );

    let run1 = plan_and_extract(&source, &["sales.orders"], &stage, stages()).await?;
    let r = load(wh.clone(), &run1, LoadMode::Replace, Atomicity::Table).await?;
    assert_eq!(r.tables[0].swap, Some(SwapKind::Rename), "{:?}", r.tables[0]);
    let w = connect(&target).await?;
    w.batch_execute(&format!(
        "CREATE ROLE {owner}; CREATE ROLE {reader}; CREATE ROLE {other};
         ALTER TABLE sales.orders OWNER TO {owner};
         GRANT SELECT ON sales.orders TO {reader}; GRANT INSERT, UPDATE ON sales.orders TO {reader} WITH GRANT OPTION;
         GRANT SELECT ON sales.orders TO PUBLIC;
         ALTER DEFAULT PRIVILEGES IN SCHEMA sales GRANT DELETE ON TABLES TO {other};"
    ))
    .await?;
    let before = shape(&target, "sales.orders").await?;
    assert_eq!(before.0.len(), 4, "{before:?}");

    let src = connect(&source).await?;
    src.batch_execute(
        "UPDATE sales.orders SET note = 'two' WHERE id % 5 = 0; DELETE FROM sales.orders WHERE id > 19000;",
    )
    .await?;
    let run2 = plan_and_extract(&source, &["sales.orders"], &stage, stages()).await?;
    let r = load(wh.clone(), &run2, LoadMode::Replace, Atomicity::Table).await?;
    assert_eq!(r.tables[0].swap, Some(SwapKind::Rename), "{:?}", r.tables[0]);
    assert_eq!(
        fingerprint(&target, &run2, "sales.orders", false).await?,
        fingerprint(&source, &run2, "sales.orders", true).await?
    );
    let after = shape(&target, "sales.orders").await?;
    assert_ne!(after.3, before.3, "a new table was swapped in");
    assert_eq!(
        (&after.0, &after.1, &after.2),
        (&before.0, &before.1, &before.2),
        "owner, grants, key carried over"
    );
    let staging_left: i64 = w
        .query_one("SELECT count(*) FROM pg_class WHERE relname LIKE '%pgshift%'", &[])
        .await?
        .get(0);
    assert_eq!(staging_left, 0);

    // A view on the target: a rename would drop it, so the rows are replaced and the view keeps working.
    w.batch_execute("CREATE VIEW sales.big_orders AS SELECT id, amount FROM sales.orders WHERE amount > 900")
        .await?;
    src.batch_execute("UPDATE sales.orders SET amount = 950 WHERE id % 7 = 0")
        .await?;
    let run3 = plan_and_extract(&source, &["sales.orders"], &stage, stages()).await?;
    let r = load(wh.clone(), &run3, LoadMode::Replace, Atomicity::Table).await?;
    assert_eq!(r.tables[0].swap, Some(SwapKind::Rows), "{:?}", r.tables[0]);
    let note = r.tables[0].swap_note.clone().unwrap_or_default();
    assert!(note.contains("view sales.big_orders"), "{note}");
    assert_eq!(
        fingerprint(&target, &run3, "sales.orders", false).await?,
        fingerprint(&source, &run3, "sales.orders", true).await?
    );
    let in_view: i64 = w.query_one("SELECT count(*) FROM sales.big_orders", &[]).await?.get(0);
    let at_source: i64 = src
        .query_one("SELECT count(*) FROM sales.orders WHERE amount > 900", &[])
        .await?
        .get(0);
    assert_eq!(in_view, at_source);
    assert_eq!(
        shape(&target, "sales.orders").await?.3,
        after.3,
        "the same table, its rows replaced"
    );
    Ok(())
}

/// The evidence can fail: in a loaded copy of every column type, two rows' values swapped (every length, sum and
/// count kept), or one value changed at the same length and sum, changes exactly that column's hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fingerprint_sees_a_swapped_or_changed_value_in_every_column_type() -> Result<()> {
    let source = db("fpsrc", ALL_TYPES).await?;
    let target = cluster().create_db("fpwh").await?;
    let stage = format!("file://{}", stage_dir("fingerprint").display());
    let plan = plan_and_extract(
        &source,
        &[r#""Odd ""Schema""".all_types"#],
        &stage,
        Arc::new(UrlStages::default()),
    )
    .await?;
    load(
        Arc::new(PgWarehouse::new(&target)?),
        &plan,
        LoadMode::Replace,
        Atomicity::Table,
    )
    .await?;
    let name = r#"Odd "Schema".all_types"#;
    let want = fingerprint(&source, &plan, name, true).await?;
    assert_eq!(fingerprint(&target, &plan, name, false).await?, want);
    let t = &plan.tables[0];
    let wh = connect(&target).await?;
    let table = r#""Odd ""Schema""".all_types"#;
    let mut mappings = std::collections::BTreeSet::new();
    for (i, c) in t.columns.iter().enumerate().filter(|(_, c)| c.name != "id") {
        let col = pgshift_tests::fingerprint::quote(&c.name);
        // Rows 2 and 3 differ in every column.
        let swap = format!(
            "UPDATE {table} SET {col} = CASE id WHEN 2 THEN (SELECT {col} FROM {table} WHERE id = 3) \
             ELSE (SELECT {col} FROM {table} WHERE id = 2) END WHERE id IN (2, 3)"
        );
        wh.batch_execute(&swap).await?;
        let got = fingerprint(&target, &plan, name, false).await?;
        let changed: Vec<usize> = (0..got.len()).filter(|&k| got[k] != want[k]).collect();
        assert_eq!(changed, [i + 1], "{}: a swap of two rows' values", c.name);
        wh.batch_execute(&swap).await?;
        assert_eq!(fingerprint(&target, &plan, name, false).await?, want, "{}", c.name);
        mappings.insert(
            format!("{:?}", c.mapping)
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    // Every Arrow mapping of the type table is among the columns.
    assert_eq!(mappings.len(), 16, "{mappings:?}");
    // One value changed, its length (and where there is one, the column's sum) kept: text, uuid, bytea, json; a
    // pair of numbers, dates and timestamps moved in opposite directions.
    let changes = [
        ("t", "UPDATE {t} SET t = 'hellp' WHERE id = 2"),
        ("u", "UPDATE {t} SET u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12' WHERE id = 2"),
        ("by", "UPDATE {t} SET by = '\\xdeadbeef01' WHERE id = 2"),
        ("jb", "UPDATE {t} SET jb = replace(jb, '1', '2') WHERE id = 2"),
        ("i4", "UPDATE {t} SET i4 = i4 + CASE id WHEN 2 THEN 1 ELSE -1 END WHERE id IN (2, 4)"),
        ("n12", "UPDATE {t} SET n12 = n12 + CASE id WHEN 2 THEN 0.01 ELSE -0.01 END WHERE id IN (2, 4)"),
        ("dt", "UPDATE {t} SET dt = dt + CASE id WHEN 2 THEN 1 ELSE -1 END WHERE id IN (2, 4)"),
        (
            "tstz",
            "UPDATE {t} SET tstz = tstz + CASE id WHEN 2 THEN INTERVAL '1 s' ELSE INTERVAL '-1 s' END WHERE id IN (2, 4)",
        ),
    ];
    wh.batch_execute(&format!("CREATE TABLE public.kept AS SELECT * FROM {table}"))
        .await?;
    for (column, sql) in changes {
        let i = t.columns.iter().position(|c| c.name == column).expect("column");
        wh.batch_execute(&sql.replace("{t}", table)).await?;
        let got = fingerprint(&target, &plan, name, false).await?;
        let changed: Vec<usize> = (0..got.len()).filter(|&k| got[k] != want[k]).collect();
        assert_eq!(changed, [i + 1], "{column}: {sql}");
        wh.batch_execute(&format!(
            "UPDATE {table} t SET {column} = k.{column} FROM public.kept k WHERE t.id = k.id"
        ))
        .await?;
    }
    assert_eq!(fingerprint(&target, &plan, name, false).await?, want);
    Ok(())
}

/// Issue 25 item 18: a COPY step that finds rows in its staging table (an earlier attempt's streams committed their
/// share before that attempt died) starts over from an empty staging table, so the reconcile counts this attempt's
/// rows only. Here the same multi-file COPY runs twice into one staging table, as a retried or resumed load would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_into_a_staging_table_an_earlier_attempt_filled_starts_from_empty() -> Result<()> {
    let source = db("restagesrc", SALES).await?;
    let dir = stage_dir("restage");
    let stage_url = format!("file://{}", dir.display());
    let stages = Arc::new(UrlStages::default());
    let plan = plan_and_extract(&source, &["sales.orders"], &stage_url, stages.clone()).await?;
    let stage = pgshift::stage::open(&stage_url)?;
    let mut files = Vec::new();
    for t in &plan.tasks {
        let key = pgshift::contract::layout::result_key(t);
        let r: pgshift::contract::model::ExtractResult = serde_json::from_slice(&stage.get(&key).await?)?;
        files.extend(r.files);
    }
    assert!(
        files.len() > 1,
        "several files: the COPY runs as several streams, each committing its share"
    );
    let target = db("restagewh", "CREATE SCHEMA sales;").await?;
    connect(&target)
        .await?
        .batch_execute("CREATE TABLE sales.orders_stg (id int8, amount numeric(12,2), note text, placed timestamptz);")
        .await?;
    let wh = PgWarehouse::new(&target)?;
    let staging = TableRef::new("sales", "orders_stg");
    let columns = &plan.tables[0].columns;
    for attempt in 0..2 {
        let job = pgshift::warehouse::CopyJob {
            staging: &staging,
            columns,
            manifest_url: "",
            files: &files,
            stage: stage.as_ref(),
            truncate_long_text: false,
        };
        let steps = vec![
            Step::Copy(job),
            Step::Reconcile {
                table: TableRef::new("sales", "orders"),
                staging: staging.clone(),
                expected: 20_000,
            },
        ];
        let done = wh.submit(Batch::new(steps, Until::Committed)).await;
        assert!(done.is_ok(), "attempt {attempt}: {:?}", done.err());
    }
    let held: i64 = connect(&target)
        .await?
        .query_one("SELECT count(*) FROM sales.orders_stg", &[])
        .await?
        .get(0);
    assert_eq!(held, 20_000, "the second attempt's rows only");
    Ok(())
}
