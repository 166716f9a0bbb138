//! `imp`: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).
//!
//! Level 0 is the dense network. At each level the masked network trains for the run's schedule,
//! a fraction `rate` of the weights still alive is removed by magnitude (one global threshold, or
//! per layer), and the survivors rewind to θ₀ — or to θ_k, the weights at optimiser step
//! `rewind_step` of the level-0 training, with the schedule and data order resuming at step k and
//! the optimiser state new, as open_lth's `standard_train` from its pretraining step (level 0
//! too: a rewinding run's dense training restarts its optimiser at step k). The density of
//! level r is exactly `(1 − rate)^r` (as a count, `round((1 − rate)^r · n)`) until the last level,
//! which lands exactly on the run's target. The run's own training then trains the final ticket,
//! so one run records the whole accuracy-versus-density curve: every level writes
//! `level/density` and `level/accuracy` rows under its round.
//!
//! Layouts with several rates (`groups`): each group of parameters (names or globs) is pruned at
//! its own rate, the prunable parameters in no group at `rate`. With `prune.scope = "global"` each
//! group is one pool under one threshold; with `"layerwise"` every layer of a group is cut apart
//! at the group's rate. Level r keeps exactly `round((1 − rate_g)^r · n)` of each pool (global) or
//! layer (layer-wise), and the levels stop once the total reaches the total the run's density
//! asks for (global: round(density · n) over all prunable weights; layer-wise: the sum of every
//! layer's round(density · n_layer)): the last level lands the total exactly on it, sharing its
//! cut among the pools or layers in proportion to what each would have lost at the full rate.
//!
//! Controls, trained at every pruned level beside the ticket when configured: `reinit` (the same
//! mask, weights freshly re-initialised), `random-mask` (a random mask with the ticket's
//! per-layer counts; every kept weight takes its rewind value) and
//! `random-mask-zero-outside-ticket` (the same random mask, started as open_lth's
//! `randomly_prune` branch starts it: the rewind weights times the ticket's mask, so a kept
//! weight outside the ticket starts at zero). All start at the rewind step, like the ticket.
//!
//! Progress is saved in the run's work directory after every level (the mask and every metric row
//! so far), so an interrupted run resumes at the last finished level and recomputes nothing. A
//! level's file that does not load is set aside (`<file>.damaged-<unix seconds>`) and the run resumes from the
//! level before it (or starts over); a rewind point that does not load is
//! [`PruneError::DamagedProgress`].

use std::path::Path;

use lottery_core::{
    MaskSet, ParamValues, PruneContext, PruneError, PruneTarget, Pruner, PrunerEntry, PrunerOptions,
};
use serde::{Deserialize, Serialize};

mod controls;
mod groups;
mod plan;
mod progress;

pub use controls::{Control, random_mask_like, zero_outside};
pub use groups::{RateGroup, RateGroups};
pub use plan::{LevelPlan, plan_for};
use progress::Progress;

/// A fraction in (0, 1): the share of the alive weights removed per level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Rate(f64);

impl TryFrom<f64> for Rate {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if v.is_finite() && v > 0.0 && v < 1.0 {
            Ok(Self(v))
        } else {
            Err(format!(
                "a pruning rate is the fraction of the alive weights removed per level, in (0, 1); got {v}"
            ))
        }
    }
}

impl From<Rate> for f64 {
    fn from(r: Rate) -> f64 {
        r.0
    }
}

/// Options of `imp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImpOptions {
    /// Fraction of the alive prunable weights removed per level (open_lth's `pruning_fraction`);
    /// with `groups`, the rate of the prunable parameters in no group (unused when the groups
    /// cover every prunable parameter).
    pub rate: Rate,
    /// Rate of the output layer (the last linear weight), pruned as a pool of its own beside the
    /// pool of the others; global scope only. Unset: the output layer is in the pool. The output
    /// layer must be prunable (not in `prune.ignore`), and `groups` replaces it: with groups, give
    /// the output layer a group of its own.
    pub output_rate: Option<Rate>,
    /// Parameters pruned at their own rate: `[{ params = ["fc.weight"], rate = 0.1 }]` (names or
    /// glob patterns). Every pattern must match a prunable parameter and no parameter may be in
    /// two groups. Empty: one rate for all (left out of the run id).
    #[serde(skip_serializing_if = "RateGroups::is_empty")]
    pub groups: RateGroups,
    /// Optimiser step the survivors rewind to: 0 is θ₀ (Frankle & Carbin), k > 0 is θ_k
    /// (rewinding, Frankle et al. 2020).
    pub rewind_step: usize,
    /// Controls trained at every pruned level: `reinit`, `random-mask`,
    /// `random-mask-zero-outside-ticket`.
    pub controls: Vec<Control>,
}

impl Default for ImpOptions {
    fn default() -> Self {
        Self {
            rate: Rate(0.2),
            output_rate: None,
            groups: RateGroups::default(),
            rewind_step: 0,
            controls: vec![],
        }
    }
}

