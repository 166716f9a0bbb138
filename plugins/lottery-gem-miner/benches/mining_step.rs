//! Time of Gem-Miner's score mining on this build's backend: LeNet-300-100, batch 128, 1×28×28,
//! 50 steps an epoch (forward through the rounded, flagged scores, backward, straight-through score
//! gradient with the L2 penalty, SGD momentum, clamp), against one plain training step of the same
//! network. Prints `mining lenet-300-100 batch=128 ms_per_step=<t> train_ms_per_step=<t> backend=…`;
//! the mining figure includes each epoch's report (scores to the host, the rounded net's test
//! accuracy on 128 images), amortised over its 50 steps.
//!
//! `cargo bench -p lottery-gem-miner --bench mining_step`

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use lottery_core::backend::{backend_name, default_device};
use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::{FlatTensor, MaskSet, ParamValues, PrunableRule, PruneTarget};
use lottery_data::{ImageShape, synthetic};
use lottery_gem_miner::{MiningHook, MiningSpec, MiningState, ScorePenalty, mine_scores};
use lottery_models::InputShape;
use lottery_train::ImageTask;

const BATCH: usize = 128;
const STEPS: usize = 50;

fn task() -> ImageTask {
    let shape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let mut data = synthetic::generate(1, shape, 10, BATCH * STEPS, BATCH, 0.5);
    data.normalise();
    let input = InputShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let device = default_device();
    let m = lottery_models::build("lenet-300-100", input, 10, 0, Default::default(), &device)
        .expect("model");
    let train = TrainSection {
        epochs: 4,
        lr: 0.1,
        momentum: 0.9,
        lr_schedule: LrSchedule::Constant,
        ..TrainSection::default()
    };
    ImageTask::new(m, Arc::new(data), train, BATCH, false, 0, device)
}

fn main() {
    let allocator = lottery_core::allocator::keep_large_buffers_in_heap();
    eprintln!("allocator settings: {allocator:?}");
    let mut t = task();
    let rule = PrunableRule::default();
    let mut scores = ParamValues::new();
    for p in t.params().into_iter().filter(|p| rule.admits(p)) {
        let n = p.numel();
        let v = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        scores.insert(p.name.clone(), FlatTensor::new(p.shape.clone(), v));
    }
    let flags = MaskSet::dense(scores.iter().map(|(n, v)| (n.as_str(), v.shape.as_slice())));
    let mut state = MiningState {
        epoch: 0,
        step: 0,
        scores,
        flags,
        moments: ParamValues::new(),
    };
    let spec = MiningSpec {
        train: TrainSection {
            epochs: 4,
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::Cosine,
            ..TrainSection::default()
        },
        penalty: ScorePenalty::L2,
        strength: 7e-6,
        threshold: 0.5,
    };
    let mut stamps = vec![Instant::now()];
    let hook: &mut MiningHook<'_> = &mut |_, _, _| {
        stamps.push(Instant::now());
        Ok(ControlFlow::Continue(()))
    };
    mine_scores(&mut t, &spec, &mut state, hook).expect("mining");
    let mining = median_ms_per_step(&stamps);

    let mut t = task();
    let mask = MaskSet::dense(
        t.params()
            .into_iter()
            .filter(|p| rule.admits(p))
            .map(|p| (p.name, p.shape))
            .collect::<Vec<_>>()
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice())),
    );
    let mut stamps = vec![Instant::now()];
    t.train(&mask, 4, &mut |_| stamps.push(Instant::now()))
        .expect("training");
    let train = median_ms_per_step(&stamps);
    println!(
        "mining lenet-300-100 batch={BATCH} ms_per_step={mining:.2} train_ms_per_step={train:.2} backend={}",
        backend_name().replace(' ', "_")
    );
}

/// Milliseconds per step of the epochs between `stamps`: the first epoch warms up, then the
/// median of the others.
fn median_ms_per_step(stamps: &[Instant]) -> f64 {
    let mut epochs: Vec<f64> = stamps
        .windows(2)
        .skip(1)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3 / STEPS as f64)
        .collect();
    epochs.sort_by(f64::total_cmp);
    epochs[epochs.len() / 2]
}
