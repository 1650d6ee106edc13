//! Never load wrong data, round two: each silent path a hostile probe found (a run that said ✓ over a warehouse
//! that differed from its source), reproduced as the probe did it, and each failure that should be clear and fast.
//! Every test asserts what the warehouse holds (row count and a hash of every column's values in key order), or that
//! nothing was loaded.

use std::sync::Arc;

use anyhow::Result;
use pgshift::contract::types::InfinityPolicy;
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::Warehouse;
use pgshift::UrlStages;
use pgshift_tests::hooked::{Gate, HookedStages, Op, Verdict};
use pgshift_tests::{cluster, connect, list_files, stage_dir};

use super::db;
use super::load::fingerprint;
use super::pipeline::{plan_of, request, run_local};
use super::wrong_data::overlapping;

/// The same URL as another role (the harness's clusters trust local connections).
fn as_role(url: &str, role: &str) -> String {
    url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1)
}

/// Whether `table` exists in the warehouse at `url`, and its row count if so.
async fn rows_of(url: &str, table: &str) -> Result<Option<i64>> {
    let c = connect(url).await?;
    let exists: bool = c
        .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(Some(
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0),
    ))
}

/// Runs `tables` from `source` into `target` through the definition; the run's output or its failure as text.
async fn run(source: &str, target: &str, stage: &str, tables: &[&str]) -> Result<Result<serde_json::Value, String>> {
    run_request(source, target, request(stage, tables, 2)).await
}

/// Runs `req` from `source` into the PostgreSQL warehouse `target`; the run's output or its failure as text.
async fn run_request(
    source: &str,
    target: &str,
    req: pgshift::PlanRequest,
) -> Result<Result<serde_json::Value, String>> {
    let out = run_local(
        source,
        req,
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(target)?),
    )
    .await?;
    Ok(out.output.map_err(|f| format!("{f}")))
}

/// Asserts the run loaded `tables` equal to the source, value by value.
async fn equal(source: &str, target: &str, output: &serde_json::Value, tables: &[&str]) -> Result<()> {
    let plan = plan_of(output).await?;
    for t in tables {
        assert_eq!(
            fingerprint(target, &plan, t, false).await?,
            fingerprint(source, &plan, t, true).await?,
            "{t}"
        );
    }
    Ok(())
}

/// 1. A row-level security policy that hides rows from the extracting role: refused by name before anything is
/// extracted (policy, table, role, what to do), never loaded short; with BYPASSRLS the whole table loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_is_refused_by_name_instead_of_hiding_rows() -> Result<()> {
    let source = db(
        "rlssrc",
        "CREATE TABLE public.rls_t (id int PRIMARY KEY, owner text);
         INSERT INTO public.rls_t SELECT g, CASE WHEN g % 3 = 0 THEN 'alice' ELSE 'etl_rls' END
           FROM generate_series(1, 3000) g;
         ALTER TABLE public.rls_t ENABLE ROW LEVEL SECURITY;
         CREATE POLICY p ON public.rls_t FOR SELECT USING (owner = current_user);
         DO $$ BEGIN CREATE ROLE etl_rls LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         GRANT SELECT ON public.rls_t TO etl_rls; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("rlswh").await?;
    let stage = format!("file://{}", stage_dir("rls").display());
    let etl = as_role(&source, "etl_rls");
    let failure = run(&etl, &target, &stage, &["public.rls_t"])
        .await?
        .expect_err("refused");
    for says in [
        "Pipeline.Fatal.PermissionDenied",
        "public.rls_t",
        "policy p",
        "etl_rls",
        "BYPASSRLS",
    ] {
        assert!(failure.contains(says), "{says:?} in {failure}");
    }
    assert_eq!(rows_of(&target, "public.rls_t").await?, None, "nothing loaded");
    assert!(
        !list_files(&stage_dir("rls")).iter().any(|f| f.ends_with(".parquet")),
        "nothing extracted"
    );

    // The session setting underneath: a read the planner's check did not see fails instead of filtering.
    let c = connect(&etl).await?;
    c.batch_execute(pgshift::source::SESSION_SETTINGS).await?;
    let e = c
        .query_one("SELECT count(*) FROM public.rls_t", &[])
        .await
        .expect_err("row_security = off refuses");
    assert!(format!("{e:?}").contains("row-level security"), "{e:?}");

    connect(&source)
        .await?
        .batch_execute("ALTER ROLE etl_rls BYPASSRLS")
        .await?;
    let stage = format!("file://{}", stage_dir("rls-bypass").display());
    let out = run(&etl, &target, &stage, &["public.rls_t"])
        .await?
        .map_err(anyhow::Error::msg)?;
    equal(&source, &target, &out, &["public.rls_t"]).await?;
    assert_eq!(rows_of(&target, "public.rls_t").await?, Some(3000));
    Ok(())
}

