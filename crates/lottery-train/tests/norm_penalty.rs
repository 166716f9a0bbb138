//! Network slimming's penalty: `set_norm_l1(s)` adds the subgradient `s · sign(γ)` to every
//! batch-norm scale's gradient and changes nothing else.

use std::sync::Arc;

use lottery_core::backend::default_device;
use lottery_core::config::{LrSchedule, TrainSection};
use lottery_core::{FlatTensor, MaskSet, ParamKind, ParamValues, PruneTarget};
use lottery_data::{ImageShape, synthetic};
use lottery_models::arch::Plan;
use lottery_models::{Architecture, InputShape, init};
use lottery_train::ImageTask;

const LR: f64 = 0.05;
const S: f64 = 0.01;

fn task(arch: Architecture) -> ImageTask {
    let shape = ImageShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let mut data = synthetic::generate(2, shape, 3, 64, 16, 0.5);
    data.normalise();
    let input = InputShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let m = arch.build(input, 3, &default_device());
    let naming = m.naming();
    let m = init::seeded_init(m, &naming, 4).unwrap();
    let cfg = TrainSection {
        epochs: 1,
        lr: LR,
        momentum: 0.0,
        weight_decay: 0.0,
        lr_schedule: LrSchedule::Constant,
        ..Default::default()
    };
    ImageTask::new(m, Arc::new(data), cfg, 16, false, 1, default_device())
}

fn bn_net() -> Architecture {
    Architecture::ConvNet {
        plan: vec![Plan::Conv(4), Plan::Pool, Plan::Conv(6)],
        hidden: vec![],
        batch_norm: true,
        global_pool: true,
    }
}

/// One SGD step from scales of both signs, with penalty `s`; every value after the step.
fn one_step(s: f64) -> (ParamValues, Vec<String>) {
    let mut t = task(bn_net());
    let params = t.params();
    let scales: Vec<String> = params
        .iter()
        .filter(|p| p.kind == ParamKind::Norm && p.name.ends_with(".weight"))
        .map(|p| p.name.clone())
        .collect();
    let signed: ParamValues = scales
        .iter()
        .map(|n| {
            let shape = params.iter().find(|p| &p.name == n).unwrap().shape.clone();
            let v = (0..shape[0])
                .map(|i| if i % 2 == 0 { 0.8 } else { -0.6 })
                .collect();
            (n.clone(), FlatTensor::new(shape, v))
        })
        .collect();
    t.set_values(&signed).unwrap();
    t.set_norm_l1(s).unwrap();
    t.train_until(&MaskSet::new(), 1, &mut |_| {}).unwrap();
    let names: Vec<String> = params.into_iter().map(|p| p.name).collect();
    (t.values(&names).unwrap(), scales)
}

#[test]
fn the_penalty_moves_each_scale_by_lr_s_sign_gamma_and_nothing_else() {
    let (plain, scales) = one_step(0.0);
    let (penalised, _) = one_step(S);
    assert_eq!(scales.len(), 2);
    for (name, a) in &plain {
        let b = &penalised[name];
        if scales.contains(name) {
            for (i, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
                let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                let moved = f64::from(*y) - f64::from(*x);
                assert!(
                    (moved + LR * S * sign).abs() < 1e-6,
                    "{name}[{i}] moved {moved}, expected {}",
                    -LR * S * sign
                );
            }
        } else {
            assert_eq!(a, b, "{name} changed under a penalty on the scales only");
        }
    }
}

#[test]
fn a_network_without_batch_norm_refuses_the_penalty() {
    let mut t = task(Architecture::Mlp { hidden: vec![8] });
    let e = t.set_norm_l1(1e-4).unwrap_err();
    assert!(e.to_string().contains("no batch norm"), "{e}");
    assert!(t.set_norm_l1(0.0).is_ok());
    assert!(task(bn_net()).set_norm_l1(-1.0).is_err());
}

#[test]
fn a_non_affine_batch_norm_keeps_unit_scales_and_zero_shifts_through_training() {
    use lottery_core::config::{NormKind, WeightInit};
    let mut t = task(bn_net()).with_model_options(WeightInit::KaimingNormal, NormKind::NonAffine);
    let norms: Vec<String> = t
        .params()
        .into_iter()
        .filter(|p| p.kind == ParamKind::Norm)
        .map(|p| p.name)
        .collect();
    assert_eq!(norms.len(), 4, "{norms:?}");
    let mask = MaskSet::new();
    // Weight decay and the slimming penalty both push on γ; neither may move it.
    t.set_norm_l1(S).unwrap();
    t.train(&mask, 1, &mut |_| {}).unwrap();
    let v = t.values(&norms).unwrap();
    for name in &norms {
        let want = if name.ends_with(".weight") { 1.0 } else { 0.0 };
        assert!(
            v[name].values.iter().all(|&x| x == want),
            "{name}: {:?}",
            v[name].values
        );
    }
    // The network did train.
    assert_eq!(t.clock().step, 4);
}

#[test]
fn signed_constant_weights_are_the_signs_of_the_kaiming_draw_times_its_std() {
    use lottery_core::config::WeightInit;
    use lottery_models::init::initial_value_as;
    let shape = [6, 3, 3, 3];
    let k = initial_value_as(
        WeightInit::KaimingNormal,
        5,
        "c.weight",
        ParamKind::ConvWeight,
        &shape,
    );
    let s = initial_value_as(
        WeightInit::SignedConstant,
        5,
        "c.weight",
        ParamKind::ConvWeight,
        &shape,
    );
    let std = (2.0f64 / 27.0).sqrt() as f32;
    for (a, b) in k.values.iter().zip(&s.values) {
        assert_eq!(*b, if *a < 0.0 { -std } else { std });
    }
}
