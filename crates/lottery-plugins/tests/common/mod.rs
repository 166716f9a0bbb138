//! Shared by the method tests: a small training task, and running a registered method on it.

use std::sync::Arc;

use indicatif::ProgressBar;
use lottery_core::backend::default_device;
use lottery_core::config::TrainSection;
use lottery_core::plugin::{DensitySchedule, find_pruner};
use lottery_core::{
    Density, MaskSet, PrunableRule, PruneContext, PruneError, PruneGoal, PruneTarget, Scope,
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
    };
    pruner.prune(&mut ctx)
}
