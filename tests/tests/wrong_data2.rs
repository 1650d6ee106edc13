//! Never load wrong data, round two (continued): the target's own rules and triggers, foreign files, swapped plans.
//! Every test asserts what the warehouse holds (row count and a per-column fingerprint), not only an outcome.

use std::sync::Arc;

use anyhow::Result;
use pgshift::contract::load::{LoadMode, LoadOptions, LoadRequest, LoadResult};
use pgshift::contract::plan::Plan;
use pgshift::load::{LoadContext, LoadError};
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::{Step, Warehouse};
use pgshift::UrlStages;
use pgshift_tests::{cluster, connect, list_files, stage_dir};

use super::db;
use super::hooked::{is_sql, Edit, Hooked};
use super::load::{fingerprint, plan_and_extract, plan_url};
use super::pipeline::{plan_of, request, run_local};

const RR: &str = "CREATE TABLE public.rr (id int8 PRIMARY KEY, v text);
    INSERT INTO public.rr SELECT g, 'v' || g FROM generate_series(1, 2000) g; ANALYZE;";

async fn count(url: &str, table: &str) -> Result<i64> {
    Ok(connect(url)
        .await?
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0))
}

async fn load_opts(wh: Arc<dyn Warehouse>, plan: &Plan, options: LoadOptions) -> Result<LoadResult, LoadError> {
    let ctx = LoadContext::new(Arc::new(UrlStages::default()), wh);
    let req = LoadRequest {
        plan_url: plan_url(plan),
        options,
        ..LoadRequest::default()
    };
    pgshift::load::load(&ctx, req).await
}

