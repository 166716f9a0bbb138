//! Local workers: each run of a plan as a child `lottery run` process, several at a time.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Threads each run may use (`RAYON_NUM_THREADS` and `OMP_NUM_THREADS` of the child).
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
    /// Runs that another process finished (the sweep waited for it, or its worker found it done).
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

/// How often the runs that another process holds are looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// A run and the attempts already made at it.
type Queued = (PlannedRun, usize);

/// Runs every unfinished run of the plan as a child `lottery run`, `workers` at a time; a failed
/// run is retried up to `retries` times and never stops the others. A run that another process
/// holds is looked at again every second while the other runs proceed: it counts as finished
/// elsewhere once that process records it, and is run here if that process let go of it
/// unfinished (it died, or the run failed there). Setting `stop` (Ctrl-C) kills the runs in flight
/// (their claims go with them; nothing half-written becomes visible), stops waiting and returns.
/// Each child's output goes to `<plan dir>/logs/<run-id>.log`.
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
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut waiting: Vec<Queued> = vec![];
    for run in &plan.runs {
        match state_of(plan, run) {
            RunState::Finished => report.already_finished.push(run.run_id.clone()),
            RunState::Running => waiting.push((run.clone(), 0)),
            RunState::Failed(_) | RunState::Pending => queue.push_back((run.clone(), 0)),
        }
    }
    let overall = multi.add(ProgressBar::new(plan.runs.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("sweep {bar:30} {pos}/{len} runs {elapsed_precise} {msg}")
            .expect("template"),
    );
    overall.set_position(report.already_finished.len() as u64);
    for (run, _) in &waiting {
        overall.println(wait_line(run));
    }
    let mut active: Vec<Active> = vec![];
    let mut checked = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            for mut a in active.drain(..) {
                let _ = a.child.kill();
                let _ = a.child.wait();
                let _ = a.reader.join();
                a.bar.finish_and_clear();
                report.interrupted.push(a.run.run_id.clone());
            }
            report.interrupted.extend(
                queue
                    .drain(..)
                    .chain(waiting.drain(..))
                    .map(|(r, _)| r.run_id),
            );
            break;
        }
        if !waiting.is_empty() && checked.elapsed() >= RECHECK {
            recheck(plan, &mut waiting, &mut queue, &overall, &mut report);
            checked = Instant::now();
        }
        while active.len() < opts.workers {
            let Some((run, attempt)) = queue.pop_front() else {
                break;
            };
            active.push(spawn(plan, opts, &logs, run, attempt, multi)?);
        }
        if active.is_empty() && waiting.is_empty() {
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
                &mut waiting,
                &mut report,
            );
        }
        let held = if waiting.is_empty() {
            String::new()
        } else {
            format!(", waiting for {} held by another process", waiting.len())
        };
        overall.set_message(format!(
            "{} running{held}, {} failed",
            active.len(),
            report.failed.len()
        ));
    }
    overall.finish_and_clear();
    Ok(report)
}

/// The line printed when a run is left to the process that holds it.
fn wait_line(run: &PlannedRun) -> String {
    format!(
        "wait   {} ({}): another process is computing it",
        run.label, run.run_id
    )
}