impl PrunerOptions for ImpOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(Imp { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<ImpOptions>("imp", "iterative magnitude pruning: train, prune the smallest, rewind to θ₀ or θ_k") }

/// The IMP pruner.
#[derive(Debug, Clone)]
pub struct Imp {
    options: ImpOptions,
}

impl Imp {
    /// Trains the network of `phase` at level `r` from `start` (values at the rewind step) under
    /// `mask` to the end of the schedule, and records its level rows.
    fn train_level(
        &self,
        ctx: &mut PruneContext<'_>,
        r: usize,
        phase: &str,
        start: &ParamValues,
        mask: &MaskSet,
    ) -> Result<(), PruneError> {
        let k = self.options.rewind_step;
        ctx.target.set_phase(r, phase);
        ctx.target.rewind(start, k)?;
        let end = ctx.target.clock().run_steps;
        ctx.target.train_until(mask, end, &mut |_| {})?;
        let (_, accuracy) = ctx.target.evaluate(mask)?;
        ctx.target.record("level", "density", mask.density());
        ctx.target.record("level", "accuracy", accuracy);
        Ok(())
    }
}

impl Pruner for Imp {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        let plan = plan_for(ctx, &self.options)?;
        let n = plan.levels();
        let k = self.options.rewind_step;
        let clock = ctx.target.clock();
        if k > clock.run_steps {
            return Err(PruneError::Unsupported {
                method: "imp".into(),
                why: format!(
                    "rewind_step = {k} lies past the end of training ({} steps)",
                    clock.run_steps
                ),
            });
        }
        let progress = Progress {
            dir: ctx.work_dir.as_ref().map(|d| d.join("imp")),
        };
        let all: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
        let prunable: Vec<String> = ctx.prunable().into_iter().map(|p| p.name).collect();

        let resumed = progress.resume(n)?;
        let (mut level, mut mask, rewind) = match resumed {
            Some(s) => {
                let dir = progress.dir.as_deref().unwrap_or(Path::new("")).display();
                if s.finished {
                    tracing::info!("imp resumed after its last level ({n}) from {dir}");
                } else {
                    tracing::info!("imp resumed at level {} of {n} from {dir}", s.level);
                }
                ctx.target.restore_metrics(s.metrics);
                if let Some(task) = image_task(ctx.target) {
                    task.insert_checkpoints(s.checkpoints);
                }
                if s.finished {
                    ctx.target.set_phase(n, "ticket");
                    ctx.target.rewind(&s.rewind, k)?;
                    return Ok(s.mask);
                }
                (s.level, s.mask, Some(s.rewind))
            }
            None => (0, ctx.dense_mask(), None),
        };
        let rewind = match rewind {
            Some(v) => v,
            None => {
                // Level 0: train the dense network, taking θ_k on the way.
                ctx.progress.set_message(format!("imp level 0/{n}"));
                ctx.target.set_phase(0, "ticket");
                let theta_0 = ctx.target.values(&all)?;
                ctx.target.rewind(&theta_0, 0)?;
                ctx.target.train_until(&mask, k, &mut |_| {})?;
                let theta_k = ctx.target.values(&all)?;
                // The checkpoints up to θ_k: no later training passes those steps again.
                let kept = image_task(ctx.target).map(|t| t.checkpoints().clone());
                progress.save_rewind(&theta_k, &kept.unwrap_or_default())?;
                if n == 0 {
                    ctx.target.rewind(&theta_k, k)?;
                    return Ok(mask);
                }
                let end = ctx.target.clock().run_steps;
                ctx.target.train_until(&mask, end, &mut |_| {})?;
                let (_, accuracy) = ctx.target.evaluate(&mask)?;
                ctx.target.record("level", "density", 1.0);
                ctx.target.record("level", "accuracy", accuracy);
                mask = self.prune_level(ctx, &plan, 0, &prunable, &mask)?;
                level = 1;
                progress.save_mask(progress.level_path(1), &mask, &ctx.target.metrics())?;
                theta_k
            }
        };
        while level < n {
            ctx.progress.set_message(format!("imp level {level}/{n}"));
            self.train_level(ctx, level, "ticket", &rewind, &mask)?;
            let next = self.prune_level(ctx, &plan, level, &prunable, &mask)?;
            self.controls(ctx, level, &mask, &rewind)?;
            mask = next;
            level += 1;
            progress.save_mask(progress.level_path(level), &mask, &ctx.target.metrics())?;
        }
        self.controls(ctx, n, &mask, &rewind)?;
        progress.save_mask(progress.final_path(), &mask, &ctx.target.metrics())?;
        ctx.progress.set_message(format!("imp level {n}/{n}"));
        ctx.target.set_phase(n, "ticket");
        ctx.target.rewind(&rewind, k)?;
        Ok(mask)
    }
}

impl Imp {
    /// Prunes the trained network of level `r` to the count of level `r + 1`.
    fn prune_level(
        &self,
        ctx: &mut PruneContext<'_>,
        plan: &LevelPlan,
        r: usize,
        prunable: &[String],
        mask: &MaskSet,
    ) -> Result<MaskSet, PruneError> {
        let mut magnitudes = ctx.target.values(prunable)?;
        for t in magnitudes.values_mut() {
            t.values.iter_mut().for_each(|v| *v = v.abs());
        }
        plan.next_mask(r, &magnitudes, mask)
    }
}

/// The image task under `target`, which keeps weights at `train.checkpoints` steps; `None` for
/// other families.
fn image_task(target: &mut dyn PruneTarget) -> Option<&mut lottery_train::ImageTask> {
    target.as_any_mut().downcast_mut()
}

fn invalid(why: String) -> PruneError {
    PruneError::Unsupported {
        method: "imp".into(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_bad_values() {
        lottery_core::plugin::assert_options_contract::<ImpOptions>("rate = 1.5");
        lottery_core::plugin::assert_options_contract::<ImpOptions>("controls = [\"shuffle\"]");
        lottery_core::plugin::assert_options_contract::<ImpOptions>("rewind = 3");
        let o: ImpOptions =
            toml::from_str("output_rate = 0.1\ncontrols = [\"reinit\", \"random-mask\"]").unwrap();
        assert_eq!(o.output_rate, Some(Rate(0.1)));
        assert_eq!(o.controls, vec![Control::Reinit, Control::RandomMask]);
    }
}
