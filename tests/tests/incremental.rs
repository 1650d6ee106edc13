//! `--incremental diff` through the definition run locally: after a first full load, a run moves only the key ranges
//! whose rows changed (inserts, updates and deletes alike); an unchanged run moves no row; a lost state, a target
//! changed by hand, a changed column fall back to a full load, by name; data older than the state's is refused.
//! Every run is checked by what the warehouse holds: row count and a hash of every column's values in key order,
//! computed by the tests' own SQL.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use pgshift::contract::incremental::{Incremental, SyncState};
use pgshift::contract::plan::{Plan, PlanRequest};
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::UrlStages;
use pgshift_tests::{cluster, connect, stage_dir};

use super::db;
use super::load::fingerprint;
use super::pipeline::{plan_of, request, run_local};

const SOURCE: &str = "
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text, at timestamptz);
INSERT INTO sales.orders SELECT g, (g % 1000) / 10.0, CASE WHEN g % 7 = 0 THEN NULL ELSE 'note ' || g END,
    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, 20000) g;
CREATE TABLE sales.items (order_id int8, line int2, qty int4 NOT NULL, sku uuid NOT NULL, PRIMARY KEY (order_id, line));
INSERT INTO sales.items SELECT g / 3, (g % 3)::int2, g % 7, md5('s' || g)::uuid FROM generate_series(3, 9002) g;
CREATE TABLE public.events (at timestamptz NOT NULL, kind text);
INSERT INTO public.events SELECT timestamptz '2025-01-01' + g * interval '1 second', 'k' || g % 5
    FROM generate_series(1, 3000) g;
ANALYZE;";

const TABLES: [&str; 3] = ["sales.orders", "sales.items", "public.events"];

/// The diff request of run `id`: a static source, four parts a table.
fn diff(stage: &str, id: &str) -> PlanRequest {
    let mut req = request(stage, &TABLES, 4);
    req.run_id = Some(id.to_string());
    req.incremental = Incremental::Diff;
    req.settings.static_source = true;
    req
}

/// A source database made by `sql`, an empty warehouse database and a fresh stage (its directory and URL), named
/// after `name`.
async fn setup(name: &str, sql: &str) -> Result<(String, String, std::path::PathBuf, String)> {
    let source = db(&format!("{name}src"), sql).await?;
    let target = cluster().create_db(&format!("{name}wh")).await?;
    let dir = stage_dir(name);
    let stage = format!("file://{}", dir.display());
    Ok((source, target, dir, stage))
}

/// Runs `req`, which must succeed; its plan.
async fn committed(source: &str, target: &str, req: PlanRequest) -> Result<Plan> {
    run(source, target, req).await?.map_err(anyhow::Error::msg)
}

/// Runs `req`; its plan, or the failure as text.
async fn run(source: &str, target: &str, req: PlanRequest) -> Result<Result<Plan, String>> {
    Ok(run_reported(source, target, req).await?.map(|(p, _)| p))
}

/// Runs `req`; its plan and its report as `pgshift run` prints it, or the failure as text.
async fn run_reported(source: &str, target: &str, req: PlanRequest) -> Result<Result<(Plan, String), String>> {
    let out = run_local(
        source,
        req,
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(target)?),
    )
    .await?;
    Ok(match out.output {
        Ok(v) => Ok((plan_of(&v).await?, out.report.render())),
        Err(f) => Err(format!("{f}")),
    })
}

/// Every table of the run holds what the source holds.
async fn same(source: &str, target: &str, plan: &Plan) -> Result<()> {
    for t in TABLES {
        assert_eq!(
            fingerprint(target, plan, t, false).await?,
            fingerprint(source, plan, t, true).await?,
            "{t}"
        );
    }
    Ok(())
}

fn table<'a>(plan: &'a Plan, name: &str) -> &'a pgshift::contract::plan::TablePlan {
    plan.tables
        .iter()
        .find(|t| t.table.to_string() == name)
        .expect("planned")
}

/// The run's load record of table `name` (its `load.json` entry).
fn load_of(stage: &Path, plan: &Plan, name: &str) -> serde_json::Value {
    let load: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stage.join(&plan.run_id).join("load.json")).expect("load.json"))
            .expect("json");
    load["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| {
            format!(
                "{}.{}",
                t["table"]["schema"].as_str().expect("schema"),
                t["table"]["name"].as_str().expect("name")
            ) == name
        })
        .cloned()
        .expect("the table's load")
}

/// The rows the run's parts held for `name` (what it moved).
fn moved(stage: &Path, plan: &Plan, name: &str) -> u64 {
    load_of(stage, plan, name)["rows"].as_u64().expect("rows")
}

