//! The pruning-at-initialisation methods against their papers' definitions: exact counts for every
//! method, SNIP's score by hand, and SynFlow avoiding layer collapse up to the maximal critical
//! compression where SNIP collapses a layer (Tanaka et al. 2020, theorem 3).

use std::sync::Arc;

use indicatif::ProgressBar;
use lottery_core::backend::default_device;
use lottery_core::config::TrainSection;
use lottery_core::plugin::{DensitySchedule, find_pruner};
use lottery_core::{Density, MaskSet, PrunableRule, PruneContext, PruneGoal, PruneTarget, Scope};
use lottery_data::{ImageDataset, ImageShape, synthetic};
use lottery_models::arch::Plan;
use lottery_models::{Architecture, InputShape, init};
use lottery_train::ImageTask;

fn task(arch: Architecture, shape: ImageShape, classes: usize, train: usize) -> ImageTask {
    lottery_plugins::link();
    let mut data = synthetic::generate(9, shape, classes, train, 16, 0.5);
    data.normalise();
    let data: Arc<ImageDataset> = Arc::new(data);
    let input = InputShape {
        channels: shape.channels,
        height: shape.height,
        width: shape.width,
    };
    let m = arch.build(input, classes, &default_device());
    let naming = m.naming();
    let m = init::seeded_init(m, &naming, 21).unwrap();
    ImageTask::new(
        m,
        data,
        TrainSection::default(),
        train.min(32),
        false,
        3,
        default_device(),
    )
}

fn goal(density: f64, scope: Scope, rounds: usize) -> PruneGoal {
    PruneGoal {
        density: Density::new(density).unwrap(),
        scope,
        rule: PrunableRule::default(),
        iterations: rounds,
        schedule: DensitySchedule::Exponential,
    }
}

fn prune(t: &mut ImageTask, method: &str, density: f64, scope: Scope, rounds: usize) -> MaskSet {
    let entry = find_pruner(method).unwrap();
    let mut pruner = (entry.build)(&(entry.default_options)()).unwrap();
    let mut ctx = PruneContext {
        target: t,
        goal: goal(density, scope, rounds),
        seed: 1,
        progress: ProgressBar::hidden(),
        work_dir: None,
        save_every: std::time::Duration::ZERO,
        shared_dir: None,
        waited: std::time::Duration::ZERO,
    };
    pruner.prune(&mut ctx).unwrap()
}

fn grey(side: usize) -> ImageShape {
    ImageShape {
        channels: 1,
        height: side,
        width: side,
    }
}

