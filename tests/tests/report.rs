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

/// The text of the element with `id` in a DOM dump (its tags stripped).
fn element_text(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let open = at + dom[at..].find('>')? + 1;
    let tag_start = dom[..at].rfind('<')? + 1;
    let tag: String = dom[tag_start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let close = open + dom[open..].find(&format!("</{tag}>"))?;
    let mut out = String::new();
    let mut inside = false;
    for c in dom[open..close].chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    Some(out.replace("&amp;", "&").replace("&quot;", "\"").replace("&#39;", "'"))
}

/// A failed run's report says first what failed (the error's name and its message in words, never a Lambda error's
/// JSON), where, what the warehouse holds now, and the command that goes on; its wall time is the run's, and a run
/// that failed before it had a plan has a report too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_runs_report_says_first_what_failed_where_what_the_warehouse_holds_and_what_to_do() -> Result<()> {
    let source = db("failedsrc", SALES).await?;
    let dir = stage_dir("failed-report");
    let stage = format!("file://{}", dir.display());
    let profile = stage_dir("chromium-profile-failed");
    // The warehouse on a closed port: the pre-flight names it after planning, before anything is extracted.
    let closed = Arc::new(PgWarehouse::new("postgres://postgres@127.0.0.1:1/wh")?);
    let mut req = request(&stage, &["sales.orders"], 3);
    req.run_id = Some("warehouse-down".into());
    let out = run_local(&source, req, Arc::new(UrlStages::default()), closed.clone()).await?;
    assert!(out.output.is_err(), "the run failed");
    // A typo: the run fails in planning, with nothing but its run id.
    let mut req = request(&stage, &["sales.ordrs"], 3);
    req.run_id = Some("typo".into());
    let out = run_local(&source, req, Arc::new(UrlStages::default()), closed).await?;
    assert!(out.output.is_err(), "the run failed");

    let cases = [
        (
            "warehouse-down",
            "Pipeline.Fatal.NotFound",
            "127.0.0.1:1",
            "before extracting anything",
        ),
        (
            "typo",
            "Pipeline.Fatal.NotFound",
            "did you mean sales.orders?",
            "before it had a plan",
        ),
    ];
    for (run, name, message, place) in cases {
        let page = dir.join(run).join("report.html");
        let dom = chromium(&profile, &["--dump-dom"], &page)?;
        let text = String::from_utf8_lossy(&dom.stdout);
        let log = String::from_utf8_lossy(&dom.stderr);
        for bad in ["Uncaught", "CONSOLE", "net::ERR_"] {
            assert!(!log.contains(bad), "{run}: the browser reported {bad}: {log}");
        }
        let failure = text
            .find("id=\"failure\"")
            .with_context(|| format!("{run}: no failure section"))?;
        for later in ["<h2>Timeline", "<h2>Tables", "<h2>Cost"] {
            if let Some(at) = text.find(later) {
                assert!(failure < at, "{run}: the failure comes before {later}");
            }
        }
        let el = |id: &str| element_text(&text, id).unwrap_or_default();
        assert_eq!(el("failure-name"), name, "{run}");
        assert!(
            el("failure-message").contains(message),
            "{run}: {}",
            el("failure-message")
        );
        assert!(
            !el("failure-message").contains("errorMessage"),
            "{run}: words, not JSON"
        );
        assert!(el("failure-where").contains(place), "{run}: {}", el("failure-where"));
        assert!(
            el("failure-warehouse").contains("as it was: no table of this run was committed"),
            "{run}: {}",
            el("failure-warehouse")
        );
        assert!(
            el("failure-next").contains(&format!("--run-id {run}")),
            "{run}: {}",
            el("failure-next")
        );
        // The wall time runs to the failure's record (not to the last part, of which there is none).
        let status: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(run).join("status.json"))?)?;
        let plan: Option<serde_json::Value> = std::fs::read(dir.join(run).join("plan.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let started = match &plan {
            Some(p) => p["started_at"].as_f64(),
            None => status["started_at"].as_f64(),
        }
        .with_context(|| format!("{run}: a start"))?;
        let ended = status["at"].as_f64().context("the failure's time")?;
        assert_eq!(
            el("total-wall"),
            format!("{:.1} s", ended - started),
            "{run}: the wall time is the run's"
        );
        assert_eq!(
            body_attr(&text, "data-check").as_deref(),
            Some("ok"),
            "{run}: the page's own check"
        );
    }
    Ok(())
}
