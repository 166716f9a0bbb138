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

/// The bias that puts a unit with pre-activation `dot + bias` on its kink: within an f32 rounding
/// of 0, never exactly 0 (so every computation agrees on which side it is).
fn kink_bias(dot: f64) -> f32 {
    let b = -dot as f32;
    if (dot + b as f64).abs() < 1e-12 {
        b.next_up()
    } else {
        b
    }
}

/// Puts hidden unit u of the first layer of an MLP on its kink for training example u, for
/// u < `units`.
fn put_first_layer_on_kinks(t: &mut ImageTask, images: &[f32], d: usize, units: usize) {
    let first = [
        "fc_layers.0.weight".to_string(),
        "fc_layers.0.bias".to_string(),
    ];
    let mut values = t.values(&first).unwrap();
    for unit in 0..units {
        let x = &images[unit * d..(unit + 1) * d];
        let w = &values[&first[0]].values[unit * d..(unit + 1) * d];
        let dot: f64 = w.iter().zip(x).map(|(w, x)| *w as f64 * *x as f64).sum();
        values.get_mut(&first[1]).unwrap().values[unit] = kink_bias(dot);
    }
    t.set_values(&values).unwrap();
}

/// The exact (a.e.) Hessian-vector product of a one-hidden-layer ReLU network's mean
/// cross-entropy of `logits / temperature`, by forward-mode differentiation of the hand-written
/// gradient with the ReLU pattern of θ: what autodiff's double backward gives (ReLU'' = 0).
/// Parameters and directions in the order fc_layers.0.weight, fc_layers.0.bias, fc.weight, fc.bias.
fn relu_mlp_hessian_vector(
    data: &lottery_data::ImageSplit,
    d: usize,
    theta: [&[f32]; 4],
    v: [&[f32]; 4],
    classes: usize,
    temperature: f64,
) -> [Vec<f64>; 4] {
    let [w1, b1, w2, b2] = theta.map(|t| t.iter().map(|x| *x as f64).collect::<Vec<f64>>());
    let [v1, c1, v2, c2] = v.map(|t| t.iter().map(|x| *x as f64).collect::<Vec<f64>>());
    let h = b1.len();
    let n = data.len();
    let mut out = [
        vec![0.0; h * d],
        vec![0.0; h],
        vec![0.0; classes * h],
        vec![0.0; classes],
    ];
    let affine = |w: &[f64], b: &[f64], x: &[f64], rows: usize| -> Vec<f64> {
        let cols = x.len();
        (0..rows)
            .map(|r| (0..cols).map(|j| w[r * cols + j] * x[j]).sum::<f64>() + b[r])
            .collect()
    };
    for i in 0..n {
        let x: Vec<f64> = data.images[i * d..(i + 1) * d]
            .iter()
            .map(|x| *x as f64)
            .collect();
        let y = data.labels[i] as usize;
        let z1 = affine(&w1, &b1, &x, h);
        let on: Vec<f64> = z1
            .iter()
            .map(|z| if *z > 0.0 { 1.0 } else { 0.0 })
            .collect();
        let a: Vec<f64> = z1.iter().zip(&on).map(|(z, o)| z * o).collect();
        let f = affine(&w2, &b2, &a, classes);
        let fmax = f.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = f.iter().map(|f| ((f - fmax) / temperature).exp()).collect();
        let total: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|e| e / total).collect();
        let scale = temperature * n as f64;
        let g_f: Vec<f64> = (0..classes)
            .map(|c| (p[c] - if c == y { 1.0 } else { 0.0 }) / scale)
            .collect();
        // Directional derivatives along v.
        let dz1 = affine(&v1, &c1, &x, h);
        let da: Vec<f64> = dz1.iter().zip(&on).map(|(z, o)| z * o).collect();
        let w2_da = affine(&w2, &vec![0.0; classes], &da, classes);
        let df: Vec<f64> = affine(&v2, &c2, &a, classes)
            .iter()
            .zip(&w2_da)
            .map(|(x, y)| x + y)
            .collect();
        let p_df: f64 = (0..classes).map(|c| p[c] * df[c]).sum();
        let dg_f: Vec<f64> = (0..classes)
            .map(|c| p[c] * (df[c] - p_df) / temperature / scale)
            .collect();
        for c in 0..classes {
            for k in 0..h {
                out[2][c * h + k] += dg_f[c] * a[k] + g_f[c] * da[k];
            }
            out[3][c] += dg_f[c];
        }
        for k in 0..h {
            let dg_a: f64 = (0..classes)
                .map(|c| v2[c * h + k] * g_f[c] + w2[c * h + k] * dg_f[c])
                .sum();
            let dg_z1 = dg_a * on[k];
            for j in 0..d {
                out[0][k * d + j] += dg_z1 * x[j];
            }
            out[1][k] += dg_z1;
        }
    }
    out
}

