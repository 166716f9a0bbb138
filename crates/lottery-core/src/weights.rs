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
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not safetensors, or a tensor of the wrong dtype.
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        why: String,
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

/// Reads f32 (or f64, f16-free) weights from a safetensors file.
pub fn read(path: &Path) -> Result<ParamValues, WeightsError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: p.clone(),
        source,
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
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            other => {
                return Err(WeightsError::Format {
                    path: p.clone(),
                    why: format!("tensor `{name}` has dtype {other:?}; f32 or f64 expected"),
                });
            }
        };
        out.insert(name, FlatTensor::new(view.shape().to_vec(), values));
    }
    Ok(out)
}
