//! What a local run has done so far, for its live display: updated by the bound handlers as they run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::contract::load::{LoadWatch, StepKind, TableStatus};
use crate::contract::model::{ExtractResult, TableRef};

/// One extraction attempt as the run saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub table: TableRef,
    pub range_index: u32,
    pub attempt: u32,
    /// Seconds since the run started.
    pub started: f64,
    pub ended: Option<f64>,
    /// The error name of a failed attempt.
    pub error: Option<String>,
}

/// What the run has done so far, for the live display only: the run's report is read from its stage when it ends
/// ([`crate::report::publish`]), with what only this process knows (its wall time, its invocations, its state
/// transitions).
#[derive(Debug, Default, Clone)]
pub struct RunState {
    pub phase: &'static str,
    pub parts: usize,
    pub attempts: Vec<Attempt>,
    pub results: Vec<ExtractResult>,
    /// Every function invocation: (function, seconds), for the cost estimate.
    pub invocations: Vec<(&'static str, f64)>,
    /// `<stage>/<run>/plan.json`, once the planner returned.
    pub plan_url: Option<String>,
    /// The run's id and stage, once its trigger fixed them (before it has a plan).
    pub trigger: Option<(String, String)>,
    /// What the Cleanup state did, when it ran.
    pub cleanup: Option<crate::contract::load::CleanupResult>,
    /// Tables in the plan, once the planner returned.
    pub tables: usize,
    /// Each table's load as it runs: the step running, or how it ended.
    pub load: BTreeMap<TableRef, TableLoadState>,
}

/// Where one table's load stands, as the live line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableLoadState {
    Running(StepKind),
    Ended(TableStatus),
}

impl RunState {
    /// Rows of the tables whose load committed (their parts' rows).
    pub fn loaded_rows(&self) -> u64 {
        self.results
            .iter()
            .filter(|r| matches!(self.load.get(&r.table), Some(TableLoadState::Ended(s)) if s.is_committed()))
            .map(|r| r.rows)
            .sum()
    }

    pub fn running(&self) -> usize {
        self.attempts.iter().filter(|a| a.ended.is_none()).count()
    }

    pub fn failed_attempts(&self) -> usize {
        self.attempts.iter().filter(|a| a.error.is_some()).count()
    }
}

/// Progress of a run, updated by the bound handlers.
pub struct Progress {
    started: Instant,
    state: Mutex<RunState>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::new(RunState {
                phase: "starting",
                ..RunState::default()
            }),
        }
    }
}

impl LoadWatch for Progress {
    fn step(&self, table: &TableRef, step: StepKind) {
        self.update(|s| {
            s.load.insert(table.clone(), TableLoadState::Running(step));
        });
    }

    fn done(&self, table: &TableRef, status: TableStatus) {
        self.update(|s| {
            s.load.insert(table.clone(), TableLoadState::Ended(status));
        });
    }
}

impl Progress {
    pub fn snapshot(&self) -> RunState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut RunState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}
