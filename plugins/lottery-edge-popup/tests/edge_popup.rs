//! Edge-popup against its definition: exact top-k counts, frozen weights, the straight-through
//! score update computed by hand, and bit-identical reruns.

use std::ops::ControlFlow;
use std::sync::Arc;

use indicatif::ProgressBar;
use lottery_core::backend::default_device;
use lottery_core::config::{LrSchedule, TrainSection};
use lottery_core::plugin::{DensitySchedule, PrunerOptions};
use lottery_core::{
    Density, FlatTensor, MaskSet, MetricRow, ParamKind, ParamValues, PrunableRule, PruneContext,
    PruneGoal, PruneTarget, Scope,
};
use lottery_data::{ImageDataset, ImageShape, ImageSplit, synthetic};
use lottery_edge_popup::{
    EdgePopupOptions, SearchHook, SearchSpec, SearchState, search_scores, top_k_device,
};
use lottery_models::{Architecture, InputShape, init};
use lottery_train::{DeviceFlat, ImageTask};

/// An MLP on generated 1×6×6 images, 4 classes, 32 training examples in batches of 8.
fn task() -> ImageTask {
    let shape = ImageShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let mut d = synthetic::generate(9, shape, 4, 32, 16, 0.5);
    d.normalise();
    let input = InputShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let arch = Architecture::Mlp {
        hidden: vec![12, 8],
    };
    let m = arch.build(input, 4, &default_device());
    let naming = m.naming();
    let m = init::seeded_init(m, &naming, 13).unwrap();
    ImageTask::new(
        m,
        Arc::new(d),
        TrainSection::default(),
        8,
        false,
        2,
        default_device(),
    )
}

fn run(t: &mut ImageTask, density: f64, scope: Scope, epochs: usize) -> (MaskSet, Vec<MetricRow>) {
    let options = EdgePopupOptions {
        epochs,
        ..EdgePopupOptions::default()
    };
    let mut pruner = options.build();
    let mut ctx = PruneContext {
        target: t,
        goal: PruneGoal {
            density: Density::new(density).unwrap(),
            scope,
            rule: PrunableRule::default(),
            iterations: 1,
            schedule: DensitySchedule::Exponential,
        },
        seed: 3,
        progress: ProgressBar::hidden(),
        work_dir: None,
        save_every: std::time::Duration::ZERO,
        shared_dir: None,
        waited: std::time::Duration::ZERO,
    };
    let mask = pruner.prune(&mut ctx).unwrap();
    (mask, PruneTarget::metrics(t))
}

fn all_names(t: &ImageTask) -> Vec<String> {
    t.params().into_iter().map(|p| p.name).collect()
}

#[test]
fn the_mask_keeps_exactly_the_count_per_layer_or_in_total() {
    for density in [0.5, 0.1, 0.03] {
        let d = Density::new(density).unwrap();
        let (m, rows) = run(&mut task(), density, Scope::Layerwise, 2);
        assert!(m.iter().count() == 3);
        for (name, mask) in m.iter() {
            assert_eq!(mask.kept(), d.keep_count(mask.keep.len()), "{name}");
        }
        let accuracy = rows
            .iter()
            .filter(|r| r.split == "edge-popup" && r.metric == "accuracy")
            .count();
        assert_eq!(accuracy, 2);

        let (m, _) = run(&mut task(), density, Scope::Global, 2);
        let total: usize = m.iter().map(|(_, mask)| mask.keep.len()).sum();
        assert_eq!(m.kept(), d.keep_count(total));
    }
}

#[test]
fn the_device_top_k_is_exact_under_ties() {
    let t = |v: &[f32]| DeviceFlat::from_floats(v, &default_device());
    let got = |x: DeviceFlat| x.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    // The third largest is 2.0, held by three entries: the lowest index among them fills the count.
    assert_eq!(
        got(top_k_device(t(&[1.0, 2.0, 2.0, 2.0, 3.0]), 3)),
        vec![0.0, 1.0, 1.0, 0.0, 1.0]
    );
    assert_eq!(got(top_k_device(t(&[5.0; 6]), 4)).iter().sum::<f32>(), 4.0);
    assert_eq!(got(top_k_device(t(&[1.0, 2.0]), 0)), vec![0.0, 0.0]);
    assert_eq!(got(top_k_device(t(&[1.0, 2.0]), 2)), vec![1.0, 1.0]);
}

#[test]
fn the_weights_are_bit_identical_after_the_search() {
    let mut t = task();
    let names = all_names(&t);
    let before = t.values(&names).unwrap();
    run(&mut t, 0.2, Scope::Layerwise, 3);
    let after = t.values(&names).unwrap();
    for name in &names {
        for (a, b) in before[name].values.iter().zip(&after[name].values) {
            assert_eq!(a.to_bits(), b.to_bits(), "{name} changed");
        }
    }
    assert_eq!(t.clock().step, 0);
}

