//! Where each run of a sweep stands, read from the results store.

use std::fmt::Write;

use lottery_analysis::store;

use crate::plan::{PlannedRun, SweepPlan};

/// The state of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Recorded: its `summary.json` exists.
    Finished,
    /// Some process holds its claim and is computing it.
    Running,
    /// The last attempt failed, with this error.
    Failed(String),
    /// Not started, or interrupted (an interrupted run resumes from its saved progress: a
    /// method's last saved level, round or epoch, or its final training's last saved epoch).
    Pending,
}

/// The state of a planned run.
pub fn state_of(plan: &SweepPlan, run: &PlannedRun) -> RunState {
    let study = plan.study_dir(run);
    if study.join(&run.run_id).join("summary.json").exists() {
        RunState::Finished
    } else if store::is_claimed(&study, &run.run_id) {
        RunState::Running
    } else if let Some(why) = store::read_failure(&study, &run.run_id) {
        RunState::Failed(why)
    } else {
        RunState::Pending
    }
}

/// The runs of the plan that are not finished, each with its state.
pub fn unfinished(plan: &SweepPlan) -> Vec<(&PlannedRun, RunState)> {
    plan.runs
        .iter()
        .map(|r| (r, state_of(plan, r)))
        .filter(|(_, s)| *s != RunState::Finished)
        .collect()
}

/// How many runs of a plan are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Finished.
    pub finished: usize,
    /// Running.
    pub running: usize,
    /// Failed.
    pub failed: usize,
    /// Pending.
    pub pending: usize,
}

impl StatusCounts {
    /// Counts the states of every run of the plan.
    pub fn of(plan: &SweepPlan) -> Self {
        let mut c = Self::default();
        for r in &plan.runs {
            c.count(&state_of(plan, r));
        }
        c
    }

    /// Adds one run in `state`.
    fn count(&mut self, state: &RunState) {
        match state {
            RunState::Finished => self.finished += 1,
            RunState::Running => self.running += 1,
            RunState::Failed(_) => self.failed += 1,
            RunState::Pending => self.pending += 1,
        }
    }
}

/// A report of the plan: the counts, then one line per run that is not finished.
pub fn render_status(plan: &SweepPlan) -> String {
    let mut counts = StatusCounts::default();
    let mut lines = String::new();
    for r in &plan.runs {
        let state = state_of(plan, r);
        counts.count(&state);
        let word = match &state {
            RunState::Finished => continue,
            RunState::Running => "running".to_string(),
            RunState::Failed(why) => format!("failed: {}", why.lines().next().unwrap_or("")),
            RunState::Pending => "pending".to_string(),
        };
        let _ = writeln!(lines, "  {} {:<32} {word}", r.run_id, r.label);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sweep {}: {} runs: {} finished, {} running, {} failed, {} pending",
        plan.name,
        plan.runs.len(),
        counts.finished,
        counts.running,
        counts.failed,
        counts.pending
    );
    out.push_str(&lines);
    out
}
