//! Shared by the method tests: a small training task, running a registered method on it, and a
//! target that crashes the way an interrupted run stops.

#![allow(dead_code)] // each test file uses part of this module

use std::ops::ControlFlow;
use std::sync::Arc;

use indicatif::ProgressBar;
use lottery_core::backend::default_device;
use lottery_core::config::TrainSection;
use lottery_core::plugin::{DensitySchedule, EpochReport, find_pruner};
use lottery_core::{
    Density, LossSpec, MaskSet, MetricRow, ParamInfo, ParamValues, PathFlow, Precision,
    PrunableRule, PruneContext, PruneError, PruneGoal, PruneTarget, Scope, TrainClock,
};
use lottery_data::{ImageShape, synthetic};
use lottery_models::{Architecture, InputShape, init};
use lottery_train::ImageTask;

/// `arch` (4 classes, seeded init) on generated 1×8×8 images, 64 for training and 32 for test,
/// batches of 16 (4 steps an epoch), trained as `train` says.
pub fn small_task(arch: Architecture, train: TrainSection) -> ImageTask {
    lottery_plugins::link();
    let shape = ImageShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let mut data = synthetic::generate(5, shape, 4, 64, 32, 0.5);
    data.normalise();
    let input = InputShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let m = arch.build(input, 4, &default_device());
    let naming = m.naming();
    let m = init::seeded_init(m, &naming, 7).unwrap();
    ImageTask::new(m, Arc::new(data), train, 16, false, 3, default_device())
}

/// Runs the registered method `name` with its default options overridden by the TOML `options`,
/// at `density` (global scope, seed 11).
pub fn run_method(
    name: &str,
    target: &mut dyn PruneTarget,
    density: f64,
    options: &str,
    work_dir: Option<std::path::PathBuf>,
) -> Result<MaskSet, PruneError> {
    run_method_sharing(name, target, density, options, work_dir, None)
}

/// [`run_method`] with a folder shared by the runs of other densities
/// (`PruneContext::shared_dir`).
pub fn run_method_sharing(
    name: &str,
    target: &mut dyn PruneTarget,
    density: f64,
    options: &str,
    work_dir: Option<std::path::PathBuf>,
    shared_dir: Option<std::path::PathBuf>,
) -> Result<MaskSet, PruneError> {
    lottery_plugins::link();
    let entry = find_pruner(name).unwrap();
    let mut table = (entry.default_options)();
    for (k, v) in toml::from_str::<toml::Table>(options).unwrap() {
        table.insert(k, v);
    }
    let mut pruner = (entry.build)(&table).unwrap();
    let mut ctx = PruneContext {
        target,
        goal: PruneGoal {
            density: Density::new(density).unwrap(),
            scope: Scope::Global,
            rule: PrunableRule::default(),
            iterations: 1,
            schedule: DensitySchedule::Exponential,
        },
        seed: 11,
        progress: ProgressBar::hidden(),
        work_dir,
        save_every: std::time::Duration::ZERO,
        shared_dir,
        waited: std::time::Duration::ZERO,
    };
    pruner.prune(&mut ctx)
}

/// A target that fails its next training call once `trainings_left` calls are used up, or its next
/// read of values once `value_reads_left` reads are used up, as a crash would stop a run; it counts
/// down, so `usize::MAX` counts the calls a run makes. A method that reaches the network's family
/// by downcast reaches the inner task, past these counters.
pub struct Crashing<'a> {
    /// The real target.
    pub inner: &'a mut ImageTask,
    /// Training calls still allowed.
    pub trainings_left: usize,
    /// Calls of [`PruneTarget::values`] still allowed (a method saving its progress reads them).
    pub value_reads_left: std::cell::Cell<usize>,
    /// Crash the next training at the end of this epoch, once its state is saved there: `(epoch,
    /// false)` before the method hears of that epoch, `(epoch, true)` after.
    pub crash_after_epoch: Option<(usize, bool)>,
    /// Epochs the trainings passed on without watched values (replayed by a resumed training).
    pub replayed: usize,
}

