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
    let cause = "Name or service not known";
    assert!(
        stderr.matches(cause).count() <= 1,
        "the failure is printed once: {stderr}"
    );
    assert!(stderr.contains("Pipeline.Fatal.NotFound"), "{stderr}");
}
