//! The GCN against hand computations: the normalised adjacency, the edge mask, masked training.

use std::sync::Arc;

use burn::prelude::*;
use lottery_core::backend::{Backend as B, default_device};
use lottery_core::config::{OptimizerKind, TrainSection};
use lottery_core::{GRAPH_MASK, Mask, MaskSet, PruneTarget};
use lottery_data::Graph;
use lottery_gcn::{GcnTask, GraphTensors, LAYER0, LAYER1};

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
