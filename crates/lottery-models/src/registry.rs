//! The model registry: `inventory` entries naming an [`Architecture`], which builds the network on
//! any backend.

use lottery_core::backend::TrainBackend;

use crate::arch::{Architecture, conv_k_plan, vgg_plan};

/// Device of the training backend.
pub type TrainDevice = burn::tensor::Device<TrainBackend>;

/// A registered image classifier.
pub struct ModelEntry {
    /// Name used in configs.
    pub name: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Its architecture.
    pub architecture: fn() -> Architecture,
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
    ($name:literal, $summary:literal, $arch:expr) => {
        inventory::submit! {
            ModelEntry { name: $name, summary: $summary, architecture: { fn a() -> Architecture { $arch } a } }
        }
    };
}

model!(
    "lenet-300-100",
    "MLP 300-100 (LeCun et al. 1998; Frankle & Carbin 2019)",
    Architecture::Mlp {
        hidden: vec![300, 100]
    }
);
model!(
    "lenet-5",
    "LeNet-5: conv 6-16, fc 120-84 (LeCun et al. 1998)",
    Architecture::LeNet5
);
model!(
    "conv-2",
    "Conv-2: 2 conv 64, fc 256-256 (Frankle & Carbin 2019)",
    conv_k(2)
);
model!(
    "conv-4",
    "Conv-4: conv 64-64-128-128, fc 256-256 (Frankle & Carbin 2019)",
    conv_k(4)
);
model!(
    "conv-6",
    "Conv-6: conv 64-64-128-128-256-256, fc 256-256 (Frankle & Carbin 2019)",
    conv_k(6)
);
model!(
    "vgg-11",
    "VGG-11 with batch norm, CIFAR form (OpenLTH cifar_vgg_11)",
    vgg(11)
);
model!(
    "vgg-16",
    "VGG-16 with batch norm, CIFAR form (OpenLTH cifar_vgg_16)",
    vgg(16)
);
model!(
    "vgg-19",
    "VGG-19 with batch norm, CIFAR form (OpenLTH cifar_vgg_19)",
    vgg(19)
);
model!(
    "resnet-20",
    "CIFAR ResNet-20, widths 16-32-64 (He et al. 2016)",
    Architecture::ResNet { depth: 20 }
);
model!(
    "resnet-32",
    "CIFAR ResNet-32, widths 16-32-64 (He et al. 2016)",
    Architecture::ResNet { depth: 32 }
);
model!(
    "resnet-56",
    "CIFAR ResNet-56, widths 16-32-64 (He et al. 2016)",
    Architecture::ResNet { depth: 56 }
);

fn conv_k(k: usize) -> Architecture {
    Architecture::ConvNet {
        plan: conv_k_plan(k).expect("known plan"),
        hidden: vec![256, 256],
        batch_norm: false,
        global_pool: false,
    }
}

fn vgg(depth: usize) -> Architecture {
    Architecture::ConvNet {
        plan: vgg_plan(depth).expect("known plan"),
        hidden: vec![],
        batch_norm: true,
        global_pool: true,
    }
}
