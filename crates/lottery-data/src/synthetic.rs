//! A generated image set for fast tests: each class has a seeded random prototype image, and each
//! example is its class prototype plus Gaussian-like noise. Learnable in a few steps, never a
//! stand-in for a real dataset.

use rand::{RngExt, SeedableRng};

use crate::{ImageDataset, ImageShape, ImageSplit};

/// Generates `train` + `test` examples of `shape` over `classes` classes from `seed`.
pub fn generate(
    seed: u64,
    shape: ImageShape,
    classes: usize,
    train: usize,
    test: usize,
    noise: f32,
) -> ImageDataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.numel();
    let protos: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..n).map(|_| rng.random::<f32>()).collect())
        .collect();
    let mut make = |count: usize| {
        let mut split = ImageSplit {
            images: Vec::with_capacity(count * n),
            labels: Vec::with_capacity(count),
        };
        for i in 0..count {
            let c = i % classes;
            split.labels.push(c as u8);
            // Sum of uniforms: cheap, bounded, roughly normal noise.
            split.images.extend(protos[c].iter().map(|&p| {
                let z: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
                (p + noise * z).clamp(0.0, 1.0)
            }));
        }
        split
    };
    let train = make(train);
    let test = make(test);
    ImageDataset {
        name: "synthetic".into(),
        shape,
        classes,
        train,
        test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data() {
        let s = ImageShape {
            channels: 1,
            height: 8,
            width: 8,
        };
        assert_eq!(generate(3, s, 4, 20, 8, 0.3), generate(3, s, 4, 20, 8, 0.3));
        assert_ne!(generate(3, s, 4, 20, 8, 0.3), generate(4, s, 4, 20, 8, 0.3));
    }
}
