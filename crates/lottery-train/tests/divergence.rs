//! A training that diverges stops with [`PruneError::Diverged`] naming the epoch and the step at
//! which the loss stopped being finite (score mining's case is the Gem-Miner plugin's test).

use std::sync::Arc;

use lottery_core::backend::default_device;
use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::{MaskSet, PrunableRule, PruneError, PruneTarget};
use lottery_data::{ImageShape, synthetic};
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

/// The epoch and step of a divergence, checking its message.
fn diverged(e: PruneError) -> (usize, usize) {
    let text = e.to_string();
    assert!(text.starts_with("training diverged at epoch"), "{text}");
    match e {
        PruneError::Diverged { epoch, step, loss } => {
            assert!(!loss.is_finite(), "{text}");
            (epoch, step)
        }
        other => panic!("not a divergence: {other:?}"),
    }
}

#[test]
fn a_huge_learning_rate_stops_training_with_the_epoch_and_step_of_the_divergence() {
    let mut t = task(sgd(1e6, 5));
    let mask = dense(&t);
    let mut epochs_reported = 0;
    let e = t
        .train_until(&mask, 20, &mut |_| epochs_reported += 1)
        .unwrap_err();
    let (epoch, step) = diverged(e);
    assert!((1..=5).contains(&epoch), "epoch {epoch}");
    assert!(
        (1..=20).contains(&step) && step.div_ceil(4) == epoch,
        "step {step} lies in epoch {epoch}"
    );
    assert!(
        epochs_reported < epoch,
        "no epoch report once the loss is not finite"
    );
}

#[test]
fn overflowing_weights_diverge_at_the_first_step() {
    let mut t = task(sgd(0.01, 2));
    scale_weights(&mut t, 1e30);
    let mask = dense(&t);
    let e = t.train_until(&mask, 8, &mut |_| {}).unwrap_err();
    assert_eq!(
        e.to_string(),
        "training diverged at epoch 1, step 1 (loss NaN)"
    );
    assert_eq!(t.clock().step, 0, "no step taken");
}
