//! The live progress of `pgshift run`: one line redrawn in place on a terminal (fitted to its width by `indicatif`,
//! so a narrow terminal never leaves stale lines behind), a log line whenever something moved otherwise, or nothing.

use std::io::IsTerminal;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgshift::entry::local::{Progress, RunState, TableLoadState};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum ProgressMode {
    Auto,
    Line,
    Log,
    None,
}

/// What the run shows while it runs.
pub(crate) struct Live {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    last: String,
    rate: Rate,
}

impl Live {
    /// `auto` is a line on a terminal and log lines otherwise.
    pub(crate) fn new(mode: ProgressMode) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Line,
            ProgressMode::Auto => ProgressMode::Log,
            m => m,
        };
        let bar = (mode == ProgressMode::Line).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            bar.set_style(
                ProgressStyle::with_template("{wide_msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Self {
            mode,
            bar,
            last: String::new(),
            rate: Rate::default(),
        }
    }

    /// How often to look at the run.
    pub(crate) fn every(&self) -> Duration {
        Duration::from_millis(if self.mode == ProgressMode::Line { 200 } else { 1000 })
    }

    pub(crate) fn tick(&mut self, p: &Progress) {
        let line = status_line(p, &mut self.rate);
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.set_message(line.clone()),
            // Log lines only when something moved (the elapsed time aside).
            (None, ProgressMode::Log)
                if line.split_once(' ').map(|x| x.1) != self.last.split_once(' ').map(|x| x.1) =>
            {
                eprintln!("{line}");
            }
            _ => {}
        }
        self.last = line;
    }

    /// The line cleared, and its last state printed once (a terminal keeps it above the summary).
    pub(crate) fn finish(&mut self, p: &Progress) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            eprintln!("{}", status_line(p, &mut self.rate));
        }
    }
}

/// The current throughput: rows and bytes moved over the last few seconds of samples, not since the start.
#[derive(Default)]
struct Rate {
    samples: std::collections::VecDeque<(f64, u64, u64)>,
}

impl Rate {
    const WINDOW: f64 = 5.0;

    /// Adds a sample (seconds, rows and bytes moved so far); returns rows/s and MB/s over the window.
    fn push(&mut self, t: f64, rows: u64, bytes: u64) -> (f64, f64) {
        self.samples.push_back((t, rows, bytes));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|s| t - s.0 > Self::WINDOW) {
            self.samples.pop_front();
        }
        let (t0, r0, b0) = self.samples.front().copied().unwrap_or((0.0, 0, 0));
        let dt = (t - t0).max(1e-3);
        if self.samples.len() < 2 {
            return (rows as f64 / t.max(1e-3), bytes as f64 / 1e6 / t.max(1e-3));
        }
        (
            rows.saturating_sub(r0) as f64 / dt,
            bytes.saturating_sub(b0) as f64 / 1e6 / dt,
        )
    }
}

/// One line of progress: phase, parts (or, loading, the tables and the step each is at), rows and bytes moved, and
/// the current throughput.
fn status_line(p: &Progress, rate: &mut Rate) -> String {
    let s = p.snapshot();
    let t = p.elapsed();
    let rows: u64 = s.results.iter().map(|r| r.rows).sum();
    let src: u64 = s.results.iter().map(|r| r.source_bytes).sum();
    let parquet: u64 = s.results.iter().flat_map(|r| &r.files).map(|f| f.bytes).sum();
    if s.phase == "loading" || !s.load.is_empty() {
        let loaded = s.loaded_rows();
        let (rps, _) = rate.push(t, loaded, 0);
        return format!(
            "[{t:6.1}s] {:<11} {} | {loaded} of {rows} rows committed | {rps:.0} rows/s",
            s.phase,
            load_line(&s),
        );
    }
    let (rps, mbps) = rate.push(t, rows, src);
    format!(
        "[{t:6.1}s] {:<11} parts {}/{} done, {} running, {} failed attempts | {rows} rows, {:.1} MB read, {:.1} MB \
         Parquet | {rps:.0} rows/s, {mbps:.1} MB/s",
        s.phase,
        s.results.len(),
        s.parts,
        s.running(),
        s.failed_attempts(),
        src as f64 / 1e6,
        parquet as f64 / 1e6,
    )
}

/// Tables done of total, and the step each running table is at.
fn load_line(s: &RunState) -> String {
    let done = s
        .load
        .values()
        .filter(|l| matches!(l, TableLoadState::Ended(st) if st.is_committed()))
        .count();
    let failed = s
        .load
        .values()
        .filter(|l| matches!(l, TableLoadState::Ended(st) if !st.is_committed()))
        .count();
    let running: Vec<String> = s
        .load
        .iter()
        .filter_map(|(t, l)| match l {
            TableLoadState::Running(step) => Some(format!("{t} ({})", step.label())),
            TableLoadState::Ended(_) => None,
        })
        .collect();
    let now = match running.as_slice() {
        [] => String::new(),
        [a] => format!("; now {a}"),
        [a, rest @ ..] => format!("; now {a} and {} more", rest.len()),
    };
    let failed = match failed {
        0 => String::new(),
        n => format!(", {n} not loaded"),
    };
    format!("tables {done}/{} loaded{failed}{now}", s.tables.max(s.load.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_current_one_not_the_average_since_the_start() {
        let mut r = Rate::default();
        // 1,000 rows/s for 10 s, then nothing moves for 6 s.
        for t in 0..=10 {
            r.push(t as f64, t * 1000, 0);
        }
        let (now, _) = r.push(11.0, 11_000, 0);
        assert!((now - 1000.0).abs() < 1.0, "{now}");
        for t in 12..=16 {
            r.push(t as f64, 11_000, 0);
        }
        let (stalled, _) = r.push(17.0, 11_000, 0);
        assert_eq!(
            stalled,
            0.0,
            "a stalled run shows 0, not the average of {} rows/s",
            11_000 / 17
        );
    }
}
