//! The GCN against hand computations: the normalised adjacency, the edge mask, masked training.

use std::sync::Arc;

use burn::prelude::*;
use lottery_core::Density;
use lottery_core::backend::{Backend as B, default_device};
use lottery_core::config::{OptimizerKind, TrainSection};
use lottery_core::topk::Scope;
use lottery_core::{GRAPH_MASK, Mask, MaskSet, PruneTarget};
use lottery_data::Graph;
use lottery_gcn::{CoSparsifySpec, GcnTask, GraphTensors, LAYER0, LAYER1};
use std::ops::ControlFlow;

fn path_graph() -> Graph {
    Graph {
        name: "path".into(),
        nodes: 3,
        edges: vec![(0, 1), (1, 2)],
        features: vec![1., 0., 0., 0., 1., 0., 0., 0., 1.],
        feature_dim: 3,
        labels: vec![0, 1, 0],
        classes: 2,
        train: vec![0, 1],
        val: vec![2],
        test: vec![2],
    }
}

/// `Â I` read back as a dense matrix.
fn dense_a_hat(g: &Graph, edge_weights: &[f32]) -> Vec<f32> {
    let device = default_device();
    let t = GraphTensors::<B>::new(g, &device);
    let eye = Tensor::<B, 2>::eye(g.nodes, &device);
    let w = Tensor::<B, 1>::from_data(
        TensorData::new(edge_weights.to_vec(), [edge_weights.len()]),
        &device,
    );
    t.aggregate(eye, w).into_data().into_vec::<f32>().unwrap()
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < 1e-6, "entry {i}: {x} vs {y}");
    }
}

#[test]
fn normalised_adjacency_matches_a_hand_computation() {
    // Path 0 – 1 – 2 with self-loops: degrees 2, 3, 2.
    let s6 = 1.0 / 6f32.sqrt();
    close(
        &dense_a_hat(&path_graph(), &[1.0, 1.0]),
        &[0.5, s6, 0.0, s6, 1.0 / 3.0, s6, 0.0, s6, 0.5],
    );
}

#[test]
fn an_edge_mask_removes_exactly_its_edges_in_both_directions() {
    // Edge (1, 2) pruned: 0 – 1 stays (degrees 2, 2), node 2 keeps only its self-loop.
    close(
        &dense_a_hat(&path_graph(), &[1.0, 0.0]),
        &[0.5, 0.5, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0],
    );
}

fn train_cfg(epochs: usize) -> TrainSection {
    TrainSection {
        epochs,
        optimizer: OptimizerKind::Adam,
        lr: 0.01,
        weight_decay: 5e-4,
        ..Default::default()
    }
}

fn half_mask(task: &GcnTask) -> MaskSet {
    let mut mask = MaskSet::new();
    for p in task.params() {
        let n = p.numel();
        mask.insert(
            p.name.clone(),
            Mask {
                shape: p.shape.clone(),
                keep: (0..n).map(|i| (i * 7919) % 3 != 0).collect(),
            },
        );
    }
    mask
}

#[test]
fn a_masked_graph_computes_what_the_smaller_graph_does() {
    let g = lottery_data::graph::small_sbm();
    let task = GcnTask::new(Arc::new(g.clone()), 16, train_cfg(1), 3);
    let mut mask = MaskSet::new();
    let keep = half_mask(&task).get(GRAPH_MASK).unwrap().clone();
    mask.insert(GRAPH_MASK, keep.clone());
    let mut smaller = g.clone();
    smaller.edges = g
        .edges
        .iter()
        .zip(&keep.keep)
        .filter(|(_, k)| **k)
        .map(|(e, _)| *e)
        .collect();
    let other = GcnTask::new(Arc::new(smaller), 16, train_cfg(1), 3);
    let (l1, v1, t1) = task.evaluate_splits(&mask);
    let (l2, v2, t2) = other.evaluate_splits(&MaskSet::new());
    assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
    assert_eq!((v1, t1), (v2, t2));
}

#[test]
fn pruned_weights_stay_zero_and_training_learns() {
    let g = lottery_data::graph::small_sbm();
    let mut task = GcnTask::new(Arc::new(g), 16, train_cfg(60), 5);
    let mask = half_mask(&task);
    let (_, _, before) = task.evaluate_splits(&mask);
    let mut last = 0.0;
    task.train_until(&mask, 60, &mut |r| last = r.test_accuracy.unwrap())
        .unwrap();
    let values = task.values(&[LAYER0.into(), LAYER1.into()]).unwrap();
    for (name, v) in &values {
        let m = mask.get(name).unwrap();
        assert!(
            m.keep.iter().zip(&v.values).all(|(k, x)| *k || *x == 0.0),
            "{name}"
        );
        assert!(
            m.keep.iter().zip(&v.values).any(|(k, x)| *k && *x != 0.0),
            "{name}"
        );
    }
    assert!(last > before.max(0.6), "accuracy {before} → {last}");
    // Same seed, same run: bit-identical.
    let mut again = GcnTask::new(
        Arc::new(lottery_data::graph::small_sbm()),
        16,
        train_cfg(60),
        5,
    );
    again.train_until(&mask, 60, &mut |_| {}).unwrap();
    assert_eq!(
        values,
        again.values(&[LAYER0.into(), LAYER1.into()]).unwrap()
    );
}

