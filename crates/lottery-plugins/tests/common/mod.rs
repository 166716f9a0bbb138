//! Shared by the method tests: running a registered method on a target.

use indicatif::ProgressBar;
use lottery_core::plugin::{DensitySchedule, find_pruner};
use lottery_core::{
    Density, MaskSet, PrunableRule, PruneContext, PruneError, PruneGoal, PruneTarget, Scope,
};

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
