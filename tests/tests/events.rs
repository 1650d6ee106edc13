//! What a run tells when it ends (docs/events.md): a local run that succeeds and one that fails leave their events
//! in `<run>/events.jsonl` and at `--events` (a file, and an HTTP endpoint), checked field by field against what the
//! warehouse and the stage hold by the test's own reading; the run's EMF lines follow the EMF specification; its
//! OpenLineage events follow the spec's rules, with a column lineage per output column and the rows committed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use pgshift::entry::local::{LocalAnnounce, LocalRun, RunOutcome, DEFINITION};
use pgshift::warehouse::postgres::PgWarehouse;
use pgshift::warehouse::Warehouse;
use pgshift::{PgConnector, UrlStages};
use pgshift_tests::{cluster, connect, stage_dir};
use serde_json::Value;

use super::db;
use super::load::SALES;
use super::pipeline::request;

async fn run(
    source: &str,
    req: pgshift::contract::plan::PlanRequest,
    wh: Arc<dyn Warehouse>,
    announce: LocalAnnounce,
) -> Result<RunOutcome> {
    let run = LocalRun {
        definition: DEFINITION.to_string(),
        request: req,
        source: Arc::new(PgConnector::new(source)?),
        stages: Arc::new(UrlStages::default()),
        warehouse: wh,
        memory_mb: 1024,
        input: None,
        restore: Default::default(),
        rds: None,
        load_budget: None,
        announce,
    };
    Ok(run.start("events")?.outcome.await?)
}

