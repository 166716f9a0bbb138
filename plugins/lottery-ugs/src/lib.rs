//! `ugs`: the unified graph lottery ticket (Chen et al. 2021, reference
//! VITA-Group/Unified-LTH-GNN, `main_pruning_imp.py`). Each round trains the GCN from θ₀ together
//! with a real-valued mask on every weight and on every edge (both starting from the round's
//! binary masks, L1 penalties `graph_l1` and `weight_l1`), takes the soft masks of the epoch with
//! the best validation accuracy, and prunes the `graph_rate` of the remaining edges and the
//! `weight_rate` of the remaining weights with the smallest |mask| (one global threshold over the
//! weights). Rounds repeat until the weights reach the run's density (the last round lands on it
//! exactly, and the graph on `graph_density`); the ticket is the masks on θ₀, which the run then
//! trains. Progress is saved after every round in the run's work directory; a round's file that
//! does not load is set aside (`<file>.damaged-<unix seconds>`) and the run resumes from the round before it (or
//! starts over).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use lottery_core::graph::{UGS_GRAPH_RATE, UGS_WEIGHT_RATE, edge_count, keep_top_edges};
use lottery_core::plugin::family_mut;
use lottery_core::progress::{load_mask_progress, save_mask_progress};
use lottery_core::topk::top_k_count;
use lottery_core::{
    Density, FlatTensor, GRAPH_MASK, Mask, MaskSet, ParamValues, PruneContext, PruneError, Pruner,
    PrunerEntry, PrunerOptions,
};
use lottery_gcn::{GcnTask, JointMaskSpec};
use serde::{Deserialize, Serialize};

/// Options of `ugs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UgsOptions {
    /// Share of the remaining edges pruned per round (`pruning_percent_adj`).
    pub graph_rate: f64,
    /// Share of the remaining weights pruned per round (`pruning_percent_wei`).
    pub weight_rate: f64,
    /// Fraction of edges kept at the end; 0: `(1 − graph_rate)^rounds`.
    pub graph_density: f64,
    /// Epochs of mask training per round (`total_epoch`).
    pub epochs: usize,
    /// L1 strength on the edge mask (`s1`).
    pub graph_l1: f64,
    /// L1 strength on the weight masks (`s2`).
    pub weight_l1: f64,
}

impl Default for UgsOptions {
    fn default() -> Self {
        Self {
            graph_rate: UGS_GRAPH_RATE,
            weight_rate: UGS_WEIGHT_RATE,
            graph_density: 0.0,
            epochs: 200,
            graph_l1: 1e-2,
            weight_l1: 1e-2,
        }
    }
}

impl PrunerOptions for UgsOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(Ugs { options: self })
    }
}

