//! Structured channel pruning of a VGG-style net: the physically smaller network computes exactly
//! what the channel-masked full network computes, in both batch-norm modes; embedding its values
//! back is the inverse of shrinking; the cost counts what the smaller network holds.

use burn::prelude::*;
use lottery_core::backend::{Backend as InnerBackend, TrainBackend, default_device};
use lottery_core::{BnMode, FlatTensor, MaskSet, ParamKind, ParamValues, PrunableRule};
use lottery_models::arch::Plan;
use lottery_models::channel_masks::{ChannelKeep, expand};
use lottery_models::channels::{
    channel_groups, cost, embed_values, shrink_architecture, shrink_values,
};
use lottery_models::{Architecture, DeviceMasks, ImageModel, InputShape, view};
use rand::{RngExt, SeedableRng};

const INPUT: InputShape = InputShape {
    channels: 2,
    height: 8,
    width: 8,
};

fn arch(global_pool: bool) -> Architecture {
    Architecture::ConvNet {
        plan: vec![
            Plan::Conv(6),
            Plan::Pool,
            Plan::Conv(8),
            Plan::Conv(5),
            Plan::Pool,
        ],
        hidden: if global_pool { vec![] } else { vec![7] },
        batch_norm: true,
        global_pool,
    }
}

/// Every parameter and buffer random (running variances positive), so that nothing hides a
/// wrongly placed channel.
fn random_values(model: &ImageModel<TrainBackend>, seed: u64) -> ParamValues {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    view::entries::<TrainBackend, _>(model, &model.naming())
        .into_iter()
        .map(|e| {
            let n = e.info.numel();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    let v: f32 = rng.random_range(-1.0..1.0);
                    if e.info.name.ends_with("running_var") {
                        v.abs() + 0.5
                    } else {
                        v
                    }
                })
                .collect();
            (e.info.name, FlatTensor::new(e.info.shape, values))
        })
        .collect()
}

fn keep_of(model: &ImageModel<TrainBackend>) -> ChannelKeep {
    let groups = channel_groups(&model.architecture(), INPUT).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    groups
        .iter()
        .map(|g| {
            let mut flags: Vec<bool> = (0..g.channels).map(|_| rng.random_bool(0.5)).collect();
            flags[g.channels - 1] = true; // never an empty layer
            flags[0] = false; // always something pruned
            (g.scale.clone(), flags)
        })
        .collect()
}

fn outputs(global_pool: bool, mode: BnMode) -> (Tensor<TrainBackend, 2>, Tensor<TrainBackend, 2>) {
    let device = default_device();
    let a = arch(global_pool);
    let full = a.build::<TrainBackend>(INPUT, 3, &device);
    let values = random_values(&full, 1);
    let naming = full.naming();
    let full = view::set_values::<TrainBackend, _>(full, &naming, &values).unwrap();
    let keep = keep_of(&full);

    // The masked network: the channel mask expanded over every conv and linear weight.
    let rule = PrunableRule::default();
    let entries = view::entries::<TrainBackend, _>(&full, &full.naming());
    let template = MaskSet::dense(
        entries
            .iter()
            .filter(|e| rule.admits(&e.info))
            .map(|e| (e.info.name.as_str(), e.info.shape.as_slice())),
    );
    let groups = channel_groups(&a, INPUT).unwrap();
    let mask = expand(&groups, &keep, &template).unwrap();
    let masks = DeviceMasks::<InnerBackend>::from_entries(&entries, &mask, &device);
    let masked = masks.apply_autodiff::<TrainBackend, _>(full);

    let small_arch = shrink_architecture(&a, INPUT, &keep).unwrap();
    let small = small_arch.build::<TrainBackend>(INPUT, 3, &device);
    let small_values = shrink_values(&a, INPUT, &keep, &values).unwrap();
    let naming = small.naming();
    let small = view::set_values::<TrainBackend, _>(small, &naming, &small_values).unwrap();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let x: Vec<f32> = (0..4 * 2 * 8 * 8)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let x = Tensor::<TrainBackend, 4>::from_data(TensorData::new(x, [4, 2, 8, 8]), &device);
    (
        masked.forward_with(x.clone(), mode),
        small.forward_with(x, mode),
    )
}

fn assert_close(a: Tensor<TrainBackend, 2>, b: Tensor<TrainBackend, 2>) {
    let a: Vec<f32> = a.into_data().to_vec().unwrap();
    let b: Vec<f32> = b.into_data().to_vec().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = a.iter().map(|v| v.abs()).fold(1e-3f32, f32::max);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * scale,
            "logit {i}: masked {x}, structured {y}"
        );
    }
}

#[test]
fn the_smaller_vgg_computes_what_the_channel_masked_one_computes() {
    for global_pool in [true, false] {
        for mode in [BnMode::Eval, BnMode::Train] {
            let (masked, small) = outputs(global_pool, mode);
            assert_close(masked, small);
        }
    }
}

#[test]
fn shrinking_and_embedding_are_inverse_and_the_cost_is_what_the_small_net_holds() {
    let device = default_device();
    let a = arch(true);
    let full = a.build::<TrainBackend>(INPUT, 3, &device);
    let values = random_values(&full, 2);
    let keep = keep_of(&full);
    let small = shrink_values(&a, INPUT, &keep, &values).unwrap();
    let back = embed_values(&a, INPUT, &keep, &small, &values).unwrap();
    assert_eq!(back, values);

    // Channels kept per layer, and the shapes of the smaller net follow them.
    let kept: Vec<usize> = channel_groups(&a, INPUT)
        .unwrap()
        .iter()
        .map(|g| keep[&g.scale].iter().filter(|&&k| k).count())
        .collect();
    assert_eq!(small["layers.0.conv.weight"].shape, vec![kept[0], 2, 3, 3]);
    assert_eq!(
        small["layers.2.conv.weight"].shape,
        vec![kept[1], kept[0], 3, 3]
    );
    assert_eq!(small["layers.3.bn.running_var"].shape, vec![kept[2]]);
    assert_eq!(small["fc.weight"].shape, vec![3, kept[2]]);

    let small_arch = shrink_architecture(&a, INPUT, &keep).unwrap();
    let model = small_arch.build::<TrainBackend>(INPUT, 3, &device);
    let trainable: u64 = view::entries::<TrainBackend, _>(&model, &model.naming())
        .iter()
        .filter(|e| e.info.kind != ParamKind::NormStatistic)
        .map(|e| e.info.numel() as u64)
        .sum();
    let c = cost(&small_arch, INPUT, 3, Default::default()).unwrap();
    assert_eq!(c.params, trainable);
    // Convolutions at 8×8, 4×4, 4×4, then the classifier; a multiply-add is 2 FLOPs.
    let expected = 2 * 9 * (2 * kept[0] * 64 + kept[0] * kept[1] * 16 + kept[1] * kept[2] * 16)
        + 2 * kept[2] * 3;
    assert_eq!(c.flops, expected as u64);
    assert!(c.flops < cost(&a, INPUT, 3, Default::default()).unwrap().flops);
}
