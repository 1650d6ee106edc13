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