#[test]
fn every_method_keeps_exactly_the_requested_count() {
    let mut t = task(
        Architecture::Mlp {
            hidden: vec![120, 60],
        },
        grey(10),
        4,
        32,
    );
    for method in ["random", "magnitude", "snip", "grasp", "synflow"] {
        let rounds = find_pruner(method).unwrap().default_iterations;
        for density in [0.1, 0.01, 0.001] {
            for scope in [Scope::Global, Scope::Layerwise] {
                let m = prune(&mut t, method, density, scope, rounds);
                let d = Density::new(density).unwrap();
                match scope {
                    Scope::Global => assert_eq!(
                        m.kept(),
                        d.keep_count(m.numel()),
                        "{method} {density} global"
                    ),
                    Scope::Layerwise => {
                        for l in m.layers() {
                            assert_eq!(
                                l.kept,
                                d.keep_count(l.numel),
                                "{method} {density} {}",
                                l.name
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn snip_scores_are_the_normalised_gradient_times_weight_by_hand() {
    // Softmax regression, whose loss gradient is (1/n) Σ (p − y) xᵀ in closed form.
    let shape = grey(3);
    let (classes, n) = (3, 16);
    let mut t = task(Architecture::Mlp { hidden: vec![] }, shape, classes, n);
    let names = vec!["fc.weight".to_string()];
    let w = t.values(&names).unwrap()["fc.weight"].values.clone();
    let b = t.values(&["fc.bias".to_string()]).unwrap()["fc.bias"]
        .values
        .clone();
    let mut data = synthetic::generate(9, shape, classes, n, 16, 0.5);
    data.normalise();
    let d = shape.numel();
    let mut grad = vec![0.0f64; classes * d];
    for i in 0..n {
        let x = &data.train.images[i * d..(i + 1) * d];
        let z: Vec<f64> = (0..classes)
            .map(|c| {
                (0..d)
                    .map(|j| w[c * d + j] as f64 * x[j] as f64)
                    .sum::<f64>()
                    + b[c] as f64
            })
            .collect();
        let zmax = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|z| (z - zmax).exp()).collect();
        let total: f64 = e.iter().sum();
        for c in 0..classes {
            let y = (data.train.labels[i] as usize == c) as u8 as f64;
            for j in 0..d {
                grad[c * d + j] += (e[c] / total - y) * x[j] as f64 / n as f64;
            }
        }
    }
    let by_hand: Vec<f64> = grad
        .iter()
        .zip(&w)
        .map(|(g, w)| (g * *w as f64).abs())
        .collect();
    let sum: f64 = by_hand.iter().sum();
    let entry = find_pruner("snip").unwrap();
    let mut pruner = (entry.build)(&(entry.default_options)()).unwrap();
    let mut ctx = PruneContext {
        target: &mut t,
        goal: goal(0.5, Scope::Global, 1),
        seed: 1,
        progress: ProgressBar::hidden(),
        work_dir: None,
        save_every: std::time::Duration::ZERO,
        shared_dir: None,
        waited: std::time::Duration::ZERO,
    };
    let dense = ctx.dense_mask();
    let scores = pruner.scorer().unwrap().score(&mut ctx, &dense, 1).unwrap();
    for (k, (s, h)) in scores["fc.weight"].values.iter().zip(&by_hand).enumerate() {
        assert!(
            (*s as f64 - h / sum).abs() <= 1e-5 * (h / sum) + 1e-9,
            "[{k}]: snip {s}, by hand {}",
            h / sum
        );
    }
}

/// A small VGG (batch norm, max pooling, global average pooling) for the collapse tests.
fn small_vgg() -> Architecture {
    Architecture::ConvNet {
        plan: vec![
            Plan::Conv(16),
            Plan::Conv(16),
            Plan::Pool,
            Plan::Conv(32),
            Plan::Conv(32),
            Plan::Pool,
            Plan::Conv(64),
        ],
        hidden: vec![],
        batch_norm: true,
        global_pool: true,
    }
}

/// Compression at which each prunable layer keeps one weight: N / L.
fn max_critical_compression(t: &ImageTask) -> f64 {
    let p: Vec<_> = t
        .params()
        .into_iter()
        .filter(|p| PrunableRule::default().admits(p))
        .collect();
    p.iter().map(|p| p.numel()).sum::<usize>() as f64 / p.len() as f64
}

#[test]
fn synflow_never_collapses_a_layer_below_the_maximal_critical_compression() {
    let mut t = task(small_vgg(), grey(8), 4, 32);
    let max_x = max_critical_compression(&t).log10();
    let mut grid: Vec<f64> = (1..)
        .map(|k| k as f64 * 0.5)
        .take_while(|x| *x < max_x)
        .collect();
    grid.push(max_x - 0.1);
    for x in grid {
        let m = prune(&mut t, "synflow", 10f64.powf(-x), Scope::Global, 100);
        assert!(
            m.collapsed().is_empty(),
            "synflow collapsed {:?} at compression 10^{x:.2} (maximal critical 10^{max_x:.2})",
            m.collapsed()
        );
    }
}

#[test]
fn snip_collapses_a_layer_below_the_maximal_critical_compression() {
    let mut t = task(small_vgg(), grey(8), 4, 32);
    let max_x = max_critical_compression(&t).log10();
    let found = (1..)
        .map(|k| k as f64 * 0.25)
        .take_while(|x| *x < max_x)
        .find(|x| {
            !prune(&mut t, "snip", 10f64.powf(-x), Scope::Global, 1)
                .collapsed()
                .is_empty()
        });
    let x = found.unwrap_or_else(|| {
        panic!("snip kept every layer up to the maximal critical compression 10^{max_x:.2}")
    });
    assert!(x < max_x);
}
