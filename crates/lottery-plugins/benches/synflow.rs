//! SynFlow at CIFAR shape: 100 rounds of scoring and global top-k on VGG-16 (batch norm, 3×32×32,
//! 10 classes) to density 1%, on this build's backend. `benches/torch_synflow.py` does the same
//! computation in PyTorch. Prints `synflow <model> rounds=<n> seconds=<t> per_round_ms=<t>`.
//!
//! `cargo bench -p lottery-plugins --bench synflow [--features simd,rayon]`

use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use lottery_core::backend::{backend_name, default_device};
use lottery_core::config::TrainSection;
use lottery_core::plugin::{DensitySchedule, find_pruner};
use lottery_core::{Density, PrunableRule, PruneContext, PruneGoal, Scope};
use lottery_data::{ImageShape, synthetic};
use lottery_models::InputShape;
use lottery_train::ImageTask;

fn main() {
    let allocator = lottery_core::allocator::keep_large_buffers_in_heap();
    eprintln!("allocator settings: {allocator:?}");
    lottery_plugins::link();
    let model = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "vgg-16".into());
    let shape = ImageShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    // The data is never read by SynFlow; the task needs some.
    let data = Arc::new(synthetic::generate(1, shape, 10, 10, 10, 0.5));
    let input = InputShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    let m = lottery_models::build(&model, input, 10, 0, Default::default(), &default_device())
        .expect("model");
    let mut task = ImageTask::new(
        m,
        data,
        TrainSection::default(),
        10,
        false,
        0,
        default_device(),
    );
    let entry = find_pruner("synflow").expect("synflow is linked");
    let rounds = entry.default_iterations;
    for rep in 0..2 {
        let mut pruner = (entry.build)(&(entry.default_options)()).expect("defaults build");
        let mut ctx = PruneContext {
            target: &mut task,
            goal: PruneGoal {
                density: Density::new(0.01).unwrap(),
                scope: Scope::Global,
                rule: PrunableRule::default(),
                iterations: rounds,
                schedule: DensitySchedule::Exponential,
            },
            seed: 0,
            progress: ProgressBar::hidden(),
            work_dir: None,
            save_every: std::time::Duration::ZERO,
            shared_dir: None,
            waited: std::time::Duration::ZERO,
        };
        let t = Instant::now();
        let mask = pruner.prune(&mut ctx).expect("synflow prunes");
        let s = t.elapsed().as_secs_f64();
        println!(
            "synflow {model} rounds={rounds} rep={rep} seconds={s:.2} per_round_ms={:.1} kept={} collapsed={} backend={}",
            1000.0 * s / rounds as f64,
            mask.kept(),
            mask.collapsed().len(),
            backend_name()
        );
    }
}