fn direction(t: &ImageTask, names: &[String], salt: usize) -> ParamValues {
    t.params()
        .iter()
        .filter(|p| names.contains(&p.name))
        .map(|p| {
            let vals = (0..p.numel())
                .map(|i| (((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0) - 1.0)
                .collect();
            (p.name.clone(), FlatTensor::new(p.shape.clone(), vals))
        })
        .collect()
}

fn max_relative_gap(got: &ParamValues, expected: &ParamValues) -> f64 {
    let scale = expected
        .values()
        .flat_map(|t| t.values.iter())
        .fold(0.0f64, |m, x| m.max((*x as f64).abs()));
    got.iter()
        .flat_map(|(k, t)| {
            t.values
                .iter()
                .zip(&expected[k].values)
                .map(|(a, b)| (*a as f64 - *b as f64).abs())
        })
        .fold(0.0f64, f64::max)
        / scale
}

/// GraSP's Hg on a ReLU network is autodiff's double backward: the a.e. Hessian with ReLU'' = 0,
/// not a finite difference that picks up every unit whose input changes sign within ε.
#[test]
fn hessian_vector_product_of_a_relu_network_is_the_exact_fixed_pattern_product() {
    let shape = grey(5);
    let (classes, n, d) = (4, 40, 25);
    let mut t = task(Architecture::Mlp { hidden: vec![12] }, shape, classes, n);
    let names: Vec<String> = [
        "fc_layers.0.weight",
        "fc_layers.0.bias",
        "fc.weight",
        "fc.bias",
    ]
    .map(String::from)
    .to_vec();
    let data = data(shape, classes, n);
    // Hidden units 0..4 sit on their kink for examples 0..4 (pre-activation within an f32
    // rounding of 0): a step of any size that does not freeze the ReLU pattern crosses it.
    put_first_layer_on_kinks(&mut t, &data.train.images, d, 4);
    let theta = t.values(&names).unwrap();
    let v = direction(&t, &names, 3);
    for temperature in [1.0, 200.0] {
        let spec = LossSpec {
            batches: 1,
            bn_mode: BnMode::Eval,
            temperature,
            precision: Precision::F64,
        };
        let hv = t
            .loss_hessian_vector(&names, &MaskSet::new(), &spec, &v)
            .unwrap();
        let exact = relu_mlp_hessian_vector(
            &data.train,
            d,
            [0, 1, 2, 3].map(|i| theta[&names[i]].values.as_slice()),
            [0, 1, 2, 3].map(|i| v[&names[i]].values.as_slice()),
            classes,
            temperature,
        );
        let expected: ParamValues = names
            .iter()
            .zip(exact)
            .map(|(name, values)| {
                let shape = theta[name].shape.clone();
                let values = values.into_iter().map(|x| x as f32).collect();
                (name.clone(), FlatTensor::new(shape, values))
            })
            .collect();
        let gap = max_relative_gap(&hv, &expected);
        assert!(
            gap < 1e-6,
            "T={temperature}: max |Hv − exact| / max |exact| = {gap:e}"
        );
    }
}

/// On a batch-norm conv net with max pooling (both batch-norm modes), the product does not move
/// when the step shrinks a hundredfold: no ReLU or pooling switch enters it.
#[test]
fn hessian_vector_product_of_a_pooling_network_does_not_depend_on_the_step() {
    let mut t = task(small_vgg(), grey(8), 3, 12);
    // Channel 0 of the first convolution sits on its kink at pixel (4, 4) of example 0 under
    // eval-mode batch norm (running mean 0, variance 1, γ = 1, β = 0 at initialisation).
    let conv = [
        "layers.0.conv.weight".to_string(),
        "layers.0.conv.bias".to_string(),
    ];
    let mut theta = t.values(&conv).unwrap();
    let image = data(grey(8), 3, 12).train.images[..64].to_vec();
    let w = &theta[&conv[0]].values[..9];
    let s: f64 = (0..3)
        .flat_map(|dy| (0..3).map(move |dx| (dy, dx)))
        .map(|(dy, dx)| w[dy * 3 + dx] as f64 * image[(3 + dy) * 8 + 3 + dx] as f64)
        .sum();
    theta.get_mut(&conv[1]).unwrap().values[0] = kink_bias(s);
    t.set_values(&theta).unwrap();
    let names = prunable(&t);
    let v = direction(&t, &names, 5);
    for bn_mode in [BnMode::Eval, BnMode::Train] {
        let spec = LossSpec {
            precision: Precision::F64,
            ..LossSpec::new(1, bn_mode)
        };
        let mut at = |step: f64| {
            t.hessian_vector_with_step(&names, &MaskSet::new(), &spec, &v, step)
                .unwrap()
        };
        let (coarse, fine, finest) = (at(1e-5), at(1e-6), at(1e-7));
        for (label, other) in [("1e-6", &fine), ("1e-7", &finest)] {
            let gap = max_relative_gap(other, &coarse);
            assert!(
                gap < 1e-6,
                "{bn_mode:?}: steps 1e-5 and {label} differ by {gap:e}"
            );
        }
    }
}

/// Replaying the switches recorded at θ computes, at θ, exactly what the network computes.
#[test]
fn replayed_switches_reproduce_the_network_where_they_were_recorded() {
    use burn::prelude::*;
    use lottery_core::backend::TrainBackend;
    use lottery_models::Switches;
    let input = InputShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let model = small_vgg().build::<TrainBackend>(input, 3, &default_device());
    let naming = model.naming();
    let model = init::seeded_init(model, &naming, 4).unwrap();
    let x = Tensor::<TrainBackend, 4>::random(
        [5, 1, 8, 8],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &default_device(),
    );
    for mode in [BnMode::Eval, BnMode::Train] {
        let free = model.forward_with(x.clone(), mode).into_data();
        let mut recording = Switches::record();
        let recorded = model
            .forward_switched(x.clone(), mode, &mut recording)
            .into_data();
        // Three ReLUs and two pools before global pooling.
        assert_eq!(recording.len(), 6);
        let replayed = model
            .forward_switched(x.clone(), mode, &mut recording.replay())
            .into_data();
        assert_eq!(free, recorded);
        assert_eq!(free, replayed);
    }
}

/// GraSP's ranking on a seeded LeNet-300-100 and a seeded batch of 256: the top 1 % of θ ⊙ Hg is
/// the same set of weights when the difference step shrinks tenfold.
#[test]
fn grasp_top_percent_of_lenet_300_100_does_not_depend_on_the_step() {
    let shape = grey(28);
    let mut t = task(
        Architecture::Mlp {
            hidden: vec![300, 100],
        },
        shape,
        10,
        256,
    );
    // Hidden units 0..32 of the first layer sit on their kink for examples 0..32.
    put_first_layer_on_kinks(&mut t, &data(shape, 10, 256).train.images, 784, 32);
    let names = prunable(&t);
    let spec = LossSpec {
        batches: 1,
        bn_mode: BnMode::Eval,
        temperature: 200.0,
        precision: Precision::F64,
    };
    let mask = MaskSet::new();
    let g = t.loss_gradients(&names, &mask, &spec).unwrap();
    let theta = t.values(&names).unwrap();
    let top = |hg: &ParamValues| {
        let mut scores: Vec<(f64, String, usize)> = names
            .iter()
            .flat_map(|n| {
                let (w, h) = (&theta[n].values, &hg[n].values);
                (0..w.len()).map(move |i| (w[i] as f64 * h[i] as f64, n.clone(), i))
            })
            .collect();
        let k = scores.len() / 100;
        scores.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut kept: Vec<(String, usize)> = scores[..k]
            .iter()
            .map(|(_, n, i)| (n.clone(), *i))
            .collect();
        kept.sort();
        kept
    };
    let coarse = top(&t
        .hessian_vector_with_step(&names, &mask, &spec, &g, 1e-6)
        .unwrap());
    let fine = top(&t
        .hessian_vector_with_step(&names, &mask, &spec, &g, 1e-7)
        .unwrap());
    assert_eq!(coarse.len(), 2662);
    let shared = coarse
        .iter()
        .filter(|w| fine.binary_search(w).is_ok())
        .count();
    assert_eq!(
        shared,
        coarse.len(),
        "the top 1 % under ε and ε/10 share {shared} of 2662 weights"
    );
}
