//! Named parameters, the model-independent view every pruner works on.
//!
//! Parameters are named as PyTorch names them (`features.3.weight`, `blocks.0.conv1.weight`) and
//! their values are laid out as PyTorch lays them out (a linear weight is `[out, in]`), so masks and
//! scores exchanged as safetensors load in PyTorch unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a parameter is, which decides whether it may be pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamKind {
    /// Weight of a convolution.
    ConvWeight,
    /// Weight of a fully connected layer.
    LinearWeight,
    /// Bias of a convolution or linear layer.
    Bias,
    /// Scale or shift of a normalisation layer (BatchNorm γ/β, LayerNorm).
    Norm,
    /// Running statistics of a batch norm (never trained, never pruned).
    NormStatistic,
    /// Embedding table.
    Embedding,
    /// Anything else.
    Other,
}

/// One named parameter of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// PyTorch-style dotted name.
    pub name: String,
    /// Shape in PyTorch layout.
    pub shape: Vec<usize>,
    /// What kind of parameter it is.
    pub kind: ParamKind,
    /// Whether it belongs to a residual shortcut (a 1×1 projection), which the
    /// pruning-at-initialisation references leave unpruned by default.
    pub shortcut: bool,
}

impl ParamInfo {
    /// Number of entries.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Which parameters a pruner may touch. The defaults follow Synaptic-Flow: weights of
/// convolutions and linear layers only; biases, batch norm and residual shortcuts stay dense.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrunableRule {
    /// Prune biases too.
    pub prune_bias: bool,
    /// Prune batch-norm scales and shifts too.
    pub prune_batchnorm: bool,
    /// Prune residual shortcut projections too.
    pub prune_residual: bool,
    /// Parameters never pruned, by PyTorch name or glob pattern (`fc.weight`,
    /// `features.*.weight`): open_lth's `pruning_layers_to_ignore`.
    pub ignore: Vec<String>,
}

impl PrunableRule {
    /// Whether `p` is prunable under this rule.
    pub fn admits(&self, p: &ParamInfo) -> bool {
        if p.shortcut && !self.prune_residual {
            return false;
        }
        if self.ignores(&p.name) {
            return false;
        }
        match p.kind {
            ParamKind::ConvWeight | ParamKind::LinearWeight => true,
            ParamKind::Bias => self.prune_bias,
            ParamKind::Norm => self.prune_batchnorm,
            ParamKind::NormStatistic | ParamKind::Embedding | ParamKind::Other => false,
        }
    }
}

impl PrunableRule {
    /// Whether `name` matches one of the `ignore` patterns (an exact name, or a glob).
    pub fn ignores(&self, name: &str) -> bool {
        self.ignore
            .iter()
            .any(|g| g == name || glob::Pattern::new(g).is_ok_and(|pattern| pattern.matches(name)))
    }

    /// The `ignore` patterns that match none of `names` (a typo would otherwise prune the layer
    /// it meant to keep, silently).
    pub fn unmatched_ignores<'a>(&'a self, names: &[String]) -> Vec<&'a str> {
        self.ignore
            .iter()
            .filter(|g| {
                let one = PrunableRule {
                    ignore: vec![(*g).clone()],
                    ..PrunableRule::default()
                };
                !names.iter().any(|n| one.ignores(n))
            })
            .map(String::as_str)
            .collect()
    }
}

/// A flat f32 tensor in PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatTensor {
    /// Shape, PyTorch layout.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl FlatTensor {
    /// A tensor of the given shape and values; panics if they disagree.
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape {shape:?} vs {} values",
            values.len()
        );
        Self { shape, values }
    }
}

/// Values of named parameters (weights, gradients, scores), keyed by PyTorch name, in name order.
pub type ParamValues = BTreeMap<String, FlatTensor>;

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(name: &str) -> ParamInfo {
        ParamInfo {
            name: name.into(),
            shape: vec![2, 2],
            kind: ParamKind::LinearWeight,
            shortcut: false,
        }
    }

    #[test]
    fn ignored_names_and_globs_are_never_prunable() {
        let rule = PrunableRule {
            ignore: vec!["fc.weight".into(), "features.*.weight".into()],
            ..PrunableRule::default()
        };
        assert!(!rule.admits(&weight("fc.weight")));
        assert!(!rule.admits(&weight("features.3.weight")));
        assert!(rule.admits(&weight("fc_layers.0.weight")));
        let names: Vec<String> = ["fc.weight", "fc_layers.0.weight"]
            .map(String::from)
            .to_vec();
        assert_eq!(rule.unmatched_ignores(&names), ["features.*.weight"]);
    }
}