/// 2. A resumed run pointed at another database is refused by name: a run reads one source. The same command against
/// the first database resumes and loads it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_against_another_source_is_refused() -> Result<()> {
    let schema = |from: i64| {
        format!(
            "CREATE TABLE public.t (id int8 PRIMARY KEY, v text);
             INSERT INTO public.t SELECT g, 'v' || g FROM generate_series({from}, {from} + 19999) g; ANALYZE;"
        )
    };
    let a = db("resrca", &schema(1)).await?;
    let b = db("resrcb", &schema(1_000_001)).await?;
    let target = cluster().create_db("resrcwh").await?;
    let stage = format!("file://{}", stage_dir("resrc").display());
    let mut req = request(&stage, &["public.t"], 8);
    req.settings.max_concurrency = 1;
    req.run_id = Some("r1".into());
    // The first attempt stops when range 5's result is written: ranges 0-4 landed.
    let gate: Gate = Arc::new(|op| match op {
        Op::Create(key) if key.contains("part-00005.result.json") => Verdict::Fail(pgshift::stage::StageError::Io {
            location: key.to_string(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        }),
        _ => Verdict::Pass,
    });
    let faulty = Arc::new(HookedStages {
        inner: Arc::new(UrlStages::default()),
        gate,
    });
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let first = run_local(&a, req.clone(), faulty, wh.clone()).await?;
    assert!(first.output.is_err(), "the first attempt stops");
    let other = run_local(&b, req.clone(), Arc::new(UrlStages::default()), wh.clone()).await?;
    let failure = format!("{}", other.output.expect_err("another source"));
    for says in ["Pipeline.Fatal.RunExists", "resrcb", "resrca", "--source"] {
        assert!(failure.contains(says), "{says:?} in {failure}");
    }
    assert_eq!(rows_of(&target, "public.t").await?, None, "nothing of either loaded");
    let again = run_local(&a, req, Arc::new(UrlStages::default()), wh).await?;
    let out = again.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    equal(&a, &target, &out, &["public.t"]).await?;
    assert_eq!(rows_of(&target, "public.t").await?, Some(20_000));
    Ok(())
}

/// 3. A warehouse whose default isolation is REPEATABLE READ: two concurrent replaces of a keyless target that keeps
/// its comment (so replaced by rows, not renamed) still leave the source once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replaces_stay_exact_under_a_repeatable_read_default() -> Result<()> {
    let source = db(
        "rrsrc",
        "CREATE TABLE public.k (id int8 NOT NULL, v text);
         INSERT INTO public.k SELECT g, 'v' || g FROM generate_series(1, 1000) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("rrwh").await?;
    let first = run(
        &source,
        &target,
        &format!("file://{}", stage_dir("rr-0").display()),
        &["public.k"],
    )
    .await?;
    let plan = plan_of(&first.map_err(anyhow::Error::msg)?).await?;
    let db_name = target.rsplit('/').next().unwrap_or_default().to_string();
    connect(&target)
        .await?
        .batch_execute(&format!(
            "COMMENT ON TABLE public.k IS 'kept'; \
             ALTER DATABASE \"{db_name}\" SET default_transaction_isolation = 'repeatable read'"
        ))
        .await?;
    let wh: Arc<dyn Warehouse> = Arc::new(overlapping(&target)?);
    let stage = format!("file://{}", stage_dir("rr").display());
    let go = |id: &str| {
        let mut req = request(&stage, &["public.k"], 2);
        req.run_id = Some(id.to_string());
        run_local(&source, req, Arc::new(UrlStages::default()), wh.clone())
    };
    let (a, b) = tokio::join!(go("rr-a"), go("rr-b"));
    a?.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    b?.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert_eq!(rows_of(&target, "public.k").await?, Some(1000));
    assert_eq!(
        fingerprint(&target, &plan, "public.k", false).await?,
        fingerprint(&source, &plan, "public.k", true).await?
    );
    Ok(())
}

