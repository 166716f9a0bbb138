//! The queries the pruning-at-initialisation methods ask of an image task, checked against
//! independent computations: gradients against finite differences, Hessian-vector products against
//! the closed form of softmax regression and against the symmetry of a Hessian, and the synaptic
//! flow against its conservation law (Tanaka et al. 2020, theorem 1).

use std::sync::Arc;

use lottery_core::backend::default_device;
use lottery_core::config::TrainSection;
use lottery_core::{
    BnMode, FlatTensor, LossSpec, MaskSet, ParamValues, Precision, PrunableRule, PruneTarget,
};
use lottery_data::{ImageDataset, ImageShape, synthetic};
use lottery_models::arch::Plan;
use lottery_models::{Architecture, InputShape, init};
use lottery_train::ImageTask;
use lottery_train::task::spec_loss;

fn data(shape: ImageShape, classes: usize, train: usize) -> Arc<ImageDataset> {
    let mut d = synthetic::generate(3, shape, classes, train, 16, 0.5);
    d.normalise();
    Arc::new(d)
}

fn task(arch: Architecture, shape: ImageShape, classes: usize, batch: usize) -> ImageTask {
    let data = data(shape, classes, batch);
    let input = InputShape {
        channels: shape.channels,
        height: shape.height,
        width: shape.width,
    };
    let m = arch.build(input, classes, &default_device());
    let naming = m.naming();
    let m = init::seeded_init(m, &naming, 11).unwrap();
    ImageTask::new(
        m,
        data,
        TrainSection::default(),
        batch,
        false,
        5,
        default_device(),
    )
}

fn small_vgg() -> Architecture {
    Architecture::ConvNet {
        plan: vec![
            Plan::Conv(8),
            Plan::Conv(8),
            Plan::Pool,
            Plan::Conv(16),
            Plan::Pool,
            Plan::Conv(16),
        ],
        hidden: vec![],
        batch_norm: true,
        global_pool: true,
    }
}

fn prunable(t: &ImageTask) -> Vec<String> {
    t.params()
        .into_iter()
        .filter(|p| PrunableRule::default().admits(p))
        .map(|p| p.name)
        .collect()
}

fn grey(side: usize) -> ImageShape {
    ImageShape {
        channels: 1,
        height: side,
        width: side,
    }
}

#[test]
fn gradients_match_finite_differences_in_both_batch_norm_modes() {
    let mut t = task(small_vgg(), grey(8), 3, 12);
    let names = vec!["layers.3.conv.weight".to_string(), "fc.weight".to_string()];
    let mask = MaskSet::new();
    for bn_mode in [BnMode::Eval, BnMode::Train] {
        let spec = LossSpec {
            precision: Precision::F64,
            ..LossSpec::new(1, bn_mode)
        };
        let g = t.loss_gradients(&names, &mask, &spec).unwrap();
        let base = t.values(&names).unwrap();
        for name in &names {
            for idx in [0usize, 7, 30] {
                let mut at = |delta: f32| {
                    let mut v = base.clone();
                    v.get_mut(name).unwrap().values[idx] += delta;
                    let moved = v[name].values[idx] as f64 - base[name].values[idx] as f64;
                    t.set_values(&v).unwrap();
                    (spec_loss(&t, &mask, &spec).0, moved)
                };
                let (lp, dp) = at(1e-5);
                let (lm, dm) = at(-1e-5);
                t.set_values(&base).unwrap();
                let fd = (lp - lm) / (dp - dm);
                let an = g[name].values[idx] as f64;
                assert!(
                    (fd - an).abs() < 1e-6 + 1e-4 * an.abs(),
                    "{bn_mode:?} {name}[{idx}]: finite difference {fd}, autodiff {an}"
                );
            }
        }
    }
}

#[test]
fn train_mode_scoring_leaves_running_statistics_alone() {
    let mut t = task(small_vgg(), grey(8), 3, 12);
    let before = t.all_values();
    let names = prunable(&t);
    t.loss_gradients(&names, &MaskSet::new(), &LossSpec::new(1, BnMode::Train))
        .unwrap();
    assert_eq!(t.all_values(), before);
}

/// Softmax regression: H v = (1/n) Σ_i (1/T²) (diag p_i − p_i p_iᵀ) (V x_i) x_iᵀ for the weight.
#[test]
fn hessian_vector_product_matches_the_closed_form_of_softmax_regression() {
    let shape = grey(4);
    let (classes, n) = (3, 24);
    let mut t = task(Architecture::Mlp { hidden: vec![] }, shape, classes, n);
    let data = data(shape, classes, n);
    let names = vec!["fc.weight".to_string()];
    let w = t.values(&names).unwrap()["fc.weight"].values.clone();
    let b = t.values(&["fc.bias".to_string()]).unwrap()["fc.bias"]
        .values
        .clone();
    let d = shape.numel();
    let v: Vec<f32> = (0..classes * d)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
        .collect();
    let vector: ParamValues = [(
        "fc.weight".to_string(),
        FlatTensor::new(vec![classes, d], v.clone()),
    )]
    .into();
    for temperature in [1.0, 200.0] {
        let spec = LossSpec {
            batches: 1,
            bn_mode: BnMode::Eval,
            temperature,
            precision: Precision::F64,
        };
        let hv = t
            .loss_hessian_vector(&names, &MaskSet::new(), &spec, &vector)
            .unwrap();
        let mut expected = vec![0.0f64; classes * d];
        for i in 0..n {
            let x = &data.train.images[i * d..(i + 1) * d];
            let z: Vec<f64> = (0..classes)
                .map(|c| {
                    let dot: f64 = (0..d).map(|j| w[c * d + j] as f64 * x[j] as f64).sum();
                    (dot + b[c] as f64) / temperature
                })
                .collect();
            let zmax = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|z| (z - zmax).exp()).collect();
            let total: f64 = e.iter().sum();
            let p: Vec<f64> = e.iter().map(|x| x / total).collect();
            let u: Vec<f64> = (0..classes)
                .map(|c| (0..d).map(|j| v[c * d + j] as f64 * x[j] as f64).sum())
                .collect();
            let pu: f64 = (0..classes).map(|c| p[c] * u[c]).sum();
            for c in 0..classes {
                let a = p[c] * (u[c] - pu) / (temperature * temperature * n as f64);
                for j in 0..d {
                    expected[c * d + j] += a * x[j] as f64;
                }
            }
        }
        let got = &hv["fc.weight"].values;
        let scale = expected.iter().map(|x| x.abs()).fold(0.0, f64::max);
        for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                (*g as f64 - e).abs() <= 1e-3 * scale,
                "T={temperature} [{k}]: {g} vs closed form {e}"
            );
        }
    }
}

