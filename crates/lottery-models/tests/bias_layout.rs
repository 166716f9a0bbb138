//! `model.bias`: which layers carry a bias. A network built without them has no bias parameters,
//! reads its layout back for rebuilding, and its cost counts only what it holds.

use lottery_core::backend::{TrainBackend, default_device};
use lottery_core::config::BiasLayout;
use lottery_models::arch::Plan;
use lottery_models::channels::cost;
use lottery_models::{Architecture, InputShape, view};

const INPUT: InputShape = InputShape {
    channels: 3,
    height: 8,
    width: 8,
};

fn conv_net() -> Architecture {
    Architecture::ConvNet {
        plan: vec![Plan::Conv(4), Plan::Pool, Plan::Conv(6), Plan::Pool],
        hidden: vec![5],
        batch_norm: true,
        global_pool: false,
    }
}

fn bias_names(arch: &Architecture, bias: BiasLayout) -> Vec<String> {
    let model = arch.build_with::<TrainBackend>(INPUT, 3, bias, &default_device());
    assert_eq!(model.bias_layout(), bias, "the layout reads back");
    view::entries::<TrainBackend, _>(&model, &model.naming())
        .into_iter()
        .map(|e| e.info.name)
        .filter(|n| n.ends_with(".bias") && !n.contains("bn") && !n.contains("shortcut.1"))
        .collect()
}

#[test]
fn each_layout_builds_exactly_its_biases() {
    let all = bias_names(&conv_net(), BiasLayout::All);
    assert_eq!(
        all,
        [
            "layers.0.conv.bias",
            "layers.2.conv.bias",
            "fc_layers.0.bias",
            "fc.bias"
        ]
    );
    assert_eq!(
        bias_names(&conv_net(), BiasLayout::LinearOnly),
        ["fc_layers.0.bias", "fc.bias"]
    );
    assert!(bias_names(&conv_net(), BiasLayout::None).is_empty());
    let lenet = Architecture::LeNet5;
    assert_eq!(bias_names(&lenet, BiasLayout::LinearOnly).len(), 3);
    assert!(bias_names(&lenet, BiasLayout::None).is_empty());
    let mlp = Architecture::Mlp { hidden: vec![7] };
    assert!(bias_names(&mlp, BiasLayout::None).is_empty());
    // An MLP has no convolution, so "linear-only" is the same network as "all".
    let model = mlp.build_with::<TrainBackend>(INPUT, 3, BiasLayout::LinearOnly, &default_device());
    assert_eq!(model.bias_layout(), BiasLayout::All);
}

#[test]
fn the_cost_counts_only_the_biases_the_network_holds() {
    for bias in [BiasLayout::All, BiasLayout::LinearOnly, BiasLayout::None] {
        let model = conv_net().build_with::<TrainBackend>(INPUT, 3, bias, &default_device());
        let held: u64 = view::entries::<TrainBackend, _>(&model, &model.naming())
            .into_iter()
            .filter(|e| !e.info.name.contains("running_") && !e.info.name.contains("num_batches"))
            .map(|e| e.info.shape.iter().product::<usize>() as u64)
            .sum();
        assert_eq!(
            cost(&conv_net(), INPUT, 3, bias).unwrap().params,
            held,
            "{bias:?}"
        );
    }
}