/// 5. A user's function that is a better match than the built-in the extraction calls (`to_json(int[])` over
/// `pg_catalog.to_json(anyelement)`) changes nothing: every built-in resolves in `pg_catalog`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_function_never_stands_in_for_a_built_in() -> Result<()> {
    let source = db(
        "shadowsrc",
        "CREATE TABLE public.arr (id int8 PRIMARY KEY, a int4[], t text);
         INSERT INTO public.arr SELECT g, ARRAY[g, g + 1], 't' || g FROM generate_series(1, 500) g;
         CREATE FUNCTION public.to_json(int[]) RETURNS json LANGUAGE sql AS $$ SELECT '\"not the array\"'::json $$;
         ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("shadowwh").await?;
    let stage = format!("file://{}", stage_dir("shadow").display());
    let out = run(&source, &target, &stage, &["public.arr"])
        .await?
        .map_err(anyhow::Error::msg)?;
    equal(&source, &target, &out, &["public.arr"]).await?;
    let v: String = connect(&target)
        .await?
        .query_one("SELECT a FROM public.arr WHERE id = 7", &[])
        .await?
        .get(0);
    assert_eq!(v, "[7,8]");
    Ok(())
}

/// 6. An inheritance parent is read without its children's rows (each child is a table of its own); a
/// declaratively partitioned table is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inheritance_parent_is_loaded_without_its_childrens_rows() -> Result<()> {
    let source = db(
        "inhsrc",
        "CREATE TABLE public.inh_p (id int PRIMARY KEY, v text);
         INSERT INTO public.inh_p SELECT g, 'p' || g FROM generate_series(1, 1000) g;
         CREATE TABLE public.inh_c () INHERITS (public.inh_p);
         INSERT INTO public.inh_c SELECT g, 'c' || g FROM generate_series(5001, 5500) g;
         CREATE TABLE public.parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (1) TO (1000);
         CREATE TABLE public.parted_2 PARTITION OF public.parted FOR VALUES FROM (1000) TO (3000);
         INSERT INTO public.parted SELECT g, 'x' || g FROM generate_series(1, 2999) g;
         ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("inhwh").await?;
    let stage = format!("file://{}", stage_dir("inh").display());
    let tables = ["public.inh_p", "public.inh_c", "public.parted"];
    let out = run(&source, &target, &stage, &tables)
        .await?
        .map_err(anyhow::Error::msg)?;
    equal(&source, &target, &out, &tables).await?;
    assert_eq!(rows_of(&target, "public.inh_p").await?, Some(1000));
    assert_eq!(rows_of(&target, "public.inh_c").await?, Some(500));
    assert_eq!(rows_of(&target, "public.parted").await?, Some(2999));
    Ok(())
}