fn dot(a: &ParamValues, b: &ParamValues) -> f64 {
    a.iter()
        .map(|(k, t)| {
            t.values
                .iter()
                .zip(&b[k].values)
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum::<f64>()
        })
        .sum()
}

#[test]
fn hessian_vector_products_are_symmetric_on_a_batch_norm_network() {
    let mut t = task(small_vgg(), grey(8), 3, 12);
    let names = prunable(&t);
    let infos = t.params();
    let vec_of = |salt: usize| -> ParamValues {
        infos
            .iter()
            .filter(|p| names.contains(&p.name))
            .map(|p| {
                let vals = (0..p.numel())
                    .map(|i| (((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0) - 1.0)
                    .collect();
                (p.name.clone(), FlatTensor::new(p.shape.clone(), vals))
            })
            .collect()
    };
    let (u, v) = (vec_of(1), vec_of(2));
    let spec = LossSpec {
        batches: 1,
        bn_mode: BnMode::Eval,
        temperature: 1.0,
        precision: Precision::F64,
    };
    let hu = t
        .loss_hessian_vector(&names, &MaskSet::new(), &spec, &u)
        .unwrap();
    let hv = t
        .loss_hessian_vector(&names, &MaskSet::new(), &spec, &v)
        .unwrap();
    let (a, b) = (dot(&v, &hu), dot(&u, &hv));
    assert!(a.abs() > 1e-6, "degenerate test: vᵀHu = {a}");
    assert!(
        (a - b).abs() <= 1e-5 * a.abs().max(b.abs()),
        "vᵀHu = {a}, uᵀHv = {b}"
    );
}

/// Sum over each layer of θ ⊙ ∂R/∂θ equals R when R is homogeneous of degree one in every layer's
/// parameters: a bias-free ReLU network, with pooling and eval-mode batch norm.
fn assert_flow_is_conserved(arch: Architecture, shape: ImageShape, layers: &[&str]) {
    let mut t = task(arch, shape, 4, 8);
    let names: Vec<String> = layers.iter().map(|s| s.to_string()).collect();
    let (r, g) = t.path_flow_f64(&names, &MaskSet::new(), Precision::F64);
    let theta = t.values(&names).unwrap();
    assert!(r > 0.0 && r.is_finite(), "R = {r}");
    for name in &names {
        let sum: f64 = theta[name]
            .values
            .iter()
            .zip(&g[name].1)
            .map(|(w, g)| (*w as f64).abs() * g)
            .sum();
        assert!(
            ((sum - r) / r).abs() < 1e-10,
            "{name}: Σ|θ|∂R/∂θ = {sum}, R = {r}"
        );
    }
}

#[test]
fn synaptic_flow_is_conserved_layer_by_layer_in_an_mlp() {
    assert_flow_is_conserved(
        Architecture::Mlp {
            hidden: vec![30, 20],
        },
        grey(6),
        &["fc_layers.0.weight", "fc_layers.1.weight", "fc.weight"],
    );
}

#[test]
fn synaptic_flow_is_conserved_layer_by_layer_in_a_cnn_with_batch_norm() {
    assert_flow_is_conserved(
        small_vgg(),
        grey(8),
        &[
            "layers.0.conv.weight",
            "layers.0.bn.weight",
            "layers.1.conv.weight",
            "layers.3.conv.weight",
            "layers.5.conv.weight",
            "fc.weight",
        ],
    );
}

#[test]
fn synaptic_flow_in_f32_matches_f64_where_it_does_not_overflow() {
    let mut t = task(small_vgg(), grey(8), 4, 8);
    let names = prunable(&t);
    let a = t
        .path_flow(&names, &MaskSet::new(), Precision::F32)
        .unwrap();
    let b = t
        .path_flow(&names, &MaskSet::new(), Precision::F64)
        .unwrap();
    assert!(((a.flow - b.flow) / b.flow).abs() < 1e-5);
    for (k, x) in &a.log_gradients {
        for (p, q) in x.values.iter().zip(&b.log_gradients[k].values) {
            assert!((p - q).abs() <= 1e-4 * q.abs() + 1e-12, "{k}: {p} vs {q}");
        }
    }
}