#[test]
fn gradients_match_finite_differences() {
    let g = lottery_data::graph::small_sbm();
    let mut task = GcnTask::new(Arc::new(g), 8, train_cfg(1), 9);
    let mask = half_mask(&task);
    let spec = lottery_core::LossSpec::new(1, lottery_core::BnMode::Eval);
    let grads = task.loss_gradients(&[LAYER1.into()], &mask, &spec).unwrap();
    let base = task.values(&[LAYER0.into(), LAYER1.into()]).unwrap();
    let loss_at = |task: &mut GcnTask, delta: f32, i: usize| {
        let mut v = base.clone();
        v.get_mut(LAYER1).unwrap().values[i] += delta;
        task.set_values(&v).unwrap();
        task.train_loss(&mask)
    };
    let h = 1e-2f32;
    for i in [0usize, 3, 7, 12] {
        if !mask.get(LAYER1).unwrap().keep[i] {
            continue;
        }
        let fd = (loss_at(&mut task, h, i) - loss_at(&mut task, -h, i)) / (2.0 * h as f64);
        let g = grads[LAYER1].values[i] as f64;
        assert!(
            (fd - g).abs() < 2e-3 + 2e-2 * g.abs(),
            "entry {i}: fd {fd} vs {g}"
        );
    }
}

#[test]
fn overflowing_weights_stop_training_and_joint_mask_training_as_diverged() {
    let g = lottery_data::graph::small_sbm();
    let mut task = GcnTask::new(Arc::new(g), 16, train_cfg(5), 4);
    let names = [LAYER0.to_string(), LAYER1.to_string()];
    let mut huge = task.values(&names).unwrap();
    for v in huge.values_mut() {
        v.values.iter_mut().for_each(|x| *x *= 1e30);
    }
    task.set_values(&huge).unwrap();
    let mask = half_mask(&task);
    let e = task.train_until(&mask, 5, &mut |_| {}).unwrap_err();
    assert_eq!(
        e.to_string(),
        "training diverged at epoch 1, step 1 (loss NaN)"
    );
    assert!(matches!(e, lottery_core::PruneError::Diverged { .. }));

    let spec = lottery_gcn::JointMaskSpec {
        epochs: 3,
        graph_l1: 1e-2,
        weight_l1: 1e-2,
    };
    let e = task
        .train_masks_jointly(&mask, &spec, &mut |_| std::ops::ControlFlow::Continue(()))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("training diverged at epoch 1"),
        "{e}"
    );
    assert_eq!(task.clock().step, 0, "the clock is untouched");
}

fn co_spec(
    weights: Option<f64>,
    edges_kept: usize,
    epochs: usize,
    rho: f64,
    graph_lr: f64,
) -> CoSparsifySpec {
    CoSparsifySpec {
        epochs,
        weights: weights.map(|d| (Density::new(d).unwrap(), Scope::Global)),
        edges_kept,
        lr: 0.01,
        weight_decay: 5e-4,
        graph_lr,
        rho,
    }
}