/// 9. `--infinity null` on a NOT NULL column holding infinity: the infinities load as NULL (the column is nullable in
/// Parquet and the target), in one attempt, not a minute of retries of a "malformed stream".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinity_null_on_a_not_null_column_loads_null() -> Result<()> {
    let source = db(
        "infsrc",
        "CREATE TABLE public.ev (id int8 PRIMARY KEY, at timestamptz NOT NULL, d date NOT NULL);
         INSERT INTO public.ev SELECT g, TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 h', DATE '2024-01-01' + g
           FROM generate_series(1, 300) g;
         UPDATE public.ev SET at = 'infinity', d = '-infinity' WHERE id IN (7, 8); ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("infwh").await?;
    let stage = format!("file://{}", stage_dir("inf").display());
    let mut req = request(&stage, &["public.ev"], 2);
    req.policies.infinity = InfinityPolicy::Null;
    let t0 = std::time::Instant::now();
    let output = run_request(&source, &target, req).await?.map_err(anyhow::Error::msg)?;
    assert!(t0.elapsed() < std::time::Duration::from_secs(20), "{:?}", t0.elapsed());
    equal(&source, &target, &output, &["public.ev"]).await?;
    let nulls: i64 = connect(&target)
        .await?
        .query_one("SELECT count(*) FROM public.ev WHERE at IS NULL AND d IS NULL", &[])
        .await?
        .get(0);
    assert_eq!(nulls, 2);
    Ok(())
}

