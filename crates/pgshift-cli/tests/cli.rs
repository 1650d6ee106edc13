//! The `pgshift` binary as a user runs it, output piped (as in CI or a log file): a failure is printed once, without
//! colour codes, with the error's stable name, and the exit code says it failed.

use std::process::Command;

#[test]
fn a_failure_is_printed_once_without_colour_codes_when_stderr_is_not_a_terminal() {
    let stage = std::env::temp_dir().join(format!("pgshift-cli-test-{}", std::process::id()));
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
    let dir = std::env::temp_dir().join(format!("pgshift-cli-event-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
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
