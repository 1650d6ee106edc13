//! The first hour of a new user, through the binary: libpq's environment and password file honoured, every run that
//! got a run id on the record (failed ones too) and listed with its error, `--json` that parses, exit codes by class,
//! a closed pipe that is no failure, logs without colour under NO_COLOR, a summary that fits a screen and commands it
//! prints that paste, errors that say the next step, and `--help` in groups.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pgshift_tests::fingerprint::fingerprint_of;
use pgshift_tests::{cluster, connect};

const SOURCE: &str = "
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text, at timestamptz);
INSERT INTO sales.orders
  SELECT g, (g % 100000) / 100.0, CASE WHEN g % 7 = 0 THEN NULL ELSE 'note ' || g END,
         timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
  FROM generate_series(1, 40000) g;
ANALYZE;";

const ROLE: &str = "first_hour";
const PASSWORD: &str = "first-hour-secret";

/// `pgshift` with `args` in a clean environment: none of the machine's libpq or AWS variables, HOME at `home`.
fn pgshift(home: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgshift"));
    cmd.args(args).env("HOME", home).current_dir(home);
    for v in [
        "PGPASSWORD",
        "PGPASSFILE",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSHIFT_SOURCE",
        "PGSHIFT_WAREHOUSE",
        "PGSHIFT_STAGE",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    Ok(cmd.output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Setup {
    rt: tokio::runtime::Runtime,
    src: String,
    home: PathBuf,
}

fn setup(name: &str) -> anyhow::Result<Setup> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let src = rt.block_on(async {
        let src = cluster().create_db(&format!("{name}src")).await?;
        connect(&src).await?.batch_execute(SOURCE).await?;
        cluster().password_role(ROLE, PASSWORD).await?;
        anyhow::Ok(src)
    })?;
    let home = pgshift_tests::fresh_dir(name);
    Ok(Setup { rt, src, home })
}

/// The database name of a connection string.
fn db_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// The warehouse holds the source: row count and a hash of every column's values in key order.
fn same(rt: &tokio::runtime::Runtime, src: &str, wh: &str) -> anyhow::Result<()> {
    rt.block_on(async {
        let key = ["id".to_string()];
        let loaded = fingerprint_of(wh, ("sales", "orders"), &[], &key, &[]).await?;
        assert_eq!(loaded, fingerprint_of(src, ("sales", "orders"), &[], &key, &[]).await?);
        assert_eq!(loaded[0], "rows=40000");
        anyhow::Ok(())
    })
}

/// One JSON document on standard output, nothing else.
fn one_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", text(&out.stdout)))
}

#[test]
fn the_libpq_environment_and_password_file_connect_as_psql_would() -> anyhow::Result<()> {
    let s = setup("libpq")?;
    let port = cluster().port.to_string();
    let src_db = db_of(&s.src).to_string();
    // The role must give its password: without one, nothing connects (the corpus names that case).
    for (i, how) in ["PGPASSWORD", "pgpass"].into_iter().enumerate() {
        let wh = s.rt.block_on(cluster().create_db("libpqwh"))?;
        let wh_url = format!("postgres://{ROLE}@127.0.0.1:{port}/{}", db_of(&wh));
        let pgpass = s.home.join("pgpass");
        std::fs::write(&pgpass, format!("# the test's\n127.0.0.1:{port}:*:{ROLE}:{PASSWORD}\n"))?;
        std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let pgpass = pgpass.display().to_string();
        let mut env = vec![
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", port.as_str()),
            ("PGUSER", ROLE),
            ("PGDATABASE", src_db.as_str()),
        ];
        env.push(match how {
            "PGPASSWORD" => ("PGPASSWORD", PASSWORD),
            _ => ("PGPASSFILE", pgpass.as_str()),
        });
        // A bare directory is a local stage.
        let stage = s.home.join(format!("stage-{i}"));
        let stage = stage.display().to_string();
        let out = pgshift(
            &s.home,
            &[
                "run",
                "--source",
                "postgres://",
                "--warehouse",
                &wh_url,
                "--stage",
                &stage,
                "--tables",
                "sales.*",
                "--progress",
                "none",
                "--json",
            ],
            &env,
        )?;
        assert!(out.status.success(), "{how}: {}", text(&out.stderr));
        let doc = one_json(&out);
        assert_eq!(doc["status"], "succeeded", "{doc}");
        assert!(
            text(&out.stderr).contains("reconciliation: 1 of 1 tables"),
            "with --json the summary goes to standard error: {}",
            text(&out.stderr)
        );
        same(&s.rt, &s.src, &wh)?;
    }
    Ok(())
}

#[test]
fn every_run_with_a_run_id_is_on_the_record_and_exits_by_its_class() -> anyhow::Result<()> {
    let s = setup("record")?;
    let wh = s.rt.block_on(cluster().create_db("recordwh"))?;
    let stage = s.home.join("stage");
    let stage_url = format!("file://{}", stage.display());
    let run = |tables: &str, id: &str, json: bool| {
        let mut args = vec![
            "run",
            "--source",
            &s.src,
            "--warehouse",
            &wh,
            "--stage",
            &stage_url,
            "--tables",
            tables,
            "--run-id",
            id,
            "--progress",
            "none",
        ];
        if json {
            args.push("--json");
        }
        pgshift(&s.home, &args, &[])
    };
    // A table typo fails in planning: exit 3 (failed for good), and the run is on the record all the same.
    let out = run("sales.ordrs", "typo-1", true)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("WARN"),
        "no log lines among what a person reads: {}",
        text(&out.stderr)
    );
    let doc = one_json(&out);
    assert_eq!(
        (doc["status"].as_str(), doc["error"]["name"].as_str()),
        (Some("failed"), Some("Pipeline.Fatal.NotFound")),
        "{doc}"
    );
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("did you mean sales.orders?"));
    for f in ["status.json", "ledger.json", "report.html"] {
        assert!(stage.join("typo-1").join(f).exists(), "typo-1/{f}");
    }
    let runs = pgshift(&s.home, &["runs", "--stage", &stage_url], &[])?;
    let listed = text(&runs.stdout);
    let line = listed.lines().find(|l| l.starts_with("typo-1")).unwrap_or_default();
    assert!(
        line.contains("failed") && line.contains("Pipeline.Fatal.NotFound"),
        "runs lists it with its status and error: {listed}"
    );
    let report = pgshift(&s.home, &["report", "--stage", &stage_url, "--run", "typo-1"], &[])?;
    let said = text(&report.stdout);
    assert!(report.status.success(), "{}", text(&report.stderr));
    assert!(said.contains("run FAILED [Pipeline.Fatal.NotFound]"), "{said}");
    assert!(said.contains("where: before it had a plan"), "{said}");
    assert!(said.contains("next: fix what the error names, then run the same command again with --run-id typo-1"));

    // The same run id with the typo fixed: a run like any other, its record replacing the failed attempt's.
    let out = run("sales.orders", "typo-1", false)?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    same(&s.rt, &s.src, &wh)?;
    let runs = pgshift(&s.home, &["runs", "--stage", &stage_url, "--json"], &[])?;
    let all: serde_json::Value = serde_json::from_slice(&runs.stdout)?;
    let typo = all
        .as_array()
        .and_then(|a| a.iter().find(|l| l["run_id"] == "typo-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(typo["status"], "succeeded", "{all}");

    // Usage errors exit 2: an unknown flag (clap's), a missing setting, a stage URL that cannot be one.
    let usage = [
        vec!["run", "--no-such-flag"],
        vec!["run", "--source", &s.src, "--stage", &stage_url, "--tables", "sales.*"],
        vec!["runs", "--stage", "file://relative/dir"],
    ];
    for args in usage {
        let out = pgshift(&s.home, &args, &[])?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
    // A reader that stops reading is no failure: no panic, no error.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["cost", "--stage", &stage_url, "--csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked") && !text(&out.stderr).contains("Broken pipe"));
    Ok(())
}

#[test]
fn a_query_cut_by_the_statement_timeout_exits_as_retryable() -> anyhow::Result<()> {
    let s = setup("retry")?;
    s.rt.block_on(async {
        connect(&s.src)
            .await?
            .batch_execute("CREATE VIEW sales.slow AS SELECT 1::int8 AS id FROM pg_catalog.pg_sleep(3)")
            .await?;
        anyhow::Ok(())
    })?;
    let stage = s.home.join("stage").display().to_string();
    let out = pgshift(
        &s.home,
        &[
            "extract",
            "--source",
            &s.src,
            "--stage",
            &stage,
            "--table",
            "sales.slow",
            "--key",
            "id",
            "--statement-timeout",
            "1",
        ],
        &[],
    )?;
    let err = text(&out.stderr);
    assert!(err.contains("Pipeline.Retryable.Timeout"), "{err}");
    assert_eq!(out.status.code(), Some(4), "{err}");
    Ok(())
}

#[test]
fn the_summary_fits_a_screen_and_the_commands_it_prints_paste() -> anyhow::Result<()> {
    let s = setup("summary")?;
    let wh = s.rt.block_on(cluster().create_db("summarywh"))?;
    let stage = s.home.join("stage").display().to_string();
    let out = pgshift(
        &s.home,
        &[
            "run",
            "--source",
            &s.src,
            "--warehouse",
            &wh,
            "--stage",
            &stage,
            "--tables",
            "sales.*",
            "--parts",
            "40",
            "--run-id",
            "forty",
            "--progress",
            "none",
        ],
        &[],
    )?;
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    same(&s.rt, &s.src, &wh)?;
    assert!(said.lines().count() < 40, "{} lines: {said}", said.lines().count());
    assert!(said.contains("40,000 rows"), "thousands separated: {said}");
    assert!(
        text(&out.stderr).trim().is_empty(),
        "no log lines on a good run: {}",
        text(&out.stderr)
    );
    // Every command the summary suggests runs as printed.
    for prefix in ["every part: ", "per table and per item: "] {
        let line = said
            .lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("{prefix}: {said}"));
        let cmd = line[line.find(prefix).unwrap_or(0) + prefix.len()..].trim();
        let cmd = cmd.replacen("pgshift", env!("CARGO_BIN_EXE_pgshift"), 1);
        let ran = Command::new("sh").args(["-c", &cmd]).output()?;
        assert!(ran.status.success(), "{cmd}: {}", text(&ran.stderr));
        if prefix == "every part: " {
            let parts = text(&ran.stdout).lines().filter(|l| l.contains('█')).count();
            assert_eq!(parts, 40, "{}", text(&ran.stdout));
        }
    }
    // plan --explain: words, not the plan's JSON.
    let out = pgshift(
        &s.home,
        &[
            "plan",
            "--source",
            &s.src,
            "--stage",
            &stage,
            "--tables",
            "sales.*",
            "--run-id",
            "explained",
            "--explain",
        ],
        &[],
    )?;
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !said.lines().any(|l| l.starts_with('{')) && !said.contains("\"kind\""),
        "{said}"
    );
    assert!(
        said.contains("strategy: one part: the whole table") || said.contains("strategy: quantiles"),
        "{said}"
    );
    assert!(!said.contains(" bytes"), "sizes in kB/MB: {said}");
    // The design each Redshift target gets, and the slices the parts were rounded to (none asked: 1).
    assert!(said.contains("redshift design: diststyle auto, "), "{said}");
    assert!(
        said.contains("note: slices: 1 (the warehouse's count was not asked"),
        "{said}"
    );
    Ok(())
}

