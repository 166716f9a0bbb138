//! The clocks of a run across interruptions (pruning and training seconds kept in its work
//! folder) and how often its training saves its state.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{RunError, io};

/// The seconds between saves of a run's training state: `LOTTERY_SAVE_EVERY` (default 60; 0
/// saves at every epoch end).
pub fn save_interval() -> Result<Duration, RunError> {
    match std::env::var("LOTTERY_SAVE_EVERY") {
        Err(_) => Ok(Duration::from_secs(60)),
        Ok(value) => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or(RunError::SaveInterval { value }),
    }
}

/// `seconds` the first time a run finishes its pruning (kept in the work folder); the kept value
/// when an earlier attempt finished it.
pub(super) fn finished_pruning_seconds(work_dir: &Path, seconds: f64) -> Result<f64, RunError> {
    let file = work_dir.join("prune-seconds-finished");
    let kept = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0);
    if let Some(kept) = kept {
        return Ok(kept);
    }
    std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
    lottery_core::fsutil::write_atomic(&file, format!("{seconds:.3}").as_bytes())
        .map_err(io(&file))?;
    Ok(seconds)
}

/// Time spent in a phase of a run (pruning, training), across interruptions: a phase that saves
/// its progress in the run's work folder resumes, and the seconds of earlier attempts (kept beside
/// that progress in `file`, updated every second) count too.
pub(super) struct PhaseClock {
    previous: f64,
    started: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl PhaseClock {
    /// Starts the clock of the phase `what` whose seconds so far `file` in `work_dir` keeps.
    pub(super) fn start(work_dir: &Path, file: &str, what: &str) -> Self {
        let file = work_dir.join(file);
        let previous = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        if previous > 0.0 {
            tracing::info!(
                "resuming from the saved progress in {} ({previous:.1}s of {what} so far)",
                work_dir.display()
            );
        }
        let started = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let (stop, file, dir) = (stop.clone(), file.clone(), work_dir.to_path_buf());
            std::thread::spawn(move || {
                let tick = std::time::Duration::from_millis(100);
                let mut since_write = std::time::Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    since_write += tick;
                    if since_write < std::time::Duration::from_secs(1) {
                        continue;
                    }
                    since_write = std::time::Duration::ZERO;
                    // Only a method that keeps progress creates the folder; nothing to add else.
                    if dir.is_dir() {
                        let total = previous + started.elapsed().as_secs_f64();
                        let _ = lottery_core::fsutil::write_atomic(
                            &file,
                            format!("{total:.3}").as_bytes(),
                        );
                    }
                }
            })
        };
        Self {
            previous,
            started,
            stop,
            ticker: Some(ticker),
        }
    }

    /// The seconds spent so far, this attempt included.
    pub(super) fn stop(mut self) -> f64 {
        self.halt();
        self.previous + self.started.elapsed().as_secs_f64()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PhaseClock {
    fn drop(&mut self) {
        self.halt();
    }
}