/// Looks again at the runs held by other processes: those recorded since count as finished
/// elsewhere, those let go of unfinished go back to the queue, the others stay.
fn recheck(
    plan: &SweepPlan,
    waiting: &mut Vec<Queued>,
    queue: &mut VecDeque<Queued>,
    overall: &ProgressBar,
    report: &mut SweepReport,
) {
    waiting.retain(|(run, attempt)| match state_of(plan, run) {
        RunState::Running => true,
        RunState::Finished => {
            overall.inc(1);
            overall.println(format!(
                "done   {} ({}) by another process",
                run.label, run.run_id
            ));
            report.elsewhere.push(run.run_id.clone());
            false
        }
        RunState::Failed(_) | RunState::Pending => {
            overall.println(format!(
                "take   {} ({}): the process that held it stopped without finishing it",
                run.label, run.run_id
            ));
            queue.push_back((run.clone(), *attempt));
            false
        }
    });
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
        // LibTorch's (`--features tch`) thread pool.
        .env("OMP_NUM_THREADS", opts.threads_per_run.to_string())
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
    queue: &mut VecDeque<Queued>,
    waiting: &mut Vec<Queued>,
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
        // Another process holds it (or held it when the worker tried): wait for it.
        RunState::Running => {
            overall.println(wait_line(&a.run));
            waiting.push((a.run, a.attempt));
        }
        _ if status.success() && outcome.as_deref() == Some("elsewhere") => {
            overall.println(wait_line(&a.run));
            waiting.push((a.run, a.attempt));
        }
        state => {
            let why = match state {
                RunState::Failed(why) => why,
                _ => tail
                    .iter()
                    .rev()
                    .find(|l| l.contains("error"))
                    .cloned()
                    .unwrap_or_else(|| {
                        if status.success() {
                            "exited without recording the run".to_string()
                        } else {
                            format!("exited with {status}")
                        }
                    }),
            };
            if a.attempt < opts.retries {
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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use indicatif::ProgressDrawTarget;
    use lottery_analysis::RunClaim;

    use super::*;
    use crate::plan::RunSpec;

    /// A stand-in for `lottery run <config> --results <dir> --no-table` that records the run of
    /// study `s` named by the config file; once, when `<dir>/busy-<id>` exists, it removes that
    /// file and reports the run as held elsewhere instead.
    const FAKE_RUN: &str = r#"#!/bin/sh
id=$(basename "$2" .toml)
if [ -e "$4/busy-$id" ]; then
  rm "$4/busy-$id"
  echo "@outcome $id elsewhere" >&2
  exit 0
fi
mkdir -p "$4/s/$id" && echo '{}' > "$4/s/$id/summary.json"
echo "@outcome $id computed" >&2
"#;

    fn setup(d: &Path, ids: &[&str]) -> (SweepPlan, LocalOptions) {
        let exe = d.join("fake-lottery");
        std::fs::write(&exe, FAKE_RUN).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let specs = ids
            .iter()
            .map(|id| RunSpec {
                run_id: id.to_string(),
                study: "s".into(),
                label: format!("run {id}"),
                config_toml: "study = \"s\"\n".into(),
            })
            .collect();
        let plan = SweepPlan::create(&d.join("results"), "x", Path::new("c.toml"), specs).unwrap();
        let opts = LocalOptions {
            exe,
            workers: 1,
            threads_per_run: 1,
            retries: 0,
        };
        (plan, opts)
    }

    fn study(plan: &SweepPlan) -> std::path::PathBuf {
        plan.results.join("s")
    }

    fn hidden() -> MultiProgress {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    }

    #[test]
    fn a_held_run_is_waited_for_and_run_here_once_its_holder_lets_go_unfinished() {
        let d = tempfile::tempdir().unwrap();
        let (plan, opts) = setup(d.path(), &["a", "b"]);
        let claim = RunClaim::try_acquire(&study(&plan), "a").unwrap().unwrap();
        let stop = AtomicBool::new(false);
        let report = std::thread::scope(|s| {
            let sweep = s.spawn(|| run_local(&plan, &opts, &stop, &hidden()).unwrap());
            let t0 = Instant::now();
            while !study(&plan).join("b/summary.json").exists() {
                assert!(t0.elapsed() < Duration::from_secs(30), "b never ran");
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(1500));
            assert!(!sweep.is_finished(), "the sweep did not wait for a");
            assert!(!study(&plan).join("a/summary.json").exists());
            drop(claim);
            sweep.join().unwrap()
        });
        assert_eq!(report.computed, ["b", "a"]);
        assert!(report.elsewhere.is_empty() && report.interrupted.is_empty());
        assert!(crate::status::unfinished(&plan).is_empty());
    }

    #[test]
    fn a_held_run_that_its_holder_finishes_counts_as_finished_elsewhere() {
        let d = tempfile::tempdir().unwrap();
        let (plan, opts) = setup(d.path(), &["a", "b"]);
        let claim = RunClaim::try_acquire(&study(&plan), "a").unwrap().unwrap();
        let stop = AtomicBool::new(false);
        let report = std::thread::scope(|s| {
            let sweep = s.spawn(|| run_local(&plan, &opts, &stop, &hidden()).unwrap());
            std::thread::sleep(Duration::from_millis(1200));
            assert!(!sweep.is_finished(), "the sweep did not wait for a");
            let run = study(&plan).join("a");
            std::fs::create_dir_all(&run).unwrap();
            std::fs::write(run.join("summary.json"), "{}").unwrap();
            drop(claim);
            sweep.join().unwrap()
        });
        assert_eq!(report.computed, ["b"]);
        assert_eq!(report.elsewhere, ["a"]);
        let log = std::fs::read_to_string(plan.dir().join("logs/a.log"));
        assert!(log.is_err(), "a was started here: {log:?}");
    }

    #[test]
    fn a_run_a_worker_found_held_is_run_again_once_free() {
        let d = tempfile::tempdir().unwrap();
        let (plan, opts) = setup(d.path(), &["a"]);
        std::fs::write(plan.results.join("busy-a"), "").unwrap();
        let report = run_local(&plan, &opts, &AtomicBool::new(false), &hidden()).unwrap();
        assert_eq!(report.computed, ["a"]);
        let log = std::fs::read_to_string(plan.dir().join("logs/a.log")).unwrap();
        assert_eq!(log.matches("attempt 1").count(), 2, "{log}");
    }

    #[test]
    fn stopping_ends_the_wait_at_once() {
        let d = tempfile::tempdir().unwrap();
        let (plan, opts) = setup(d.path(), &["a"]);
        let _claim = RunClaim::try_acquire(&study(&plan), "a").unwrap().unwrap();
        let stop = AtomicBool::new(false);
        let report = std::thread::scope(|s| {
            let sweep = s.spawn(|| run_local(&plan, &opts, &stop, &hidden()).unwrap());
            std::thread::sleep(Duration::from_millis(300));
            let t0 = Instant::now();
            stop.store(true, Ordering::SeqCst);
            let report = sweep.join().unwrap();
            assert!(t0.elapsed() < Duration::from_millis(500));
            report
        });
        assert_eq!(report.interrupted, ["a"]);
        assert_eq!(crate::status::unfinished(&plan).len(), 1);
    }
}
