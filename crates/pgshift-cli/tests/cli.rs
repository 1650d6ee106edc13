//! The `pgshift` binary as a user runs it, output piped (as in CI or a log file): a failure is printed once, without
//! colour codes, with the error's stable name, and the exit code says it failed.

use std::process::Command;

#[test]
fn a_failure_is_printed_once_without_colour_codes_when_stderr_is_not_a_terminal() {
    let stage = pgshift_tests::fresh_dir("cli-test");
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args([
            "plan",
            "--source",
            "postgres://u@no-such-host.invalid:5432/db?sslmode=disable",
        ])
        .args(["--tables", "sales.*", "--stage"])
        .arg(format!("file://{}", stage.display()))
        .env("PGSHIFT_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("runs pgshift");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no ANSI escape in piped output: {stderr:?}");
    assert!(
        stderr.contains("no-such-host.invalid:5432"),
        "names host and port: {stderr}"
    );
    assert!(stderr.contains("check the host name"), "{stderr}");
    // Printed, and printed once: the cause and the error's name each appear exactly once, logs included.
    for once in ["Name or service not known", "Pipeline.Fatal.NotFound"] {
        assert_eq!(stderr.matches(once).count(), 1, "{once:?} printed once: {stderr}");
    }
}

#[test]
fn run_id_with_an_event_is_refused_before_anything_runs() {
    let dir = pgshift_tests::fresh_dir("cli-event");
    let event = dir.join("event.json");
    std::fs::write(
        &event,
        r#"{"source": "aws.rds", "detail-type": "RDS DB Snapshot Event"}"#,
    )
    .expect("event");
    let stage = dir.join("stage");
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args([
            "run",
            "--source",
            "postgres://u@no-such-host.invalid:5432/db?sslmode=disable",
        ])
        .args([
            "--warehouse",
            "postgres://u@no-such-host.invalid:5432/wh?sslmode=disable",
        ])
        .args(["--tables", "sales.*", "--run-id", "mine", "--event"])
        .arg(&event)
        .arg("--stage")
        .arg(format!("file://{}", stage.display()))
        .output()
        .expect("runs pgshift");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--run-id mine with --event") && stderr.contains("--snapshot IDENTIFIER --run-id mine"),
        "{stderr}"
    );
    assert!(!stage.exists(), "nothing reached the stage");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_load_says_what_it_committed() -> anyhow::Result<()> {
    use pgshift_tests::{cluster, connect};
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (src, wh1, wh2) = rt.block_on(async {
        let src = cluster().create_db("saidsrc").await?;
        connect(&src)
            .await?
            .batch_execute(
                "CREATE TABLE public.a (id int8 PRIMARY KEY, v text); INSERT INTO public.a SELECT g, 'a' FROM generate_series(1, 100) g;
                 CREATE TABLE public.b (id int8 PRIMARY KEY, v text); INSERT INTO public.b SELECT g, 'b' FROM generate_series(1, 100) g;",
            )
            .await?;
        let wh2 = cluster().create_db("saidwh2").await?;
        // b's target holds integers where the source has text: its load fails by column, after a's committed.
        connect(&wh2)
            .await?
            .batch_execute("CREATE TABLE public.b (id int8 PRIMARY KEY, v int4);")
            .await?;
        anyhow::Ok((src, cluster().create_db("saidwh1").await?, wh2))
    })?;
    let dir = pgshift_tests::fresh_dir("cli-said");
    let stage = format!("file://{}", dir.display());
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args(["run", "--source", &src, "--warehouse", &wh1, "--stage", &stage])
        // Kept: the same parts are loaded again into the second warehouse.
        .args([
            "--tables",
            "public.*",
            "--progress",
            "none",
            "--run-id",
            "said",
            "--keep-parts",
        ])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .args([
            "load",
            "--plan",
            &format!("{stage}/said/plan.json"),
            "--warehouse",
            &wh2,
        ])
        .args(["--load-concurrency", "1"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Pipeline.Fatal.SchemaDrift"), "{stderr}");
    assert!(
        stderr.contains("committed before the failure: 1 of 2 tables, public.a (100 rows)"),
        "{stderr}"
    );
    let rows: i64 = rt.block_on(async {
        anyhow::Ok(
            connect(&wh2)
                .await?
                .query_one("SELECT count(*) FROM public.a", &[])
                .await?
                .get(0),
        )
    })?;
    assert_eq!(rows, 100);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
