//! Each model's parameter names are the PyTorch (OpenLTH) names, and values round-trip through the
//! PyTorch layout.

use lottery_core::ParamKind;
use lottery_core::backend::{TrainBackend, default_device};
use lottery_models::{InputShape, build, view};

const MNIST: InputShape = InputShape {
    channels: 1,
    height: 28,
    width: 28,
};
const CIFAR: InputShape = InputShape {
    channels: 3,
    height: 32,
    width: 32,
};

fn names(model: &str, input: InputShape) -> Vec<(String, Vec<usize>, ParamKind)> {
    let m = build(model, input, 10, 0, Default::default(), &default_device()).unwrap();
    view::entries::<TrainBackend, _>(&m, &m.naming())
        .into_iter()
        .map(|e| (e.info.name, e.info.shape, e.info.kind))
        .collect()
}

#[test]
fn lenet_300_100_matches_openlth_names_and_layout() {
    let n = names("lenet-300-100", MNIST);
    let expected = [
        ("fc_layers.0.weight", vec![300, 784]),
        ("fc_layers.0.bias", vec![300]),
        ("fc_layers.1.weight", vec![100, 300]),
        ("fc_layers.1.bias", vec![100]),
        ("fc.weight", vec![10, 100]),
        ("fc.bias", vec![10]),
    ];
    assert_eq!(
        n.iter()
            .map(|(a, s, _)| (a.as_str(), s.clone()))
            .collect::<Vec<_>>(),
        expected.to_vec()
    );
}

#[test]
fn vgg_names_count_pools_like_nn_sequential() {
    let n = names("vgg-11", CIFAR);
    let conv: Vec<&str> = n
        .iter()
        .filter(|(_, _, k)| *k == ParamKind::ConvWeight)
        .map(|(a, _, _)| a.as_str())
        .collect();
    // OpenLTH cifar_vgg_11 plan: 64 M 128 M 256 256 M 512 512 M 512 512
    assert_eq!(
        conv,
        vec![
            "layers.0.conv.weight",
            "layers.2.conv.weight",
            "layers.4.conv.weight",
            "layers.5.conv.weight",
            "layers.7.conv.weight",
            "layers.8.conv.weight",
            "layers.10.conv.weight",
            "layers.11.conv.weight"
        ]
    );
    assert!(
        n.iter()
            .any(|(a, s, k)| a == "layers.0.bn.weight" && s == &vec![64] && *k == ParamKind::Norm)
    );
    assert!(
        n.iter()
            .any(|(a, _, k)| a == "layers.0.bn.running_var" && *k == ParamKind::NormStatistic)
    );
    assert!(
        n.iter()
            .any(|(a, s, _)| a == "fc.weight" && s == &vec![10, 512])
    );
}

#[test]
fn resnet_shortcuts_use_sequential_indices() {
    let n = names("resnet-20", CIFAR);
    let sc: Vec<&str> = n
        .iter()
        .filter(|(a, _, _)| a.contains("shortcut"))
        .map(|(a, _, _)| a.as_str())
        .collect();
    assert!(sc.contains(&"blocks.3.shortcut.0.weight"), "{sc:?}");
    assert!(sc.contains(&"blocks.3.shortcut.1.weight"), "{sc:?}");
    assert!(sc.contains(&"blocks.6.shortcut.0.weight"), "{sc:?}");
    let convs = n
        .iter()
        .filter(|(_, _, k)| *k == ParamKind::ConvWeight)
        .count();
    assert_eq!(convs, 1 + 9 * 2 + 2);
    let m = build(
        "resnet-20",
        CIFAR,
        10,
        0,
        Default::default(),
        &default_device(),
    )
    .unwrap();
    let e = view::entries::<TrainBackend, _>(&m, &m.naming());
    assert!(
        e.iter()
            .filter(|e| e.info.name.contains("shortcut"))
            .all(|e| e.info.shortcut)
    );
}

#[test]
fn every_registered_model_builds_and_runs_forward() {
    use burn::prelude::*;
    for entry in lottery_models::models().unwrap() {
        let input = if entry.name.starts_with("vgg") || entry.name.starts_with("resnet") {
            CIFAR
        } else {
            MNIST
        };
        let m = build(
            entry.name,
            input,
            10,
            1,
            Default::default(),
            &default_device(),
        )
        .unwrap();
        let x = Tensor::<TrainBackend, 4>::zeros(
            [2, input.channels, input.height, input.width],
            &default_device(),
        );
        assert_eq!(m.forward(x).dims(), [2, 10], "{}", entry.name);
    }
}

#[test]
fn values_round_trip_in_pytorch_layout_and_init_is_kaiming() {
    let m = build(
        "lenet-300-100",
        MNIST,
        10,
        3,
        Default::default(),
        &default_device(),
    )
    .unwrap();
    let naming = m.naming();
    let names = vec!["fc.weight".to_string(), "fc.bias".to_string()];
    let v = view::values::<TrainBackend, _>(&m, &naming, &names);
    let w = &v["fc.weight"];
    assert_eq!(w.shape, vec![10, 100]);
    assert!(v["fc.bias"].values.iter().all(|&b| b == 0.0));
    let std = (w.values.iter().map(|x| x * x).sum::<f32>() / w.values.len() as f32).sqrt();
    assert!((std - (2.0f32 / 100.0).sqrt()).abs() < 0.02, "std {std}");
    // Write a recognisable pattern and read it back: row-major [out, in].
    let mut pattern = w.clone();
    pattern.values = (0..1000).map(|i| i as f32).collect();
    let m = view::set_values::<TrainBackend, _>(
        m,
        &naming,
        &[("fc.weight".to_string(), pattern.clone())].into(),
    )
    .unwrap();
    let back = view::values::<TrainBackend, _>(&m, &naming, &names);
    assert_eq!(back["fc.weight"], pattern);
    // Forward of a one-hot input picks out column j of the PyTorch [out, in] matrix.
    let e = view::set_values::<TrainBackend, _>(
        m,
        &naming,
        &[(
            "fc.weight".to_string(),
            lottery_core::FlatTensor::new(vec![100, 10], vec![0.0; 1000]),
        )]
        .into(),
    );
    assert!(e.is_err());
}

#[test]
fn same_seed_same_weights_different_seed_different() {
    let a = build(
        "conv-2",
        MNIST,
        10,
        5,
        Default::default(),
        &default_device(),
    )
    .unwrap();
    let b = build(
        "conv-2",
        MNIST,
        10,
        5,
        Default::default(),
        &default_device(),
    )
    .unwrap();
    let c = build(
        "conv-2",
        MNIST,
        10,
        6,
        Default::default(),
        &default_device(),
    )
    .unwrap();
    let n = vec!["layers.0.conv.weight".to_string()];
    let va = view::values::<TrainBackend, _>(&a, &a.naming(), &n);
    assert_eq!(va, view::values::<TrainBackend, _>(&b, &b.naming(), &n));
    assert_ne!(va, view::values::<TrainBackend, _>(&c, &c.naming(), &n));
}