impl UgsOptions {
    fn check(&self) -> Result<(), String> {
        for (key, v) in [
            ("graph_rate", self.graph_rate),
            ("weight_rate", self.weight_rate),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return Err(format!("{key} must be in (0, 1); got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.graph_density) {
            return Err(format!(
                "graph_density must be in [0, 1]; got {}",
                self.graph_density
            ));
        }
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if !(self.graph_l1 >= 0.0 && self.weight_l1 >= 0.0) {
            return Err("graph_l1 and weight_l1 must be ≥ 0".into());
        }
        Ok(())
    }
}

inventory::submit! { PrunerEntry::new::<UgsOptions>("ugs", "unified graph sparsification (UGS): trained edge and weight masks, iterative, rewinding (GCN)").needing(lottery_core::plugin::capability::GRAPH) }

/// The UGS pruner.
#[derive(Debug, Clone)]
pub struct Ugs {
    options: UgsOptions,
}

/// Rounds to bring the weights to `target` at `rate` per round (at least one).
pub fn rounds_to(target: f64, rate: f64) -> usize {
    ((target.ln() / (1.0 - rate).ln()) - 1e-9).ceil().max(1.0) as usize
}

/// |soft mask| of the named entries, as scores.
fn magnitudes(masks: &ParamValues, names: &[String]) -> ParamValues {
    names
        .iter()
        .map(|n| {
            let t = &masks[n];
            (
                n.clone(),
                FlatTensor::new(t.shape.clone(), t.values.iter().map(|x| x.abs()).collect()),
            )
        })
        .collect()
}

/// Renames a round's file that does not load to `<file>.damaged-<unix seconds>`, with a warning, so that the run
/// goes on from an earlier round.
fn set_aside(path: &Path, error: &PruneError) -> Result<(), PruneError> {
    let aside = lottery_core::fsutil::set_aside(path)
        .map_err(|e| PruneError::progress(path, format!("setting it aside: {e}")))?;
    tracing::warn!(
        "{error}; set aside as {} and going on from an earlier round, if any",
        aside.display()
    );
    Ok(())
}

impl Pruner for Ugs {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        let o = &self.options;
        o.check().map_err(|why| PruneError::Unsupported {
            method: "ugs".into(),
            why,
        })?;
        let edges = edge_count(ctx.target, "ugs")?;
        let weights = ctx.dense_mask();
        let names: Vec<String> = weights.iter().map(|(n, _)| n.clone()).collect();
        let total = weights.numel();
        let rounds = rounds_to(ctx.goal.density.value(), o.weight_rate);
        let graph_target = if o.graph_density == 0.0 {
            (1.0 - o.graph_rate).powi(rounds as i32)
        } else {
            o.graph_density
        };
        let graph_target = Density::new(graph_target)
            .map_err(|e| PruneError::Target(format!("graph_density: {e}")))?;
        let theta0 = ctx.target.values(&names)?;
        let dir: Option<PathBuf> = ctx.work_dir.as_ref().map(|d| d.join("ugs"));
        let round_path = |r: usize| {
            dir.as_ref()
                .map(|d| d.join(format!("round-{r:03}.safetensors")))
        };

        let mut fixed = weights.clone();
        fixed.insert(GRAPH_MASK, Mask::ones(vec![edges]));
        let mut first = 1;
        for r in (1..=rounds).rev() {
            let Some(p) = round_path(r).filter(|p| p.exists()) else {
                continue;
            };
            match load_mask_progress(&p).map_err(PruneError::into_damaged) {
                Ok((mask, rows)) => {
                    fixed = mask;
                    ctx.target.restore_metrics(rows);
                    first = r + 1;
                    tracing::info!(
                        "ugs resumed after round {r} of {rounds} from {}",
                        p.display()
                    );
                    break;
                }
                Err(e) => set_aside(&p, &e)?,
            }
        }
        ctx.progress.set_length((rounds * o.epochs) as u64);
        ctx.progress.set_position(((first - 1) * o.epochs) as u64);
        let spec = JointMaskSpec {
            epochs: o.epochs,
            graph_l1: o.graph_l1,
            weight_l1: o.weight_l1,
        };
        for r in first..=rounds {
            ctx.target.rewind(&theta0, 0)?;
            ctx.target.set_phase(r, "ugs");
            let mut best: Option<(f64, f64, ParamValues)> = None;
            let progress = ctx.progress.clone();
            family_mut::<GcnTask>(ctx.target, "ugs", "a graph to mask")?.train_masks_jointly(
                &fixed,
                &spec,
                &mut |e| {
                    progress.inc(1);
                    if best.as_ref().is_none_or(|(v, _, _)| e.val_accuracy > *v) {
                        best = Some((e.val_accuracy, e.test_accuracy, e.masks.clone()));
                    }
                    ControlFlow::Continue(())
                },
            )?;
            let (val, test, soft) = best.ok_or_else(|| PruneError::Internal("no epoch".into()))?;
            let (keep_w, keep_g) = if r == rounds {
                (
                    ctx.goal.density.keep_count(total),
                    graph_target.keep_count(edges),
                )
            } else {
                (
                    ((1.0 - o.weight_rate).powi(r as i32) * total as f64).round() as usize,
                    ((1.0 - o.graph_rate).powi(r as i32) * edges as f64).round() as usize,
                )
            };
            let mut next = top_k_count(&magnitudes(&soft, &names), keep_w, Some(&fixed))?;
            let graph_scores: Vec<f32> = soft[GRAPH_MASK].values.iter().map(|x| x.abs()).collect();
            next.insert(
                GRAPH_MASK,
                keep_top_edges(&graph_scores, keep_g, fixed.get(GRAPH_MASK))?,
            );
            fixed = next;
            ctx.target.record("ugs", "best-val-accuracy", val);
            ctx.target.record("ugs", "test-accuracy-at-best-val", test);
            let kept_w: usize = names
                .iter()
                .filter_map(|n| fixed.get(n))
                .map(Mask::kept)
                .sum();
            let graph_density = fixed.get(GRAPH_MASK).map_or(1.0, Mask::density);
            ctx.target.record("ugs", "graph-density", graph_density);
            ctx.target
                .record("ugs", "weight-density", kept_w as f64 / total as f64);
            if let Some(p) = round_path(r) {
                save_mask_progress(&p, &fixed, &ctx.target.metrics())?;
            }
        }
        ctx.target.rewind(&theta0, 0)?;
        ctx.target.set_phase(0, "ticket");
        Ok(fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_unknown_keys() {
        lottery_core::plugin::assert_options_contract::<UgsOptions>("graph_rate = \"x\"");
    }

    #[test]
    fn out_of_range_options_are_refused() {
        assert!(UgsOptions::default().check().is_ok());
        let bad = UgsOptions {
            graph_rate: 1.5,
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().contains("graph_rate"));
    }

    #[test]
    fn rounds_reach_the_target() {
        assert_eq!(rounds_to(0.8, 0.2), 1);
        assert_eq!(rounds_to(0.8f64.powi(5), 0.2), 5);
        assert_eq!(rounds_to(0.3, 0.2), 6);
        assert_eq!(rounds_to(0.95, 0.2), 1);
    }
}