#[test]
fn errors_say_the_next_step_and_help_comes_in_groups() -> anyhow::Result<()> {
    let s = setup("next")?;
    let wh = s.rt.block_on(cluster().create_db("nextwh"))?;
    let stage = s.home.join("stage").display().to_string();
    let plan = |parts: &str| {
        pgshift(
            &s.home,
            &[
                "plan", "--source", &s.src, "--stage", &stage, "--tables", "sales.*", "--run-id", "n1", "--parts",
                parts,
            ],
            &[],
        )
    };
    assert!(plan("3")?.status.success());
    // Loading before extracting names how many ranges are missing and the command that extracts them.
    let plan_url = format!("file://{stage}/n1/plan.json");
    let out = pgshift(&s.home, &["load", "--plan", &plan_url, "--warehouse", &wh], &[])?;
    let err = text(&out.stderr);
    assert!(
        err.contains("3 range(s) missing") && err.contains("pgshift run with the run's --run-id"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(3), "{err}");
    // Other settings for the same run id: which ones.
    let out = plan("4")?;
    let err = text(&out.stderr);
    assert!(err.contains("with other settings") && err.contains("3 → 4"), "{err}");
    // --help: grouped, every flag explained, defaults shown.
    let help = text(&pgshift(&s.home, &["run", "--help"], &[])?.stdout);
    for heading in [
        "Connections:",
        "Selection:",
        "Run:",
        "Planning:",
        "Extraction:",
        "Load:",
        "Output:",
    ] {
        assert!(help.contains(heading), "{heading}: {help}");
    }
    assert!(help.contains("[default: replace]"), "{help}");
    let start = text(&pgshift(&s.home, &["start", "--help"], &[])?.stdout);
    let restart = start
        .lines()
        .skip_while(|l| !l.contains("--restart"))
        .nth(1)
        .unwrap_or_default();
    assert!(!restart.trim().is_empty(), "--restart is explained: {start}");
    Ok(())
}

#[test]
fn logs_carry_no_colour_under_no_color_even_on_a_terminal() -> anyhow::Result<()> {
    let s = setup("nocolor")?;
    // `script` gives the command a terminal; a plan logs "planned" at info.
    let cmd = format!(
        "{} plan --source {} --stage {} --tables sales.*",
        env!("CARGO_BIN_EXE_pgshift"),
        s.src,
        s.home.join("stage").display()
    );
    let tty = |no_color: bool| -> anyhow::Result<String> {
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"])
            .env("PGSHIFT_LOG", "info")
            .env("TERM", "xterm");
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        Ok(text(&c.output()?.stdout))
    };
    let coloured = tty(false)?;
    assert!(
        coloured.contains("planned") && coloured.contains("\u{1b}["),
        "on a terminal the log is coloured: {coloured:?}"
    );
    let plain = tty(true)?;
    assert!(plain.contains("planned"), "{plain:?}");
    assert!(!plain.contains("\u{1b}["), "NO_COLOR: {plain:?}");
    Ok(())
}

/// Ctrl-C while the run is still planning (its source's server accepts the connection and says nothing): the run
/// has its run id, so it is on the record like any other: its status, ledger and report, listed by `pgshift runs`.
#[test]
fn a_run_stopped_before_it_had_a_plan_is_on_the_record() -> anyhow::Result<()> {
    let s = setup("stopped")?;
    let wh = s.rt.block_on(cluster().create_db("stoppedwh"))?;
    // A server that never answers: the planner's connection waits (its connect timeout is 10 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = silent.local_addr()?.port();
    std::thread::spawn(move || {
        let conn = silent.accept();
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(conn);
    });
    let stage = s.home.join("stage");
    let stage_url = format!("file://{}", stage.display());
    let source = format!("postgres://postgres@127.0.0.1:{port}/db?sslmode=disable");
    let child = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["run", "--source", &source, "--warehouse", &wh, "--stage", &stage_url])
        .args(["--tables", "sales.*", "--run-id", "early", "--progress", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Wait until the trigger took the run id (its lock), then interrupt.
    let t0 = std::time::Instant::now();
    while !stage.join("early/lock.json").exists() && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status()?;
    let out = child.wait_with_output()?;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    for f in ["status.json", "ledger.json", "report.html"] {
        assert!(stage.join("early").join(f).exists(), "early/{f}: {}", text(&out.stderr));
    }
    let runs = pgshift(&s.home, &["runs", "--stage", &stage_url], &[])?;
    let listed = text(&runs.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("early") && l.contains("Pipeline.Fatal.Interrupted")),
        "{listed}"
    );
    // Stopped is not broken: the same command goes on as it is, and the event says so.
    let events = std::fs::read_to_string(stage.join("early/events.jsonl"))?;
    let failed: serde_json::Value = serde_json::from_str(events.lines().next().unwrap_or("{}"))?;
    assert_eq!(failed["detail-type"], "Run Failed", "{events}");
    assert_eq!(failed["detail"]["retryable"], true, "{events}");
    assert!(
        !failed["detail"]["resume"].as_str().unwrap_or("fix").contains("fix"),
        "{events}"
    );
    Ok(())
}
