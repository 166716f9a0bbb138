//! Binary masks over named parameters, and their safetensors form.
//!
//! A mask is data, not a model change: `MaskSet` maps PyTorch parameter names to binary masks in
//! PyTorch layout. Structured masks (channels, graph edges) are masks too: they are stored expanded to
//! the parameter they gate, and a structured pruner may keep its own coarse view alongside.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::MaskError;
use crate::params::ParamValues;
use crate::tensorfile::{self, RawTensor};

/// Format tag written into the safetensors metadata.
pub const MASK_FORMAT: &str = "lottery-mask/1";

/// A binary mask for one parameter: `true` keeps the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mask {
    /// Shape, PyTorch layout.
    pub shape: Vec<usize>,
    /// Row-major keep flags.
    pub keep: Vec<bool>,
}

impl Mask {
    /// A mask that keeps everything.
    pub fn ones(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            keep: vec![true; n],
        }
    }

    /// Number of entries.
    pub fn numel(&self) -> usize {
        self.keep.len()
    }

    /// Number of kept entries.
    pub fn kept(&self) -> usize {
        self.keep.iter().filter(|&&k| k).count()
    }

    /// Fraction kept.
    pub fn density(&self) -> f64 {
        if self.keep.is_empty() {
            1.0
        } else {
            self.kept() as f64 / self.numel() as f64
        }
    }

    /// Entries as 0/1 floats, for multiplying into weights.
    pub fn as_f32(&self) -> Vec<f32> {
        self.keep
            .iter()
            .map(|&k| if k { 1.0 } else { 0.0 })
            .collect()
    }

    /// Fraction of entries where two masks of the same shape differ (normalised Hamming distance).
    pub fn distance(&self, other: &Mask) -> f64 {
        assert_eq!(self.shape, other.shape, "mask shapes differ");
        if self.keep.is_empty() {
            return 0.0;
        }
        let diff = self
            .keep
            .iter()
            .zip(&other.keep)
            .filter(|(a, b)| a != b)
            .count();
        diff as f64 / self.numel() as f64
    }
}

/// Masks of a model's prunable parameters, keyed by PyTorch name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskSet {
    masks: BTreeMap<String, Mask>,
}

/// Per-parameter count of a mask set, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDensity {
    /// Parameter name.
    pub name: String,
    /// Shape, PyTorch layout.
    pub shape: Vec<usize>,
    /// Entries.
    pub numel: usize,
    /// Kept entries.
    pub kept: usize,
}

impl MaskSet {
    /// An empty set (nothing is masked).
    pub fn new() -> Self {
        Self::default()
    }

