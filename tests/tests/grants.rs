//! The grants the loader's database user needs (issue 27 item 2; `load::grants`, `docs/deploy.md`): a warehouse role
//! without them fails the run in its pre-flight, by name, before any range is extracted, with the exact statements to
//! run for that role; run by a superuser, they let the same run through, the warehouse then equal to the source.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use pgshift::contract::load::{LoadOptions, SchemaEvolution};
use pgshift::contract::model::TableRef;
use pgshift::contract::plan::PlanRequest;
use pgshift::entry::local::RunOutcome;
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::Dialect;
use pgshift::UrlStages;
use pgshift_tests::{cluster, connect, list_files, stage_dir};

use super::db;
use super::load::fingerprint;
use super::pipeline::{plan_of, request, run_local};

const SOURCE: &str = "CREATE SCHEMA sales;
    CREATE TABLE sales.orders (id int8 PRIMARY KEY, v text);
    INSERT INTO sales.orders SELECT g, 'v' || g FROM generate_series(1, 3000) g;
    CREATE TABLE public.notes (id int4 PRIMARY KEY, note text);
    INSERT INTO public.notes SELECT g, 'n' || g FROM generate_series(1, 500) g; ANALYZE;";

/// A login role of its own for the warehouse `wh` (roles are the cluster's), and the URL that connects as it.
async fn role_for(wh: &str) -> Result<(String, String)> {
    let db = wh.rsplit('/').next().unwrap_or_default().to_string();
    let role = format!("{db}_etl");
    connect(&cluster().url("postgres"))
        .await?
        .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN"))
        .await?;
    Ok((role.clone(), wh.replacen("postgres@", &format!("{role}@"), 1)))
}

/// A run of `tables` from `source` into the warehouse at `wh_url` (connected as its user), staged under `name`.
async fn run(source: &str, wh_url: &str, name: &str, tables: &[&str], load: Option<LoadOptions>) -> Result<RunOutcome> {
    let stage = format!("file://{}", stage_dir(name).display());
    let req = PlanRequest {
        load,
        ..request(&stage, tables, 2)
    };
    run_local(
        source,
        req,
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(wh_url)?),
    )
    .await
}

/// The refusal of a run that lacked grants: its name, nothing extracted, and the statements its message gives.
fn refused(out: &RunOutcome, name: &str) -> Result<(String, String)> {
    let failure = out
        .output
        .as_ref()
        .err()
        .ok_or_else(|| anyhow!("the run should have been refused"))?;
    assert_eq!(failure.error, "Pipeline.Fatal.PermissionDenied", "{}", failure.cause);
    let parquet: Vec<String> = list_files(&stage_dir(name))
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(parquet.is_empty(), "nothing was extracted: {parquet:?}");
    // The cause is the Lambda's error as the definition caught it: `{"errorType", "errorMessage"}`.
    let cause: serde_json::Value = serde_json::from_str(&failure.cause)?;
    let message = cause["errorMessage"].as_str().unwrap_or_default().to_string();
    let statements = message
        .split_once("run: ")
        .map(|(_, s)| s.to_string())
        .ok_or_else(|| anyhow!("no statements in {message}"))?;
    Ok((message, statements))
}

