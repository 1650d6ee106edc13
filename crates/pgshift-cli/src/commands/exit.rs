//! The exit status of a command, by class, stable for scripts (README, "Exit codes"):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (and a reader that closed the pipe early: `pgshift cost --csv \| head`) |
//! | 1 | an error of another kind (this machine: a file that cannot be written, a bug) |
//! | 2 | usage: a flag, a setting, a URL or a config file is wrong; nothing ran (`Pipeline.Fatal.InvalidInput` too) |
//! | 3 | the run failed for good (`Pipeline.Fatal.*`): the same command fails again until something is changed |
//! | 4 | the run failed and may pass if tried again (`Pipeline.Retryable.*`, `States.Timeout`): the same command resumes it |
//! | 130, 143 | stopped by SIGINT or SIGTERM (Cleanup ran; `--run-id` resumes it) |

use std::fmt;

pub(crate) const OTHER: u8 = 1;
pub(crate) const USAGE: u8 = 2;
pub(crate) const FATAL: u8 = 3;
pub(crate) const RETRYABLE: u8 = 4;

/// A wrong flag, setting, URL or config file, found before anything ran.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error as an `anyhow` error.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// A run (or a step of one) that failed with a named error: the name decides the exit code.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) name: String,
    pub(crate) message: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

/// The class of an error name.
pub(crate) fn of_name(name: &str) -> u8 {
    if name == "Pipeline.Fatal.InvalidInput" {
        USAGE
    } else if name.starts_with("Pipeline.Retryable.") || name == "States.Timeout" || name == "States.HeartbeatTimeout" {
        RETRYABLE
    } else if name.starts_with("Pipeline.Fatal.") || name.starts_with("States.") || name.starts_with("Rds.") {
        FATAL
    } else {
        OTHER
    }
}

/// The exit code of an error: its class when it says one (typed, or the `[Name]` the message ends with), else 1.
pub(crate) fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<Usage>().is_some() {
            return USAGE;
        }
        if let Some(f) = cause.downcast_ref::<Failed>() {
            return of_name(&f.name);
        }
    }
    let text = format!("{e:#}");
    named_in(&text).map_or(OTHER, of_name)
}

/// The first `[Pipeline.…]` or `[States.…]` name in a message.
fn named_in(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(i) = rest.find('[') {
        let tail = &rest[i + 1..];
        let end = tail.find(']')?;
        let name = &tail[..end];
        if name.starts_with("Pipeline.") || name.starts_with("States.") {
            return Some(name);
        }
        rest = tail;
    }
    None
}

/// Whether an error is a closed standard output (the reader stopped reading): not a failure.
pub(crate) fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_exit_by_class() {
        assert_eq!(code_of(&usage("no source")), USAGE);
        let failed = |n: &str| {
            anyhow::Error::new(Failed {
                name: n.into(),
                message: "m".into(),
            })
        };
        assert_eq!(code_of(&failed("Pipeline.Fatal.NotFound")), FATAL);
        assert_eq!(code_of(&failed("Pipeline.Retryable.Warehouse")), RETRYABLE);
        assert_eq!(code_of(&failed("Pipeline.Fatal.InvalidInput")), USAGE);
        assert_eq!(code_of(&failed("States.Timeout")), RETRYABLE);
        let text = anyhow::anyhow!("x [not a name] source unavailable [Pipeline.Retryable.SourceUnavailable]");
        assert_eq!(code_of(&text), RETRYABLE);
        assert_eq!(code_of(&anyhow::anyhow!("disk full")), OTHER);
        let wrapped = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("csv");
        assert!(broken_pipe(&wrapped));
    }
}
