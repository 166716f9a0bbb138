//! Score mining that diverges stops with [`PruneError::Diverged`] naming the epoch and the step at
//! which the loss stopped being finite, and leaves the weights as they were.

use std::ops::ControlFlow;
use std::sync::Arc;

use lottery_core::backend::default_device;
use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::{FlatTensor, MaskSet, ParamValues, PrunableRule, PruneTarget};
use lottery_data::{ImageShape, synthetic};
use lottery_gem_miner::{MiningSpec, MiningState, ScorePenalty, mine_scores};
use lottery_models::{Architecture, InputShape, init};
use lottery_train::ImageTask;

/// An MLP on generated 1×6×6 images, 4 classes, 64 examples in batches of 16 (4 steps an epoch).
fn task(train: TrainSection) -> ImageTask {
    let shape = ImageShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let mut d = synthetic::generate(3, shape, 4, 64, 16, 0.5);
    d.normalise();
    let input = InputShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let arch = Architecture::Mlp {
        hidden: vec![32, 16],
    };
    let m = arch.build(input, 4, &default_device());
    let naming = m.naming();
    let m = init::seeded_init(m, &naming, 5).unwrap();
    ImageTask::new(m, Arc::new(d), train, 16, false, 1, default_device())
}

fn sgd(lr: f64, epochs: usize) -> TrainSection {
    TrainSection {
        epochs,
        optimizer: OptimizerKind::Sgd,
        lr,
        momentum: 0.9,
        lr_schedule: LrSchedule::Constant,
        ..TrainSection::default()
    }
}

fn dense(t: &ImageTask) -> MaskSet {
    let rule = PrunableRule::default();
    let p: Vec<_> = t.params().into_iter().filter(|p| rule.admits(p)).collect();
    MaskSet::dense(p.iter().map(|p| (p.name.as_str(), p.shape.as_slice())))
}

/// Every weight of `t` multiplied by `factor`.
fn scale_weights(t: &mut ImageTask, factor: f32) {
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    let mut v = t.values(&names).unwrap();
    for x in v.values_mut() {
        x.values.iter_mut().for_each(|w| *w *= factor);
    }
    t.set_values(&v).unwrap();
}

#[test]
fn score_mining_on_overflowing_weights_diverges_and_leaves_the_weights() {
    let mut t = task(sgd(0.01, 2));
    scale_weights(&mut t, 1e30);
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    let before = t.values(&names).unwrap();
    let flags = dense(&t);
    let scores: ParamValues = flags
        .iter()
        .map(|(n, m)| {
            (
                n.clone(),
                FlatTensor::new(m.shape.clone(), vec![0.9; m.numel()]),
            )
        })
        .collect();
    let mut state = MiningState {
        epoch: 0,
        step: 0,
        scores,
        flags,
        moments: ParamValues::new(),
    };
    let spec = MiningSpec {
        train: sgd(0.1, 2),
        penalty: ScorePenalty::L2,
        strength: 0.0,
        threshold: 0.5,
    };
    let e = mine_scores(&mut t, &spec, &mut state, &mut |_, _, _| {
        Ok(ControlFlow::Continue(()))
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "training diverged at epoch 1, step 1 (loss NaN)"
    );
    assert_eq!(t.values(&names).unwrap(), before, "weights untouched");
}
