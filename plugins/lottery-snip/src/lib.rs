//! `snip`: connection sensitivity (Lee et al. 2019, "SNIP: Single-shot network pruning based on
//! connection sensitivity"), as Synaptic-Flow implements it: the score of a weight is
//! |∂L/∂θ ⊙ θ| (the gradient of the loss with respect to a multiplicative mask on it), with L the
//! cross-entropy over `batches` training batches, batch norm in `bn_mode` (eval, as the reference
//! scores by default), and the scores divided by their sum. One shot unless `prune.iterations`
//! asks for more rounds.

use lottery_core::plugin::Scorer;
use lottery_core::scores::{combine, divide, total};
use lottery_core::{
    BnMode, LossSpec, MaskSet, ParamValues, PruneContext, PruneError, Pruner, PrunerEntry,
    PrunerOptions,
};
use serde::{Deserialize, Serialize};

/// Options of `snip`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnipOptions {
    /// Training batches the loss is taken over (of the run's batch size).
    pub batches: usize,
    /// Batch-norm statistics while scoring.
    pub bn_mode: BnMode,
}

impl Default for SnipOptions {
    fn default() -> Self {
        Self {
            batches: 1,
            bn_mode: BnMode::Eval,
        }
    }
}

impl PrunerOptions for SnipOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(SnipPruner { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<SnipOptions>("snip", "|∂L/∂θ ⊙ θ|: connection sensitivity at initialisation (Lee et al. 2019)") }

/// The SNIP pruner.
#[derive(Debug, Clone)]
pub struct SnipPruner {
    /// Its options.
    pub options: SnipOptions,
}

impl Scorer for SnipPruner {
    fn score(
        &mut self,
        ctx: &mut PruneContext<'_>,
        current: &MaskSet,
        _round: usize,
    ) -> Result<ParamValues, PruneError> {
        let names: Vec<String> = current.iter().map(|(n, _)| n.clone()).collect();
        let spec = LossSpec::new(self.options.batches, self.options.bn_mode);
        let grads = ctx.target.loss_gradients(&names, current, &spec)?;
        let theta = ctx.target.values(&names)?;
        let mut scores = combine(&grads, &theta, current, |g, w| (g * w).abs())?;
        let sum = total(&scores);
        if sum > 0.0 {
            divide(&mut scores, sum);
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<SnipOptions>("batch = 2");
        lottery_core::plugin::assert_options_contract::<SnipOptions>("bn_mode = \"frozen\"");
    }
}
