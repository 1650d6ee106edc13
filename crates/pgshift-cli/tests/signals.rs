//! `pgshift run` stopped by Ctrl-C (SIGINT) or SIGTERM mid-extraction: Cleanup runs (the run marked failed on the
//! stage, no staging table, no half-written object), the exit code is the shell's (130, 143), and the same command
//! with `--run-id` resumes it, keeping the ranges that landed, to a warehouse equal to the source (row count and a hash
//! of every column's values in key order).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgshift_tests::fingerprint::fingerprint_of;
use pgshift_tests::{cluster, connect, list_files};

const SOURCE: &str = "
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int8 PRIMARY KEY, amount numeric(12,2) NOT NULL, note text);
INSERT INTO sales.orders SELECT g, (g % 100000) / 100.0, 'note ' || g FROM generate_series(1, 1000000) g;
ANALYZE;";

fn start(src: &str, wh: &str, stage: &Path, run_id: &str) -> std::io::Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["run", "--source", src, "--warehouse", wh, "--tables", "sales.orders"])
        .args([
            "--parts",
            "8",
            "--concurrency",
            "1",
            "--progress",
            "none",
            "--run-id",
            run_id,
        ])
        .arg("--stage")
        .arg(format!("file://{}", stage.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Waits until a range's result has landed (the run is mid-extraction), up to a minute.
fn wait_for_a_result(stage: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if list_files(stage).iter().any(|f| f.ends_with(".result.json")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("no range landed within a minute")
}

fn signal(child: &Child, name: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()?;
    anyhow::ensure!(ok.success(), "kill -{name}");
    Ok(())
}

/// Stops a run by `name` mid-extraction; checks what it left and how it ended. Mid-extraction for certain, whatever
/// the machine's speed: once a range has landed, the test takes an exclusive lock on the source table (granted when
/// the range being read, if any, is done), so no later range can start reading before the signal; the lock is let go
/// once the signal is sent.
fn stopped_by(src: &str, wh: &str, stage: &Path, run_id: &str, name: &str, code: i32) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let child = start(src, wh, stage, run_id)?;
    wait_for_a_result(stage)?;
    let held = rt.block_on(async {
        let c = connect(src).await?;
        c.batch_execute("BEGIN; LOCK TABLE sales.orders IN ACCESS EXCLUSIVE MODE")
            .await?;
        anyhow::Ok(c)
    })?;
    signal(&child, name)?;
    rt.block_on(held.batch_execute("COMMIT"))?;
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{name}: {err}");
    assert!(err.contains(name) && err.contains("resumes it"), "{err}");
    let files = list_files(stage);
    let status = files
        .iter()
        .find(|f| f.ends_with("status.json"))
        .unwrap_or_else(|| panic!("the run is marked failed: {files:?}"));
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(stage.join(status))?)?;
    assert_eq!(status["error"], "Pipeline.Fatal.Interrupted", "{status}");
    assert!(
        !files.iter().any(|f| f.ends_with(".tmp")),
        "no half-written object: {files:?}"
    );
    let parts = files.iter().filter(|f| f.ends_with(".result.json")).count();
    assert!(
        (1..8).contains(&parts),
        "stopped mid-extraction: {parts} of 8 ranges landed"
    );
    // A stopped run is a run like any other: its ledger record and report, and `pgshift cost` bills it.
    let ledger = files
        .iter()
        .find(|f| f.ends_with("ledger.json"))
        .unwrap_or_else(|| panic!("the stopped run has a ledger record: {files:?}"));
    let ledger: serde_json::Value = serde_json::from_slice(&std::fs::read(stage.join(ledger))?)?;
    assert_eq!(ledger["status"], "failed", "{ledger}");
    assert!(files.iter().any(|f| f.ends_with("report.html")), "{files:?}");
    let billed = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args([
            "cost",
            "--stage",
            &format!("file://{}", stage.display()),
            "--run",
            run_id,
            "--json",
        ])
        .output()?;
    assert!(billed.status.success(), "{}", String::from_utf8_lossy(&billed.stderr));
    Ok(())
}

#[test]
fn a_run_stopped_by_a_signal_cleans_up_exits_by_the_signal_and_resumes_by_its_run_id() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh) = rt.block_on(async {
        let src = cluster().create_db("sigsrc").await?;
        connect(&src).await?.batch_execute(SOURCE).await?;
        anyhow::Ok((src, cluster().create_db("sigwh").await?))
    })?;
    let root = pgshift_tests::fresh_dir("signals");
    let stage = root.join("stage");
    std::fs::create_dir_all(&stage)?;
    stopped_by(&src, &wh, &stage, "sig-int", "INT", 130)?;

    // The same command again resumes: the ranges that landed are kept, the rest extracted, then the load.
    resumes(&rt, (&src, &wh), &stage, "sig-int")?;

    // SIGTERM (a container stopping, systemd) likewise, with its own exit code, into a warehouse of its own.
    let wh = rt.block_on(cluster().create_db("sigwh"))?;
    let stage = root.join("stage-term");
    std::fs::create_dir_all(&stage)?;
    stopped_by(&src, &wh, &stage, "sig-term", "TERM", 143)?;
    resumes(&rt, (&src, &wh), &stage, "sig-term")?;
    let _ = std::fs::remove_dir_all(root);
    Ok(())
}

