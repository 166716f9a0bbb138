//! `synflow`: iterative synaptic flow pruning (Tanaka et al. 2020, "Pruning neural networks without
//! any data by iteratively conserving synaptic flow"), as Synaptic-Flow implements it.
//!
//! Data-free: every parameter and buffer is replaced by its absolute value, batch norm runs in eval
//! mode, the input is all ones of the data's shape, and R is the sum of the output. The score of a
//! weight is |θ ⊙ ∂R/∂θ| (signs restored afterwards: the model is never changed). The shared loop
//! rescores and prunes `prune.iterations` times (100 by default) on the exponential schedule, so a
//! weight's score reflects the weights already pruned.
//!
//! R grows with depth as a product of per-layer gains and overflows f32 on VGG-19 and ResNet-56 at
//! initialisation: with `precision = "auto"` a round that overflows in f32 is recomputed in f64.
//! Scores that would exceed f32 are returned divided by R (one factor for all weights, so the
//! ranking is unchanged).
//!
//! At debug level (`LOTTERY_LOG=info,lottery_synflow=debug`) each round logs R (0 once no path
//! is left), the largest |θ ∂ln R/∂θ| and the alive and zero-scored weights, and, once 64 or
//! fewer weights are left, each layer's sum of |θ ∂ln R/∂θ| (1 in every layer while flow is
//! conserved).

use lottery_core::plugin::Scorer;
use lottery_core::scores::{combine, divide};
use lottery_core::{
    FlatTensor, MaskSet, ParamValues, PathFlow, Precision, PruneContext, PruneError, Pruner,
    PrunerEntry, PrunerOptions,
};
use serde::{Deserialize, Serialize};

/// Precision of the synaptic flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowPrecision {
    /// f32, falling back to f64 when R or its gradient overflows.
    #[default]
    Auto,
    /// Always f32, as the reference (overflow is an error).
    F32,
    /// Always f64.
    F64,
}

/// Options of `synflow`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynflowOptions {
    /// Precision of the flow computation.
    pub precision: FlowPrecision,
}

impl PrunerOptions for SynflowOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(SynflowPruner {
            options: self,
            theta: None,
        })
    }
}

inventory::submit! {
    PrunerEntry::new::<SynflowOptions>("synflow", "|θ ⊙ ∂R/∂θ|, R the flow of the |θ| network: data-free, iterative (Tanaka et al. 2020)")
        .with_default_iterations(100)
}

/// The SynFlow pruner.
#[derive(Debug, Clone)]
pub struct SynflowPruner {
    /// Its options.
    pub options: SynflowOptions,
    /// The weights, read in round 1 (pruning at initialisation does not change them).
    theta: Option<ParamValues>,
}

/// The values of `name` in `values`, with the shape of its mask `m`.
fn operand<'a>(
    values: &'a ParamValues,
    name: &str,
    m: &lottery_core::Mask,
    which: &str,
) -> Result<&'a FlatTensor, PruneError> {
    values
        .get(name)
        .filter(|t| t.shape == m.shape)
        .ok_or_else(|| PruneError::Internal(format!("synflow: {which} lack {name} {:?}", m.shape)))
}

/// Whether R is a positive finite number.
fn flow_ok(flow: &PathFlow) -> bool {
    flow.flow.is_finite() && flow.flow > 0.0
}

/// |θ ⊙ ∂ln R/∂θ| of the entries alive in `current` (0 where pruned) and the largest of them, in
/// one pass over the weights and gradients; `None` when any gradient (pruned entries included) is
/// not finite.
fn log_scores(
    theta: &ParamValues,
    flow: &PathFlow,
    current: &MaskSet,
) -> Result<Option<(ParamValues, f32)>, PruneError> {
    let mut largest = 0.0f32;
    let mut scores = ParamValues::new();
    for (name, m) in current.iter() {
        let w = operand(theta, name, m, "the weights")?;
        let g = operand(&flow.log_gradients, name, m, "the gradients")?;
        if !g.values.iter().all(|x| x.is_finite()) {
            return Ok(None);
        }
        let values: Vec<f32> = w
            .values
            .iter()
            .zip(&g.values)
            .zip(&m.keep)
            .map(|((&w, &g), &keep)| {
                if keep {
                    let s = (w as f64 * g as f64).abs() as f32;
                    largest = largest.max(s);
                    s
                } else {
                    0.0
                }
            })
            .collect();
        scores.insert(name.clone(), FlatTensor::new(m.shape.clone(), values));
    }
    Ok(Some((scores, largest)))
}

impl Scorer for SynflowPruner {
    fn score(
        &mut self,
        ctx: &mut PruneContext<'_>,
        current: &MaskSet,
        round: usize,
    ) -> Result<ParamValues, PruneError> {
        let names: Vec<String> = current.iter().map(|(n, _)| n.clone()).collect();
        if round <= 1 || self.theta.is_none() {
            self.theta = Some(ctx.target.values(&names)?);
        }
        let theta = self.theta.as_ref().expect("read above");
        let first = match self.options.precision {
            FlowPrecision::F64 => Precision::F64,
            FlowPrecision::F32 | FlowPrecision::Auto => Precision::F32,
        };
        let mut flow = ctx.target.path_flow(&names, current, first)?;
        let mut scored = if flow_ok(&flow) {
            log_scores(theta, &flow, current)?
        } else {
            None
        };
        if scored.is_none() && self.options.precision == FlowPrecision::Auto {
            // f32 overflowed (or underflowed to R = 0): the same round in f64.
            flow = ctx.target.path_flow(&names, current, Precision::F64)?;
            scored = if flow_ok(&flow) {
                log_scores(theta, &flow, current)?
            } else {
                None
            };
        }
        if flow.flow == 0.0 {
            // No path carries flow (a layer has no weight left, or no kept weights connect): every
            // score is 0 and the shared top-k keeps the requested count by position.
            tracing::debug!(round, flow = 0.0, "synflow: no path left, every score is 0");
            return combine(theta, theta, current, |_, _| 0.0);
        }
        let Some((mut scores, largest)) = scored else {
            return Err(PruneError::Internal(format!(
                "synflow: the flow R = {} is not a positive finite number{}",
                flow.flow,
                if self.options.precision == FlowPrecision::F32 {
                    " (f32 overflowed; set precision = \"auto\" or \"f64\")"
                } else {
                    ""
                }
            )));
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            let alive = current.kept();
            let zero: usize = scores
                .iter()
                .map(|(name, t)| {
                    let keep = &current.get(name).expect("scored from the mask").keep;
                    t.values
                        .iter()
                        .zip(keep)
                        .filter(|(s, k)| **k && **s == 0.0)
                        .count()
                })
                .sum();
            tracing::debug!(
                round,
                flow = flow.flow,
                largest,
                alive,
                zero,
                "synflow: R, the largest |θ ∂ln R/∂θ|, alive weights and how many of them score 0"
            );
            if alive <= 64 {
                // Conservation of flow: each layer's log scores sum to 1.
                let layers: Vec<String> = scores
                    .iter()
                    .map(|(name, t)| {
                        let kept = current.get(name).expect("scored from the mask").kept();
                        let sum: f64 = t.values.iter().map(|&v| v as f64).sum();
                        format!("{name}: {kept} alive, sum {sum:.4}")
                    })
                    .collect();
                tracing::debug!("synflow round {round}: {}", layers.join("; "));
            }
        }
        if largest as f64 * flow.flow < f32::MAX as f64 / 16.0 {
            divide(&mut scores, 1.0 / flow.flow);
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<SynflowOptions>("iterations = 100");
    }
}
