//! After a run whose every table committed, its Parquet parts are deleted from the stage (the plan, results,
//! manifests, ledger and report stay), and the bill prices their storage until then, not for the lifecycle rule's
//! days; `keep_parts` keeps them; a run that did not commit every table keeps them, which resume it.

use std::sync::Arc;

use anyhow::Result;
use pgshift::contract::load::{LoadMode, LoadOptions};
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::UrlStages;
use pgshift_tests::{cluster, connect, list_files, stage_dir};

use super::db;
use super::load::SALES;
use super::pipeline::{request, run_local};

fn parquet(files: &[String], run: &str) -> usize {
    files
        .iter()
        .filter(|f| f.starts_with(&format!("{run}/")) && f.ends_with(".parquet"))
        .count()
}

/// The Parquet files the run's results name, by the test's own reading of them.
fn named_by_results(dir: &std::path::Path, run: &str) -> Result<usize> {
    let mut n = 0;
    for f in list_files(dir)
        .iter()
        .filter(|f| f.starts_with(&format!("{run}/")) && f.ends_with(".result.json"))
    {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(f))?)?;
        n += r["files"].as_array().map_or(0, Vec::len);
    }
    Ok(n)
}

async fn storage_item(dir: &std::path::Path, run: &str) -> Result<Vec<String>> {
    let facts = pgshift::report::ledger::LedgerFacts::default();
    let plan_url = format!("file://{}/{run}/plan.json", dir.display());
    let (_, bill) = pgshift::report::read_run(&UrlStages::default(), &plan_url, &facts).await?;
    Ok(bill
        .items
        .iter()
        .filter(|i| i.table.is_some() && i.item.starts_with("S3 storage"))
        .map(|i| i.item.clone())
        .collect())
}

/// One local run of `tables` (3 parts each) as `run_id`, with `load` options, into `target`.
async fn run_as(
    source: &str,
    (stage, tables): (&str, &[&str]),
    run_id: &str,
    load: Option<LoadOptions>,
    target: &str,
) -> Result<pgshift::entry::local::RunOutcome> {
    let mut req = request(stage, tables, 3);
    req.run_id = Some(run_id.into());
    req.load = load;
    run_local(
        source,
        req,
        Arc::new(UrlStages::default()),
        Arc::new(PgWarehouse::new(target)?),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_runs_parts_are_deleted_and_billed_until_then_unless_kept() -> Result<()> {
    let source = db("partssrc", SALES).await?;
    let dir = stage_dir("parts");
    let stage = format!("file://{}", dir.display());
    let tables = ["sales.orders", "sales.items"];

    // By default: deleted once both tables committed; the results still name them; the bill says until when.
    let target = cluster().create_db("partswh").await?;
    let out = run_as(&source, (&stage, &tables), "deleted", None, &target).await?;
    assert!(out.output.is_ok() && out.report.reconciled(), "{}", out.report.render());
    let files = list_files(&dir);
    assert_eq!(parquet(&files, "deleted"), 0, "{files:?}");
    let named = named_by_results(&dir, "deleted")?;
    assert!(named >= 6, "the results still name their parts: {named}");
    for kept in ["plan.json", "ledger.json", "report.html", "load.json"] {
        assert!(files.contains(&format!("deleted/{kept}")), "{kept} stays");
    }
    let load: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("deleted/load.json"))?)?;
    assert_eq!(load["parts_deleted"]["files"], named, "{load}");
    let items = storage_item(&dir, "deleted").await?;
    assert!(
        !items.is_empty()
            && items
                .iter()
                .all(|i| i == "S3 storage of the parts until the load deleted them"),
        "{items:?}"
    );
    // The warehouse holds the source, row count and every column's values in key order, whatever became of the parts.
    let plan = super::pipeline::plan_of(out.output.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?).await?;
    for t in tables {
        assert_eq!(
            super::load::fingerprint(&target, &plan, t, false).await?,
            super::load::fingerprint(&source, &plan, t, true).await?,
            "{t}"
        );
    }

    // keep_parts: every part stays, billed for the lifecycle rule's days.
    let target = cluster().create_db("partswh").await?;
    let keep = LoadOptions {
        keep_parts: true,
        ..LoadOptions::default()
    };
    let out = run_as(&source, (&stage, &tables), "kept", Some(keep), &target).await?;
    assert!(out.output.is_ok());
    assert_eq!(parquet(&list_files(&dir), "kept"), named_by_results(&dir, "kept")?);
    let items = storage_item(&dir, "kept").await?;
    assert!(
        items
            .iter()
            .all(|i| i == "S3 storage until the lifecycle rule expires it"),
        "{items:?}"
    );

    // A run that failed to commit a table keeps its parts: the same run id resumes from them.
    let target = cluster().create_db("partswh").await?;
    connect(&target)
        .await?
        .batch_execute(
            "CREATE SCHEMA sales; CREATE TABLE sales.items (order_id int8, line int2, qty int4 NOT NULL CHECK (qty < 0), \
             sku text NOT NULL, PRIMARY KEY (order_id, line))",
        )
        .await?;
    let append = LoadOptions {
        mode: LoadMode::Append,
        ..LoadOptions::default()
    };
    let out = run_as(&source, (&stage, &tables), "failed", Some(append), &target).await?;
    assert!(out.output.is_err(), "the CHECK fails the load of sales.items");
    assert_eq!(
        parquet(&list_files(&dir), "failed"),
        named_by_results(&dir, "failed")?,
        "kept to resume"
    );
    Ok(())
}