/// 14. A role whose own settings would time out every statement runs as any other (pgshift pins the settings it
/// depends on); a server error met while planning is named by its own message, not "db error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roles_timeouts_change_nothing_and_planning_errors_say_what_the_server_said() -> Result<()> {
    let source = db(
        "rolesrc",
        "CREATE SCHEMA sales;
         CREATE TABLE sales.o (id int8 PRIMARY KEY, v text);
         INSERT INTO sales.o SELECT g, 'v' || g FROM generate_series(1, 20000) g;
         DO $$ BEGIN CREATE ROLE etl_slow LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         ALTER ROLE etl_slow SET statement_timeout = '5ms';
         ALTER ROLE etl_slow SET lock_timeout = '1ms';
         ALTER ROLE etl_slow SET idle_in_transaction_session_timeout = '5ms';
         ALTER ROLE etl_slow SET search_path = 'sales, public';
         GRANT USAGE ON SCHEMA sales TO etl_slow; GRANT SELECT ON sales.o TO etl_slow; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("rolewh").await?;
    let slow = as_role(&source, "etl_slow");
    let stage = format!("file://{}", stage_dir("role").display());
    let out = run(&slow, &target, &stage, &["sales.o"])
        .await?
        .map_err(anyhow::Error::msg)?;
    equal(&source, &target, &out, &["sales.o"]).await?;

    // A role that may not read the schema: the planner's failure names the server's own message, at once.
    connect(&source)
        .await?
        .batch_execute("REVOKE USAGE ON SCHEMA sales FROM etl_slow")
        .await?;
    let t0 = std::time::Instant::now();
    let stage = format!("file://{}", stage_dir("role-denied").display());
    let failure = run(&slow, &target, &stage, &["sales.o"]).await?.expect_err("denied");
    assert!(failure.contains("permission denied for schema sales"), "{failure}");
    assert!(!failure.contains("db error"), "{failure}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(20), "{:?}", t0.elapsed());
    Ok(())
}

/// 4. A tasks.json edited after planning (range 0's upper bound moved down): the extractor refuses the task that no
/// longer hashes to what the plan sealed; an edit that reseals the task is extracted but refused by the loader, which
/// compares each result's task with the plan's own. Nothing is loaded either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_task_is_refused_by_the_extractor_and_by_the_loader() -> Result<()> {
    let source = db(
        "editsrc",
        "CREATE TABLE public.e (id int8 PRIMARY KEY, v text);
         INSERT INTO public.e SELECT g, 'v' || g FROM generate_series(1, 10000) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("editwh").await?;
    let dir = stage_dir("edited");
    let stages = Arc::new(UrlStages::default());
    let pctx = pgshift::plan::PlanContext {
        source: Arc::new(pgshift::source::PgConnector::new(&source)?),
        stages: stages.clone(),
    };
    let (plan, summary) =
        pgshift::plan::handle(&pctx, request(&format!("file://{}", dir.display()), &["public.e"], 4)).await?;
    let tasks_path = summary
        .tasks_url
        .strip_prefix("file://")
        .expect("file stage")
        .to_string();
    let mut tasks: serde_json::Value = serde_json::from_slice(&std::fs::read(&tasks_path)?)?;
    tasks[0]["bounds"]["upper"][0]["value"] = serde_json::json!("100");
    let edited: Vec<pgshift::contract::model::ExtractTask> = serde_json::from_value(tasks)?;
    let ectx = pgshift::ExtractContext {
        source: Arc::new(pgshift::source::PgConnector::new(&source)?),
        stages,
    };
    let e = pgshift::extract(&ectx, edited[0].clone())
        .await
        .expect_err("an edited task");
    assert_eq!(e.name(), "Pipeline.Fatal.InvalidInput", "{e}");
    assert!(e.to_string().contains("tasks.json was changed after planning"), "{e}");

    // Resealed: extracted as edited, then refused by the loader before anything reaches the warehouse.
    for t in edited {
        let mut t = t;
        t.task_id = t.identity();
        pgshift::extract(&ectx, t).await?;
    }
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let loaded = super::load::load(
        wh,
        &plan,
        pgshift::contract::load::LoadMode::Replace,
        pgshift::contract::load::Atomicity::Table,
    )
    .await;
    let e = loaded.expect_err("refused");
    assert!(e.to_string().contains("public.e range 0"), "{e}");
    assert!(e.to_string().contains("differs from the plan's"), "{e}");
    assert_eq!(rows_of(&target, "public.e").await?, None, "nothing loaded");
    Ok(())
}

/// 8. An older run's data loaded after a newer one's (two snapshots of one database, or a manual run beside a
/// triggered one): refused by name with the two instants, the target keeping the newer data; `allow_older` loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_older_than_the_targets_is_refused_unless_allowed() -> Result<()> {
    use pgshift::contract::load::{Atomicity, LoadMode, LoadOptions, LoadRequest};
    let source = db(
        "oldsrc",
        "CREATE TABLE public.o (id int8 PRIMARY KEY, v text);
         INSERT INTO public.o SELECT g, 'old' || g FROM generate_series(1, 2000) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("oldwh").await?;
    let stage = format!("file://{}", stage_dir("older").display());
    let stages = Arc::new(UrlStages::default());
    let older = super::load::plan_and_extract(&source, &["public.o"], &stage, stages.clone()).await?;
    let at_older = fingerprint(&source, &older, "public.o", true).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    connect(&source)
        .await?
        .batch_execute("UPDATE public.o SET v = 'new' || id WHERE id % 2 = 0")
        .await?;
    let newer = super::load::plan_and_extract(&source, &["public.o"], &stage, stages).await?;
    let at_newer = fingerprint(&source, &newer, "public.o", true).await?;
    assert!(older.data_instant() < newer.data_instant());
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    super::load::load(wh.clone(), &newer, LoadMode::Replace, Atomicity::Table).await?;
    let e = super::load::load(wh.clone(), &older, LoadMode::Replace, Atomicity::Table)
        .await
        .expect_err("older data");
    assert_eq!(e.name(), "Pipeline.Fatal.OlderData", "{e}");
    assert!(
        e.to_string().contains("public.o") && e.to_string().contains("--allow-older"),
        "{e}"
    );
    assert_eq!(
        fingerprint(&target, &newer, "public.o", false).await?,
        at_newer,
        "the newer data stays"
    );

    let ctx = pgshift::load::LoadContext::new(Arc::new(UrlStages::default()), wh);
    let req = LoadRequest {
        plan_url: super::load::plan_url(&older),
        options: LoadOptions {
            allow_older: true,
            ..LoadOptions::default()
        },
        ..LoadRequest::default()
    };
    pgshift::load::load(&ctx, req).await?;
    assert_eq!(
        fingerprint(&target, &older, "public.o", false).await?,
        at_older,
        "allowed: the older data"
    );
    Ok(())
}

/// 16. A local run standing in for Redshift applies Redshift's value limits (`--warehouse-dialect redshift`): a
/// 70,000-byte text, an 80,000-byte `varchar(20000)` value or a bytea past VARBYTE's 16 MiB fail the load by column
/// before anything loads, as they would on Redshift; without it, PostgreSQL holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_rehearsal_for_redshift_fails_where_redshift_would() -> Result<()> {
    use pgshift::contract::load::{LoadOptions, WarehouseDialect};
    let source = db(
        "limsrc",
        "CREATE TABLE public.big_t (id int8 PRIMARY KEY, t text);
         INSERT INTO public.big_t VALUES (1, repeat('x', 70000)), (2, 'short');
         CREATE TABLE public.big_v (id int8 PRIMARY KEY, v varchar(20000));
         INSERT INTO public.big_v VALUES (1, repeat('😀', 20000)), (2, 'short');
         CREATE TABLE public.big_b (id int8 PRIMARY KEY, b bytea);
         INSERT INTO public.big_b VALUES (1, decode(repeat('ab', 16777217), 'hex')), (2, '\\x00');
         ANALYZE;",
    )
    .await?;
    for (table, column, limit) in [
        ("public.big_t", "t", "VARCHAR(65535)"),
        ("public.big_v", "v", "VARCHAR(65535)"),
        ("public.big_b", "b", "VARBYTE(16777216)"),
    ] {
        let target = cluster().create_db("limwh").await?;
        let stage = format!("file://{}", stage_dir("limits").display());
        let mut req = request(&stage, &[table], 1);
        req.load = Some(LoadOptions {
            warehouse_dialect: Some(WarehouseDialect::Redshift),
            ..LoadOptions::default()
        });
        let failure = run_request(&source, &target, req)
            .await?
            .expect_err("past Redshift's limit");
        for says in ["Pipeline.Fatal.BadValue", &format!("{table}.{column}"), limit] {
            assert!(failure.contains(says), "{says:?} in {failure}");
        }
        assert_eq!(rows_of(&target, table).await?, None, "{table}: nothing loaded");
        // Without the rehearsal, PostgreSQL holds the values.
        let out = run(&source, &target, &stage, &[table])
            .await?
            .map_err(anyhow::Error::msg)?;
        equal(&source, &target, &out, &[table]).await?;
    }
    // Cutting long text is refused by the rehearsal as by Redshift, not done quietly on PostgreSQL.
    let target = cluster().create_db("limwh").await?;
    let mut req = request(
        &format!("file://{}", stage_dir("limits-cut").display()),
        &["public.big_t"],
        1,
    );
    req.load = Some(LoadOptions {
        warehouse_dialect: Some(WarehouseDialect::Redshift),
        long_text: pgshift::contract::load::LongText::Truncate,
        ..LoadOptions::default()
    });
    let failure = run_request(&source, &target, req)
        .await?
        .expect_err("Redshift cannot cut");
    assert!(
        failure.contains("long_text: truncate is not supported for Redshift"),
        "{failure}"
    );
    assert_eq!(rows_of(&target, "public.big_t").await?, None);
    Ok(())
}