    /// All-ones masks for the given parameters.
    pub fn dense<'a>(params: impl IntoIterator<Item = (&'a str, &'a [usize])>) -> Self {
        Self {
            masks: params
                .into_iter()
                .map(|(n, s)| (n.to_string(), Mask::ones(s.to_vec())))
                .collect(),
        }
    }

    /// Inserts or replaces the mask of `name`.
    pub fn insert(&mut self, name: impl Into<String>, mask: Mask) {
        self.masks.insert(name.into(), mask);
    }

    /// Removes and returns the mask of `name`.
    pub fn take(&mut self, name: &str) -> Option<Mask> {
        self.masks.remove(name)
    }

    /// The mask of `name`.
    pub fn get(&self, name: &str) -> Option<&Mask> {
        self.masks.get(name)
    }

    /// Iterates in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Mask)> {
        self.masks.iter()
    }

    /// Number of masked parameters.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether no parameter is masked.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Total entries under masks.
    pub fn numel(&self) -> usize {
        self.masks.values().map(Mask::numel).sum()
    }

    /// Total kept entries.
    pub fn kept(&self) -> usize {
        self.masks.values().map(Mask::kept).sum()
    }

    /// Fraction kept over all masked parameters.
    pub fn density(&self) -> f64 {
        let n = self.numel();
        if n == 0 {
            1.0
        } else {
            self.kept() as f64 / n as f64
        }
    }

    /// Per-parameter counts, in name order.
    pub fn layers(&self) -> Vec<LayerDensity> {
        self.masks
            .iter()
            .map(|(name, m)| LayerDensity {
                name: name.clone(),
                shape: m.shape.clone(),
                numel: m.numel(),
                kept: m.kept(),
            })
            .collect()
    }

    /// Names of parameters whose every entry is pruned (layer collapse).
    pub fn collapsed(&self) -> Vec<String> {
        self.masks
            .iter()
            .filter(|(_, m)| m.numel() > 0 && m.kept() == 0)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Element-wise AND with another set over the same names.
    pub fn intersect(&self, other: &MaskSet) -> MaskSet {
        let mut out = self.clone();
        for (name, m) in out.masks.iter_mut() {
            if let Some(o) = other.get(name) {
                for (a, b) in m.keep.iter_mut().zip(&o.keep) {
                    *a = *a && *b;
                }
            }
        }
        out
    }

    /// Zeroes the masked-out entries of `values` in place (names without a mask are untouched).
    pub fn apply(&self, values: &mut ParamValues) {
        for (name, t) in values.iter_mut() {
            if let Some(m) = self.masks.get(name) {
                for (v, &k) in t.values.iter_mut().zip(&m.keep) {
                    if !k {
                        *v = 0.0;
                    }
                }
            }
        }
    }

    /// Serialises to safetensors bytes: one u8 tensor per parameter, with `metadata` (plus the
    /// format tag) in the header. `key_suffix` is appended to each key (`"_mask"` gives the keys that
    /// `torch.nn.utils.prune` uses).
    pub fn to_safetensors(&self, metadata: &BTreeMap<String, String>, key_suffix: &str) -> Vec<u8> {
        let tensors: BTreeMap<String, RawTensor> = self
            .masks
            .iter()
            .map(|(n, m)| {
                let t = RawTensor {
                    dtype: "U8",
                    shape: m.shape.clone(),
                    bytes: m.keep.iter().map(|&k| k as u8).collect(),
                };
                (format!("{n}{key_suffix}"), t)
            })
            .collect();
        let mut meta = metadata.clone();
        meta.insert("format".into(), MASK_FORMAT.into());
        tensorfile::serialize(&tensors, &meta)
    }

    /// Reads masks from safetensors bytes. Accepts plain parameter keys, `<name>_mask` keys
    /// (`torch.nn.utils.prune`) and `<module>.parametrizations.<param>.0.mask` keys (`torch.ao`);
    /// u8, bool and float tensors (non-zero keeps).
    pub fn from_safetensors(bytes: &[u8], path: &Path) -> Result<Self, MaskError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| MaskError::Format {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let mut masks = BTreeMap::new();
        for (key, view) in st.tensors() {
            let name = canonical_mask_key(&key);
            let data = view.data();
            let keep: Vec<bool> = match view.dtype() {
                Dtype::U8 | Dtype::BOOL | Dtype::I8 => data.iter().map(|&b| b != 0).collect(),
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) != 0.0)
                    .collect(),
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| c.iter().any(|&b| b != 0))
                    .collect(),
                other => {
                    return Err(MaskError::Tensor {
                        path: path.to_path_buf(),
                        key,
                        why: format!(
                            "dtype {other:?} is not a mask dtype (u8, bool, i8, i64, f32)"
                        ),
                    });
                }
            };
            masks.insert(
                name,
                Mask {
                    shape: view.shape().to_vec(),
                    keep,
                },
            );
        }
        Ok(Self { masks })
    }

    /// Writes the set to a safetensors file atomically.
    pub fn save(
        &self,
        path: &Path,
        metadata: &BTreeMap<String, String>,
        key_suffix: &str,
    ) -> Result<(), MaskError> {
        crate::fsutil::write_atomic(path, &self.to_safetensors(metadata, key_suffix)).map_err(
            |source| MaskError::Io {
                path: path.to_path_buf(),
                cause: source,
            },
        )
    }

    /// Reads a safetensors mask file.
    pub fn load(path: &Path) -> Result<Self, MaskError> {
        let bytes = std::fs::read(path).map_err(|source| MaskError::Io {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Self::from_safetensors(&bytes, path)
    }
}

/// Maps the key conventions of PyTorch pruning utilities onto plain parameter names.
fn canonical_mask_key(key: &str) -> String {
    if let Some(base) = key.strip_suffix("_mask") {
        return base.to_string();
    }
    if let Some((module, rest)) = key.split_once(".parametrizations.")
        && let Some(param) = rest.strip_suffix(".0.mask")
    {
        return format!("{module}.{param}");
    }
    key.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MaskSet {
        let mut s = MaskSet::new();
        s.insert(
            "a.weight",
            Mask {
                shape: vec![2, 3],
                keep: vec![true, false, true, false, false, true],
            },
        );
        s.insert(
            "b.weight",
            Mask {
                shape: vec![2],
                keep: vec![false, false],
            },
        );
        s
    }

    #[test]
    fn counts_and_collapse() {
        let s = sample();
        assert_eq!(s.numel(), 8);
        assert_eq!(s.kept(), 3);
        assert_eq!(s.collapsed(), vec!["b.weight".to_string()]);
    }

    #[test]
    fn safetensors_round_trip_with_each_key_convention() {
        let s = sample();
        let meta = BTreeMap::from([("method".to_string(), "test".to_string())]);
        for suffix in ["", "_mask"] {
            let bytes = s.to_safetensors(&meta, suffix);
            let back = MaskSet::from_safetensors(&bytes, Path::new("x")).unwrap();
            assert_eq!(back, s);
            let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
            let m = header.metadata().clone().unwrap();
            assert_eq!(m["format"], MASK_FORMAT);
            assert_eq!(m["method"], "test");
        }
        assert_eq!(
            canonical_mask_key("fc.parametrizations.weight.0.mask"),
            "fc.weight"
        );
    }

    #[test]
    fn distance_of_identical_and_complementary() {
        let a = Mask {
            shape: vec![4],
            keep: vec![true, false, true, true],
        };
        let b = Mask {
            shape: vec![4],
            keep: a.keep.iter().map(|k| !k).collect(),
        };
        assert_eq!(a.distance(&a), 0.0);
        assert_eq!(a.distance(&b), 1.0);
    }
}