fn lines(path: &std::path::Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// An HTTP endpoint on loopback that answers 200 to every request and keeps each body.
fn endpoint() -> Result<(String, Arc<Mutex<Vec<Value>>>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let body = loop {
                let Ok(n) = conn.read(&mut chunk) else { break None };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some(end) = text.find("\r\n\r\n") else { continue };
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break Some(buf[end + 4..end + 4 + len].to_vec());
                }
            };
            if let Some(b) = body.and_then(|b| serde_json::from_slice::<Value>(&b).ok()) {
                keep.lock().expect("lock").push(b);
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    Ok((url, got))
}

fn common(e: &Value, run_id: &str, stage: &str) {
    let d = &e["detail"];
    assert_eq!(e["source"], "pgshift", "{e}");
    assert_eq!(d["version"], 1, "{e}");
    assert_eq!(d["stack"], "local", "{e}");
    assert_eq!(d["run_id"], run_id, "{e}");
    assert_eq!(d["stage"], stage, "{e}");
    assert_eq!(d["report_url"], format!("{stage}/{run_id}/report.html"), "{e}");
    assert!(d["snapshot"].is_null(), "{e}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap_or_default()).is_ok(),
        "time: {e}"
    );
    for t in ["data_as_of", "started_at", "ended_at"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(d[t].as_str().unwrap_or_default()).is_ok(),
            "{t}: {e}"
        );
    }
    assert!(d["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{e}");
}

/// Parquet bytes of the parts under `dir`, as the results on the stage name them (the parts themselves are deleted
/// once the load committed).
fn parquet_bytes(dir: &std::path::Path) -> u64 {
    walk(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".result.json"))
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .flat_map(|r| r["files"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["bytes"].as_u64())
        .sum()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_succeeds_and_one_that_fails_leave_the_documented_events() -> Result<()> {
    let source = db("eventsrc", SALES).await?;
    let target = cluster().create_db("eventwh").await?;
    let dir = stage_dir("events");
    let stage = format!("file://{}", dir.display());
    let (url, posted) = endpoint()?;
    let file = dir.join("events-out.jsonl");

    // Succeeded: Run Succeeded, a Table Loaded per table, Run Cost; the same at every sink.
    let mut req = request(&stage, &["sales.orders", "sales.items"], 2);
    req.run_id = Some("ok-run".into());
    let announce = LocalAnnounce {
        events_url: Some(url.clone()),
        lineage: None,
    };
    let out = run(&source, req, Arc::new(PgWarehouse::new(&target)?), announce).await?;
    assert!(out.output.is_ok(), "{:?}", out.output.err());
    let events = lines(&dir.join("ok-run/events.jsonl"))?;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["Run Succeeded", "Table Loaded", "Table Loaded", "Run Cost"]);
    for e in &events {
        common(e, "ok-run", &stage);
    }
    let wh = connect(&target).await?;
    let mut total = 0u64;
    for e in events.iter().filter(|e| e["detail-type"] == "Table Loaded") {
        let d = &e["detail"];
        let t = d["table"].as_str().unwrap_or_default();
        let n: i64 = wh.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await?.get(0);
        total += n as u64;
        assert_eq!(d["rows"], n, "{e}");
        assert_eq!(d["rows_inserted"], n, "{e}");
        assert!(d["rows_updated"].is_null() && d["rows_deleted"].is_null(), "{e}");
        assert_eq!(
            (d["load"].as_str(), d["mode"].as_str()),
            (Some("full"), Some("replace")),
            "{e}"
        );
        let (schema, name) = t.split_once('.').unwrap_or_default();
        assert_eq!(
            d["parquet_bytes"],
            parquet_bytes(&dir.join("ok-run").join(schema).join(name)),
            "{e}"
        );
        assert!(
            d["source_bytes"].as_u64().is_some_and(|b| b > 0) && d["load_seconds"].as_f64().is_some_and(|s| s > 0.0),
            "{e}"
        );
        assert_eq!(d["earlier_attempt"], false, "{e}");
    }
    let ok = &events[0]["detail"];
    assert_eq!(
        (ok["tables"].as_u64(), ok["rows"].as_u64()),
        (Some(2), Some(total)),
        "{ok}"
    );
    assert_eq!(ok["parquet_bytes"], parquet_bytes(&dir.join("ok-run")), "{ok}");
    let cost = &events[3]["detail"];
    let items: f64 = cost["items"]
        .as_array()
        .map_or(0.0, |a| a.iter().filter_map(|i| i["dollars"].as_f64()).sum());
    assert!(
        (items - cost["total_dollars"].as_f64().unwrap_or(-1.0)).abs() < 1e-9,
        "the items add up: {cost}"
    );
    assert_eq!(ok["cost_dollars"], cost["total_dollars"]);
    let ledger: Value = serde_json::from_slice(&std::fs::read(dir.join("ok-run/ledger.json"))?)?;
    assert_eq!(cost["status"], ledger["status"], "the bill of the ledger record");
    for i in cost["items"].as_array().into_iter().flatten() {
        assert!(i["basis"] == "actual" || i["basis"] == "estimated", "{i}");
    }
    assert_eq!(
        posted.lock().map(|p| p.clone()).unwrap_or_default(),
        events,
        "the HTTP endpoint got the same"
    );

    // Failed: the warehouse on a closed port; Run Failed says what, where, what the warehouse holds, what next.
    let mut req = request(&stage, &["sales.orders"], 2);
    req.run_id = Some("down-run".into());
    let announce = LocalAnnounce {
        events_url: Some(file.display().to_string()),
        lineage: None,
    };
    let closed = Arc::new(PgWarehouse::new("postgres://postgres@127.0.0.1:1/wh")?);
    let out = run(&source, req, closed, announce).await?;
    assert!(out.output.is_err());
    let events = lines(&dir.join("down-run/events.jsonl"))?;
    assert_eq!(lines(&file)?, events, "the --events file holds the same");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["Run Failed", "Run Cost"]);
    for e in &events {
        common(e, "down-run", &stage);
    }
    let d = &events[0]["detail"];
    assert_eq!(d["error"], "Pipeline.Fatal.NotFound", "{d}");
    assert!(
        d["message"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:1") && !m.contains("errorMessage")),
        "{d}"
    );
    assert!(
        d["failed_at"]
            .as_str()
            .is_some_and(|w| w.starts_with("before extracting anything")),
        "{d}"
    );
    assert!(d["table"].is_null(), "{d}");
    assert_eq!(d["warehouse"], "as it was: no table of this run was committed", "{d}");
    assert!(
        d["resume"].as_str().is_some_and(|r| r.contains("--run-id down-run")),
        "{d}"
    );
    assert_eq!(d["retryable"], false, "{d}");
    assert_eq!(events[1]["detail"]["status"], "failed");
    Ok(())
}

/// The EMF rules of the specification a line must meet: `_aws` with a millisecond `Timestamp` and a `CloudWatchMetrics`
/// array of directives, each with a string `Namespace`, `Dimensions` an array of arrays of strings (at most 30 keys
/// a set), `Metrics` at most 100 definitions with a `Name` and a valid `Unit`; every metric's value a number (or an
/// array of at most 100 numbers) at the root, every dimension's value a string of at most 1024 characters.
fn emf_problems(line: &Value) -> Vec<String> {
    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let mut bad = Vec::new();
    let aws = &line["_aws"];
    let ts = aws["Timestamp"].as_i64().unwrap_or(0);
    if !(1_700_000_000_000..4_000_000_000_000).contains(&ts) {
        bad.push(format!("Timestamp {ts} is not milliseconds since the epoch"));
    }
    let Some(directives) = aws["CloudWatchMetrics"].as_array() else {
        return vec!["no CloudWatchMetrics array".into()];
    };
    for d in directives {
        if !d["Namespace"].is_string() {
            bad.push("a directive without a Namespace".into());
        }
        for set in d["Dimensions"].as_array().into_iter().flatten() {
            let keys = set.as_array().cloned().unwrap_or_default();
            if keys.len() > 30 {
                bad.push("a dimension set of more than 30 keys".into());
            }
            for k in keys {
                let v = k.as_str().map(|k| &line[k]);
                if v.is_none_or(|v| v.as_str().is_none_or(|s| s.len() > 1024)) {
                    bad.push(format!("dimension {k}: not a string member of the root"));
                }
            }
        }
        let metrics = d["Metrics"].as_array().cloned().unwrap_or_default();
        if metrics.is_empty() || metrics.len() > 100 {
            bad.push(format!("{} metric definitions", metrics.len()));
        }
        for m in metrics {
            let name = m["Name"].as_str().unwrap_or_default();
            if !UNITS.contains(&m["Unit"].as_str().unwrap_or("None")) {
                bad.push(format!("{name}: unit {}", m["Unit"]));
            }
            let v = &line[name];
            let ok = v.is_number()
                || v.as_array()
                    .is_some_and(|a| a.len() <= 100 && a.iter().all(Value::is_number));
            if !ok {
                bad.push(format!("{name}: value {v} is not a number at the root"));
            }
        }
    }
    bad
}

/// The OpenLineage 2-0-2 rules an event must meet (the spec's RunEvent: `eventTime` a date-time, `producer` and
/// `schemaURL` URIs, `run.runId` a UUID, `job.namespace` and `job.name`, datasets with `namespace` and `name`, every
/// facet with `_producer` and `_schemaURL` URIs, `eventType` one of the spec's), and the column lineage facet's shape.
fn lineage_problems(e: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let uri = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.starts_with("https://") || s.starts_with("http://"))
    };
    if !["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"].contains(&e["eventType"].as_str().unwrap_or("")) {
        bad.push(format!("eventType {}", e["eventType"]));
    }
    if chrono::DateTime::parse_from_rfc3339(e["eventTime"].as_str().unwrap_or("")).is_err() {
        bad.push("eventTime".into());
    }
    if !uri(&e["producer"]) || !uri(&e["schemaURL"]) {
        bad.push("producer/schemaURL".into());
    }
    if uuid::Uuid::parse_str(e["run"]["runId"].as_str().unwrap_or("")).is_err() {
        bad.push("runId".into());
    }
    if !e["job"]["namespace"].is_string() || !e["job"]["name"].is_string() {
        bad.push("job".into());
    }
    let mut facets: Vec<&Value> = e["run"]["facets"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .collect();
    for d in e["inputs"]
        .as_array()
        .into_iter()
        .chain(e["outputs"].as_array())
        .flatten()
    {
        if !d["namespace"].is_string() || !d["name"].is_string() {
            bad.push(format!("dataset {d}"));
        }
        for k in ["facets", "inputFacets", "outputFacets"] {
            facets.extend(d[k].as_object().into_iter().flat_map(|o| o.values()));
        }
        for (col, f) in d["facets"]["columnLineage"]["fields"].as_object().into_iter().flatten() {
            for i in f["inputFields"].as_array().into_iter().flatten() {
                let typed = i["transformations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|t| t["type"] == "DIRECT" || t["type"] == "INDIRECT");
                if !i["namespace"].is_string() || !i["name"].is_string() || !i["field"].is_string() || !typed {
                    bad.push(format!("column lineage of {col}: {i}"));
                }
            }
        }
    }
    for f in facets {
        if !uri(&f["_producer"]) || !uri(&f["_schemaURL"]) {
            bad.push(format!("facet without _producer/_schemaURL: {f}"));
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_are_emf_and_the_lineage_names_every_column_and_the_rows_committed() -> Result<()> {
    let source = db("linsrc", SALES).await?;
    let target = cluster().create_db("linwh").await?;
    let dir = stage_dir("lineage");
    let stage = format!("file://{}", dir.display());
    let file = dir.join("lineage.jsonl");
    let ds = pgshift::entry::announce::datasets(&source, &target, "pgshift-local", None).map_err(anyhow::Error::msg)?;
    let mut req = request(&stage, &["sales.orders"], 2);
    req.run_id = Some("lin-run".into());
    let announce = LocalAnnounce {
        events_url: None,
        lineage: Some((file.display().to_string(), ds.clone())),
    };
    let out = run(&source, req, Arc::new(PgWarehouse::new(&target)?), announce).await?;
    assert!(out.output.is_ok(), "{:?}", out.output.err());

    let lineage = lines(&file)?;
    let kinds: Vec<&str> = lineage
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["START", "COMPLETE"]);
    assert_eq!(lineage[0]["run"]["runId"], lineage[1]["run"]["runId"], "one run");
    let port = cluster().port;
    for e in &lineage {
        assert_eq!(lineage_problems(e), Vec::<String>::new(), "{e}");
        assert_eq!(e["inputs"][0]["namespace"], format!("postgres://127.0.0.1:{port}"));
        assert_eq!(
            e["inputs"][0]["name"],
            format!("{}.sales.orders", source.rsplit('/').next().unwrap_or_default())
        );
        let out = &e["outputs"][0];
        assert_eq!(
            out["name"],
            format!("{}.sales.orders", target.rsplit('/').next().unwrap_or_default())
        );
        let mut cols: Vec<&String> = out["facets"]["columnLineage"]["fields"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        cols.sort_unstable();
        let mut want = vec!["amount", "id", "note", "placed"];
        want.sort_unstable();
        assert_eq!(cols, want, "a lineage per column");
    }
    let wh = connect(&target).await?;
    let n: i64 = wh.query_one("SELECT count(*) FROM sales.orders", &[]).await?.get(0);
    assert_eq!(
        lineage[1]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"],
        n
    );

    // The metrics the loader prints on Lambda, from this run's record and bill: EMF, every line.
    let plan_url = format!("{stage}/lin-run/plan.json");
    let facts = pgshift::report::ledger::LedgerFacts {
        assumed_memory_mb: 1024,
        ..Default::default()
    };
    let (rec, bill) = pgshift::report::read_run(&UrlStages::default(), &plan_url, &facts).await?;
    let previous = BTreeMap::from([(pgshift::contract::model::TableRef::new("sales", "orders"), 40_000u64)]);
    let lines =
        pgshift::report::metrics::run_lines(&rec, &bill, "prod", pgshift::contract::clock::unix_now(), &previous);
    assert_eq!(lines.len(), 2, "the run's line and the table's");
    // The run's line carries exactly the metrics the template's alarms may watch at the Stack dimension.
    let names: Vec<&str> = lines[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["Name"].as_str())
        .collect();
    assert_eq!(names, pgshift::report::metrics::emitted_at_stack());
    for l in &lines {
        assert_eq!(emf_problems(l), Vec::<String>::new(), "{l}");
    }
    assert_eq!(
        (lines[0]["RunSucceeded"].as_f64(), lines[0]["RunFailed"].as_f64()),
        (Some(1.0), Some(0.0))
    );
    assert_eq!(lines[0]["RowsLoaded"].as_f64(), Some(n as f64));
    // 40,000 rows before, 20,000 now: a drop of 50 %.
    assert_eq!(lines[1]["RowDropPercent"].as_f64(), Some(50.0), "{}", lines[1]);
    assert_eq!(lines[0]["MaxRowDropPercent"].as_f64(), Some(50.0));
    assert_eq!(lines[1]["Table"], "sales.orders");
    let part = pgshift::report::metrics::part_line(&rec.results[0], "prod", 1, pgshift::contract::clock::unix_now());
    assert_eq!(emf_problems(&part), Vec::<String>::new(), "{part}");
    assert_eq!(part["PartRetries"].as_f64(), Some(1.0));
    // A line that breaks the rules is told apart (the checker can fail).
    let mut broken = part.clone();
    broken["PartRows"] = Value::String("12".into());
    assert!(!emf_problems(&broken).is_empty());
    Ok(())
}

/// EventBridge at the SDK boundary (recorded responses): a run's events go in calls of at most 10 entries, on the
/// stack's bus, source `pgshift`, the detail as JSON; a partial failure (HTTP 200, `FailedEntryCount` > 0) is an error
/// naming the entries' codes.
#[tokio::test]
async fn eventbridge_gets_every_event_in_calls_of_ten_and_a_partial_failure_is_named() -> Result<()> {
    use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
    use aws_sdk_eventbridge::types::PutEventsResultEntry;
    use aws_sdk_eventbridge::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use pgshift::events::{EventSink, RunAt};

    let events: Vec<pgshift::contract::events::Event> = (0..12)
        .map(|i| {
            pgshift::contract::events::Event::new("Table Loaded", "2026-12-06T00:00:00Z", &serde_json::json!({"i": i}))
        })
        .collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let ok = mock!(Client::put_events)
        .match_requests(move |r| {
            let entries = r.entries();
            keep.lock().expect("lock").push(
                entries
                    .iter()
                    .map(|e| {
                        (
                            e.source().unwrap_or("").to_string(),
                            e.event_bus_name().unwrap_or("").to_string(),
                            e.detail().unwrap_or("").to_string(),
                        )
                    })
                    .collect::<Vec<_>>(),
            );
            true
        })
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ok]);
    let sink = pgshift::events::eventbridge::EventBridgeEvents {
        client,
        bus: "ops-bus".into(),
    };
    let at = RunAt {
        stage: "s3://b/p",
        run_id: "r1",
    };
    sink.send(at, &events).await?;
    let calls = seen.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        [10, 2],
        "calls of at most 10 entries"
    );
    let (source, bus, detail) = &calls[1][1];
    assert_eq!((source.as_str(), bus.as_str()), ("pgshift", "ops-bus"));
    assert_eq!(serde_json::from_str::<Value>(detail)?, serde_json::json!({"i": 11}));

    let partial = mock!(Client::put_events).then_output(|| {
        PutEventsOutput::builder()
            .failed_entry_count(1)
            .entries(PutEventsResultEntry::builder().event_id("e1").build())
            .entries(
                PutEventsResultEntry::builder()
                    .error_code("ThrottlingException")
                    .error_message("Rate exceeded")
                    .build(),
            )
            .build()
    });
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&partial]);
    let sink = pgshift::events::eventbridge::EventBridgeEvents {
        client,
        bus: "default".into(),
    };
    let e = sink.send(at, &events[..2]).await.expect_err("a partial failure");
    let said = e.to_string();
    assert!(
        said.contains("1 of 2 entries failed") && said.contains("ThrottlingException: Rate exceeded"),
        "{said}"
    );
    Ok(())
}
