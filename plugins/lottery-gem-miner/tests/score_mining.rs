//! Gem-Miner's score mining ([`mine_scores`]) on an image task against its definition: the
//! forward uses the rounded, flagged scores; the score gradient is the straight-through
//! `∂L/∂w_eff ⊙ w₀ ⊙ flag` plus the penalty's; scores stay in [0, 1]; no parameter moves; the
//! optimiser state carries over.

use std::ops::ControlFlow;
use std::sync::Arc;

use lottery_core::backend::default_device;
use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::{
    BnMode, FlatTensor, LossSpec, MaskSet, ParamKind, ParamValues, PrunableRule, PruneTarget,
};
use lottery_data::{ImageShape, synthetic};
use lottery_gem_miner::{MiningHook, MiningSpec, MiningState, ScorePenalty, mine_scores};
use lottery_models::arch::Plan;
use lottery_models::{Architecture, InputShape, init};
use lottery_train::ImageTask;

/// `arch` on generated 1×6×6 images, 4 classes, `train` examples in batches of `batch`.
fn task(arch: Architecture, train: usize, batch: usize) -> ImageTask {
    let shape = ImageShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let mut d = synthetic::generate(9, shape, 4, train, 16, 0.5);
    d.normalise();
    let input = InputShape {
        channels: 1,
        height: 6,
        width: 6,
    };
    let m = arch.build(input, 4, &default_device());
    let naming = m.naming();
    let m = init::seeded_init(m, &naming, 13).unwrap();
    ImageTask::new(
        m,
        Arc::new(d),
        TrainSection::default(),
        batch,
        false,
        2,
        default_device(),
    )
}

fn mlp() -> Architecture {
    Architecture::Mlp {
        hidden: vec![12, 8],
    }
}

fn small_bn_net() -> Architecture {
    Architecture::ConvNet {
        plan: vec![Plan::Conv(4), Plan::Pool, Plan::Conv(6)],
        hidden: vec![],
        batch_norm: true,
        global_pool: true,
    }
}

fn prunable(t: &ImageTask) -> Vec<(String, Vec<usize>)> {
    let rule = PrunableRule::default();
    t.params()
        .into_iter()
        .filter(|p| rule.admits(p))
        .map(|p| (p.name, p.shape))
        .collect()
}

/// Scores spread over [0, 1] with some exactly at the ends, flags with every fifth weight out.
fn start(t: &ImageTask) -> MiningState {
    let mut scores = ParamValues::new();
    let mut flags = MaskSet::new();
    for (k, (name, shape)) in prunable(t).into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 + k * 11) % 101) as f32 / 100.0)
            .collect();
        scores.insert(name.clone(), FlatTensor::new(shape.clone(), v));
        flags.insert(
            name,
            lottery_core::Mask {
                shape,
                keep: (0..n).map(|i| i % 5 != 0).collect(),
            },
        );
    }
    MiningState {
        epoch: 0,
        step: 0,
        scores,
        flags,
        moments: ParamValues::new(),
    }
}

fn spec(epochs: usize, optimizer: OptimizerKind, lr: f64, momentum: f64) -> MiningSpec {
    MiningSpec {
        train: TrainSection {
            epochs,
            optimizer,
            lr,
            momentum,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::Constant,
            ..TrainSection::default()
        },
        penalty: ScorePenalty::L2,
        strength: 0.0,
        threshold: 0.5,
    }
}

fn mine(t: &mut ImageTask, spec: &MiningSpec, state: &mut MiningState) -> Vec<(f64, f64)> {
    let mut reports = vec![];
    let hook: &mut MiningHook<'_> = &mut |r, _, _| {
        reports.push((r.train_loss, r.rounded_density));
        Ok(ControlFlow::Continue(()))
    };
    mine_scores(t, spec, state, hook).unwrap();
    reports
}

fn all_names(t: &ImageTask) -> Vec<String> {
    t.params().into_iter().map(|p| p.name).collect()
}

#[test]
fn one_step_moves_each_score_by_the_straight_through_gradient() {
    // One batch holds the whole training set: one epoch is one step.
    let mut t = task(mlp(), 16, 16);
    let mut state = start(&t);
    let before = state.clone();
    let rounded = before.rounded(0.5);
    let names: Vec<String> = state.scores.keys().cloned().collect();
    let w0 = t.values(&names).unwrap();
    // ∂L/∂w_eff at w_eff = w₀ ⊙ rounded mask, on the same batch, computed independently.
    let spec_loss = LossSpec::new(1, BnMode::Train);
    let g = t.loss_gradients(&names, &rounded, &spec_loss).unwrap();
    let (loss, _) = lottery_train::task::spec_loss(&t, &rounded, &spec_loss);

    let lr = 0.5;
    let reports = mine(&mut t, &spec(1, OptimizerKind::Sgd, lr, 0.0), &mut state);
    assert_eq!(reports.len(), 1);
    // The forward used the rounded scores: the reported loss is the rounded network's loss.
    assert!(
        (reports[0].0 - loss).abs() < 1e-5,
        "{} vs {loss}",
        reports[0].0
    );
    assert_eq!(reports[0].1, state.rounded(0.5).density());

    let mut moved = 0;
    for name in &names {
        let flag = &before.flags.get(name).unwrap().keep;
        for (i, &flagged) in flag.iter().enumerate() {
            let s0 = before.scores[name].values[i];
            let grad = if flagged {
                g[name].values[i] * w0[name].values[i]
            } else {
                0.0
            };
            let expected = (s0 - lr as f32 * grad).clamp(0.0, 1.0);
            let got = state.scores[name].values[i];
            assert!(
                (got - expected).abs() <= 1e-6 + 1e-4 * expected.abs(),
                "{name}[{i}]: {got} vs {expected} (s0 {s0}, grad {grad})"
            );
            if !flagged {
                assert_eq!(got.to_bits(), s0.to_bits(), "unflagged {name}[{i}] moved");
            }
            if (got - s0).abs() > 1e-4 {
                moved += 1;
            }
        }
    }
    assert!(moved > 100, "only {moved} scores moved");
}