#[test]
fn a_rerun_with_the_same_seed_is_bit_identical() {
    for scope in [Scope::Layerwise, Scope::Global] {
        let (m1, r1) = run(&mut task(), 0.1, scope, 3);
        let (m2, r2) = run(&mut task(), 0.1, scope, 3);
        assert_eq!(m1, m2);
        assert_eq!(r1.len(), r2.len());
        for (a, b) in r1.iter().zip(&r2) {
            assert_eq!(
                (&a.split, &a.metric, a.step, a.epoch),
                (&b.split, &b.metric, b.step, b.epoch)
            );
            assert_eq!(a.value.to_bits(), b.value.to_bits(), "{}", a.metric);
        }
    }
}

/// One linear layer 3 → 2 on two known examples, one batch: one epoch is one SGD step.
#[test]
fn one_step_moves_every_score_by_the_straight_through_gradient() {
    let shape = ImageShape {
        channels: 1,
        height: 1,
        width: 3,
    };
    let xs = [[1.0f32, -2.0, 0.5], [0.3, 0.8, -1.5]];
    let ys = [0u8, 1];
    let split = ImageSplit {
        images: xs.iter().flatten().copied().collect(),
        labels: ys.to_vec(),
    };
    let data = ImageDataset {
        name: "hand".into(),
        shape,
        classes: 2,
        train: split.clone(),
        test: split,
    };
    let input = InputShape {
        channels: 1,
        height: 1,
        width: 3,
    };
    let m = Architecture::Mlp { hidden: vec![] }.build(input, 2, &default_device());
    let mut t = ImageTask::new(
        m,
        Arc::new(data),
        TrainSection::default(),
        2,
        false,
        0,
        default_device(),
    );
    let params = t.params();
    let weight = params
        .iter()
        .find(|p| p.kind == ParamKind::LinearWeight)
        .unwrap()
        .name
        .clone();
    let bias = params
        .iter()
        .find(|p| p.kind == ParamKind::Bias)
        .unwrap()
        .name
        .clone();
    // W (PyTorch layout [out, in]) and b.
    let w = [[0.4f32, -0.6, 0.2], [-0.3, 0.5, 0.7]];
    let b = [0.1f32, -0.2];
    t.set_values(&ParamValues::from([
        (
            weight.clone(),
            FlatTensor::new(vec![2, 3], w.iter().flatten().copied().collect()),
        ),
        (bias.clone(), FlatTensor::new(vec![2], b.to_vec())),
    ]))
    .unwrap();
    // Scores with both signs; the top 3 of |s| are entries 0, 2 and 4 (flat, PyTorch layout).
    let s0 = [0.9f32, 0.1, -0.8, 0.2, -0.7, 0.05];
    let mut state = SearchState {
        epoch: 0,
        step: 0,
        scores: ParamValues::from([(weight.clone(), FlatTensor::new(vec![2, 3], s0.to_vec()))]),
        moments: ParamValues::new(),
    };
    let lr = 0.5;
    let spec = SearchSpec {
        train: TrainSection {
            epochs: 1,
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::Constant,
            ..TrainSection::default()
        },
        density: Density::new(0.5).unwrap(),
        scope: Scope::Layerwise,
    };
    let mut losses = vec![];
    let hook: &mut SearchHook<'_> = &mut |r, _, _| {
        losses.push(r.train_loss);
        Ok(ControlFlow::Continue(()))
    };
    search_scores(&mut t, &spec, &mut state, hook).unwrap();

    // By hand, in f64: W_eff = W ⊙ top-3(|s|), softmax cross-entropy averaged over the batch.
    let keep = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    let mut grad_w_eff = [0.0f64; 6];
    let mut loss = 0.0;
    for (x, &y) in xs.iter().zip(&ys) {
        let logits: Vec<f64> = (0..2)
            .map(|o| {
                b[o] as f64
                    + (0..3)
                        .map(|i| (w[o][i] * x[i]) as f64 * keep[o * 3 + i])
                        .sum::<f64>()
            })
            .collect();
        let z: f64 = logits.iter().map(|l| l.exp()).sum();
        loss -= (logits[y as usize].exp() / z).ln() / 2.0;
        for o in 0..2 {
            let p = logits[o].exp() / z - if o == y as usize { 1.0 } else { 0.0 };
            for i in 0..3 {
                grad_w_eff[o * 3 + i] += p * x[i] as f64 / 2.0;
            }
        }
    }
    assert!((losses[0] - loss).abs() < 1e-6, "{} vs {loss}", losses[0]);
    let got = &state.scores[&weight].values;
    for k in 0..6 {
        let wk = w[k / 3][k % 3] as f64;
        let sign = (s0[k] as f64).signum();
        let expected = s0[k] as f64 - lr * grad_w_eff[k] * wk * sign;
        assert!(
            (got[k] as f64 - expected).abs() < 1e-6,
            "score {k}: {} vs {expected}",
            got[k]
        );
        // Scores outside the top-k move too (their weight is out of the forward, not their
        // gradient): ∂L/∂w_eff is not zero there.
        assert!((got[k] - s0[k]).abs() > 1e-4, "score {k} did not move");
    }
    // The bias and the weights are untouched.
    let after = t.values(&[weight.clone(), bias.clone()]).unwrap();
    assert_eq!(
        after[&weight].values,
        w.iter().flatten().copied().collect::<Vec<_>>()
    );
    assert_eq!(after[&bias].values, b.to_vec());
}
