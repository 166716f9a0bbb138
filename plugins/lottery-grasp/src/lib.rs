//! `grasp`: gradient signal preservation (Wang et al. 2020, "Picking winning tickets before
//! training by preserving gradient flow"), as Synaptic-Flow implements it.
//!
//! With L the cross-entropy of `logits / temperature` (temperature 200) over `batches` training
//! batches and g = ∇L, the paper scores S(−θ) = −θ ⊙ Hg and removes the weights of highest S.
//! Here higher scores are kept, so the score is θ ⊙ Hg = −S (what the reference computes before
//! keeping its top), divided by |Σ θ ⊙ Hg| + 1e-10. Hg comes from
//! [`PruneTarget::loss_hessian_vector`](lottery_core::PruneTarget::loss_hessian_vector): the
//! Hessian autograd's double backward gives (ReLU'' = 0, pooling routes fixed). burn 0.21 cannot
//! differentiate twice through linear and pooling layers, so the image target takes a central
//! difference of gradients with every ReLU pattern and pooling route frozen at θ, in f64 by default
//! (agreement with exact products ~1e-8).

use lottery_core::plugin::Scorer;
use lottery_core::scores::{combine, divide, masked, total};
use lottery_core::{
    BnMode, LossSpec, MaskSet, ParamValues, Precision, PruneContext, PruneError, Pruner,
    PrunerEntry, PrunerOptions,
};
use serde::{Deserialize, Serialize};

/// Options of `grasp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraspOptions {
    /// Training batches the loss is taken over (of the run's batch size).
    pub batches: usize,
    /// Batch-norm statistics while scoring.
    pub bn_mode: BnMode,
    /// Logits are divided by this (the reference's 200).
    pub temperature: f64,
    /// Precision of the gradient and the Hessian-gradient product.
    pub precision: Precision,
}

impl Default for GraspOptions {
    fn default() -> Self {
        Self {
            batches: 1,
            bn_mode: BnMode::Eval,
            temperature: 200.0,
            precision: Precision::F64,
        }
    }
}

impl PrunerOptions for GraspOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(GraspPruner { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<GraspOptions>("grasp", "θ ⊙ Hg: gradient signal preservation at initialisation (Wang et al. 2020)") }

/// The GraSP pruner.
#[derive(Debug, Clone)]
pub struct GraspPruner {
    /// Its options.
    pub options: GraspOptions,
}

impl Scorer for GraspPruner {
    fn score(
        &mut self,
        ctx: &mut PruneContext<'_>,
        current: &MaskSet,
        _round: usize,
    ) -> Result<ParamValues, PruneError> {
        if self.options.temperature <= 0.0 || !self.options.temperature.is_finite() {
            return Err(PruneError::Internal(format!(
                "grasp: temperature must be positive, got {}",
                self.options.temperature
            )));
        }
        let names: Vec<String> = current.iter().map(|(n, _)| n.clone()).collect();
        let spec = LossSpec {
            batches: self.options.batches,
            bn_mode: self.options.bn_mode,
            temperature: self.options.temperature,
            precision: self.options.precision,
        };
        // g of the surviving weights only: the reference's gradient with respect to θ of θ ⊙ m.
        let g = masked(&ctx.target.loss_gradients(&names, current, &spec)?, current)?;
        let hg = ctx.target.loss_hessian_vector(&names, current, &spec, &g)?;
        let theta = ctx.target.values(&names)?;
        let mut scores = combine(&theta, &hg, current, |w, h| w * h)?;
        let norm = total(&scores).abs() + 1e-10;
        divide(&mut scores, norm);
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<GraspOptions>("temp = 2.0");
        lottery_core::plugin::assert_options_contract::<GraspOptions>("precision = \"f16\"");
    }
}
