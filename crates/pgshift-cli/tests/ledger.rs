//! The run ledger and the billing review from the command line: two local runs, then `pgshift runs` lists both and
//! `pgshift cost` bills each item by item, per table and for the run, with items that add up to the totals.

use std::process::Command;

use pgshift_tests::{cluster, connect};

const SOURCE: &str = "
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text);
INSERT INTO sales.orders SELECT g, g / 100.0, 'n' || g FROM generate_series(1, 20000) g;
CREATE TABLE sales.items (order_id int8, line int4, qty int4, PRIMARY KEY (order_id, line));
INSERT INTO sales.items SELECT g / 3, g % 3, g % 7 FROM generate_series(3, 9002) g;
ANALYZE;";

fn pgshift(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift")).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "pgshift {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn two_local_runs_are_listed_and_billed_item_by_item_adding_up() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh) = rt.block_on(async {
        let src = cluster().create_db("ledgersrc").await?;
        connect(&src).await?.batch_execute(SOURCE).await?;
        anyhow::Ok((src, cluster().create_db("ledgerwh").await?))
    })?;
    let dir = pgshift_tests::fresh_dir("ledger");
    let stage = format!("file://{}", dir.display());
    for id in ["ledger-1", "ledger-2"] {
        let said = pgshift(&[
            "run",
            "--source",
            &src,
            "--warehouse",
            &wh,
            "--stage",
            &stage,
            "--tables",
            "sales.*",
            "--parts",
            "3",
            "--progress",
            "none",
            "--run-id",
            id,
        ])?;
        // The run's own report ends with its bill from the ledger, item by item.
        assert!(
            said.contains("cost on AWS at us-east-1 list prices of 2026-12-01: $"),
            "{said}"
        );
        let transitions = said
            .lines()
            .find(|l| l.contains("Step Functions state transitions"))
            .unwrap_or_default();
        assert!(transitions.ends_with("(actual)"), "{said}");
        // The hint pastes: the real stage and run id.
        assert!(
            said.contains(&format!("pgshift cost --stage {stage} --run {id}")),
            "{said}"
        );
    }
    // Before any run: the plan's predicted bill.
    let explained = pgshift(&[
        "plan",
        "--source",
        &src,
        "--stage",
        &format!("{stage}-plan"),
        "--tables",
        "sales.*",
        "--parts",
        "3",
        "--explain",
    ])?;
    let predicted = explained
        .lines()
        .find(|l| l.starts_with("predicted cost (estimated: 6 predicted parts"))
        .unwrap_or_else(|| panic!("{explained}"));
    assert!(predicted.contains("$0.0"), "{predicted}");
    assert!(explained.contains("Lambda extractor duration") && explained.contains("Step Functions state transitions"));
    let listed = pgshift(&["runs", "--stage", &stage])?;
    for id in ["ledger-1", "ledger-2"] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} listed: {listed}"));
        assert!(
            line.contains("succeeded") && line.contains("manual") && line.contains("29,000"),
            "{line}"
        );
    }
    let csv = pgshift(&["runs", "--stage", &stage, "--csv"])?;
    assert_eq!(csv.lines().count(), 3, "a header and two runs: {csv}");

    let bills: serde_json::Value = serde_json::from_str(&pgshift(&["cost", "--stage", &stage, "--json"])?)?;
    let bills = bills.as_array().expect("runs");
    assert_eq!(bills.len(), 2);
    for b in bills {
        let items = b["items"].as_array().expect("items");
        let sum: f64 = items.iter().map(|i| i["dollars"].as_f64().expect("dollars")).sum();
        let total = b["total"].as_f64().expect("total");
        assert!(
            (sum - total).abs() < 1e-12 && total > 0.0,
            "items add up: {sum} vs {total}"
        );
        let item = |table: Option<&str>, name: &str| {
            items
                .iter()
                .find(|i| {
                    i["item"] == name
                        && i["table"]
                            .as_object()
                            .map(|t| {
                                format!(
                                    "{}.{}",
                                    t["schema"].as_str().unwrap_or(""),
                                    t["name"].as_str().unwrap_or("")
                                )
                            })
                            .as_deref()
                            == table
                })
                .unwrap_or_else(|| panic!("{table:?} {name}: {items:#?}"))
        };
        // Extractor time per table, measured; its memory assumed off Lambda: estimated.
        let ex = item(Some("sales.orders"), "Lambda extractor duration");
        assert!(
            ex["quantity"].as_f64() > Some(0.0) && ex["basis"] == "estimated",
            "{ex}"
        );
        assert_eq!(item(Some("sales.orders"), "Lambda extractor requests")["quantity"], 3.0);
        // The interpreter counted the state transitions: actual.
        let tr = item(None, "Step Functions state transitions");
        assert!(tr["quantity"].as_f64() > Some(5.0) && tr["basis"] == "actual", "{tr}");
        assert!(b["per_gb"].as_f64().is_some() && b["per_million_rows"].as_f64().is_some());
        assert!(b["prices"].as_str().is_some_and(|p| p.contains("us-east-1")));
    }
    let text = pgshift(&["cost", "--stage", &stage, "--run", "ledger-2"])?;
    assert!(
        text.contains("run ledger-2") && !text.contains("run ledger-1 "),
        "{text}"
    );
    assert!(
        text.contains("most expensive tables") && text.contains("sales.orders"),
        "{text}"
    );
    let csv = pgshift(&["cost", "--stage", &stage, "--csv"])?;
    let items: usize = bills.iter().map(|b| b["items"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(csv.lines().count(), 1 + items);
    // A price file replaces what it names.
    let prices = dir.join("prices.toml");
    std::fs::write(
        &prices,
        "region = \"eu-west-1\"\ndate = \"2026-11-01\"\ntransition = 1.0\n",
    )?;
    let dear = pgshift(&[
        "cost",
        "--stage",
        &stage,
        "--run",
        "ledger-1",
        "--prices",
        prices.to_str().unwrap_or(""),
    ])?;
    assert!(dear.contains("eu-west-1 list prices of 2026-11-01"), "{dear}");
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["cost", "--stage", &stage, "--run", "nope"])
        .output()?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("pgshift runs --stage"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(format!("{}-plan", dir.display()));
    Ok(())
}

#[test]
fn an_unreadable_ledger_record_is_named_and_every_readable_run_still_listed_and_billed() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh) = rt.block_on(async {
        let src = cluster().create_db("brokensrc").await?;
        connect(&src)
            .await?
            .batch_execute(
                "CREATE TABLE public.t (id int8 PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 100);",
            )
            .await?;
        anyhow::Ok((src, cluster().create_db("brokenwh").await?))
    })?;
    let dir = pgshift_tests::fresh_dir("broken-ledger");
    let stage = format!("file://{}", dir.display());
    pgshift(&[
        "run",
        "--source",
        &src,
        "--warehouse",
        &wh,
        "--stage",
        &stage,
        "--tables",
        "public.t",
        "--progress",
        "none",
        "--run-id",
        "healthy",
    ])?;
    std::fs::create_dir_all(dir.join("broken"))?;
    std::fs::write(dir.join("broken/ledger.json"), "{\"run_id\": \"broken\", truncated")?;

    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["runs", "--stage", &stage])
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("healthy")), "{stdout}");
    assert!(stderr.contains("broken/ledger.json"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["cost", "--stage", &stage, "--run", "healthy"])
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("run healthy") && stdout.contains("total $"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["cost", "--stage", &stage])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("broken/ledger.json"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn hostile_prices_and_impossible_records_are_refused_by_name() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh) = rt.block_on(async {
        let src = cluster().create_db("hostilesrc").await?;
        connect(&src)
            .await?
            .batch_execute(
                "CREATE TABLE public.t (id int8 PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 100);",
            )
            .await?;
        anyhow::Ok((src, cluster().create_db("hostilewh").await?))
    })?;
    let dir = pgshift_tests::fresh_dir("hostile-ledger");
    let stage = format!("file://{}", dir.display());
    pgshift(&[
        "run",
        "--source",
        &src,
        "--warehouse",
        &wh,
        "--stage",
        &stage,
        "--tables",
        "public.t",
        "--progress",
        "none",
        "--run-id",
        "sane",
    ])?;
    // Another run's record with rows of u64::MAX and negative seconds.
    let mut l: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("sane/ledger.json"))?)?;
    l["run_id"] = "insane".into();
    l["tables"][0]["rows"] = serde_json::json!(u64::MAX);
    l["tables"][0]["invocations"][0]["seconds"] = serde_json::json!(-5.0);
    std::fs::create_dir_all(dir.join("insane"))?;
    std::fs::write(dir.join("insane/ledger.json"), serde_json::to_vec(&l)?)?;
    let run = |args: &[&str]| -> anyhow::Result<(bool, String, String)> {
        let out = Command::new(env!("CARGO_BIN_EXE_pgshift")).args(args).output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, stdout, stderr) = run(&["cost", "--stage", &stage])?;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("run sane") && !stdout.contains("run insane"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("inf") && !stdout.contains("NaN") && !stdout.contains("$-"),
        "{stdout}"
    );
    assert!(
        stderr.contains("insane/ledger.json") && stderr.contains("public.t: rows: 18446744073709551615"),
        "{stderr}"
    );
    assert!(
        stderr.contains("public.t: extractor invocation: -5 seconds"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["cost", "--stage", &stage, "--run", "insane"])?;
    assert!(
        !ok && stderr.contains("insane/ledger.json") && stderr.contains("impossible"),
        "{stderr}"
    );

    // Prices: negative, NaN and infinite values are refused naming the file and the price; a good file is named.
    for (i, bad) in ["transition = -1.0", "lambda_request = nan", "s3_gb_month = inf"]
        .iter()
        .enumerate()
    {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, format!("{bad}\n"))?;
        let (ok, stdout, stderr) = run(&["cost", "--stage", &stage, "--prices", path.to_str().unwrap_or("")])?;
        let name = bad.split(' ').next().unwrap_or("");
        assert!(!ok && stdout.is_empty(), "{bad}: {stdout}");
        assert!(
            stderr.contains(&path.display().to_string()) && stderr.contains(name),
            "{bad}: {stderr}"
        );
    }
    let good = dir.join("good.toml");
    std::fs::write(&good, "transition = 0.0001\n")?;
    let (ok, stdout, stderr) = run(&[
        "cost",
        "--stage",
        &stage,
        "--run",
        "sane",
        "--prices",
        good.to_str().unwrap_or(""),
    ])?;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("as given by {}", good.display())), "{stdout}");

    // A result with negative seconds and rows of u64::MAX: the run's report is refused naming it.
    let result = dir.join("sane/public/t/part-00000.result.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&result)?)?;
    r["seconds"] = serde_json::json!(-5.0);
    r["rows"] = serde_json::json!(u64::MAX);
    std::fs::write(&result, serde_json::to_vec(&r)?)?;
    let (ok, stdout, stderr) = run(&["report", "--plan", &format!("{stage}/sane/plan.json")])?;
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("sane/public/t/part-00000.result.json")
            && stderr.contains("seconds: -5")
            && stderr.contains("rows: 18446744073709551615, past any count"),
        "{stderr}"
    );
    assert!(!stdout.contains("inf") && !stdout.contains("NaN"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The `cost on AWS at …: $X` total of a run's text summary.
fn summary_total(said: &str) -> f64 {
    let line = said
        .lines()
        .find(|l| l.starts_with("cost on AWS at "))
        .unwrap_or_else(|| panic!("no bill in the summary: {said}"));
    let dollars = line.rsplit_once(": $").map_or("", |x| x.1);
    let dollars = dollars.split(',').next().unwrap_or_default();
    dollars.parse().unwrap_or_else(|_| panic!("{line}"))
}

/// The total an HTML report's bill shows (`<td id="cost-total" data-dollars="…">`) and its header tile.
fn html_totals(html: &str) -> (f64, String) {
    let at = html
        .find("id=\"cost-total\" data-dollars=\"")
        .expect("the bill's total")
        + 30;
    let exact: f64 = html[at..]
        .split('"')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("a number");
    let tile = html.find("id=\"total-cost\">").expect("the cost tile") + 16;
    (exact, html[tile..].split('<').next().unwrap_or_default().to_string())
}

#[test]
fn every_view_of_a_run_prints_the_same_bill_for_a_run_that_succeeded_and_one_that_failed() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh) = rt.block_on(async {
        let src = cluster().create_db("onebillsrc").await?;
        connect(&src).await?.batch_execute(SOURCE).await?;
        let wh = cluster().create_db("onebillwh").await?;
        // Appending to this target fails in the load, after every part landed: the warehouse refuses the rows.
        connect(&wh)
            .await?
            .batch_execute(
                "CREATE SCHEMA sales; CREATE TABLE sales.items (order_id int8, line int4, qty int4 CHECK (qty < 3), \
                 PRIMARY KEY (order_id, line));",
            )
            .await?;
        anyhow::Ok((src, wh))
    })?;
    let dir = pgshift_tests::fresh_dir("onebill");
    let stage = format!("file://{}", dir.display());
    let common = [
        "--warehouse",
        &wh,
        "--stage",
        &stage,
        "--parts",
        "3",
        "--progress",
        "none",
    ];
    for (id, tables, mode, succeeds) in [
        ("bill-ok", "sales.orders", "replace", true),
        ("bill-failed", "sales.items", "append", false),
    ] {
        let mut args = vec![
            "run", "--source", &src, "--tables", tables, "--mode", mode, "--run-id", id,
        ];
        args.extend(common);
        let out = Command::new(env!("CARGO_BIN_EXE_pgshift")).args(&args).output()?;
        let said = String::from_utf8(out.stdout)?;
        assert_eq!(
            out.status.success(),
            succeeds,
            "{id}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bills: serde_json::Value =
            serde_json::from_str(&pgshift(&["cost", "--stage", &stage, "--run", id, "--json"])?)?;
        let bill = &bills[0];
        let total = bill["total"].as_f64().expect("total");
        assert!(total > 0.0, "{id}: {bill}");
        assert_eq!(bill["status"], if succeeds { "succeeded" } else { "failed" }, "{id}");
        // The run's own summary.
        assert_eq!(
            format!("{:.6}", summary_total(&said)),
            format!("{total:.6}"),
            "{id}: {said}"
        );
        // `pgshift report --json` and its text.
        let plan = format!("{stage}/{id}/plan.json");
        let report: serde_json::Value = serde_json::from_str(&pgshift(&["report", "--plan", &plan, "--json"])?)?;
        assert_eq!(
            report["bill"], *bill,
            "{id}: the report's bill is the cost's, item by item"
        );
        let text = pgshift(&["report", "--plan", &plan])?;
        assert_eq!(
            format!("{:.6}", summary_total(&text)),
            format!("{total:.6}"),
            "{id}: {text}"
        );
        // One run record: the run's own summary says what `pgshift report` reads back from the stage, line for
        // line, but for the wall time only the watching process knows.
        for line in text
            .lines()
            .skip(1)
            .filter(|l| !l.contains(" rows, ") && !l.trim().is_empty())
        {
            assert!(
                said.contains(line),
                "{id}: the summary lacks {line:?} of the report:\n{said}\n---\n{text}"
            );
        }
        // The HTML the run wrote on its stage, and the one `pgshift report --html` writes.
        let written = std::fs::read_to_string(dir.join(id).join("report.html"))?;
        let file = dir.join(format!("{id}.html"));
        pgshift(&["report", "--plan", &plan, "--html", file.to_str().unwrap_or("")])?;
        for html in [written, std::fs::read_to_string(&file)?] {
            let (exact, tile) = html_totals(&html);
            assert_eq!(exact, total, "{id}: the HTML's total is the cost's");
            assert_eq!(tile, format!("${total:.6}"), "{id}");
            for i in bill["items"].as_array().expect("items") {
                if i["dollars"].as_f64() > Some(0.0) {
                    let item = i["item"].as_str().unwrap_or_default();
                    assert!(
                        html.contains(&format!("<td>{item}</td>")),
                        "{id}: the HTML lists {item}"
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_run_planned_by_pgshift_plan_is_run_by_the_same_settings_on_pgshift_run() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh) = rt.block_on(async {
        let src = cluster().create_db("plannedsrc").await?;
        connect(&src).await?.batch_execute(SOURCE).await?;
        anyhow::Ok((src, cluster().create_db("plannedwh").await?))
    })?;
    let dir = pgshift_tests::fresh_dir("planned");
    let stage = format!("file://{}", dir.display());
    let common = [
        "--source", &src, "--stage", &stage, "--tables", "sales.*", "--parts", "2", "--run-id", "p1",
    ];
    let mut plan = vec!["plan"];
    plan.extend(common);
    pgshift(&plan)?;
    let mut run = vec!["run", "--warehouse", &wh, "--progress", "none"];
    run.extend(common);
    let said = pgshift(&run)?;
    assert!(said.contains("loaded exactly the rows extracted ✓"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