/// 10. A first load that fails after its set-up created the target: Cleanup drops the target again (still empty, never
/// committed to), so the warehouse is as it was, as the report says. A target that existed before stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_load_leaves_no_empty_target_behind() -> Result<()> {
    use super::hooked::{Edit, Hooked};
    use pgshift::warehouse::Step;
    let source = db(
        "firstsrc",
        "CREATE TABLE public.f (id int8 PRIMARY KEY, v text);
         INSERT INTO public.f SELECT g, 'v' || g FROM generate_series(1, 1000) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("firstwh").await?;
    let failing = || -> Result<Arc<dyn Warehouse>> {
        let edit: Edit = Box::new(|steps| {
            steps.insert(
                1,
                Step::Sql("DO $$ BEGIN RAISE EXCEPTION 'injected: the load fails'; END $$".into()),
            );
        });
        Ok(Arc::new(Hooked::new(PgWarehouse::new(&target)?, edit)))
    };
    let stage = format!("file://{}", stage_dir("first").display());
    let out = run_local(
        &source,
        request(&stage, &["public.f"], 2),
        Arc::new(UrlStages::default()),
        failing()?,
    )
    .await?;
    assert!(out.output.is_err(), "the load fails");
    assert_eq!(
        rows_of(&target, "public.f").await?,
        None,
        "the target the run created is gone"
    );
    let committed: u64 = out.report.tables.iter().map(|t| t.loaded_rows.unwrap_or(0)).sum();
    assert_eq!(committed, 0, "the report claims nothing");

    // Loaded once; a later failed load keeps the target and its rows.
    let stage = format!("file://{}", stage_dir("first-ok").display());
    let ok = run(&source, &target, &stage, &["public.f"])
        .await?
        .map_err(anyhow::Error::msg)?;
    let stage = format!("file://{}", stage_dir("first-again").display());
    let again = run_local(
        &source,
        request(&stage, &["public.f"], 2),
        Arc::new(UrlStages::default()),
        failing()?,
    )
    .await?;
    assert!(again.output.is_err());
    equal(&source, &target, &ok, &["public.f"]).await?;
    Ok(())
}

