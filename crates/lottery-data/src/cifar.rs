//! The CIFAR-10/100 binary format: records of label byte(s) then 3072 pixel bytes (R, G, B planes
//! of 32×32). CIFAR-10: `data_batch_1..5.bin` and `test_batch.bin`, one label byte; CIFAR-100:
//! `train.bin` and `test.bin`, a coarse then a fine label byte (the fine label is used).

use std::path::Path;

use crate::error::DataError;
use crate::{ImageDataset, ImageShape, ImageSplit};

const PIXELS: usize = 3 * 32 * 32;
const HINT: &str =
    "no package ships CIFAR here: set data.root to the extracted binary version's folder";

/// Which CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// 10 classes.
    Cifar10,
    /// 100 classes (fine labels).
    Cifar100,
}

impl Variant {
    fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }
    fn classes(self) -> usize {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }
}

/// Decodes the records of one binary file.
pub fn decode(bytes: &[u8], variant: Variant, path: &Path) -> Result<ImageSplit, DataError> {
    let rec = variant.label_bytes() + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            why: format!(
                "{} bytes is not a whole number of {rec}-byte records (truncated or wrong variant?)",
                bytes.len()
            ),
        });
    }
    let mut split = ImageSplit {
        images: Vec::with_capacity(bytes.len() / rec * PIXELS),
        labels: vec![],
    };
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[variant.label_bytes() - 1];
        if label as usize >= variant.classes() {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                why: format!("record {i}: label {label} ≥ {} classes", variant.classes()),
            });
        }
        split.labels.push(label);
        split
            .images
            .extend(r[variant.label_bytes()..].iter().map(|&v| v as f32 / 255.0));
    }
    Ok(split)
}

fn read_files(root: &Path, files: &[&str], variant: Variant) -> Result<ImageSplit, DataError> {
    let mut all = ImageSplit {
        images: vec![],
        labels: vec![],
    };
    for f in files {
        let p = root.join(f);
        let s = decode(&DataError::read(&p, HINT)?, variant, &p)?;
        all.images.extend(s.images);
        all.labels.extend(s.labels);
    }
    Ok(all)
}

/// Loads CIFAR from its binary folder.
pub fn load(root: &Path, variant: Variant) -> Result<ImageDataset, DataError> {
    let (train_files, test_files, name): (&[&str], &[&str], &str) = match variant {
        Variant::Cifar10 => (
            &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            &["test_batch.bin"],
            "cifar-10",
        ),
        Variant::Cifar100 => (&["train.bin"], &["test.bin"], "cifar-100"),
    };
    Ok(ImageDataset {
        name: name.into(),
        shape: ImageShape {
            channels: 3,
            height: 32,
            width: 32,
        },
        classes: variant.classes(),
        train: read_files(root, train_files, variant)?,
        test: read_files(root, test_files, variant)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize, variant: Variant) -> Vec<u8> {
        let mut out = vec![];
        for i in 0..n {
            if variant == Variant::Cifar100 {
                out.push((i % 20) as u8);
            }
            out.push((i % variant.classes()) as u8);
            out.extend((0..PIXELS).map(|p| ((p + i) % 256) as u8));
        }
        out
    }

    #[test]
    fn reads_generated_cifar10_and_cifar100() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ] {
            std::fs::write(d.path().join(f), records(3, Variant::Cifar10)).unwrap();
        }
        let ds = load(d.path(), Variant::Cifar10).unwrap();
        assert_eq!(ds.train.len(), 15);
        assert_eq!(ds.test.labels, vec![0, 1, 2]);
        assert_eq!(ds.train.images[1], 1.0 / 255.0);

        std::fs::write(d.path().join("train.bin"), records(4, Variant::Cifar100)).unwrap();
        std::fs::write(d.path().join("test.bin"), records(2, Variant::Cifar100)).unwrap();
        let ds = load(d.path(), Variant::Cifar100).unwrap();
        assert_eq!(ds.classes, 100);
        assert_eq!(ds.train.labels, vec![0, 1, 2, 3]);
    }

    #[test]
    fn truncated_record_is_named() {
        let d = tempfile::tempdir().unwrap();
        let mut r = records(2, Variant::Cifar100);
        r.pop();
        std::fs::write(d.path().join("train.bin"), r).unwrap();
        let e = load(d.path(), Variant::Cifar100).unwrap_err();
        assert!(
            e.to_string().contains("train.bin") && e.to_string().contains("records"),
            "{e}"
        );
    }
}