impl<'a> Crashing<'a> {
    /// A target that crashes at nothing yet.
    pub fn new(inner: &'a mut ImageTask) -> Self {
        Self {
            inner,
            trainings_left: usize::MAX,
            value_reads_left: std::cell::Cell::new(usize::MAX),
            crash_after_epoch: None,
            replayed: 0,
        }
    }
}

fn crash() -> PruneError {
    PruneError::Target("simulated crash".into())
}

impl PruneTarget for Crashing<'_> {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self.inner.as_any_mut()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self.inner.as_any()
    }
    fn params(&self) -> Vec<ParamInfo> {
        self.inner.params()
    }
    fn values(&self, names: &[String]) -> Result<ParamValues, PruneError> {
        let left = self.value_reads_left.get();
        if left == 0 {
            return Err(crash());
        }
        self.value_reads_left.set(left - 1);
        self.inner.values(names)
    }
    fn set_values(&mut self, values: &ParamValues) -> Result<(), PruneError> {
        self.inner.set_values(values)
    }
    fn loss_gradients(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        spec: &LossSpec,
    ) -> Result<ParamValues, PruneError> {
        self.inner.loss_gradients(names, mask, spec)
    }
    fn loss_hessian_vector(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        spec: &LossSpec,
        vector: &ParamValues,
    ) -> Result<ParamValues, PruneError> {
        self.inner.loss_hessian_vector(names, mask, spec, vector)
    }
    fn path_flow(
        &mut self,
        names: &[String],
        mask: &MaskSet,
        precision: Precision,
    ) -> Result<PathFlow, PruneError> {
        self.inner.path_flow(names, mask, precision)
    }
    fn clock(&self) -> TrainClock {
        self.inner.clock()
    }
    fn train_watching(
        &mut self,
        mask: &MaskSet,
        end_step: usize,
        watch: &[String],
        on_epoch: &mut dyn FnMut(&EpochReport, &ParamValues) -> ControlFlow<()>,
    ) -> Result<(), PruneError> {
        if self.trainings_left == 0 {
            return Err(crash());
        }
        self.trainings_left -= 1;
        let spe = self.inner.clock().steps_per_epoch.max(1);
        let crash_at = self.crash_after_epoch.take();
        let mut crashed = false;
        let replayed = &mut self.replayed;
        self.inner
            .train_watching(mask, end_step, watch, &mut |r, watched| {
                if watched.is_empty() && !watch.is_empty() {
                    *replayed += 1;
                }
                let epoch_end = r.step == r.epoch * spe;
                if let Some((epoch, heard)) = crash_at
                    && epoch_end
                    && r.epoch == epoch
                {
                    crashed = true;
                    if heard {
                        let _ = on_epoch(r, watched);
                    }
                    return ControlFlow::Break(());
                }
                on_epoch(r, watched)
            })?;
        if crashed { Err(crash()) } else { Ok(()) }
    }
    fn save_training_in(
        &mut self,
        dir: Option<std::path::PathBuf>,
        every: std::time::Duration,
    ) -> Result<(), PruneError> {
        self.inner.save_training_in(dir, every)
    }
    fn rewind(&mut self, values: &ParamValues, step: usize) -> Result<(), PruneError> {
        self.inner.rewind(values, step)
    }
    fn evaluate(&mut self, mask: &MaskSet) -> Result<(f64, f64), PruneError> {
        PruneTarget::evaluate(self.inner, mask)
    }
    fn fresh_values(&self, seed: u64) -> ParamValues {
        self.inner.fresh_values(seed)
    }
    fn set_phase(&mut self, round: usize, phase: &str) {
        self.inner.set_phase(round, phase)
    }
    fn record(&mut self, split: &str, metric: &str, value: f64) {
        PruneTarget::record(self.inner, split, metric, value)
    }
    fn metrics(&self) -> Vec<MetricRow> {
        PruneTarget::metrics(self.inner)
    }
    fn restore_metrics(&mut self, rows: Vec<MetricRow>) {
        self.inner.restore_metrics(rows)
    }
}
