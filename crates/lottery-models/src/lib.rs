//! The networks of the lottery-ticket papers as burn modules: LeNet-300-100, LeNet-5, Conv-2/4/6,
//! VGG-11/16/19 with batch norm, CIFAR ResNet-20/32. Parameters are named as PyTorch (OpenLTH) names
//! them, initialised from a seed independently of burn's global RNG, and read, written and masked
//! through [`view`].

pub mod arch;
pub mod channel_masks;
pub mod channels;
pub mod init;
pub mod layers;
pub mod registry;
pub mod switches;
pub mod view;

use std::collections::BTreeMap;

pub use arch::{Architecture, ImageModel, InputShape, Plan};
pub use registry::{ModelEntry, TrainDevice, find_model, models};
pub use switches::Switches;
pub use view::{DeviceMasks, TorchNaming, ViewEntry, ViewError};

use burn::prelude::Backend;
use lottery_core::backend::TrainBackend;

/// How a model's `Vec` stacks map to PyTorch `nn.Sequential` indices, detached from the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Naming {
    seq: BTreeMap<String, Vec<usize>>,
}

impl TorchNaming for Naming {
    fn seq_index(&self, field: &str, index: usize) -> Option<usize> {
        self.seq.get(field).and_then(|v| v.get(index).copied())
    }
}

impl<B: Backend> ImageModel<B> {
    /// The model's PyTorch naming.
    pub fn naming(&self) -> Naming {
        let mut seq = BTreeMap::new();
        if let ImageModel::ConvNet(n) = self {
            seq.insert(
                "layers".to_string(),
                (0..n.layers.len()).map(|i| n.torch_index(i)).collect(),
            );
        }
        Naming { seq }
    }
}

/// Builds a registered model and initialises it from `seed`, weights drawn as `init` says.
pub fn build(
    name: &str,
    input: InputShape,
    classes: usize,
    seed: u64,
    init: lottery_core::config::WeightInit,
    device: &TrainDevice,
) -> Result<ImageModel<TrainBackend>, String> {
    build_as(name, input, classes, seed, init, Default::default(), device)
}

/// [`build`] with biases as `bias` says.
pub fn build_as(
    name: &str,
    input: InputShape,
    classes: usize,
    seed: u64,
    init: lottery_core::config::WeightInit,
    bias: lottery_core::config::BiasLayout,
    device: &TrainDevice,
) -> Result<ImageModel<TrainBackend>, String> {
    let entry = find_model(name)?;
    let model = (entry.architecture)().build_with::<TrainBackend>(input, classes, bias, device);
    let naming = model.naming();
    init::seeded_init_as::<TrainBackend, _>(model, &naming, seed, init).map_err(|e| e.to_string())
}
