//! The model registry: `inventory` entries holding plain constructors for the build's backend.

use lottery_core::backend::TrainBackend;

use crate::arch::{
    CifarResNet, ConvNet, ImageModel, InputShape, LeNet5, Mlp, conv_k_plan, vgg_plan,
};

/// Device of the training backend.
pub type TrainDevice = burn::tensor::Device<TrainBackend>;

/// A registered image classifier.
pub struct ModelEntry {
    /// Name used in configs.
    pub name: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Builds the network (weights still to be initialised) for the input shape and classes.
    pub build: fn(InputShape, usize, &TrainDevice) -> ImageModel<TrainBackend>,
}

inventory::collect!(ModelEntry);

/// Registered models sorted by name; fails on a duplicate name.
pub fn models() -> Result<Vec<&'static ModelEntry>, String> {
    lottery_core::registry::sorted_unique(
        inventory::iter::<ModelEntry>.into_iter().collect(),
        |e| e.name,
        "model",
    )
}

/// The model called `name`.
pub fn find_model(name: &str) -> Result<&'static ModelEntry, String> {
    lottery_core::registry::find(&models()?, name, |e| e.name, "model")
}

macro_rules! model {
    ($name:literal, $summary:literal, |$i:ident, $c:ident, $d:ident| $body:expr) => {
        inventory::submit! {
            ModelEntry { name: $name, summary: $summary, build: { fn b($i: InputShape, $c: usize, $d: &TrainDevice) -> ImageModel<TrainBackend> { $body } b } }
        }
    };
}

model!(
    "lenet-300-100",
    "MLP 300-100 (LeCun et al. 1998; Frankle & Carbin 2019)",
    |i, c, d| ImageModel::Mlp(Mlp::new(i, &[300, 100], c, d))
);
model!(
    "lenet-5",
    "LeNet-5: conv 6-16, fc 120-84 (LeCun et al. 1998)",
    |i, c, d| ImageModel::LeNet5(LeNet5::new(i, c, d))
);
model!(
    "conv-2",
    "Conv-2: 2 conv 64, fc 256-256 (Frankle & Carbin 2019)",
    |i, c, d| conv_k(i, 2, c, d)
);
model!(
    "conv-4",
    "Conv-4: conv 64-64-128-128, fc 256-256 (Frankle & Carbin 2019)",
    |i, c, d| conv_k(i, 4, c, d)
);
model!(
    "conv-6",
    "Conv-6: conv 64-64-128-128-256-256, fc 256-256 (Frankle & Carbin 2019)",
    |i, c, d| conv_k(i, 6, c, d)
);
model!(
    "vgg-11",
    "VGG-11 with batch norm, CIFAR form (OpenLTH cifar_vgg_11)",
    |i, c, d| vgg(i, 11, c, d)
);
model!(
    "vgg-16",
    "VGG-16 with batch norm, CIFAR form (OpenLTH cifar_vgg_16)",
    |i, c, d| vgg(i, 16, c, d)
);
model!(
    "vgg-19",
    "VGG-19 with batch norm, CIFAR form (OpenLTH cifar_vgg_19)",
    |i, c, d| vgg(i, 19, c, d)
);
model!(
    "resnet-20",
    "CIFAR ResNet-20, widths 16-32-64 (He et al. 2016)",
    |i, c, d| ImageModel::ResNet(CifarResNet::new(i, 20, c, d))
);
model!(
    "resnet-32",
    "CIFAR ResNet-32, widths 16-32-64 (He et al. 2016)",
    |i, c, d| ImageModel::ResNet(CifarResNet::new(i, 32, c, d))
);

fn conv_k(i: InputShape, k: usize, classes: usize, d: &TrainDevice) -> ImageModel<TrainBackend> {
    ImageModel::ConvNet(ConvNet::new(
        i,
        &conv_k_plan(k).expect("known plan"),
        &[256, 256],
        false,
        false,
        classes,
        d,
    ))
}

fn vgg(i: InputShape, depth: usize, classes: usize, d: &TrainDevice) -> ImageModel<TrainBackend> {
    ImageModel::ConvNet(ConvNet::new(
        i,
        &vgg_plan(depth).expect("known plan"),
        &[],
        true,
        true,
        classes,
        d,
    ))
}