#[test]
fn the_penalty_adds_its_gradient_and_adam_follows_pytorch() {
    // With no data gradient (every weight unflagged), only the L2 penalty moves the scores:
    // Adam's first step is −lr·g/(|g| + ε) (m̂ = g, v̂ = g²): every positive score drops by about lr.
    let mut t = task(mlp(), 16, 16);
    let mut state = start(&t);
    let names: Vec<String> = state.scores.keys().cloned().collect();
    for n in &names {
        let m = state.flags.get(n).unwrap().clone();
        state.flags.insert(
            n.clone(),
            lottery_core::Mask {
                shape: m.shape.clone(),
                keep: vec![false; m.keep.len()],
            },
        );
    }
    let before = state.clone();
    let mut s = spec(1, OptimizerKind::Adam, 0.01, 0.0);
    s.strength = 1e-3;
    mine(&mut t, &s, &mut state);
    for n in &names {
        for (a, b) in before.scores[n].values.iter().zip(&state.scores[n].values) {
            // g = 2λs; m̂/(√v̂ + ε) = g/(|g| + ε).
            let g = 2.0 * 1e-3 * *a as f64;
            let expected = (*a as f64 - 0.01 * g / (g.abs() + 1e-8)).clamp(0.0, 1.0) as f32;
            assert!(
                (b - expected).abs() < 1e-6,
                "{n}: {a} → {b}, expected {expected}"
            );
        }
        // Adam's moments are kept for the next call.
        assert!(state.moments.contains_key(&format!("m/{n}")));
        assert!(state.moments.contains_key(&format!("v/{n}")));
    }
}

#[test]
fn scores_stay_in_the_unit_interval_and_no_parameter_moves() {
    let mut t = task(small_bn_net(), 32, 8);
    let mut state = start(&t);
    let names = all_names(&t);
    let before = t.values(&names).unwrap();
    // A large learning rate drives many scores to the ends of [0, 1].
    mine(&mut t, &spec(3, OptimizerKind::Sgd, 50.0, 0.9), &mut state);
    let mut at_ends = 0;
    for s in state.scores.values() {
        for &v in &s.values {
            assert!((0.0..=1.0).contains(&v), "score {v}");
            if v == 0.0 || v == 1.0 {
                at_ends += 1;
            }
        }
    }
    assert!(at_ends > 0, "no score reached 0 or 1");
    assert_eq!(state.epoch, 3);
    assert_eq!(state.step, 12);
    let after = t.values(&names).unwrap();
    let kinds: std::collections::BTreeMap<String, ParamKind> =
        t.params().into_iter().map(|p| (p.name, p.kind)).collect();
    for name in &names {
        if kinds[name] == ParamKind::NormStatistic {
            continue; // running statistics follow the batches, as in the reference
        }
        for (a, b) in before[name].values.iter().zip(&after[name].values) {
            assert_eq!(a.to_bits(), b.to_bits(), "{name} changed during mining");
        }
    }
    // The training clock did not move.
    assert_eq!(t.clock().step, 0);
}

#[test]
fn mining_in_two_calls_equals_mining_in_one() {
    let spec3 = spec(3, OptimizerKind::Sgd, 0.5, 0.9);
    let mut whole = task(mlp(), 32, 8);
    let mut s_whole = start(&whole);
    mine(&mut whole, &spec3, &mut s_whole);

    // Stop after the first epoch, then continue on a fresh task from the state alone.
    let mut first = task(mlp(), 32, 8);
    let mut s = start(&first);
    let hook: &mut MiningHook<'_> = &mut |_, _, _| Ok(ControlFlow::Break(()));
    mine_scores(&mut first, &spec3, &mut s, hook).unwrap();
    assert_eq!(s.epoch, 1);
    let mut second = task(mlp(), 32, 8);
    mine(&mut second, &spec3, &mut s);
    assert_eq!(s.step, s_whole.step);
    for (name, v) in &s_whole.scores {
        for (a, b) in v.values.iter().zip(&s.scores[name].values) {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}");
        }
    }
}