#[test]
fn co_sparsification_prunes_the_weights_in_place_to_exact_counts_every_epoch() {
    let g = lottery_data::graph::small_sbm();
    let edges = g.edges.len();
    let mut task = GcnTask::new(Arc::new(g), 16, train_cfg(20), 3);
    let names = vec![LAYER0.to_string(), LAYER1.to_string()];
    let total: usize = task
        .values(&names)
        .unwrap()
        .values()
        .map(|t| t.values.len())
        .sum();
    let want = Density::new(0.2).unwrap().keep_count(total);
    let keep_edges = edges / 2;
    let mut masks: Vec<MaskSet> = vec![];
    task.co_sparsify(&co_spec(Some(0.2), keep_edges, 12, 1e-3, 1e-3), &mut |e| {
        let w = e.weight_mask.clone().expect("weights are pruned");
        let kept: usize = w.iter().map(|(_, m)| m.kept()).sum();
        assert_eq!(kept, want, "epoch {}", e.epoch);
        assert_eq!(e.graph_mask.kept(), keep_edges, "epoch {}", e.epoch);
        assert_eq!(e.edge_values.len(), edges);
        masks.push(w);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(masks.len(), 12);
    // The target holds the search's weights, zero exactly where the last mask prunes.
    let after = task.values(&names).unwrap();
    let last = masks.last().unwrap();
    for n in &names {
        let m = last.get(n).unwrap();
        for (k, v) in m.keep.iter().zip(&after[n].values) {
            assert!(*k || *v == 0.0, "{n}: a pruned weight is {v}");
        }
    }
    // Pruned weights keep training (Adam moves them), so the mask changes between epochs.
    assert!(
        masks.windows(2).any(|p| p[0] != p[1]),
        "the mask never moved"
    );
}

#[test]
fn the_graph_step_follows_admm_and_graph_only_search_freezes_the_weights() {
    let g = lottery_data::graph::small_sbm();
    let edges = g.edges.len();
    let keep_edges = edges / 4;
    let names = vec![LAYER0.to_string(), LAYER1.to_string()];
    let n2 = (g.nodes as f64).powi(2);
    let mut task = GcnTask::new(Arc::new(g), 16, train_cfg(20), 3);
    let before = task.values(&names).unwrap();
    // A penalty far above the cross-entropy: the first Adam step (|step| = lr) moves every edge
    // value from 1 toward Z + I − U = 0 (off the diagonal).
    let lr = 0.01;
    let mut u = vec![0f32; edges];
    let mut epochs = 0;
    task.co_sparsify(&co_spec(None, keep_edges, 8, 1e3 * n2, lr), &mut |e| {
        epochs += 1;
        assert!(e.weight_mask.is_none());
        let a = &e.edge_values;
        if e.epoch == 1 {
            assert!(
                a.iter().all(|x| (x - (1.0 - lr as f32)).abs() < 1e-4),
                "{:?}",
                &a[..4]
            );
        }
        // The graph mask: exactly the largest |a|.
        assert_eq!(e.graph_mask.kept(), keep_edges);
        let kept_min = a
            .iter()
            .zip(&e.graph_mask.keep)
            .filter(|(_, k)| **k)
            .map(|(x, _)| x.abs())
            .fold(f32::MAX, f32::min);
        let pruned_max = a
            .iter()
            .zip(&e.graph_mask.keep)
            .filter(|(_, k)| !**k)
            .map(|(x, _)| x.abs())
            .fold(0.0, f32::max);
        assert!(kept_min >= pruned_max);
        // Z = Π(a + U): the keep_edges entries of a + U of largest magnitude, the rest 0;
        // U ← U + a − Z.
        let sum: Vec<f32> = a.iter().zip(&u).map(|(a, u)| a + u).collect();
        let (nz, nu) = &e.admm;
        assert_eq!(nz.iter().filter(|x| **x != 0.0).count(), keep_edges);
        let kept_min = sum
            .iter()
            .zip(nz)
            .filter(|(_, z)| **z != 0.0)
            .map(|(s, _)| s.abs())
            .fold(f32::MAX, f32::min);
        let pruned_max = sum
            .iter()
            .zip(nz)
            .filter(|(_, z)| **z == 0.0)
            .map(|(s, _)| s.abs())
            .fold(0.0, f32::max);
        assert!(kept_min >= pruned_max);
        for i in 0..edges {
            assert!(nz[i] == 0.0 || nz[i] == sum[i]);
            assert!((nu[i] - (u[i] + a[i] - nz[i])).abs() < 1e-6);
        }
        u = e.admm.1.clone();
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(epochs, 8);
    assert_eq!(task.values(&names).unwrap(), before, "weights are frozen");
}

#[test]
fn an_interrupted_training_resumes_from_its_saved_state_as_if_never_stopped() {
    // Adam's moments and step count, the best validation so far and the rows all carry over.
    let graph = Arc::new(lottery_data::graph::small_sbm());
    let new_task = || GcnTask::new(graph.clone(), 16, train_cfg(40), 5);
    let mask = half_mask(&new_task());
    let names = [LAYER0.to_string(), LAYER1.to_string()];
    lottery_train::resume::assert_resumes_exactly(new_task, &mask, 40, 15, &names);

    // Another mask is another training: a saved state is not taken.
    let dir = tempfile::tempdir().unwrap();
    let every = std::time::Duration::ZERO;
    let mut first = new_task();
    first
        .save_training_in(Some(dir.path().to_path_buf()), every)
        .unwrap();
    first
        .train_watching(&mask, 40, &[], &mut |_, _| ControlFlow::Break(()))
        .unwrap();
    let mut other = new_task();
    other
        .save_training_in(Some(dir.path().to_path_buf()), every)
        .unwrap();
    let mut epochs = vec![];
    other
        .train_until(&MaskSet::new(), 40, &mut |r| epochs.push(r.epoch))
        .unwrap();
    assert_eq!(epochs, (1..=40).collect::<Vec<_>>());
}
