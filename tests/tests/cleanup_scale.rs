//! Cleanup at scale: a failed run of 500 tables is cleaned up in a bounded number of warehouse round trips (one query
//! for the run's staging tables, one transaction dropping them, one query of the load log), against the Data API
//! faked at the SDK boundary, and the same statements run for real against PostgreSQL.

use std::sync::Arc;

use anyhow::Result;
use aws_sdk_redshiftdata::types::Field;
use pgshift::contract::load::CleanupRequest;
use pgshift::contract::model::TableRef;
use pgshift::contract::plan::{Plan, PlanRequest, PlanSettings};
use pgshift::load::{staging_table, LoadContext};
use pgshift::plan::PlanContext;
use pgshift::source::PgConnector;
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::redshift::RedshiftWarehouse;
use pgshift::UrlStages;
use pgshift_tests::data_api::DataApi;
use pgshift_tests::{cluster, connect};

use super::redshift::{cluster as redshift_cluster, fast};

const TABLES: usize = 500;
const COMMITTED: usize = 100;

/// A source of 500 one-row tables, planned onto a stage: the plan and its URL.
async fn planned(name: &str) -> Result<(Plan, String)> {
    let source = cluster().create_db(name).await?;
    let ddl: String = (0..TABLES)
        .map(|i| format!("CREATE TABLE wide.t{i:03} (id int PRIMARY KEY); INSERT INTO wide.t{i:03} VALUES (1);"))
        .collect();
    connect(&source)
        .await?
        .batch_execute(&format!("CREATE SCHEMA wide; {ddl} ANALYZE;"))
        .await?;
    let stage = format!("file://{}", pgshift_tests::stage_dir(name).display());
    let ctx = PlanContext {
        source: Arc::new(PgConnector::new(&source)?),
        stages: Arc::new(UrlStages::default()),
    };
    let req = PlanRequest {
        tables: vec!["wide.*".into()],
        settings: PlanSettings {
            parts: Some(1),
            ..PlanSettings::default()
        },
        stage,
        ..PlanRequest::default()
    };
    let (plan, summary) = pgshift::plan::handle(&ctx, req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((plan, summary.plan_url))
}

fn state(plan_url: &str) -> serde_json::Value {
    serde_json::json!({
        "plan": {"plan_url": plan_url},
        "error": {"Error": "Pipeline.Fatal.Source", "Cause": "the 500-table run failed"},
    })
}

fn text(s: &str) -> Field {
    Field::StringValue(s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_of_500_tables_is_cleaned_up_in_a_bounded_number_of_round_trips() -> Result<()> {
    let (plan, plan_url) = planned("wide500").await?;
    assert_eq!(plan.tables.len(), TABLES);
    let stagings: Vec<TableRef> = plan
        .tables
        .iter()
        .map(|t| staging_table(&t.table, &plan.run_id))
        .collect();
    let api = DataApi::new();
    // Every staging table is there (as Redshift keeps names: folded to lower case); the load log says the first 100
    // tables were committed.
    let present: Vec<Vec<Field>> = stagings
        .iter()
        .map(|s| vec![text(&s.schema.to_lowercase()), text(&s.name.to_lowercase())])
        .collect();
    api.answer(|sql| sql.contains("information_schema.tables"), present);
    let logged: Vec<Vec<Field>> = plan.tables[..COMMITTED]
        .iter()
        .map(|t| vec![text(&t.table.schema), text(&t.table.name), Field::LongValue(1)])
        .collect();
    api.answer(|sql| sql.contains("GROUP BY schema_name, table_name"), logged);
    let wh = RedshiftWarehouse::new(api.client(), redshift_cluster(), fast());
    let ctx = LoadContext::new(Arc::new(UrlStages::default()), Arc::new(wh));
    let out = pgshift::load::cleanup(
        &ctx,
        CleanupRequest {
            state: state(&plan_url),
        },
    )
    .await?;

    let submitted = api.submitted();
    assert!(
        submitted.len() <= 5,
        "bounded round trips whatever the table count: {} submissions: {:#?}",
        submitted.len(),
        submitted.iter().map(|s| s.sqls.len()).collect::<Vec<_>>()
    );
    let drops: Vec<&pgshift_tests::data_api::Submitted> = submitted
        .iter()
        .filter(|s| s.sqls.iter().any(|q| q.starts_with("DROP TABLE IF EXISTS")))
        .collect();
    assert_eq!(
        drops.len(),
        1,
        "one transaction drops every staging table: {:?}",
        out.notes
    );
    let batch = &drops[0].sqls;
    assert!(
        batch.len() <= 40,
        "a Data API batch takes 40 statements: {}",
        batch.len()
    );
    assert!(
        batch.iter().all(|q| q.len() < 100_000),
        "each statement under the Data API's 100 KB"
    );
    let dropped_sql = batch.join("\n");
    for s in &stagings {
        assert!(
            dropped_sql.contains(&format!("\"{}\".\"{}\"", s.schema, s.name)),
            "{s} dropped"
        );
    }
    assert_eq!(out.dropped.len(), TABLES, "{:?}", out.notes);
    // Cleanup's account of the warehouse: the committed tables, from one query of the load log.
    assert_eq!(out.tables.iter().filter(|t| t.status.is_committed()).count(), COMMITTED);
    let status = std::fs::read_to_string(out.status_url.as_deref().unwrap_or("").trim_start_matches("file://"))?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let committed = status["tables"]
        .as_array()
        .map_or(0, |t| t.iter().filter(|x| x["status"] == "committed").count());
    assert_eq!(committed, COMMITTED, "status.json says what the warehouse committed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cleanup_drops_500_staging_tables_in_postgresql() -> Result<()> {
    let (plan, plan_url) = planned("wide500pg").await?;
    let target = cluster().create_db("wide500wh").await?;
    let stagings: Vec<TableRef> = plan
        .tables
        .iter()
        .map(|t| staging_table(&t.table, &plan.run_id))
        .collect();
    // What a run's set-up leaves behind when it fails: its staging tables, each registered.
    let mut ddl = String::from(
        "CREATE SCHEMA wide; CREATE SCHEMA pgshift; CREATE TABLE pgshift.staging (schema_name text, table_name text, \
         target_schema text, target_name text, run_id text, plan_id text, stage text); \
         CREATE TABLE wide.unrelated__pgshift_x_1 (a int);",
    );
    for (s, t) in stagings.iter().zip(&plan.tables) {
        ddl.push_str(&format!(
            "CREATE TABLE \"{}\".\"{}\" (id int); INSERT INTO pgshift.staging VALUES ('{}', '{}', '{}', '{}', '{}', \
             '{}', '{}');",
            s.schema, s.name, s.schema, s.name, t.table.schema, t.table.name, plan.run_id, plan.plan_id, plan.stage
        ));
    }
    let sql = connect(&target).await?;
    sql.batch_execute(&ddl).await?;
    let ctx = LoadContext::new(Arc::new(UrlStages::default()), Arc::new(PgWarehouse::new(&target)?));
    let out = pgshift::load::cleanup(
        &ctx,
        CleanupRequest {
            state: state(&plan_url),
        },
    )
    .await?;
    assert_eq!(out.dropped.len(), TABLES, "{:?}", out.notes);
    let left: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'wide' AND tablename LIKE '%\\_\\_pgshift\\_%'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(left, 1, "every staging table of the run dropped; another's kept");
    let registered: i64 = sql.query_one("SELECT count(*) FROM pgshift.staging", &[]).await?.get(0);
    assert_eq!(registered, 0, "and unregistered");
    Ok(())
}
