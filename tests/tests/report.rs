//! The run's HTML report, opened in a real browser (Debian's headless Chromium): the page of a real multi-table run
//! with a retried part has no console error and fetches nothing, draws one timeline bar per part attempt, and shows the
//! totals the warehouse holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::UrlStages;
use pgshift_tests::{cluster, connect, stage_dir};

use super::db;
use super::load::{fingerprint, SALES};
use super::pipeline::{plan_of, request, run_local, FlakyStages};

/// Chromium as the machine's probe runs it: headless, no sandbox (root), and none of its background networking.
fn chromium(profile: &Path, args: &[&str], page: &Path) -> Result<std::process::Output> {
    let exe = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .context("no chromium on PATH: run scripts/setup.sh")?;
    let out = Command::new(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()?;
    if !out.status.success() {
        bail!("chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

/// The value of `name="…"` on the page's `<body>` as the browser left it.
fn body_attr(dom: &str, name: &str) -> Option<String> {
    let body = &dom[dom.find("<body")?..];
    let body = &body[..body.find('>')?];
    let at = body.find(&format!("{name}=\""))? + name.len() + 2;
    Some(body[at..at + body[at..].find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_of_a_real_run_renders_in_chromium_with_every_attempt_and_the_true_totals() -> Result<()> {
    let source = db("reportsrc", SALES).await?;
    let target = cluster().create_db("reportwh").await?;
    let dir = stage_dir("report");
    let stage = format!("file://{}", dir.display());
    let failed = Arc::new(AtomicBool::new(false));
    let stages = Arc::new(FlakyStages {
        inner: UrlStages::default(),
        failed: failed.clone(),
        victim: "orders/part-00001-000.parquet",
    });
    let req = request(&stage, &["sales.orders", "sales.items"], 3);
    let out = run_local(&source, req, stages, Arc::new(PgWarehouse::new(&target)?)).await?;
    let output = out.output.map_err(|f| anyhow::anyhow!("{f}"))?;
    assert!(failed.load(Ordering::SeqCst), "one attempt was made to fail");
    let run_id = output
        .pointer("/plan/run_id")
        .and_then(|v| v.as_str())
        .context("run id")?;

    // The loader wrote the report at the end of the run, beside the plan.
    let page: PathBuf = dir.join(run_id).join("report.html");
    let html = std::fs::read_to_string(&page).context("the loader writes <run>/report.html")?;
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing is fetched"
    );
    assert!(html.contains("sales.orders") && html.contains("sales.items"));

    // The warehouse holds the source, column by column, and the report claims exactly what it holds.
    let plan = plan_of(&output).await?;
    for t in ["sales.orders", "sales.items"] {
        assert_eq!(
            fingerprint(&target, &plan, t, false).await?,
            fingerprint(&source, &plan, t, true).await?,
            "{t}"
        );
    }
    let wh = connect(&target).await?;
    let mut committed = 0i64;
    for t in ["sales.orders", "sales.items"] {
        committed += wh
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await?
            .get::<_, i64>(0);
    }
    assert_eq!(committed, 50_000);

    let profile = stage_dir("chromium-profile");
    let dom = chromium(&profile, &["--dump-dom"], &page)?;
    let text = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    for bad in ["Uncaught", "CONSOLE", "net::ERR_"] {
        assert!(!log.contains(bad), "the browser reported {bad}: {log}");
    }
    // 3 + 3 ranges, and the failed first attempt of orders' range 1.
    assert_eq!(body_attr(&text, "data-attempts").as_deref(), Some("7"), "{text:.400}");
    assert_eq!(
        body_attr(&text, "data-drawn-bars").as_deref(),
        Some("7"),
        "every attempt is drawn"
    );
    assert_eq!(body_attr(&text, "data-total-rows"), Some(committed.to_string()));
    assert_eq!(body_attr(&text, "data-bar-rows"), Some(committed.to_string()));
    assert_eq!(
        body_attr(&text, "data-check").as_deref(),
        Some("ok"),
        "the page's own check"
    );
    assert_eq!(
        text.matches("class=\"bar part failed\"").count(),
        1,
        "one failed attempt"
    );
    assert!(text.contains("Pipeline.Retryable.Stage"), "the retry is named");

    let png = dir.join("report.png");
    let shot = format!("--screenshot={}", png.display());
    chromium(
        &profile,
        &[&shot, "--window-size=1280,2200", "--hide-scrollbars"],
        &page,
    )?;
    let bytes = std::fs::read(&png)?;
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
    Ok(())
}