fn state(stage: &Path, schema: &str, name: &str) -> Result<SyncState> {
    Ok(serde_json::from_slice(&std::fs::read(
        stage.join(".state").join(schema).join(name).join("sync.json"),
    )?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_run_moves_only_the_changed_ranges_deletes_included_and_an_unchanged_run_moves_nothing() -> Result<()> {
    let (source, target, dir, stage) = setup("inc", SOURCE).await?;

    // The first run is full, and says why; it leaves a state per table.
    let first = committed(&source, &target, diff(&stage, "inc-1")).await?;
    same(&source, &target, &first).await?;
    let orders = table(&first, "sales.orders").incremental.clone().expect("incremental");
    assert!(orders.base.is_none() && orders.full_because.as_deref().unwrap_or("").contains("first"));
    assert_eq!(moved(&dir, &first, "sales.orders"), 20000);
    let s = state(&dir, "sales", "orders")?;
    assert_eq!((s.target_rows, s.ranges.len(), s.run_id.as_str()), (20000, 4, "inc-1"));

    // Updates in one range, deletes in another, inserts past the end, a key changed (from the range of the deletes to
    // past the end); items unchanged; events (no key) changed.
    connect(&source)
        .await?
        .batch_execute(
            "UPDATE sales.orders SET amount = amount + 1, note = 'changed' WHERE id BETWEEN 100 AND 160;
             DELETE FROM sales.orders WHERE id BETWEEN 9000 AND 9049;
             INSERT INTO sales.orders SELECT g, 1.5, 'new', now() FROM generate_series(20001, 20100) g;
             UPDATE sales.orders SET id = 20500 WHERE id = 9500;
             INSERT INTO public.events VALUES (timestamptz '2030-01-01', 'late');",
        )
        .await?;
    let (second, report) = run_reported(&source, &target, diff(&stage, "inc-2"))
        .await?
        .map_err(anyhow::Error::msg)?;
    same(&source, &target, &second).await?;
    assert!(
        report.contains(
            "sales.orders: incremental: 3 of 4 key range(s) changed, 1 skipped; 101 inserted, 61 updated, 51 deleted"
        ) && report.contains("sales.items: incremental: 0 of 4 key range(s) changed, 4 skipped")
            && report.contains("for its last full load (run inc-1)"),
        "{report}"
    );
    // The first run's key files the state no longer names are gone; the unchanged range's stays.
    let keys = |run: &str| pgshift_tests::list_files(&dir.join(".state/sales/orders/keys").join(run)).len();
    assert_eq!((keys("inc-1"), keys("inc-2")), (1, 3));
    let orders = table(&second, "sales.orders").incremental.clone().expect("incremental");
    assert_eq!(orders.base.as_ref().map(|b| b.run_id.as_str()), Some("inc-1"));
    assert_eq!(orders.ranges.len(), 4, "the first run's boundaries kept");
    assert!(
        orders.changed.len() == 3 && orders.skipped() == 1,
        "the range of 9000, the first and the last changed: {:?}",
        orders.changed
    );
    // Row by row: only the 61 updated rows, the 101 inserted (the moved key's new one among them) and a row per each
    // of the 51 deleted keys (its old one among them) moved.
    assert_eq!(moved(&dir, &second, "sales.orders"), 61 + 101 + 51);
    let counts = load_of(&dir, &second, "sales.orders")["diff"].clone();
    assert_eq!(
        (
            counts["inserted"].as_u64(),
            counts["updated"].as_u64(),
            counts["deleted"].as_u64()
        ),
        (Some(101), Some(61), Some(51)),
        "{counts}"
    );
    let items = table(&second, "sales.items").incremental.clone().expect("incremental");
    assert!(items.changed.is_empty() && items.base.is_some());
    assert_eq!(moved(&dir, &second, "sales.items"), 0);
    assert!(second.tasks.iter().all(|t| t.table.name != "items"));
    assert_eq!(
        moved(&dir, &second, "public.events"),
        3001,
        "a table without a key is compared whole"
    );
    assert_eq!(state(&dir, "sales", "orders")?.target_rows, 20050);

    // Nothing changed: no task, no row moved, the warehouse as the source.
    let third = committed(&source, &target, diff(&stage, "inc-3")).await?;
    assert!(third.tasks.is_empty(), "{:?}", third.tasks.len());
    same(&source, &target, &third).await?;
    for t in TABLES {
        assert_eq!(moved(&dir, &third, t), 0, "{t}");
    }
    assert_eq!(state(&dir, "sales", "orders")?.run_id, "inc-3");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_changed_by_hand_is_found_before_extracting_and_loaded_in_full_in_the_same_run() -> Result<()> {
    let (source, target, dir, stage) = setup("inchand", SOURCE).await?;
    let first = committed(&source, &target, diff(&stage, "hand-1")).await?;
    same(&source, &target, &first).await?;

    connect(&target)
        .await?
        .batch_execute("DELETE FROM sales.orders WHERE id = 42")
        .await?;
    connect(&source)
        .await?
        .batch_execute("UPDATE sales.orders SET note = 'x' WHERE id = 19000")
        .await?;
    // The pre-flight finds it before anything is extracted, sets the state aside, and the run plans itself again:
    // that table in full, saying why; the warehouse equals the source again.
    let (second, report) = run_reported(&source, &target, diff(&stage, "hand-2"))
        .await?
        .map_err(anyhow::Error::msg)?;
    same(&source, &target, &second).await?;
    let orders = table(&second, "sales.orders").incremental.clone().expect("incremental");
    assert!(
        orders.base.is_none()
            && orders.full_because.as_deref().unwrap_or("").contains("set aside")
            && orders.full_because.as_deref().unwrap_or("").contains("19999 rows"),
        "{:?}",
        orders.full_because
    );
    assert!(
        report.contains("sales.orders: incremental: a full load, since its state was set aside"),
        "{report}"
    );
    assert_eq!(moved(&dir, &second, "sales.orders"), 20000);
    let items = table(&second, "sales.items").incremental.clone().expect("incremental");
    assert!(items.base.is_some(), "the other tables stay incremental");
    let aside = pgshift_tests::list_files(&dir.join(".state/sales/orders"));
    assert!(
        aside.iter().any(|f| f.starts_with("set-aside-")) && aside.iter().any(|f| f == "sync.json"),
        "the old state kept beside the new one: {aside:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_state_loads_in_full_and_older_data_than_the_state_is_refused() -> Result<()> {
    let (source, target, dir, stage) = setup("inclost", SOURCE).await?;
    committed(&source, &target, diff(&stage, "lost-1")).await?;

    std::fs::remove_dir_all(dir.join(".state"))?;
    connect(&source)
        .await?
        .batch_execute("DELETE FROM sales.orders WHERE id < 10")
        .await?;
    let second = committed(&source, &target, diff(&stage, "lost-2")).await?;
    same(&source, &target, &second).await?;
    let orders = table(&second, "sales.orders").incremental.clone().expect("incremental");
    assert!(orders.base.is_none() && orders.full_because.as_deref().unwrap_or("").contains("no state"));

    // A state from the future: this run's data is older, refused by name before anything is extracted.
    let key = dir.join(".state/sales/orders/sync.json");
    let mut s: SyncState = serde_json::from_slice(&std::fs::read(&key)?)?;
    s.data_at += 86_400;
    std::fs::write(&key, serde_json::to_vec(&s)?)?;
    let before = fingerprint(&target, &second, "sales.orders", false).await?;
    let refused = run(&source, &target, diff(&stage, "lost-3"))
        .await?
        .expect_err("older data");
    assert!(
        refused.contains("Pipeline.Fatal.OlderData") && refused.contains("sales.orders"),
        "{refused}"
    );
    assert_eq!(fingerprint(&target, &second, "sales.orders", false).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_incremental_runs_of_one_target_at_once_never_both_apply_their_changes() -> Result<()> {
    let (source, target, dir, stage) = setup("inctwo", SOURCE).await?;
    committed(&source, &target, diff(&stage, "two-1")).await?;
    connect(&source)
        .await?
        .batch_execute(
            "UPDATE sales.orders SET note = 'both' WHERE id % 50 = 0; DELETE FROM sales.items WHERE qty = 3;",
        )
        .await?;
    let (a, b) = tokio::join!(
        run(&source, &target, diff(&stage, "two-a")),
        run(&source, &target, diff(&stage, "two-b"))
    );
    let (a, b) = (a?, b?);
    // Each table loads in its own transaction, so the two runs may each commit some tables. Never both one table:
    // the second to reach it is refused by its guard, by name, and changes nothing of it.
    for failed in [&a, &b].into_iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            failed.contains("loaded by another run since its state's"),
            "the other run fails by name: {failed}"
        );
    }
    let plan_id = |run: &str| -> Result<String> {
        let plan: Plan = serde_json::from_slice(&std::fs::read(dir.join(run).join("plan.json"))?)?;
        Ok(plan.plan_id)
    };
    let plans = [plan_id("two-a")?, plan_id("two-b")?];
    let twice = connect(&target)
        .await?
        .query(
            "SELECT schema_name || '.' || table_name FROM pgshift.load_log WHERE plan_id = ANY($1) \
             GROUP BY 1 HAVING count(DISTINCT plan_id) > 1",
            &[&plans.to_vec()],
        )
        .await?;
    assert!(
        twice.is_empty(),
        "both runs applied their changes to a table: {a:?} {b:?}"
    );
    if let Some(ok) = [&a, &b].into_iter().find_map(|r| r.as_ref().ok()) {
        same(&source, &target, ok).await?;
    }
    // Whatever the order, the next run builds on what the warehouse holds and leaves it equal to the source.
    let next = match run(&source, &target, diff(&stage, "two-c")).await? {
        Ok(p) => p,
        // The run that lost left the target ahead of its state: the next run after that is full.
        Err(_) => committed(&source, &target, diff(&stage, "two-d")).await?,
    };
    same(&source, &target, &next).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_keep_the_rows_the_source_lost_marked_with_the_data_instant() -> Result<()> {
    let (source, target, _, stage) = setup("incsoft", SOURCE).await?;
    let soft = |id: &str| {
        let mut req = diff(&stage, id);
        req.load = Some(pgshift::contract::load::LoadOptions {
            deletes: pgshift::contract::incremental::Deletes::Soft,
            ..Default::default()
        });
        req
    };
    let tables = ["sales.orders", "sales.items"];
    let mut req = soft("soft-1");
    req.tables = tables.iter().map(|t| t.to_string()).collect();
    committed(&source, &target, req).await?;
    connect(&source)
        .await?
        .batch_execute(
            "DELETE FROM sales.orders WHERE id BETWEEN 9000 AND 9049;
             UPDATE sales.orders SET note = 'soft' WHERE id = 3;
             DELETE FROM sales.items WHERE order_id = 5;",
        )
        .await?;
    let mut req = soft("soft-2");
    req.tables = tables.iter().map(|t| t.to_string()).collect();
    let second = committed(&source, &target, req).await?;
    let wh = connect(&target).await?;
    // The live rows are the source's, by fingerprint (a view of them).
    wh.batch_execute(
        "CREATE VIEW sales.orders_live AS SELECT id, amount, note, at FROM sales.orders WHERE _pgshift_deleted_at IS NULL;
         CREATE VIEW sales.items_live AS SELECT order_id, line, qty, sku FROM sales.items WHERE _pgshift_deleted_at IS NULL;",
    )
    .await?;
    for (t, live) in [("sales.orders", "orders_live"), ("sales.items", "items_live")] {
        let plan_table = table(&second, t);
        let names: Vec<String> = plan_table.columns.iter().map(|c| c.name.clone()).collect();
        let got =
            pgshift_tests::fingerprint::fingerprint_of(&target, ("sales", live), &names, &plan_table.key, &[]).await?;
        assert_eq!(got, fingerprint(&source, &second, t, true).await?, "{t}");
    }
    // The deleted rows stay, marked with the run's data instant, their values as they were.
    let row = wh
        .query_one(
            "SELECT count(*), min(extract(epoch FROM _pgshift_deleted_at))::int8, max(note) FROM sales.orders \
             WHERE _pgshift_deleted_at IS NOT NULL",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i64>(0), 50);
    assert_eq!(row.get::<_, i64>(1), second.data_instant());
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("note 9049"));
    let marked: i64 = wh
        .query_one(
            "SELECT count(*) FROM sales.items WHERE _pgshift_deleted_at IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(marked, 3);
    // A deleted key that comes back is a live row again, once.
    connect(&source)
        .await?
        .batch_execute("INSERT INTO sales.orders VALUES (9001, 1.0, 'back', now())")
        .await?;
    let mut req = soft("soft-3");
    req.tables = tables.iter().map(|t| t.to_string()).collect();
    committed(&source, &target, req).await?;
    let rows: Vec<(Option<String>, bool)> = wh
        .query(
            "SELECT note, _pgshift_deleted_at IS NULL FROM sales.orders WHERE id = 9001",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(Some("back".to_string()), true)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_mode_reads_a_row_whose_transaction_commits_after_the_run_in_the_next_run() -> Result<()> {
    let (source, target, dir, stage) = setup(
        "inccur",
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders (id int8 PRIMARY KEY, note text, updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO sales.orders SELECT g, 'n' || g, now() - interval '1 day' FROM generate_series(1, 5000) g;
         CREATE INDEX ON sales.orders (updated_at);
         ANALYZE;",
    )
    .await?;
    let cursor = |id: &str| {
        let mut req = request(&stage, &["sales.orders"], 2);
        req.run_id = Some(id.to_string());
        req.incremental = Incremental::Cursor("updated_at".into());
        req
    };
    let first = committed(&source, &target, cursor("cur-1")).await?;
    let check = |plan: Plan| {
        let target = target.clone();
        let source = source.clone();
        async move {
            assert_eq!(
                fingerprint(&target, &plan, "sales.orders", false).await?,
                fingerprint(&source, &plan, "sales.orders", true).await?
            );
            anyhow::Ok(())
        }
    };
    check(first).await?;

    // A transaction opens and writes a row before the run, and commits only after it.
    let late = connect(&source).await?;
    late.batch_execute("BEGIN; INSERT INTO sales.orders VALUES (9001, 'late', now())")
        .await?;
    connect(&source)
        .await?
        .batch_execute("UPDATE sales.orders SET note = 'early', updated_at = now() WHERE id = 10")
        .await?;
    let second = committed(&source, &target, cursor("cur-2")).await?;
    let inc = table(&second, "sales.orders").incremental.clone().expect("incremental");
    assert!(
        inc.base.is_some() && second.tasks.len() == 1,
        "one task of the rows since the watermark"
    );
    assert!(
        table(&second, "sales.orders")
            .notes
            .iter()
            .any(|n| n.contains("deletes are not seen")),
        "the plan says what cursor mode does not see"
    );
    assert_eq!(moved(&dir, &second, "sales.orders"), 1, "only the updated row moved");
    late.batch_execute("COMMIT").await?;
    // Its cursor value is older than the largest the second run saw (a watermark of the largest value seen would
    // skip it for ever), and not older than the second run's watermark: the third run reads it.
    let watermark = inc.cursor.as_ref().expect("cursor").watermark.clone();
    let row = connect(&source)
        .await?
        .query_one(
            "SELECT $1::text::timestamptz <= l.updated_at, l.updated_at < e.updated_at FROM sales.orders l, \
             sales.orders e WHERE l.id = 9001 AND e.id = 10",
            &[&watermark],
        )
        .await?;
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (true, true));
    let third = committed(&source, &target, cursor("cur-3")).await?;
    check(third).await?;

    // Deletes are not seen; --full-every 2 loads in full the run after, which removes them.
    connect(&source)
        .await?
        .batch_execute("DELETE FROM sales.orders WHERE id = 5")
        .await?;
    let mut req = cursor("cur-4");
    req.full_every = Some(2);
    let fourth = committed(&source, &target, req).await?;
    assert!(
        table(&fourth, "sales.orders")
            .incremental
            .as_ref()
            .unwrap()
            .base
            .is_none(),
        "full"
    );
    check(fourth).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_replaced_by_hand_with_the_same_count_and_a_mode_switch_are_found() -> Result<()> {
    let (source, target, _, stage) = setup("incsum", SOURCE).await?;
    committed(&source, &target, diff(&stage, "sum-1")).await?;
    // One row deleted and another inserted by hand: the count is the state's, the keys are not.
    connect(&target)
        .await?
        .batch_execute(
            "DELETE FROM sales.orders WHERE id = 42; INSERT INTO sales.orders VALUES (99999, 1, 'hand', now())",
        )
        .await?;
    let second = committed(&source, &target, diff(&stage, "sum-2")).await?;
    same(&source, &target, &second).await?;
    let orders = table(&second, "sales.orders").incremental.clone().expect("incremental");
    assert!(
        orders.base.is_none() && orders.full_because.as_deref().unwrap_or("").contains("other keys"),
        "rows replaced by hand, found by the key sum, loaded in full: {:?}",
        orders.full_because
    );

    // A cursor run's state is no base for a diff run: the switch is a full load, and says why.
    let mut req = diff(&stage, "sum-4");
    req.overrides.insert(
        "sales.orders".into(),
        pgshift::contract::plan::TableOverride {
            incremental: Some(Incremental::Cursor("at".into())),
            ..Default::default()
        },
    );
    committed(&source, &target, req).await?;
    connect(&source)
        .await?
        .batch_execute("DELETE FROM sales.orders WHERE id = 7")
        .await?;
    let fifth = committed(&source, &target, diff(&stage, "sum-5")).await?;
    let orders = table(&fifth, "sales.orders").incremental.clone().expect("incremental");
    assert!(
        orders.base.is_none() && orders.full_because.as_deref().unwrap_or("").contains("cursor"),
        "{:?}",
        orders.full_because
    );
    same(&source, &target, &fifth).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enum_whose_labels_are_renamed_is_loaded_in_full() -> Result<()> {
    let sql = format!(
        "{SOURCE}
         CREATE TYPE sales.mood AS ENUM ('sad', 'ok', 'happy');
         ALTER TABLE sales.orders ADD COLUMN mood sales.mood;
         UPDATE sales.orders SET mood = (ARRAY['sad', 'ok', 'happy']::sales.mood[])[1 + id % 3];
         ANALYZE sales.orders;"
    );
    let (source, target, _, stage) = setup("incenum", &sql).await?;
    committed(&source, &target, diff(&stage, "enum-1")).await?;
    // A renamed label changes the value of every row that holds it, and no row's version.
    connect(&source)
        .await?
        .batch_execute("ALTER TYPE sales.mood RENAME VALUE 'sad' TO 'blue'")
        .await?;
    let second = committed(&source, &target, diff(&stage, "enum-2")).await?;
    let orders = table(&second, "sales.orders").incremental.clone().expect("incremental");
    assert!(
        orders.base.is_none() && orders.full_because.as_deref().unwrap_or("").contains("enum"),
        "{:?}",
        orders.full_because
    );
    same(&source, &target, &second).await?;
    // The tables without an enum keep their states.
    let items = table(&second, "sales.items").incremental.clone().expect("incremental");
    assert!(items.base.is_some(), "{:?}", items.full_because);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_digest_runs_on_the_source_and_differs_when_a_float_turns_negative_zero() -> Result<()> {
    use pgshift::contract::incremental::{digest_sql, DigestHow};
    use pgshift::contract::model::{Bounds, TableRef};
    let source = db(
        "incdigsrc",
        "CREATE TABLE public.m (id int8 PRIMARY KEY, f float8, i interval, n numeric, t text);
         INSERT INTO public.m SELECT g, 0.0, interval '1 day', 1.0, 't' || g FROM generate_series(1, 100) g;",
    )
    .await?;
    let stage = stage_dir("incremental-digest");
    let plan = super::load::plan_and_extract_request(
        &source,
        request(&format!("file://{}", stage.display()), &["public.m"], 1),
        Arc::new(UrlStages::default()),
    )
    .await?;
    let t = table(&plan, "public.m");
    let c = connect(&source).await?;
    let digest = |how, since| {
        digest_sql(
            &TableRef::new("public", "m"),
            &t.columns,
            (&[], &Bounds::ALL),
            (true, how),
            (None, since),
        )
        .map_err(anyhow::Error::msg)
    };
    let mut before = Vec::new();
    for how in [DigestHow::Hash, DigestHow::Text, DigestHow::Versions] {
        let q = digest(how, None)?;
        let row = c.query_one(&q, &[]).await?;
        assert_eq!(row.get::<_, i64>(0), 100);
        before.push(row.get::<_, Option<String>>(1));
    }
    // Values equal by their type's equality but written differently: each digest still sees them.
    c.batch_execute("BEGIN; UPDATE public.m SET f = '-0' WHERE id = 1; UPDATE public.m SET i = interval '24 hours' WHERE id = 2; UPDATE public.m SET n = 1.00 WHERE id = 3")
        .await?;
    // The updates' own transaction: the window of rows written since starts there (other tests' run alongside).
    let since: i64 = c.query_one("SELECT pg_catalog.txid_current()", &[]).await?.get(0);
    c.batch_execute("COMMIT").await?;
    for (k, how) in [DigestHow::Hash, DigestHow::Text, DigestHow::Versions]
        .into_iter()
        .enumerate()
    {
        let q = digest(how, None)?;
        let now: Option<String> = c.query_one(&q, &[]).await?.get(1);
        assert_ne!(now, before[k], "{how:?}");
    }
    // The rows written since: the tuple ids of exactly the three rows updated, as the server's own ctid says.
    let q = digest(DigestHow::Versions, Some(since as u32))?;
    let row = c.query_one(&q, &[]).await?;
    let tids: Vec<u8> = row.get(5);
    let mut listed: Vec<String> = tids
        .chunks(6)
        .map(|t| {
            let block = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
            format!("({block},{})", u16::from_be_bytes([t[4], t[5]]))
        })
        .collect();
    listed.sort();
    let mut want: Vec<String> = c
        .query("SELECT ctid::text FROM public.m WHERE id IN (1, 2, 3)", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    want.sort();
    assert_eq!(listed, want);
    Ok(())
}

/// The bytes the run's extraction of `name` read from the source, per range (its results' `source_bytes`).
fn source_bytes(stage: &Path, plan: &Plan, name: &str) -> Vec<u64> {
    let (schema, table) = name.split_once('.').expect("schema.table");
    let mut out: Vec<(u32, u64)> = plan
        .tasks
        .iter()
        .filter(|t| t.table.to_string() == name)
        .map(|t| {
            let path = stage
                .join(&plan.run_id)
                .join(schema)
                .join(table)
                .join(format!("part-{:05}.result.json", t.range_index));
            let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("result")).expect("json");
            (t.range_index, r["source_bytes"].as_u64().expect("source_bytes"))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, b)| b).collect()
}

/// One table's source and warehouse databases, and its stage, for runs one after another.
struct Runs<'a> {
    source: &'a str,
    target: &'a str,
    dir: &'a Path,
    stage: &'a str,
}

impl Runs<'_> {
    /// Runs `changes` on the source (each on its own), then diff run `id`, which must leave the warehouse equal to
    /// the source having moved `rows` rows of sales.orders: the bytes its ranges read from the source.
    async fn run(&self, changes: &[&str], id: &str, rows: u64) -> Result<Vec<u64>> {
        let db = connect(self.source).await?;
        for c in changes {
            db.batch_execute(c).await?;
        }
        let plan = committed(self.source, self.target, diff(self.stage, id)).await?;
        same(self.source, self.target, &plan).await?;
        assert_eq!(moved(self.dir, &plan, "sales.orders"), rows, "{id}");
        Ok(source_bytes(self.dir, &plan, "sales.orders"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_updates_read_only_the_rows_written_since_the_last_run() -> Result<()> {
    let (source, target, dir, stage) = setup("incspread", SOURCE).await?;
    // Rows of about 300 bytes, as an OLTP table's are: a key and a version (about 32 bytes) are a tenth of one.
    let db = connect(&source).await?;
    db.batch_execute("UPDATE sales.orders SET note = repeat('n', 250) || id WHERE note IS NOT NULL")
        .await?;
    let first = committed(&source, &target, diff(&stage, "spread-1")).await?;
    let full = source_bytes(&dir, &first, "sales.orders");
    assert_eq!(full.len(), 4);

    // A few rows updated in every range: each range changed, and only its rows written since the last run (their
    // keys and versions, then the 2 rows themselves by their tuple ids) leave the source, a few hundred bytes of a
    // range's 1.5 MB.
    let runs = Runs {
        source: &source,
        target: &target,
        dir: &dir,
        stage: &stage,
    };
    let update = "UPDATE sales.orders SET note = 'spread' WHERE id % 2500 = 7";
    let read = runs.run(&[update], "spread-2", 8).await?;
    assert!(
        read.iter().zip(&full).all(|(r, f)| r * 100 < *f),
        "a range read whole: {read:?} against {full:?}"
    );

    // A rewritten table: every row has a new place but keeps the transaction that wrote it. Every range's digest
    // changes, yet each range reads only the rows written since the last run (the range that lost a row also reads
    // its keys, to find which), and only what changed moves.
    let rewrite = [
        "VACUUM FULL sales.orders",
        "UPDATE sales.orders SET amount = 0 WHERE id = 42; DELETE FROM sales.orders WHERE id = 43;",
    ];
    let read = runs.run(&rewrite, "spread-3", 2).await?;
    assert!(
        read.len() == 4 && read.iter().zip(&full).all(|(r, f)| r * 3 < *f),
        "{read:?} against {full:?}"
    );

    // The next change is read by tuple ids again. (19999's note is NULL already: a new version of the same values,
    // read and not moved.)
    let update = "UPDATE sales.orders SET note = NULL WHERE id IN (5, 19998, 19999)";
    let read = runs.run(&[update], "spread-4", 2).await?;
    // Ranges 0 and 3 changed.
    assert!(
        read.len() == 2 && read[0] * 3 < full[0] && read[1] * 3 < full[3],
        "{read:?} against {full:?}"
    );
    Ok(())
}

/// The scans (sequential and by index) of `table` on the source so far, once every other session of its database
/// has ended: a backend writes out its statistics before it leaves `pg_stat_activity`.
async fn scans(url: &str, table: &str) -> Result<i64> {
    let c = connect(url).await?;
    while c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await?
        .get::<_, i64>(0)
        > 0
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(c.query_one(
        "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relid = $1::text::regclass",
        &[&table],
    )
    .await?
    .get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_quiet_source_the_extractors_take_the_planners_list_of_recent_rows_and_scan_nothing_again() -> Result<()> {
    // A server of its own, autovacuum off before any row is written: nothing commits there between a run's planner
    // and its extractors unless this test does.
    let quiet = pgshift_tests::quiet_cluster();
    let source = quiet.create_db("incquietsrc").await?;
    let db = connect(&source).await?;
    db.batch_execute("ALTER SYSTEM SET autovacuum = off").await?;
    db.batch_execute("SELECT pg_catalog.pg_reload_conf()").await?;
    while connect(&source)
        .await?
        .query_one("SHOW autovacuum", &[])
        .await?
        .get::<_, String>(0)
        != "off"
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    db.batch_execute(SOURCE).await?;
    // Sessions of the source's database end before its scans are counted ([`scans`]).
    drop(db);
    let target = cluster().create_db("incquietwh").await?;
    let dir = stage_dir("incquiet");
    let stage = format!("file://{}", dir.display());
    committed(&source, &target, diff(&stage, "quiet-1")).await?;
    let quiet_run = |changes: &'static str, id: &'static str| {
        let (source, target, stage) = (source.clone(), target.clone(), stage.clone());
        async move {
            connect(&source).await?.batch_execute(changes).await?;
            let before = scans(&source, "sales.orders").await?;
            let plan = committed(&source, &target, diff(&stage, id)).await?;
            let scanned = scans(&source, "sales.orders").await? - before;
            same(&source, &target, &plan).await?;
            anyhow::Ok((plan, scanned))
        }
    };

    // Rows updated in every range, one inserted past the end, one deleted: the planner's digests list the rows
    // written since, and each extractor, in the planner's very snapshot, reads them by tuple id and takes the
    // planner's count. The digests are the table's only scans, but for the range that lost a row, which reads its
    // keys to find which.
    let changes = "UPDATE sales.orders SET note = 'q' WHERE id % 2500 = 7; DELETE FROM sales.orders WHERE id = 10001; \
         INSERT INTO sales.orders VALUES (20001, 1, 'new', now())";
    let (plan, scanned) = quiet_run(changes, "quiet-2").await?;
    assert_eq!(moved(&dir, &plan, "sales.orders"), 10);
    let tasks: Vec<_> = plan
        .tasks
        .iter()
        .filter(|t| t.table.to_string() == "sales.orders")
        .collect();
    assert!(
        tasks.len() == 4
            && tasks
                .iter()
                .all(|t| t.diff.as_ref().is_some_and(|d| d.recent.is_some())),
        "every changed range of sales.orders has the planner's list: {tasks:?}"
    );
    assert_eq!(
        scanned,
        4 + 1,
        "the four digests and one pass of keys, and no other scan"
    );

    // One range changes, three are skipped; then one of those changes, listed from the mark its key file's run left.
    let (plan, scanned) = quiet_run("UPDATE sales.orders SET amount = 2 WHERE id = 19000", "quiet-3").await?;
    assert_eq!((moved(&dir, &plan, "sales.orders"), scanned), (1, 4));
    let (plan, scanned) = quiet_run("UPDATE sales.orders SET amount = 3 WHERE id = 6000", "quiet-4").await?;
    assert_eq!((moved(&dir, &plan, "sales.orders"), scanned), (1, 4));

    // A transaction commits on the server once the planner has listed: no extractor reads in its snapshot, so each
    // counts and scans its range for the rows written since, and the warehouse ends the same.
    connect(&source)
        .await?
        .batch_execute(
            "UPDATE sales.orders SET note = 'r' WHERE id % 2500 = 9; DELETE FROM sales.orders WHERE id = 10002",
        )
        .await?;
    let before = scans(&source, "sales.orders").await?;
    let once = std::sync::atomic::AtomicBool::new(false);
    let (url, psql) = (source.clone(), quiet.bin.join("psql"));
    let hook: pgshift_tests::hooked::Hook = Arc::new(move |key: &str| {
        if key.contains("/recent/") && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let out = std::process::Command::new(&psql)
                .args([url.as_str(), "-qAtc", "SELECT pg_catalog.txid_current()"])
                .output()
                .expect("psql");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    });
    let stages = Arc::new(pgshift_tests::hooked::HookedStages::watched(
        Arc::new(UrlStages::default()),
        hook,
    ));
    let out = run_local(
        &source,
        diff(&stage, "quiet-5"),
        stages,
        Arc::new(PgWarehouse::new(&target)?),
    )
    .await?;
    let plan = plan_of(&out.output.map_err(|f| anyhow::anyhow!("{f}"))?).await?;
    let windowed = scans(&source, "sales.orders").await? - before;
    same(&source, &target, &plan).await?;
    assert_eq!(moved(&dir, &plan, "sales.orders"), 9);
    // Per range a count and a windowed scan; the range that lost a row also reads its keys.
    assert_eq!(windowed, 4 + 4 * 2 + 1, "digests, then each extractor's own scans");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_changed_by_hand_during_the_load_fails_it_after_its_changes_and_nothing_commits() -> Result<()> {
    use super::hooked::{is_sql, Edit, Hooked};
    use pgshift::warehouse::Step;
    let (source, target, dir, stage) = setup("incrace", SOURCE).await?;
    let first = committed(&source, &target, diff(&stage, "race-1")).await?;
    connect(&source)
        .await?
        .batch_execute("UPDATE sales.orders SET note = 'x' WHERE id = 19000")
        .await?;
    let before = fingerprint(&target, &first, "sales.orders", false).await?;
    // A change by hand after the pre-flight, before the changes: a key replaced, the row count kept.
    let edit: Edit = Box::new(|steps| {
        let guard = steps
            .iter()
            .position(|s| is_sql(s, "SELECT 1 / (CASE WHEN", "b.table_name = 'orders'"));
        if let Some(i) = guard {
            steps.insert(
                i + 1,
                Step::Sql("UPDATE sales.orders SET id = 900000 WHERE id = 5".into()),
            );
        }
    });
    let out = run_local(
        &source,
        diff(&stage, "race-2"),
        Arc::new(UrlStages::default()),
        Arc::new(Hooked::new(PgWarehouse::new(&target)?, edit)),
    )
    .await?;
    let err = match out.output {
        Ok(_) => anyhow::bail!("the run was not refused"),
        Err(f) => format!("{f}"),
    };
    assert!(err.contains("key sum is not the source's"), "{err}");
    assert_eq!(
        fingerprint(&target, &first, "sales.orders", false).await?,
        before,
        "nothing of the run or the change committed"
    );
    assert_eq!(
        state(&dir, "sales", "orders")?.run_id,
        "race-1",
        "the state did not advance"
    );
    Ok(())
}