/// The same command resumes the stopped run: the ranges that landed kept, and the warehouse equal to the source by
/// row count and every column's values in key order, with no staging table left.
fn resumes(rt: &tokio::runtime::Runtime, (src, wh): (&str, &str), stage: &Path, run_id: &str) -> anyhow::Result<()> {
    let out = start(src, wh, stage, run_id)?.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("kept from an earlier attempt"), "{said}");
    rt.block_on(async {
        let key = ["id".to_string()];
        let table = ("sales", "orders");
        let loaded = fingerprint_of(wh, table, &[], &key, &[]).await?;
        assert_eq!(loaded, fingerprint_of(src, table, &[], &key, &[]).await?, "{run_id}");
        assert_eq!(loaded[0], "rows=1000000");
        assert_eq!(
            pgshift_tests::staging_tables(wh).await?,
            0,
            "{run_id}: staging tables left"
        );
        anyhow::Ok(())
    })
}

/// Two `pgshift run --run-id dup` at once on one machine: the second is refused at once by name (the first holds the
/// run's lock, its process alive), touching nothing; the first loads the source exactly.
#[test]
fn a_second_run_of_a_run_id_held_by_a_live_process_is_refused_at_once() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh) = rt.block_on(async {
        let src = cluster().create_db("dupsrc").await?;
        connect(&src).await?.batch_execute(SOURCE).await?;
        anyhow::Ok((src, cluster().create_db("dupwh").await?))
    })?;
    let root = pgshift_tests::fresh_dir("dup");
    let stage = root.join("stage");
    std::fs::create_dir_all(&stage)?;
    let first = start(&src, &wh, &stage, "dup")?;
    let t0 = Instant::now();
    while !list_files(&stage).iter().any(|f| f.ends_with("dup/lock.json")) {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "the first run never took its lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let t1 = Instant::now();
    let second = start(&src, &wh, &stage, "dup")?.wait_with_output()?;
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        t1.elapsed() < Duration::from_secs(20),
        "refused at once: {:?}",
        t1.elapsed()
    );
    for says in [
        "Pipeline.Fatal.RunExists",
        "\"dup\" is being run by process",
        "--run-id",
    ] {
        assert!(err.contains(says), "{says:?} in {err}");
    }
    let first = first.wait_with_output()?;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    rt.block_on(async {
        let key = ["id".to_string()];
        let loaded = fingerprint_of(&wh, ("sales", "orders"), &[], &key, &[]).await?;
        assert_eq!(loaded, fingerprint_of(&src, ("sales", "orders"), &[], &key, &[]).await?);
        assert_eq!(pgshift_tests::staging_tables(&wh).await?, 0);
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(root);
    Ok(())
}

/// A run stopped while its load COPYs into the staging table, after some of the parallel COPY streams committed their
/// share: by SIGKILL (no Cleanup at all) and by Ctrl-C (Cleanup runs). The same command resumes at once and loads the
/// source exactly: the resumed load starts from an empty staging table.
#[test]
fn a_run_stopped_mid_copy_resumes_at_once_from_an_empty_staging_table() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let src = rt.block_on(async {
        let src = cluster().create_db("midcopysrc").await?;
        connect(&src).await?.batch_execute(SOURCE).await?;
        anyhow::Ok(src)
    })?;
    let root = pgshift_tests::fresh_dir("midcopy");
    for how in ["KILL", "INT"] {
        let wh = rt.block_on(async {
            let wh = cluster().create_db("midcopywh").await?;
            connect(&wh).await?.batch_execute(STALL_ONE_STREAM).await?;
            anyhow::Ok(wh)
        })?;
        let stage = root.join(format!("stage-{how}"));
        std::fs::create_dir_all(&stage)?;
        let run_id = format!("midcopy-{}", how.to_lowercase());
        let first = start(&src, &wh, &stage, &run_id)?;
        let staged = rt.block_on(committed_share(&wh))?;
        signal(&first, how)?;
        // The stalled stream's backend sleeps on, holding its lock; its client is gone, so it is ended as a server
        // whose client vanished mid-COPY would end it.
        rt.block_on(end_the_stall(&wh))?;
        let _ = first.wait_with_output()?;
        assert!(
            staged > 0 && staged < 1_000_000,
            "{how}: stopped mid-COPY, {staged} rows staged"
        );
        if how == "INT" {
            // Its Cleanup ran: the target this first load created, never committed into, is gone again.
            let there: bool = rt.block_on(async {
                let c = connect(&wh).await?;
                let row = c
                    .query_one("SELECT pg_catalog.to_regclass('sales.orders') IS NOT NULL", &[])
                    .await?;
                anyhow::Ok(row.get::<_, bool>(0))
            })?;
            assert!(!there, "{how}: the warehouse is as it was");
        }
        let out = start(&src, &wh, &stage, &run_id)?.wait_with_output()?;
        assert!(
            out.status.success(),
            "{how}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        rt.block_on(async {
            let key = ["id".to_string()];
            let loaded = fingerprint_of(&wh, ("sales", "orders"), &[], &key, &[]).await?;
            assert_eq!(
                loaded,
                fingerprint_of(&src, ("sales", "orders"), &[], &key, &[]).await?,
                "{how}"
            );
            assert_eq!(pgshift_tests::staging_tables(&wh).await?, 0, "{how}");
            anyhow::Ok(())
        })?;
    }
    let _ = std::fs::remove_dir_all(root);
    Ok(())
}

