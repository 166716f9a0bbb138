//! Batching: a shuffle per (seed, epoch), optional random crop (padding 4) and horizontal flip.

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::{ImageShape, ImageSplit};

/// One mini-batch on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[n, C, H, W]` pixels.
    pub images: Vec<f32>,
    /// `n` labels.
    pub labels: Vec<i64>,
    /// Examples in the batch.
    pub len: usize,
}

/// The batches of one epoch. `shuffle_seed` `None` keeps file order (evaluation); otherwise the
/// order is a permutation drawn from `(seed, epoch)`, the same on every run. The last batch may be
/// smaller.
pub fn batches(
    split: &ImageSplit,
    shape: ImageShape,
    batch_size: usize,
    shuffle_seed: Option<(u64, u64)>,
    augment: bool,
) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..split.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        shuffle_seed.map_or(0, |(s, e)| s.wrapping_mul(1_000_003).wrapping_add(e)),
    );
    if shuffle_seed.is_some() {
        order.shuffle(&mut rng);
    }
    let n = shape.numel();
    order
        .chunks(batch_size)
        .map(|idx| {
            let mut images = Vec::with_capacity(idx.len() * n);
            for &i in idx {
                let ex = &split.images[i * n..(i + 1) * n];
                if augment {
                    let dy = rng.random_range(0..=8) as isize - 4;
                    let dx = rng.random_range(0..=8) as isize - 4;
                    let flip = rng.random::<bool>();
                    images.extend(crop_flip(ex, shape, dy, dx, flip));
                } else {
                    images.extend_from_slice(ex);
                }
            }
            Batch {
                images,
                labels: idx.iter().map(|&i| split.labels[i] as i64).collect(),
                len: idx.len(),
            }
        })
        .collect()
}

/// Shifts an example by (dy, dx) with zero fill (a crop of the 4-padded image), then mirrors it.
pub fn crop_flip(ex: &[f32], shape: ImageShape, dy: isize, dx: isize, flip: bool) -> Vec<f32> {
    let (h, w) = (shape.height as isize, shape.width as isize);
    let mut out = vec![0.0; ex.len()];
    for c in 0..shape.channels {
        let plane = c * shape.height * shape.width;
        for y in 0..h {
            let sy = y + dy;
            if sy < 0 || sy >= h {
                continue;
            }
            for x in 0..w {
                let sx0 = if flip { w - 1 - x } else { x };
                let sx = sx0 + dx;
                if sx < 0 || sx >= w {
                    continue;
                }
                out[plane + (y * w + x) as usize] = ex[plane + (sy * w + sx) as usize];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize) -> (ImageSplit, ImageShape) {
        let shape = ImageShape {
            channels: 1,
            height: 2,
            width: 3,
        };
        (
            ImageSplit {
                images: (0..n * 6).map(|v| v as f32).collect(),
                labels: (0..n).map(|i| i as u8).collect(),
            },
            shape,
        )
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let (s, shape) = split(10);
        let a = batches(&s, shape, 4, Some((1, 0)), false);
        let b = batches(&s, shape, 4, Some((1, 0)), false);
        let c = batches(&s, shape, 4, Some((1, 1)), false);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.iter().map(|b| b.len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut labels: Vec<i64> = a.iter().flat_map(|b| b.labels.clone()).collect();
        labels.sort();
        assert_eq!(labels, (0..10).collect::<Vec<_>>());
        // Images travel with their labels.
        for b in &a {
            for (k, &l) in b.labels.iter().enumerate() {
                assert_eq!(b.images[k * 6], (l * 6) as f32);
            }
        }
    }

    #[test]
    fn crop_and_flip_move_pixels_as_expected() {
        let shape = ImageShape {
            channels: 1,
            height: 2,
            width: 3,
        };
        let ex = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            crop_flip(&ex, shape, 0, 0, true),
            vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]
        );
        assert_eq!(
            crop_flip(&ex, shape, 0, 1, false),
            vec![2.0, 3.0, 0.0, 5.0, 6.0, 0.0]
        );
        assert_eq!(
            crop_flip(&ex, shape, 1, 0, false),
            vec![4.0, 5.0, 6.0, 0.0, 0.0, 0.0]
        );
    }
}