fn mode(mode: LoadMode, allow_target_triggers: bool) -> LoadOptions {
    LoadOptions {
        mode,
        allow_target_triggers,
        ..LoadOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_rules_and_triggers_are_refused_by_name_before_anything_is_extracted() -> Result<()> {
    let source = db("rrsrc", RR).await?;
    let target = cluster().create_db("rrwh").await?;
    let wh_sql = connect(&target).await?;
    wh_sql
        .batch_execute(
            "CREATE TABLE public.rr (id int8 PRIMARY KEY, v text); INSERT INTO public.rr VALUES (1, 'old');
             CREATE RULE rr_nothing AS ON INSERT TO public.rr DO INSTEAD NOTHING;",
        )
        .await?;
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);

    // The pipeline: refused by name in the pre-flight, before any range is extracted; the target as it was.
    let dir = stage_dir("rr");
    let stage = format!("file://{}", dir.display());
    let mut req = request(&stage, &["public.rr"], 2);
    req.load = Some(mode(LoadMode::Replace, false));
    let out = run_local(&source, req, Arc::new(UrlStages::default()), wh.clone()).await?;
    let failure = out.output.as_ref().expect_err("a target with a rule is refused");
    assert_eq!(failure.error, "Pipeline.Fatal.TargetTriggers", "{}", failure.cause);
    assert!(
        failure.cause.contains("public.rr: rule rr_nothing") && failure.cause.contains("--allow-target-triggers"),
        "{}",
        failure.cause
    );
    let parquet: Vec<String> = list_files(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(parquet.is_empty(), "nothing was extracted: {parquet:?}");
    assert_eq!(count(&target, "public.rr").await?, 1);

    // A BEFORE INSERT trigger that skips even ids and rewrites the rest: a load by hand is refused too, in every
    // mode, and the target is untouched.
    wh_sql
        .batch_execute(
            "DROP RULE rr_nothing ON public.rr;
             CREATE FUNCTION public.rr_skip() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.id % 2 = 0 THEN RETURN NULL; END IF; NEW.v := 'changed'; RETURN NEW; END $$;
             CREATE TRIGGER rr_skip BEFORE INSERT OR UPDATE ON public.rr FOR EACH ROW EXECUTE FUNCTION public.rr_skip();",
        )
        .await?;
    let plan = plan_and_extract(&source, &["public.rr"], &stage, Arc::new(UrlStages::default())).await?;
    let before = fingerprint(&target, &plan, "public.rr", false).await?;
    for m in [LoadMode::Replace, LoadMode::Append, LoadMode::Merge] {
        let e = load_opts(wh.clone(), &plan, mode(m, false))
            .await
            .expect_err("a target with a trigger is refused");
        assert_eq!(e.name(), "Pipeline.Fatal.TargetTriggers", "{m:?}: {e}");
        assert!(e.to_string().contains("public.rr: trigger rr_skip"), "{e}");
        assert_eq!(fingerprint(&target, &plan, "public.rr", false).await?, before, "{m:?}");
    }

    // Allowed explicitly: the trigger has its way, and the outcome says the target's contents are its business.
    let r = load_opts(wh.clone(), &plan, mode(LoadMode::Replace, true)).await?;
    let note = r.tables[0].swap_note.clone().unwrap_or_default();
    assert!(
        note.contains("trigger rr_skip") && note.contains("--allow-target-triggers"),
        "{note}"
    );
    assert_eq!(count(&target, "public.rr").await?, 1_000);

    // Allowed on the run: the run's summary says whose business the target's contents are.
    let mut req = request(&stage, &["public.rr"], 2);
    req.load = Some(mode(LoadMode::Replace, true));
    let out = run_local(&source, req, Arc::new(UrlStages::default()), wh.clone()).await?;
    out.output.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?;
    let text = out.report.render();
    assert!(
        text.lines().any(|l| l.starts_with("  public.rr: ")
            && l.contains(
                "the target has trigger rr_skip, allowed by --allow-target-triggers: what it holds is their business"
            )),
        "{text}"
    );
    assert_eq!(count(&target, "public.rr").await?, 1_000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_counts_what_reached_the_target_not_only_staging() -> Result<()> {
    let source = db("rrlatesrc", RR).await?;
    let target = cluster().create_db("rrlatewh").await?;
    // A view on the target: replace keeps the table and replaces its rows (no rename).
    connect(&target)
        .await?
        .batch_execute(
            "CREATE TABLE public.rr (id int8 PRIMARY KEY, v text); INSERT INTO public.rr VALUES (100000, 'old');
             CREATE VIEW public.rr_view AS SELECT id FROM public.rr;",
        )
        .await?;
    let stage = format!("file://{}", stage_dir("rrlate").display());
    let plan = plan_and_extract(&source, &["public.rr"], &stage, Arc::new(UrlStages::default())).await?;
    let before = fingerprint(&target, &plan, "public.rr", false).await?;
    // A rule made after the checks, inside the load transaction, before the swap: its DELETE keeps the old rows
    // (the INSERT still writes every row of the run).
    let edit: Edit = Box::new(|steps| {
        if let Some(i) = steps.iter().position(|s| is_sql(s, "LOCK TABLE", "")) {
            steps.insert(
                i,
                Step::Sql("CREATE RULE rr_late AS ON DELETE TO public.rr DO INSTEAD NOTHING".into()),
            );
        }
    });
    let wh: Arc<dyn Warehouse> = Arc::new(Hooked::new(PgWarehouse::new(&target)?, edit));
    let e = load_opts(wh, &plan, mode(LoadMode::Replace, false))
        .await
        .expect_err("the target holds its old row beside the run's");
    assert_eq!(e.name(), "Pipeline.Fatal.Reconcile", "{e}");
    assert!(
        e.to_string().contains("the target after its swap holds 2001 rows"),
        "{e}"
    );
    assert_eq!(fingerprint(&target, &plan, "public.rr", false).await?, before);
    assert_eq!(count(&target, "public.rr").await?, 1);
    Ok(())
}

/// Plans `tables` as run `run_id` in one range each, and extracts every range.
async fn plan_run(source: &str, tables: &[&str], stage: &str, run_id: &str) -> Result<Plan> {
    let stages = Arc::new(UrlStages::default());
    let pctx = pgshift::plan::PlanContext {
        source: Arc::new(pgshift::source::PgConnector::new(source)?),
        stages: stages.clone(),
    };
    let mut req = request(stage, tables, 1);
    req.run_id = Some(run_id.to_string());
    let (plan, _) = pgshift::plan::handle(&pctx, req).await?;
    let ectx = pgshift::ExtractContext {
        source: Arc::new(pgshift::source::PgConnector::new(source)?),
        stages,
    };
    for t in &plan.tasks {
        pgshift::extract(&ectx, t.clone()).await?;
    }
    Ok(plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_naming_another_runs_or_tables_parquet_is_refused() -> Result<()> {
    let source = db(
        "foreignsrc",
        "CREATE TABLE public.st (id int8 PRIMARY KEY, v text);
         INSERT INTO public.st SELECT g, 'st' || g FROM generate_series(1, 1000) g;
         CREATE TABLE public.st2 (id int8 PRIMARY KEY, v text);
         INSERT INTO public.st2 SELECT g, 'other' || g FROM generate_series(1, 500) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("foreignwh").await?;
    let dir = stage_dir("foreign");
    let stage = format!("file://{}", dir.display());
    plan_run(&source, &["public.st2"], &stage, "other").await?;
    let victim = plan_run(&source, &["public.st"], &stage, "victim").await?;

    // victim's result of st range 0 edited to name other's st2 files (sizes and CRCs valid, plan_id untouched).
    let theirs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("other/public/st2/part-00000.result.json"))?)?;
    let path = dir.join("victim/public/st/part-00000.result.json");
    let mut ours: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    for field in ["files", "rows", "first_key", "last_key"] {
        ours[field] = theirs[field].clone();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&ours)?)?;

    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let e = load_opts(wh, &victim, mode(LoadMode::Replace, false))
        .await
        .expect_err("another run's files are refused");
    assert_eq!(e.name(), "Pipeline.Fatal.PlanMismatch", "{e}");
    assert!(
        e.to_string().contains("public.st range 0")
            && e.to_string().contains("other/public/st2/part-00000-000.parquet"),
        "{e}"
    );
    let exists: bool = connect(&target)
        .await?
        .query_one("SELECT to_regclass('public.st') IS NOT NULL", &[])
        .await?
        .get(0);
    assert!(!exists, "nothing reached the warehouse");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_copied_over_another_runs_is_refused_before_anything_commits() -> Result<()> {
    let source = db(
        "swapsrc",
        "CREATE TABLE public.pa (id int8 PRIMARY KEY, v text);
         INSERT INTO public.pa SELECT g, 'a' || g FROM generate_series(1, 1000) g;
         CREATE TABLE public.pb (id int8 PRIMARY KEY, v text);
         INSERT INTO public.pb SELECT g, 'b' || g FROM generate_series(1, 10) g; ANALYZE;",
    )
    .await?;
    let target = cluster().create_db("swapwh").await?;
    connect(&target)
        .await?
        .batch_execute("CREATE TABLE public.pa (id int8 PRIMARY KEY, v text); INSERT INTO public.pa VALUES (1, 'old');")
        .await?;
    let dir = stage_dir("swap");
    let stage = format!("file://{}", dir.display());
    let a = plan_run(&source, &["public.pa"], &stage, "runa").await?;
    plan_run(&source, &["public.pb"], &stage, "runb").await?;
    let before = fingerprint(&target, &a, "public.pa", false).await?;
    std::fs::copy(dir.join("runa/plan.json"), dir.join("runb/plan.json"))?;

    let ctx = LoadContext::new(
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(&target)?) as Arc<dyn Warehouse>,
    );
    let b_url = format!("{stage}/runb/plan.json");
    let held = pgshift::load::hold_run(&ctx, &b_url)
        .await
        .expect_err("run a's plan read as run b's");
    assert_eq!(held.name(), "Pipeline.Fatal.PlanMismatch", "{held}");
    let req = LoadRequest {
        plan_url: b_url,
        ..LoadRequest::default()
    };
    let e = pgshift::load::load(&ctx, req)
        .await
        .expect_err("run a's plan read as run b's");
    assert_eq!(e.name(), "Pipeline.Fatal.PlanMismatch", "{e}");
    assert!(
        e.to_string().contains("\"runa\"") && e.to_string().contains(&format!("{stage}/runa/plan.json")),
        "{e}"
    );
    assert_eq!(
        fingerprint(&target, &a, "public.pa", false).await?,
        before,
        "nothing committed"
    );
    assert_eq!(count(&target, "public.pa").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_refused_while_the_lock_holder_lives() -> Result<()> {
    let source = db("heldsrc", RR).await?;
    let target = cluster().create_db("heldwh").await?;
    let dir = stage_dir("held");
    let stage = format!("file://{}", dir.display());
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let mut req = request(&stage, &["public.rr"], 2);
    req.run_id = Some("held".into());
    // Kept: the restart below must find what it would delete.
    req.load = Some(LoadOptions {
        keep_parts: true,
        ..Default::default()
    });
    let first = run_local(&source, req.clone(), Arc::new(UrlStages::default()), wh.clone()).await?;
    let plan = plan_of(first.output.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?).await?;
    let loaded = fingerprint(&target, &plan, "public.rr", false).await?;
    assert_eq!(loaded, fingerprint(&source, &plan, "public.rr", true).await?);

    // The same execution of the run as another live process on this host holds it, its load not finished.
    let mut holder = std::process::Command::new("sleep").arg("120").spawn()?;
    let lock_path = dir.join("held/lock.json");
    let mut lock: serde_json::Value = serde_json::from_slice(&std::fs::read(&lock_path)?)?;
    lock["process"]["pid"] = holder.id().into();
    lock["process"]["start_ticks"] = 0.into();
    std::fs::write(&lock_path, serde_json::to_vec(&lock)?)?;
    std::fs::remove_file(dir.join("held/load.json"))?;
    let before = list_files(&dir);
    assert!(
        before.iter().any(|f| f.starts_with("held/") && f.ends_with(".parquet")),
        "{before:?}"
    );

    req.restart = true;
    let again = run_local(&source, req.clone(), Arc::new(UrlStages::default()), wh.clone()).await?;
    let refused = again
        .output
        .as_ref()
        .map(|_| ())
        .map_err(|f| (f.error.clone(), f.cause.clone()));
    // Held by another execution (a deployed one, or another name): a restart is refused too, not ended silently
    // as a duplicate delivery.
    let mut other = lock.clone();
    other["execution"] = "arn:aws:states:local:000000000000:execution:pgshift:someone-else".into();
    std::fs::write(&lock_path, serde_json::to_vec(&other)?)?;
    let beside = run_local(&source, req.clone(), Arc::new(UrlStages::default()), wh.clone()).await?;
    let beside = beside
        .output
        .as_ref()
        .map(|_| ())
        .map_err(|f| (f.error.clone(), f.cause.clone()));
    std::fs::write(&lock_path, serde_json::to_vec(&lock)?)?;
    holder.kill()?;
    holder.wait()?;
    let (name, cause) = refused.expect_err("a restart beside a live holder is refused");
    assert_eq!(name, "Pipeline.Fatal.RunExists", "{cause}");
    assert!(
        cause.contains(&format!("process {}", lock["process"]["pid"])),
        "{cause}"
    );
    let (name, cause) = beside.expect_err("a restart beside another live execution is refused");
    assert_eq!(name, "Pipeline.Fatal.RunExists", "{cause}");
    assert!(cause.contains("someone-else"), "{cause}");
    let after = list_files(&dir);
    for f in before.iter().filter(|f| f.starts_with("held/")) {
        assert!(after.contains(f), "{f} deleted beside the live holder");
    }
    assert_eq!(fingerprint(&target, &plan, "public.rr", false).await?, loaded);

    // The holder gone, the restart runs.
    let restarted = run_local(&source, req, Arc::new(UrlStages::default()), wh).await?;
    let plan2 = plan_of(restarted.output.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?).await?;
    assert_eq!(
        fingerprint(&target, &plan2, "public.rr", false).await?,
        fingerprint(&source, &plan2, "public.rr", true).await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_drops_the_runs_staging_tables_through_the_registry_when_the_plan_is_gone() -> Result<()> {
    let source = db("noplansrc", RR).await?;
    let target = cluster().create_db("noplanwh").await?;
    connect(&target)
        .await?
        .batch_execute("CREATE TABLE public.rr (id int8 PRIMARY KEY, v text); INSERT INTO public.rr VALUES (1, 'old');")
        .await?;
    let dir = stage_dir("noplan");
    let stage = format!("file://{}", dir.display());
    let mut req = request(&stage, &["public.rr"], 2);
    req.run_id = Some("noplan".into());
    // plan.json deleted while the load transaction runs, which then fails.
    let plan_path = dir.join("noplan/plan.json");
    let edit: Edit = Box::new(move |steps| {
        if steps.iter().any(|s| is_sql(s, "LOCK TABLE", "")) {
            let _ = std::fs::remove_file(&plan_path);
            steps.push(Step::Sql("SELECT 1 / 0".into()));
        }
    });
    let wh: Arc<dyn Warehouse> = Arc::new(Hooked::new(PgWarehouse::new(&target)?, edit));
    let out = run_local(&source, req, Arc::new(UrlStages::default()), wh).await?;
    let failure = out.output.as_ref().expect_err("the load fails");
    assert_eq!(failure.error, "Pipeline.Fatal.Warehouse", "{}", failure.cause);
    let cleanup = out.cleanup.as_ref().expect("the Cleanup state ran");
    assert_eq!(cleanup.dropped.len(), 1, "{cleanup:?}");
    assert!(cleanup.dropped[0].contains("rr__pgshift_"), "{cleanup:?}");
    assert_eq!(
        pgshift_tests::staging_tables(&target).await?,
        0,
        "no staging table is left"
    );
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("noplan/status.json"))?)?;
    assert_eq!(status["status"], "FAILED");
    assert_eq!(count(&target, "public.rr").await?, 1, "the target as it was");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_says_whether_its_reconciliation_is_exact_or_of_a_live_source() -> Result<()> {
    let source = db("consistsrc", RR).await?;
    let target = cluster().create_db("consistwh").await?;
    let stage = format!("file://{}", stage_dir("consist").display());
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    for static_source in [false, true] {
        let mut req = request(&stage, &["public.rr"], 4);
        req.settings.static_source = static_source;
        let out = run_local(&source, req, Arc::new(UrlStages::default()), wh.clone()).await?;
        let plan = plan_of(out.output.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?).await?;
        let (want, not) = match static_source {
            false => ("consistency: live source", "consistency: exact"),
            true => ("consistency: exact", "consistency: live source"),
        };
        // The summary of the run, next to its reconciliation line.
        let text = out.report.render();
        assert!(out.report.reconciled(), "{text}");
        let reconciliation = text.find("reconciliation:").expect("a reconciliation line");
        let consistency = text.find(want).unwrap_or_else(|| panic!("{want:?} in {text}"));
        assert!(consistency > reconciliation && !text.contains(not), "{text}");
        if !static_source {
            assert!(text.contains("missed or read twice"), "{text}");
        }
        // `pgshift report` (the run read back from the stage) and report.html.
        let url = plan_url(&plan);
        let (back, _) = pgshift::report::from_stage(&UrlStages::default(), &url, 1024).await?;
        assert!(back.render().contains(want), "{}", back.render());
        let html = std::fs::read_to_string(format!(
            "{}/{}/report.html",
            stage.trim_start_matches("file://"),
            plan.run_id
        ))?;
        assert!(
            html.contains(want) && !html.contains(not),
            "report.html of a static_source={static_source} run"
        );
        assert_eq!(
            fingerprint(&target, &plan, "public.rr", false).await?,
            fingerprint(&source, &plan, "public.rr", true).await?
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_of_a_thousand_columns_is_one_short_line() -> Result<()> {
    let cols = |ty: &str| (1..=1198).map(|i| format!("c{i} {ty}")).collect::<Vec<_>>().join(", ");
    let source = db(
        "widesrc",
        &format!(
            "CREATE TABLE public.wide (id int8 PRIMARY KEY, {});
             INSERT INTO public.wide (id) SELECT generate_series(1, 10); ANALYZE;",
            cols("text")
        ),
    )
    .await?;
    let target = cluster().create_db("widewh").await?;
    connect(&target)
        .await?
        .batch_execute(&format!(
            "CREATE TABLE public.wide (id int8 PRIMARY KEY, {}); INSERT INTO public.wide (id) VALUES (1);",
            cols("int4")
        ))
        .await?;
    let stage = format!("file://{}", stage_dir("wide").display());
    let plan = plan_and_extract(&source, &["public.wide"], &stage, Arc::new(UrlStages::default())).await?;
    let before = fingerprint(&target, &plan, "public.wide", false).await?;
    let wh: Arc<dyn Warehouse> = Arc::new(PgWarehouse::new(&target)?);
    let e = load_opts(wh, &plan, mode(LoadMode::Replace, false))
        .await
        .expect_err("drift");
    assert_eq!(e.name(), "Pipeline.Fatal.SchemaDrift");
    let text = e.to_string();
    assert!(text.len() < 2_000, "{} bytes: {}…", text.len(), &text[..300]);
    assert!(
        text.contains("public.wide.c1") && text.contains("and 1193 more"),
        "{text}"
    );
    assert_eq!(fingerprint(&target, &plan, "public.wide", false).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_merge_count_the_rows_their_insert_wrote() -> Result<()> {
    let source = db("rrwrotesrc", RR).await?;
    let target = cluster().create_db("rrwrotewh").await?;
    connect(&target)
        .await?
        .batch_execute(
            "CREATE TABLE public.rr (id int8 PRIMARY KEY, v text); INSERT INTO public.rr VALUES (100000, 'old');
             CREATE FUNCTION public.rr_skip() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.id % 2 = 0 THEN RETURN NULL; END IF; NEW.v := 'changed'; RETURN NEW; END $$;",
        )
        .await?;
    let stage = format!("file://{}", stage_dir("rrwrote").display());
    let plan = plan_and_extract(&source, &["public.rr"], &stage, Arc::new(UrlStages::default())).await?;
    let before = fingerprint(&target, &plan, "public.rr", false).await?;
    // A trigger made after the checks, inside the load transaction, before the swap.
    let edit: Edit = Box::new(|steps| {
        if let Some(i) = steps.iter().position(|s| is_sql(s, "LOCK TABLE", "")) {
            steps.insert(
                i,
                Step::Sql(
                    "CREATE TRIGGER rr_late BEFORE INSERT ON public.rr FOR EACH ROW EXECUTE FUNCTION public.rr_skip()"
                        .into(),
                ),
            );
        }
    });
    let wh: Arc<dyn Warehouse> = Arc::new(Hooked::new(PgWarehouse::new(&target)?, edit));
    for m in [LoadMode::Append, LoadMode::Merge] {
        let e = load_opts(wh.clone(), &plan, mode(m, false))
            .await
            .expect_err("the insert wrote half the rows");
        assert_eq!(e.name(), "Pipeline.Fatal.Reconcile", "{m:?}: {e}");
        assert!(
            e.to_string()
                .contains("the swap's INSERT wrote 1000 rows but the parts hold 2000"),
            "{m:?}: {e}"
        );
        assert_eq!(fingerprint(&target, &plan, "public.rr", false).await?, before, "{m:?}");
    }
    Ok(())
}