/// Makes the load's COPY deterministic to stop midway: the first row with id 999999 that any staging table of
/// `sales.orders` receives stalls its COPY stream (once: a sequence, not rolled back, counts it), so that the other
/// streams commit their shares while that one never does until [`end_the_stall`].
const STALL_ONE_STREAM: &str = r#"
CREATE SEQUENCE public.stalls;
CREATE FUNCTION public.stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF pg_catalog.nextval('public.stalls') = 1 THEN PERFORM pg_catalog.pg_sleep(300); END IF;
  RETURN NEW;
END $$;
CREATE FUNCTION public.stall_staging() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.oid FROM pg_catalog.pg_event_trigger_ddl_commands() d JOIN pg_catalog.pg_class c ON c.oid = d.objid
           WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.relkind = 'r'
             AND c.relname LIKE 'orders\_\_pgshift%' LOOP
    EXECUTE pg_catalog.format('CREATE TRIGGER stall BEFORE INSERT ON %s FOR EACH ROW WHEN (NEW.id = 999999) '
                              'EXECUTE FUNCTION public.stall()', r.oid::pg_catalog.regclass);
  END LOOP;
END $$;
CREATE EVENT TRIGGER stall_staging ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS')
  EXECUTE FUNCTION public.stall_staging();"#;

/// Ends the stall of [`STALL_ONE_STREAM`]: no stream stalls from now on (one that had not reached the stalling row
/// yet, its data still buffered, nor the resumed run's), the backend that sleeps is ended, and this waits until no
/// COPY of the stopped run is left on the warehouse.
async fn end_the_stall(wh: &str) -> anyhow::Result<()> {
    let c = connect(wh).await?;
    c.batch_execute("SELECT pg_catalog.setval('public.stalls', 1)").await?;
    let t0 = Instant::now();
    loop {
        let left = c
            .query_one(
                "SELECT count(CASE WHEN wait_event = 'PgSleep' THEN pg_catalog.pg_terminate_backend(pid) END), \
                 count(*) FROM pg_catalog.pg_stat_activity \
                 WHERE datname = pg_catalog.current_database() AND query LIKE 'COPY %' AND state = 'active'",
                &[],
            )
            .await?;
        if left.get::<_, i64>(1) == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "a COPY of the stopped run lives on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a COPY stream's share is committed in a staging table of `sales.orders`: its row count.
async fn committed_share(wh: &str) -> anyhow::Result<i64> {
    let c = connect(wh).await?;
    let t0 = Instant::now();
    loop {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(120), "no share was ever committed");
        let rows = c
            .query(
                "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relname LIKE 'orders\\_\\_pgshift%' \
                 AND c.relkind = 'r'",
                &[],
            )
            .await?;
        for r in rows {
            let name: String = r.get(0);
            if let Ok(n) = c.query_one(&format!("SELECT count(*) FROM {name}"), &[]).await {
                if n.get::<_, i64>(0) > 0 {
                    return Ok(n.get(0));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