/// The run went through, and each table in the warehouse is what the source holds.
async fn assert_loaded(out: &RunOutcome, source: &str, wh: &str, tables: &[&str]) -> Result<()> {
    let output = out.output.as_ref().map_err(|f| anyhow!("{f}"))?;
    let plan = plan_of(output).await?;
    for t in tables {
        assert_eq!(
            fingerprint(wh, &plan, t, false).await?,
            fingerprint(source, &plan, t, true).await?,
            "{t}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_on_the_database_is_refused_with_the_grants_to_run() -> Result<()> {
    let source = db("grsrc", SOURCE).await?;
    let wh = cluster().create_db("grwh").await?;
    let (role, as_role) = role_for(&wh).await?;
    let db = wh.rsplit('/').next().unwrap_or_default();
    let tables = ["sales.orders", "public.notes"];

    let out = run(&source, &as_role, "grants-db", &tables, None).await?;
    let (cause, statements) = refused(&out, "grants-db")?;
    assert!(cause.contains(&format!("the warehouse user \"{role}\"")), "{cause}");
    assert!(cause.contains(&format!("CREATE on database \"{db}\"")), "{cause}");
    // `sales` does not exist yet (CREATE on the database makes it); `public` does, and PUBLIC may not create in it.
    assert_eq!(
        statements,
        format!("GRANT CREATE ON DATABASE \"{db}\" TO \"{role}\"; GRANT CREATE ON SCHEMA \"public\" TO \"{role}\";")
    );
    let schemas: i64 = connect(&wh)
        .await?
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('pgshift', 'sales')",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(schemas, 0, "the pre-flight wrote nothing to the warehouse");

    // What the message says to run, run by the superuser: the same run goes through as the role.
    connect(&wh).await?.batch_execute(&statements).await?;
    let out = run(&source, &as_role, "grants-db", &tables, None).await?;
    assert_loaded(&out, &source, &wh, &tables).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_owned_by_another_role_needs_its_grants_or_under_schema_evolution_its_ownership() -> Result<()> {
    let source = db("grosrc", SOURCE).await?;
    let wh = cluster().create_db("growh").await?;
    let (role, as_role) = role_for(&wh).await?;
    let db = wh.rsplit('/').next().unwrap_or_default();
    connect(&wh)
        .await?
        .batch_execute(&format!(
            "CREATE SCHEMA sales; CREATE TABLE sales.orders (id int8 PRIMARY KEY, v text);
             INSERT INTO sales.orders VALUES (1, 'old'), (-1, 'gone');
             GRANT CREATE ON DATABASE \"{db}\" TO \"{role}\"; GRANT USAGE, CREATE ON SCHEMA sales TO \"{role}\";"
        ))
        .await?;
    let tables = ["sales.orders"];

    // replace: the target's rows are deleted and inserted, which its owner has not allowed the role.
    let out = run(&source, &as_role, "grants-owner", &tables, None).await?;
    let (cause, statements) = refused(&out, "grants-owner")?;
    assert!(cause.contains("DELETE on table \"sales\".\"orders\""), "{cause}");
    assert_eq!(
        statements,
        format!("GRANT SELECT, INSERT, DELETE ON TABLE \"sales\".\"orders\" TO \"{role}\";")
    );

    // With schema evolution the load may alter the target: that is its owner's, so the role must own it.
    let evolve = LoadOptions {
        schema_evolution: SchemaEvolution::AddAndWiden,
        ..LoadOptions::default()
    };
    let out = run(&source, &as_role, "grants-owner", &tables, Some(evolve.clone())).await?;
    let (cause, statements) = refused(&out, "grants-owner")?;
    assert!(cause.contains("ownership of \"sales\".\"orders\""), "{cause}");
    assert_eq!(
        statements,
        format!("ALTER TABLE \"sales\".\"orders\" OWNER TO \"{role}\";")
    );
    let old: i64 = connect(&wh)
        .await?
        .query_one("SELECT count(*) FROM sales.orders", &[])
        .await?
        .get(0);
    assert_eq!(old, 2, "the target as it was");
    // The Redshift dialect's query (ownership by `pg_user`, no LOCK privilege) runs on PostgreSQL too, and finds the
    // same: ownership and every row privilege missing.
    let rs = pgshift::load::grants::check_sql(Dialect::Redshift, &[TableRef::new("sales", "orders")], &evolve)?;
    let rows = connect(&as_role).await?.query(&rs, &[]).await?;
    let found: Vec<(String, String, String)> = rows.iter().map(|r| (r.get(0), r.get(2), r.get(5))).collect();
    let want = [
        ("owner", "OWNER"),
        ("table", "DELETE"),
        ("table", "INSERT"),
        ("table", "SELECT"),
    ]
    .map(|(k, p)| (role.clone(), k.to_string(), p.to_string()));
    assert_eq!(found, want);

    connect(&wh).await?.batch_execute(&statements).await?;
    let out = run(&source, &as_role, "grants-owner", &tables, Some(evolve)).await?;
    assert_loaded(&out, &source, &wh, &tables).await
}
