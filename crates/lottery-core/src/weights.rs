//! Weight files exchanged with PyTorch: safetensors of f32 tensors keyed by PyTorch names, laid
//! out as PyTorch lays them out.

use std::collections::BTreeMap;
use std::path::Path;

use crate::tensorfile::{self, RawTensor};
use crate::{FlatTensor, ParamValues};
use safetensors::{Dtype, SafeTensors};

/// Errors reading a weight file, naming the file and the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// I/O.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        cause: std::io::Error,
    },
    /// Not safetensors, or a tensor of the wrong dtype.
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// A value that is NaN or infinite (or an f64 beyond the f32 range).
    #[error("{path}: tensor {tensor} holds {value} at index {index}")]
    NonFinite {
        /// The file.
        path: String,
        /// The tensor's name.
        tensor: String,
        /// Flat (row-major) index of the first such value.
        index: usize,
        /// The value as written (`NaN`, `inf`, `-inf`, or an f64 too large for f32).
        value: String,
    },
}

/// Serialises weights (f32) with metadata, deterministically.
pub fn to_bytes(values: &ParamValues, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let tensors: BTreeMap<String, RawTensor> = values
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                RawTensor {
                    dtype: "F32",
                    shape: t.shape.clone(),
                    bytes: t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                },
            )
        })
        .collect();
    tensorfile::serialize(&tensors, metadata)
}

/// Reads f32 (or f64, f16-free) weights from a safetensors file. A NaN or infinite value (or an
/// f64 beyond the f32 range) is refused, naming the tensor and its flat index.
pub fn read(path: &Path) -> Result<ParamValues, WeightsError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: p.clone(),
        cause: source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| WeightsError::Format {
        path: p.clone(),
        why: format!("not safetensors: {e}"),
    })?;
    let mut out = ParamValues::new();
    for (name, view) in st.tensors() {
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => {
                let wide: Vec<f64> = view
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                if let Some((index, v)) = wide
                    .iter()
                    .enumerate()
                    .find(|(_, v)| !(**v as f32).is_finite())
                {
                    return Err(WeightsError::NonFinite {
                        path: p.clone(),
                        tensor: name,
                        index,
                        value: v.to_string(),
                    });
                }
                wide.into_iter().map(|v| v as f32).collect()
            }
            other => {
                return Err(WeightsError::Format {
                    path: p.clone(),
                    why: format!("tensor `{name}` has dtype {other:?}; f32 or f64 expected"),
                });
            }
        };
        if let Some((index, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(WeightsError::NonFinite {
                path: p.clone(),
                tensor: name,
                index,
                value: v.to_string(),
            });
        }
        out.insert(name, FlatTensor::new(view.shape().to_vec(), values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(values: Vec<f32>) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.safetensors");
        let weights = ParamValues::from([
            (
                "fc0.weight".to_string(),
                FlatTensor::new(vec![2], vec![1.0, -2.0]),
            ),
            (
                "fc1.weight".to_string(),
                FlatTensor::new(vec![4, 5], values),
            ),
        ]);
        std::fs::write(&path, to_bytes(&weights, &BTreeMap::new())).unwrap();
        (dir, path)
    }

    #[test]
    fn finite_weights_read_back() {
        let values: Vec<f32> = (0..20).map(|i| i as f32 * 0.5).collect();
        let (_dir, path) = file_with(values.clone());
        let read = read(&path).unwrap();
        assert_eq!(read["fc1.weight"].values, values);
        assert_eq!(read["fc1.weight"].shape, vec![4, 5]);
    }

    #[test]
    fn non_finite_values_are_refused_naming_tensor_and_index() {
        for (bad, shown) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "inf"),
            (f32::NEG_INFINITY, "-inf"),
        ] {
            let mut values = vec![0.25f32; 20];
            values[17] = bad;
            values[19] = bad;
            let (_dir, path) = file_with(values);
            let e = read(&path).unwrap_err();
            assert!(
                matches!(&e, WeightsError::NonFinite { tensor, index: 17, .. } if tensor == "fc1.weight"),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(
                text.ends_with(&format!(
                    "init.safetensors: tensor fc1.weight holds {shown} at index 17"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn f64_beyond_the_f32_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let tensors = BTreeMap::from([(
            "w".to_string(),
            RawTensor {
                dtype: "F64",
                shape: vec![3],
                bytes: [1.0f64, 1e300, 2.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            },
        )]);
        std::fs::write(&path, tensorfile::serialize(&tensors, &BTreeMap::new())).unwrap();
        let e = read(&path).unwrap_err();
        assert!(
            matches!(&e, WeightsError::NonFinite { index: 1, .. }),
            "{e:?}"
        );
    }
}