/// 11. `--atomic run --schema-evolution add-and-widen` with the run's transaction failing: the report does not say
/// "the warehouse is as it was" when a target's type was widened before it; it names each statement that was kept
/// and why it is harmless, and every table holds the rows it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_run_that_fails_names_the_schema_evolution_it_kept() -> Result<()> {
    use super::hooked::{Edit, Hooked};
    use pgshift::contract::load::{Atomicity, LoadOptions, SchemaEvolution};
    use pgshift::warehouse::Step;
    let source = db(
        "evosrc",
        "CREATE TABLE public.d (id int8 PRIMARY KEY, amount smallint NOT NULL);
         INSERT INTO public.d SELECT g, g FROM generate_series(1, 500) g;
         CREATE TABLE public.e (id int8 PRIMARY KEY, v text);
         INSERT INTO public.e SELECT g, 'v' || g FROM generate_series(1, 500) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("evowh").await?;
    let first = run(
        &source,
        &target,
        &format!("file://{}", stage_dir("evo-0").display()),
        &["public.d"],
    )
    .await?;
    let first = plan_of(&first.map_err(anyhow::Error::msg)?).await?;
    let before = fingerprint(&target, &first, "public.d", false).await?;
    connect(&source)
        .await?
        .batch_execute("ALTER TABLE public.d ALTER COLUMN amount TYPE int8; ANALYZE public.d;")
        .await?;
    let edit: Edit = Box::new(|steps| {
        steps.insert(
            1,
            Step::Sql("DO $$ BEGIN RAISE EXCEPTION 'injected: the run fails'; END $$".into()),
        );
    });
    let wh: Arc<dyn Warehouse> = Arc::new(Hooked::new(PgWarehouse::new(&target)?, edit));
    let mut req = request(
        &format!("file://{}", stage_dir("evo").display()),
        &["public.d", "public.e"],
        2,
    );
    req.load = Some(LoadOptions {
        atomic: Atomicity::Run,
        schema_evolution: SchemaEvolution::AddAndWiden,
        ..LoadOptions::default()
    });
    let out = run_local(&source, req, Arc::new(UrlStages::default()), wh).await?;
    assert!(out.output.is_err(), "the run fails");
    let said = out.report.render();
    assert!(!said.contains("the warehouse is as it was"), "{said}");
    assert!(said.contains("changed before the load transaction, and kept"), "{said}");
    assert!(
        said.contains("public.d: ALTER TABLE \"public\".\"d\" ALTER COLUMN \"amount\" TYPE BIGINT"),
        "{said}"
    );
    assert_eq!(
        fingerprint(&target, &first, "public.d", false).await?,
        before,
        "d holds what it held"
    );
    assert_eq!(
        rows_of(&target, "public.e").await?,
        None,
        "e, created by the run, is gone"
    );
    Ok(())
}
