//! Local workers: each run of a plan as a child `lottery run` process, several at a time.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::plan::{PlannedRun, SweepPlan};
use crate::status::{RunState, state_of};
use crate::{SweepError, io};

/// Set (to `lines`) in a worker's environment: the child reports its progress as
/// [`PROGRESS_PREFIX`] lines on stderr instead of drawing bars.
pub const PROGRESS_ENV: &str = "LOTTERY_PROGRESS";

/// Start of a progress line: `@progress <position> <length> <message>`.
pub const PROGRESS_PREFIX: &str = "@progress ";

/// Start of the line a worker prints for each run it was given: `@outcome <run-id> computed`,
/// `skipped` (already finished) or `elsewhere` (another process holds it).
pub const OUTCOME_PREFIX: &str = "@outcome ";

/// Child side: reports what became of a run, for the sweep's exact account.
pub fn report_outcome(run_id: &str, outcome: &str) {
    if progress_lines_requested() {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{OUTCOME_PREFIX}{run_id} {outcome}");
    }
}

/// Whether this process is a sweep worker asked for progress lines.
pub fn progress_lines_requested() -> bool {
    std::env::var(PROGRESS_ENV).is_ok_and(|v| v == "lines")
}

/// Child side: prints the position of whatever bar is current as a progress line every half
/// second while it changes; stops when dropped.
pub struct ProgressLines {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressLines {
    /// Starts reporting the bar that `current` holds at each tick.
    pub fn start(current: Arc<std::sync::Mutex<Option<ProgressBar>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut last = None;
            while !flag.load(Ordering::Relaxed) {
                let now = current.lock().ok().and_then(|b| {
                    b.as_ref()
                        .map(|b| (b.position(), b.length().unwrap_or(0), b.message()))
                });
                if now.is_some() && now != last {
                    if let Some((pos, len, msg)) = &now {
                        let mut err = std::io::stderr().lock();
                        let _ = writeln!(err, "{PROGRESS_PREFIX}{pos} {len} {msg}");
                    }
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for ProgressLines {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// How to run a plan locally.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The `lottery` executable the workers run.
    pub exe: PathBuf,
    /// Runs at a time.
    pub workers: usize,
    /// Threads each run may use (`RAYON_NUM_THREADS` of the child).
    pub threads_per_run: usize,
    /// Further attempts at a run that failed.
    pub retries: usize,
}

impl LocalOptions {
    /// Options that fit the cores: `workers` runs at a time (default one per core), each with
    /// `threads_per_run` threads (default the cores shared among the workers).
    pub fn fitting_the_cores(
        exe: PathBuf,
        workers: Option<usize>,
        threads_per_run: Option<usize>,
        retries: usize,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = workers.unwrap_or(cores);
        Self {
            exe,
            workers,
            threads_per_run: threads_per_run.unwrap_or((cores / workers.max(1)).max(1)),
            retries,
        }
    }
}

/// What a local sweep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    /// Runs computed now.
    pub computed: Vec<String>,
    /// Runs that were already finished.
    pub already_finished: Vec<String>,
    /// Runs that another process was computing (left to it).
    pub elsewhere: Vec<String>,
    /// Runs that failed on every attempt, with the last error.
    pub failed: Vec<(String, String)>,
    /// Runs stopped by an interruption, or never started because of one.
    pub interrupted: Vec<String>,
}

struct Active {
    run: PlannedRun,
    attempt: usize,
    child: Child,
    bar: ProgressBar,
    reader: JoinHandle<Followed>,
}

/// What the sweep read from a child's stderr.
#[derive(Default)]
struct Followed {
    /// The last lines, for the report of a failure.
    tail: Vec<String>,
    /// The child's own account of the run (`computed`, `skipped`, `elsewhere`).
    outcome: Option<String>,
}

/// Runs every unfinished run of the plan as a child `lottery run`, `workers` at a time; a failed
/// run is retried up to `retries` times and never stops the others; setting `stop` (Ctrl-C) kills
/// the runs in flight (their claims go with them; nothing half-written becomes visible) and
/// returns. Each child's output goes to `<plan dir>/logs/<run-id>.log`.
pub fn run_local(
    plan: &SweepPlan,
    opts: &LocalOptions,
    stop: &AtomicBool,
    multi: &MultiProgress,
) -> Result<SweepReport, SweepError> {
    if opts.workers == 0 || opts.threads_per_run == 0 {
        return Err(SweepError::Options(
            "--workers and --threads-per-run must be at least 1".into(),
        ));
    }
    let logs = plan.dir().join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    let mut report = SweepReport::default();
    let mut queue: VecDeque<(PlannedRun, usize)> = VecDeque::new();
    for run in &plan.runs {
        match state_of(plan, run) {
            RunState::Finished => report.already_finished.push(run.run_id.clone()),
            RunState::Running => report.elsewhere.push(run.run_id.clone()),
            RunState::Failed(_) | RunState::Pending => queue.push_back((run.clone(), 0)),
        }
    }
    let overall = multi.add(ProgressBar::new(plan.runs.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("sweep {bar:30} {pos}/{len} runs {elapsed_precise} {msg}")
            .expect("template"),
    );
    overall.set_position((report.already_finished.len() + report.elsewhere.len()) as u64);
    let mut active: Vec<Active> = vec![];
    loop {
        if stop.load(Ordering::SeqCst) {
            for mut a in active.drain(..) {
                let _ = a.child.kill();
                let _ = a.child.wait();
                let _ = a.reader.join();
                a.bar.finish_and_clear();
                report.interrupted.push(a.run.run_id.clone());
            }
            report
                .interrupted
                .extend(queue.drain(..).map(|(r, _)| r.run_id));
            break;
        }
        while active.len() < opts.workers {
            let Some((run, attempt)) = queue.pop_front() else {
                break;
            };
            active.push(spawn(plan, opts, &logs, run, attempt, multi)?);
        }
        if active.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < active.len() {
            let status = active[i].child.try_wait().map_err(io(&opts.exe))?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let a = active.swap_remove(i);
            finish(
                plan,
                opts,
                a,
                status,
                stop,
                &overall,
                &mut queue,
                &mut report,
            );
        }
        overall.set_message(format!(
            "{} running, {} failed",
            active.len(),
            report.failed.len()
        ));
    }
    overall.finish_and_clear();
    Ok(report)
}

fn spawn(
    plan: &SweepPlan,
    opts: &LocalOptions,
    logs: &std::path::Path,
    run: PlannedRun,
    attempt: usize,
    multi: &MultiProgress,
) -> Result<Active, SweepError> {
    let log_path = logs.join(format!("{}.log", run.run_id));
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let _ = writeln!(log, "=== {} attempt {}", run.label, attempt + 1);
    let stdout = log.try_clone().map_err(io(&log_path))?;
    let mut child = Command::new(&opts.exe)
        .arg("run")
        .arg(&run.config)
        .arg("--results")
        .arg(&plan.results)
        .arg("--no-table")
        .env(PROGRESS_ENV, "lines")
        .env("RAYON_NUM_THREADS", opts.threads_per_run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SweepError::Command {
            command: format!("{} run {}", opts.exe.display(), run.config.display()),
            why: e.to_string(),
        })?;
    let bar = multi.add(ProgressBar::new(0));
    bar.set_style(
        ProgressStyle::with_template("  {prefix:28} {bar:30} {pos}/{len} {msg}").expect("template"),
    );
    bar.set_prefix(run.label.clone());
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = {
        let bar = bar.clone();
        std::thread::spawn(move || follow(stderr, log, bar))
    };
    Ok(Active {
        run,
        attempt,
        child,
        bar,
        reader,
    })
}

/// Copies a child's stderr into its log, turning progress lines into bar updates; returns the
/// last lines and the child's outcome line.
fn follow(stderr: std::process::ChildStderr, mut log: File, bar: ProgressBar) -> Followed {
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut outcome = None;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix(OUTCOME_PREFIX) {
            outcome = rest.split_whitespace().nth(1).map(String::from);
            continue;
        }
        if let Some(rest) = line.strip_prefix(PROGRESS_PREFIX) {
            let mut parts = rest.splitn(3, ' ');
            let pos = parts.next().and_then(|p| p.parse().ok());
            let len = parts.next().and_then(|p| p.parse().ok());
            if let (Some(pos), Some(len)) = (pos, len) {
                bar.set_length(len);
                bar.set_position(pos);
                bar.set_message(parts.next().unwrap_or("").to_string());
            }
            continue;
        }
        let _ = writeln!(log, "{line}");
        tail.push_back(line);
        if tail.len() > 20 {
            tail.pop_front();
        }
    }
    Followed {
        tail: tail.into(),
        outcome,
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    plan: &SweepPlan,
    opts: &LocalOptions,
    a: Active,
    status: ExitStatus,
    stop: &AtomicBool,
    overall: &ProgressBar,
    queue: &mut VecDeque<(PlannedRun, usize)>,
    report: &mut SweepReport,
) {
    let Followed { tail, outcome } = a.reader.join().unwrap_or_default();
    a.bar.finish_and_clear();
    let id = a.run.run_id.clone();
    match state_of(plan, &a.run) {
        RunState::Finished if outcome.as_deref() == Some("computed") => {
            overall.inc(1);
            overall.println(format!("done   {} ({id})", a.run.label));
            report.computed.push(id);
        }
        RunState::Finished => {
            // Finished by another process before this worker reached it.
            overall.inc(1);
            report.elsewhere.push(id);
        }
        _ if stop.load(Ordering::SeqCst) => report.interrupted.push(id),
        RunState::Running => {
            overall.inc(1);
            report.elsewhere.push(id);
        }
        state => {
            let why = match state {
                RunState::Failed(why) => why,
                _ => tail
                    .iter()
                    .rev()
                    .find(|l| l.contains("error"))
                    .cloned()
                    .unwrap_or_else(|| format!("exited with {status}")),
            };
            if status.success() {
                // Claimed elsewhere between our check and the child's claim.
                overall.inc(1);
                report.elsewhere.push(id);
            } else if a.attempt < opts.retries {
                overall.println(format!(
                    "retry  {} ({id}) after: {}",
                    a.run.label,
                    why.lines().next().unwrap_or("")
                ));
                queue.push_back((a.run, a.attempt + 1));
            } else {
                overall.inc(1);
                overall.println(format!(
                    "FAILED {} ({id}): {}",
                    a.run.label,
                    why.lines().next().unwrap_or("")
                ));
                report.failed.push((id, why));
            }
        }
    }
}
