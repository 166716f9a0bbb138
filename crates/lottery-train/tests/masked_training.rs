//! Pruned weights stay exactly zero through training steps, whatever the optimiser state; the
//! seeded data order makes training bit-for-bit repeatable; gradients match finite differences.

use std::sync::Arc;

use lottery_core::backend::default_device;
use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::{Density, MaskSet, ParamValues, PruneTarget, Scope};
use lottery_data::{ImageDataset, ImageShape, synthetic};
use lottery_models::InputShape;
use lottery_train::ImageTask;

fn data() -> Arc<ImageDataset> {
    let mut d = synthetic::generate(
        1,
        ImageShape {
            channels: 1,
            height: 12,
            width: 12,
        },
        4,
        480,
        64,
        0.5,
    );
    d.normalise();
    Arc::new(d)
}

fn task(model: &str, optimizer: OptimizerKind, seed: u64) -> ImageTask {
    let data = data();
    let input = InputShape {
        channels: 1,
        height: 12,
        width: 12,
    };
    let m = lottery_models::build(model, input, 4, seed, Default::default(), &default_device())
        .unwrap();
    let cfg = TrainSection {
        epochs: 2,
        optimizer,
        lr: if optimizer == OptimizerKind::Adam {
            0.01
        } else {
            0.05
        },
        momentum: 0.9,
        nesterov: optimizer == OptimizerKind::Sgd,
        weight_decay: 5e-3,
        lr_schedule: LrSchedule::Cosine,
        checkpoints: vec![0, 2],
        ..Default::default()
    };
    ImageTask::new(m, data, cfg, 32, false, seed, default_device())
}

fn random_mask(t: &ImageTask, density: f64) -> MaskSet {
    let names: Vec<String> = t
        .params()
        .into_iter()
        .filter(|p| lottery_core::PrunableRule::default().admits(p))
        .map(|p| p.name)
        .collect();
    let mut scores: ParamValues = t.values(&names).unwrap();
    // Deterministic pseudo-random scores.
    let mut s = 12345u64;
    for v in scores.values_mut() {
        for x in v.values.iter_mut() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *x = (s >> 33) as f32;
        }
    }
    lottery_core::topk::top_k_mask(&scores, Density::new(density).unwrap(), Scope::Global, None)
        .unwrap()
}

fn assert_pruned_zero(t: &ImageTask, mask: &MaskSet) {
    let names: Vec<String> = mask.iter().map(|(n, _)| n.clone()).collect();
    let v = t.values(&names).unwrap();
    let mut pruned = 0;
    for (name, m) in mask.iter() {
        for (k, x) in m.keep.iter().zip(&v[name].values) {
            if !k {
                assert_eq!(*x, 0.0, "pruned weight of {name} revived");
                pruned += 1;
            }
        }
    }
    assert!(pruned > 0);
    // Survivors did train (not all zero).
    assert!(mask.iter().any(|(n, m)| {
        m.keep
            .iter()
            .zip(&v[n].values)
            .any(|(k, x)| *k && *x != 0.0)
    }));
}

#[test]
fn masks_survive_sgd_with_nesterov_momentum_and_weight_decay() {
    for model in ["lenet-300-100", "conv-2"] {
        let mut t = task(model, OptimizerKind::Sgd, 0);
        let mask = random_mask(&t, 0.2);
        t.train(&mask, 2, &mut |_| {}).unwrap();
        assert!(t.step() > 0);
        assert_pruned_zero(&t, &mask);
    }
}

#[test]
fn masks_survive_adam() {
    let mut t = task("lenet-300-100", OptimizerKind::Adam, 0);
    let mask = random_mask(&t, 0.1);
    t.train(&mask, 2, &mut |_| {}).unwrap();
    assert_pruned_zero(&t, &mask);
}

#[test]
fn masks_survive_training_with_batch_norm_and_shortcuts() {
    let mut t = task("resnet-20", OptimizerKind::Sgd, 2);
    let mask = random_mask(&t, 0.3);
    t.train(&mask, 1, &mut |_| {}).unwrap();
    assert_pruned_zero(&t, &mask);
}

#[test]
fn training_is_bit_identical_for_a_seed_and_learns() {
    let run = || {
        let mut t = task("lenet-300-100", OptimizerKind::Sgd, 7);
        let mask = random_mask(&t, 0.5);
        let mut accs = vec![];
        t.train(&mask, 2, &mut |r| accs.push(r.test_accuracy.unwrap()))
            .unwrap();
        (t.all_values(), t.metrics().to_vec(), accs)
    };
    let (a, ma, accs) = run();
    let (b, mb, _) = run();
    assert_eq!(a, b);
    assert_eq!(ma, mb);
    assert!(accs[1] > 0.5, "synthetic data is easy: accuracy {accs:?}");
}

#[test]
fn checkpoints_hold_theta_0_and_theta_k() {
    let mut t = task("lenet-300-100", OptimizerKind::Sgd, 3);
    let theta0 = t.all_values();
    let mask = MaskSet::new();
    t.train(&mask, 1, &mut |_| {}).unwrap();
    let c = t.checkpoints();
    assert_eq!(c.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(c[&0], theta0);
    assert_ne!(c[&2], theta0);
    assert_ne!(c[&2], t.all_values());
}

/// burn's batch norm keeps its last running-statistics update aside until something syncs it: the
/// values read after training must be those the network evaluates with, and values written (a
/// rewind) must not be replaced by that stale update.
#[test]
fn exported_values_are_the_trained_network_and_a_rewind_sticks() {
    let mut t = task("resnet-20", OptimizerKind::Sgd, 0);
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    let theta_0 = t.values(&names).unwrap();
    let dense = MaskSet::new();
    t.train_until(&dense, 3, &mut |_| {}).unwrap();
    let trained = t.values(&names).unwrap();
    let mut copy = task("resnet-20", OptimizerKind::Sgd, 0);
    copy.set_values(&trained).unwrap();
    assert_eq!(
        PruneTarget::evaluate(&mut t, &dense).unwrap(),
        PruneTarget::evaluate(&mut copy, &dense).unwrap()
    );
    // Rewound to θ₀, the network evaluates as a fresh one does.
    t.rewind(&theta_0, 0).unwrap();
    let mut fresh = task("resnet-20", OptimizerKind::Sgd, 0);
    assert_eq!(
        PruneTarget::evaluate(&mut t, &dense).unwrap(),
        PruneTarget::evaluate(&mut fresh, &dense).unwrap()
    );
    assert_eq!(t.values(&names).unwrap(), theta_0);
}

#[test]
fn an_interrupted_training_resumes_from_its_saved_state_as_if_never_stopped() {
    // Nesterov momentum buffers and batch-norm running statistics (ResNet-20), Adam's moments and
    // step counts (LeNet-5), the cosine schedule's clock and the rewind checkpoints carry over.
    for (model, optimizer) in [
        ("resnet-20", OptimizerKind::Sgd),
        ("lenet-5", OptimizerKind::Adam),
    ] {
        let new_task = || task(model, optimizer, 4);
        let t = new_task();
        let mask = random_mask(&t, 0.3);
        let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
        let end = t.clock().run_steps;
        lottery_train::resume::assert_resumes_exactly(new_task, &mask, end, 1, &names);
    }
}
