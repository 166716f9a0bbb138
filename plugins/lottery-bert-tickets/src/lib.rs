//! `bert-tickets`: "The Lottery Ticket Hypothesis for Pre-trained BERT Networks" (Chen et al.
//! 2020). IMP on a pre-trained BERT as the reference (`VITA-Group/BERT-Tickets`, `LT_glue.py`,
//! `LT_pretrain.py`) runs it:
//!
//! - **Schedule.** The reference calls `pruning_model(model, 1/(10 − k))` in round k, and PyTorch
//!   takes that share of the weights still unpruned: every round removes 10 % of the *original*
//!   prunable weights, so the levels keep 0.9, 0.8, …, 0.1 (the paper's 10–90 % sparsities). Here
//!   `schedule = "linear"` (the default) keeps exactly `round(n · (1 − r · rate))` of the `n`
//!   prunable weights at level r; `schedule = "geometric"` keeps `round(n · (1 − rate)^r)` (10 %
//!   of the *remaining* per round, as `imp` does). The last level lands exactly on the run's
//!   density. One global magnitude threshold over the encoder's and pooler's linear weights.
//! - **Rewinding.** The reference's `rewind()` keeps only the keys with `bert` in their name, so
//!   after each round the encoder (embeddings, norms, biases, linears) goes back to the
//!   pre-trained weights while the task head keeps what it learnt and trains on in the next
//!   round. The final ticket is fine-tuned with a fresh head (`glue_trans.py` builds a new
//!   classifier): the run's own training starts from the pre-trained encoder and the head's
//!   initialisation.
//! - **Pruning first** (`prune_first = true`, `LT_pretrain.py`): the first 10 % is pruned by
//!   magnitude of the pre-trained weights before any training, so no dense round is trained.
//! - **Fine-tuning recipe**: `dropout` (the references' 0.1 at BERT's places, masks drawn from
//!   the run's seed so reruns are bit-identical) and `clip_grad_norm` (global L2 norm over all
//!   parameters, as `torch.nn.utils.clip_grad_norm_`; the references' `max_grad_norm` 1.0), used
//!   by every training of the run, the final ticket's included. 0 turns either off.
//! - **Controls** (`controls = ["reinit"]`): the reference's `--dir rand` (`glue_trans.py`): the
//!   level's mask on freshly initialised BERT weights (random encoder and head, seeded by the run
//!   and the level), fine-tuned as the ticket is; its rows carry phase `reinit`. Trained at every
//!   pruned level, the final one included.
//! - **One-shot baselines** (`one_shot = "magnitude"` or `"random"`): `oneshot.py` (global
//!   magnitude of the pre-trained weights) and `glue_rand.py` (global random pruning) straight to
//!   the run's density, no IMP; the run then fine-tunes with the same recipe as the tickets, its
//!   rows under phase `one-shot-magnitude` or `one-shot-random`.
//!
//! Every level writes its `level/density` and `level/accuracy` rows under its round, and the
//! run's own training then fine-tunes the final ticket. Which weights are prunable is the
//! network's call: for BERT, the encoder's linear weights and the pooler's (embeddings stay
//! dense). Progress (the next level's mask, the rows so far and the carried head) is saved in the
//! run's work directory after every level, so an interrupted run resumes at the last finished
//! level; a saved level that does not load is ignored and the run resumes from an earlier one.
//!
//! Transfer: with `find_on = "<task>"` the ticket is found by IMP on that task (a dataset name:
//! `wordnet-examples` for masked language modelling, or another classification task), then the
//! network switches back to the run's own task, at its pre-trained weights with a fresh head, and
//! the run fine-tunes the transferred ticket there. The source IMP's rows keep their rounds under
//! phases prefixed `source-`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lottery_bert::{BertTask, FineTuning, is_head};
use lottery_core::plugin::family_mut;
use lottery_core::topk::top_k_count;
use lottery_core::{
    FlatTensor, MaskSet, ParamValues, PruneContext, PruneError, PruneTarget, Pruner, PrunerEntry,
    PrunerOptions,
};
use lottery_imp::Rate;
use serde::{Deserialize, Serialize};

/// A parameter every BERT has; its absence means the run's network is not a BERT.
pub const BERT_PROBE: &str = "encoder.layer.0.attention.self.query.weight";

/// How the kept count falls from level to level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// `rate` of the original weights per round: level r keeps `n · (1 − r · rate)` (the
    /// reference's `1/(10 − k)` of the remaining).
    #[default]
    Linear,
    /// `rate` of the remaining weights per round: level r keeps `n · (1 − rate)^r`.
    Geometric,
}

/// A control trained beside the ticket at every pruned level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    /// The ticket's mask on freshly initialised weights (the reference's `--dir rand`).
    Reinit,
}

/// A one-shot baseline instead of IMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OneShot {
    /// Global magnitude of the pre-trained weights (`oneshot.py --weight pre`).
    Magnitude,
    /// Global uniformly random pruning (`glue_rand.py`).
    Random,
}

impl OneShot {
    /// The phase the run's rows carry: `one-shot-magnitude`, `one-shot-random`.
    pub fn phase(self) -> &'static str {
        match self {
            OneShot::Magnitude => "one-shot-magnitude",
            OneShot::Random => "one-shot-random",
        }
    }
}

/// Options of `bert-tickets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BertTicketsOptions {
    /// Share removed per round: of the original weights (`linear`) or of the remaining
    /// (`geometric`); the paper's 10 %.
    pub rate: Rate,
    /// `linear` (the reference's 0.9, 0.8, …) or `geometric` (0.9, 0.81, …).
    pub schedule: Schedule,
    /// Prune the first round by the pre-trained magnitudes before any training
    /// (`LT_pretrain.py`).
    pub prune_first: bool,
    /// Dropout rate of every fine-tuning in [0, 1); 0: none.
    pub dropout: f64,
    /// Maximum global gradient norm of every fine-tuning; 0: no clipping.
    pub clip_grad_norm: f64,
    /// Controls trained at every pruned level: `reinit`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<Control>,
    /// A one-shot baseline instead of IMP: `magnitude` or `random`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_shot: Option<OneShot>,
    /// Task the ticket is found on (a text dataset name); unset: the run's own task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub find_on: Option<String>,
}

impl Default for BertTicketsOptions {
    fn default() -> Self {
        Self {
            rate: Rate::try_from(0.1).expect("0.1 is a rate"),
            schedule: Schedule::Linear,
            prune_first: false,
            dropout: 0.0,
            clip_grad_norm: 0.0,
            controls: vec![],
            one_shot: None,
            find_on: None,
        }
    }
}

impl PrunerOptions for BertTicketsOptions {
    fn build(self) -> Box<dyn Pruner> {
        Box::new(BertTickets { options: self })
    }
}

inventory::submit! { PrunerEntry::new::<BertTicketsOptions>("bert-tickets", "BERT tickets: IMP on a pre-trained BERT (10 % of the original weights per round, encoder rewound to the pre-trained weights, head carried); transfer across tasks").needing(lottery_core::plugin::capability::TEXT) }

/// The BERT-tickets pruner.
#[derive(Debug, Clone)]
pub struct BertTickets {
    options: BertTicketsOptions,
}

/// The kept count of every level for `total` prunable weights down to `target`: level 0 is dense,
/// level r keeps the schedule's count until that reaches the target, and the last level keeps
/// exactly `target`.
pub fn level_counts(total: usize, target: usize, rate: f64, schedule: Schedule) -> Vec<usize> {
    let mut counts = vec![total];
    if target >= total {
        return counts;
    }
    for r in 1i32.. {
        let keep = match schedule {
            Schedule::Linear => 1.0 - f64::from(r) * rate,
            Schedule::Geometric => (1.0 - rate).powi(r),
        };
        let count = (keep.max(0.0) * total as f64).round() as usize;
        if count <= target {
            counts.push(target);
            break;
        }
        counts.push(count);
    }
    counts
}

/// `base` with the values of `overlay` in place of its own.
pub fn overlaid(base: &ParamValues, overlay: &ParamValues) -> ParamValues {
    let mut out = base.clone();
    for (name, v) in overlay {
        out.insert(name.clone(), v.clone());
    }
    out
}

fn bert(target: &mut dyn PruneTarget) -> Result<&mut BertTask, PruneError> {
    family_mut::<BertTask>(target, "bert-tickets", "a pre-trained BERT with task heads")
}

/// Saved progress of one IMP (`<work dir>/bert-tickets[-<source task>]`).
struct Progress {
    dir: Option<PathBuf>,
}

impl Progress {
    fn mask_path(&self, r: usize) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("level-{r:03}.safetensors")))
    }

    fn head_path(&self, r: usize) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("head-{r:03}.safetensors")))
    }

    /// Saves the state at the start of level `r`: its mask, the rows so far, the carried head.
    fn save(
        &self,
        r: usize,
        mask: &MaskSet,
        ctx: &PruneContext<'_>,
        head: &ParamValues,
    ) -> Result<(), PruneError> {
        let (Some(m), Some(h)) = (self.mask_path(r), self.head_path(r)) else {
            return Ok(());
        };
        let bytes = lottery_core::weights::to_bytes(head, &BTreeMap::new());
        lottery_core::fsutil::write_atomic(&h, &bytes).map_err(|e| PruneError::progress(&h, e))?;
        lottery_core::progress::save_mask_progress(&m, mask, &ctx.target.metrics())
    }

    /// The furthest saved level `r ≤ last` whose files load.
    fn resume(
        &self,
        last: usize,
    ) -> Option<(usize, MaskSet, Vec<lottery_core::MetricRow>, ParamValues)> {
        (1..=last).rev().find_map(|r| {
            let (m, h) = (self.mask_path(r)?, self.head_path(r)?);
            if !m.exists() || !h.exists() {
                return None;
            }
            let loaded = lottery_core::progress::load_mask_progress(&m)
                .ok()
                .zip(lottery_core::weights::read(&h).ok());
            match loaded {
                Some(((mask, rows), head)) => Some((r, mask, rows, head)),
                None => {
                    warn_unreadable(&m);
                    None
                }
            }
        })
    }
}

fn warn_unreadable(path: &Path) {
    eprintln!(
        "bert-tickets: saved progress {} does not load; resuming from an earlier level",
        path.display()
    );
}

fn reinit_seed(seed: u64, r: usize) -> u64 {
    seed ^ 0x7261_6e64_0000 ^ (r as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A value in [0, 1) from a counter (splitmix64), for the random baseline's scores.
fn uniform(seed: u64, i: u64) -> f32 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

impl BertTickets {
    /// The mask keeping `count` of the prunable weights alive in `current` with the largest
    /// |value| now.
    fn prune_to(
        ctx: &mut PruneContext<'_>,
        prunable: &[String],
        count: usize,
        current: &MaskSet,
    ) -> Result<MaskSet, PruneError> {
        let mut magnitudes = ctx.target.values(prunable)?;
        for t in magnitudes.values_mut() {
            t.values.iter_mut().for_each(|v| *v = v.abs());
        }
        top_k_count(&magnitudes, count, Some(current))
    }

    /// Trains the level-`r` network of `phase` from `start` under `mask` and records its rows.
    fn train_level(
        ctx: &mut PruneContext<'_>,
        r: usize,
        phase: &str,
        start: &ParamValues,
        mask: &MaskSet,
    ) -> Result<(), PruneError> {
        ctx.target.set_phase(r, phase);
        ctx.target.rewind(start, 0)?;
        let end = ctx.target.clock().run_steps;
        ctx.target.train_until(mask, end, &mut |_| {})?;
        let (_, accuracy) = ctx.target.evaluate(mask)?;
        ctx.target.record("level", "density", mask.density());
        ctx.target.record("level", "accuracy", accuracy);
        Ok(())
    }

    fn controls(
        &self,
        ctx: &mut PruneContext<'_>,
        r: usize,
        mask: &MaskSet,
    ) -> Result<(), PruneError> {
        for control in &self.options.controls {
            match control {
                Control::Reinit => {
                    ctx.progress
                        .set_message(format!("bert-tickets level {r}: control reinit"));
                    let fresh = ctx.target.fresh_values(reinit_seed(ctx.seed, r));
                    Self::train_level(ctx, r, "reinit", &fresh, mask)?;
                }
            }
        }
        Ok(())
    }

    fn one_shot(
        &self,
        ctx: &mut PruneContext<'_>,
        how: OneShot,
        prunable: &[String],
        target: usize,
    ) -> Result<MaskSet, PruneError> {
        let scores = match how {
            OneShot::Magnitude => {
                let mut v = ctx.target.values(prunable)?;
                for t in v.values_mut() {
                    t.values.iter_mut().for_each(|x| *x = x.abs());
                }
                v
            }
            OneShot::Random => {
                let shapes: Vec<_> = ctx.prunable();
                let mut i = 0u64;
                let mut v = ParamValues::new();
                for p in shapes {
                    let n = p.numel();
                    let vals = (0..n)
                        .map(|_| {
                            i += 1;
                            uniform(ctx.seed ^ 0x006f_6e65_7368_6f74, i)
                        })
                        .collect();
                    v.insert(p.name.clone(), FlatTensor::new(p.shape.clone(), vals));
                }
                v
            }
        };
        let mask = top_k_count(&scores, target, None)?;
        // Its own phase, so that `--levels` tables keep the baselines apart from IMP's tickets.
        ctx.target.set_phase(0, how.phase());
        Ok(mask)
    }

    /// IMP on the task the target has now (`task` names its progress folder).
    fn imp(&self, ctx: &mut PruneContext<'_>, task: &str) -> Result<MaskSet, PruneError> {
        let prunable: Vec<String> = ctx.prunable().into_iter().map(|p| p.name).collect();
        let total: usize = ctx.prunable().iter().map(|p| p.numel()).sum();
        let target = ctx.goal.density.keep_count(total);
        if let Some(how) = self.options.one_shot {
            return self.one_shot(ctx, how, &prunable, target);
        }
        let counts = level_counts(
            total,
            target,
            f64::from(self.options.rate),
            self.options.schedule,
        );
        let n = counts.len() - 1;
        let all: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
        let heads: Vec<String> = all.iter().filter(|n| is_head(n)).cloned().collect();
        let theta_0 = ctx.target.values(&all)?;
        let progress = Progress {
            dir: ctx
                .work_dir
                .as_ref()
                .map(|d| d.join(format!("bert-tickets-{task}"))),
        };
        let mut mask = ctx.dense_mask();
        let mut level = 0;
        // Each round starts from the pre-trained encoder and the head as the last round left it.
        let mut start = theta_0.clone();
        // The head the next round starts from; saved with every level's mask (level n's once
        // the controls of the last level have trained).
        let mut carried: ParamValues = heads
            .iter()
            .map(|h| (h.clone(), theta_0[h].clone()))
            .collect();
        let mut resumed = false;
        if let Some((r, saved, rows, head)) = progress.resume(n) {
            ctx.target.restore_metrics(rows);
            (level, mask, start) = (r, saved, overlaid(&theta_0, &head));
            carried = head;
            resumed = true;
        } else if n > 0 && self.options.prune_first {
            ctx.target.rewind(&theta_0, 0)?;
            mask = Self::prune_to(ctx, &prunable, counts[1], &mask)?;
            level = 1;
        }
        let finished = resumed && level == n;
        while level < n {
            ctx.progress
                .set_message(format!("bert-tickets level {level}/{n}"));
            Self::train_level(ctx, level, "ticket", &start, &mask)?;
            let next = Self::prune_to(ctx, &prunable, counts[level + 1], &mask)?;
            let head = ctx.target.values(&heads)?;
            if level > 0 {
                self.controls(ctx, level, &mask)?;
            }
            start = overlaid(&theta_0, &head);
            carried = head;
            mask = next;
            level += 1;
            if level < n {
                progress.save(level, &mask, ctx, &carried)?;
            }
        }
        if n > 0 && !finished {
            self.controls(ctx, n, &mask)?;
            progress.save(n, &mask, ctx, &carried)?;
        }
        ctx.progress
            .set_message(format!("bert-tickets level {n}/{n}"));
        // The final ticket: pre-trained encoder, fresh head.
        ctx.target.set_phase(n, "ticket");
        ctx.target.rewind(&theta_0, 0)?;
        Ok(mask)
    }
}

impl Pruner for BertTickets {
    fn prune(&mut self, ctx: &mut PruneContext<'_>) -> Result<MaskSet, PruneError> {
        if !ctx.target.params().iter().any(|p| p.name == BERT_PROBE) {
            return Err(PruneError::Unsupported {
                method: "bert-tickets".into(),
                why: format!(
                    "the network has no {BERT_PROBE}; bert-tickets prunes a pre-trained BERT \
                     (model.name = \"minilm-l6\")"
                ),
            });
        }
        bert(ctx.target)?.set_fine_tuning(FineTuning {
            dropout: self.options.dropout,
            clip_grad_norm: self.options.clip_grad_norm,
        })?;
        let Some(source) = &self.options.find_on else {
            let own = bert(ctx.target)?.task().name.clone();
            return self.imp(ctx, &own);
        };
        let own = bert(ctx.target)?.switch_task(source)?;
        if own == *source {
            return self.imp(ctx, &own);
        }
        ctx.progress
            .set_message(format!("bert-tickets: finding the ticket on {source}"));
        let mask = self.imp(ctx, source)?;
        let rows = ctx
            .target
            .metrics()
            .into_iter()
            .map(|mut r| {
                r.phase = format!("source-{}", r.phase);
                r
            })
            .collect();
        ctx.target.restore_metrics(rows);
        bert(ctx.target)?.switch_task(&own)?;
        ctx.target.set_phase(0, "ticket");
        Ok(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_bad_values() {
        lottery_core::plugin::assert_options_contract::<BertTicketsOptions>("rate = 1.5");
        lottery_core::plugin::assert_options_contract::<BertTicketsOptions>("schedule = \"cubic\"");
        lottery_core::plugin::assert_options_contract::<BertTicketsOptions>(
            "controls = [\"shuffle\"]",
        );
        let o: BertTicketsOptions = toml::from_str("find_on = \"wordnet-examples\"").unwrap();
        assert_eq!(o.find_on.as_deref(), Some("wordnet-examples"));
        assert_eq!(f64::from(o.rate), 0.1);
        assert_eq!(o.schedule, Schedule::Linear, "the reference's schedule");
        let o: BertTicketsOptions = toml::from_str(
            "schedule = \"geometric\"\nprune_first = true\ndropout = 0.1\nclip_grad_norm = 1.0\n\
             controls = [\"reinit\"]\none_shot = \"random\"",
        )
        .unwrap();
        assert_eq!(o.schedule, Schedule::Geometric);
        assert!(o.prune_first);
        assert_eq!((o.dropout, o.clip_grad_norm), (0.1, 1.0));
        assert_eq!(o.controls, vec![Control::Reinit]);
        assert_eq!(o.one_shot, Some(OneShot::Random));
    }

    #[test]
    fn linear_levels_remove_a_tenth_of_the_original_weights_each() {
        // n · (1 − r/10) exactly, down to 10 % density: the paper's sparsities 10 %, …, 90 %.
        let n = 2_126_592;
        let target = (0.1 * n as f64).round() as usize;
        let counts = level_counts(n, target, 0.1, Schedule::Linear);
        assert_eq!(counts.len(), 10, "levels 0 (dense) to 9 (10 %)");
        for (r, c) in counts.iter().enumerate() {
            assert_eq!(
                *c,
                (n as f64 * (10 - r) as f64 / 10.0).round() as usize,
                "level {r}"
            );
        }
        // A small pool: every count is exact.
        assert_eq!(
            level_counts(1000, 500, 0.1, Schedule::Linear),
            vec![1000, 900, 800, 700, 600, 500]
        );
        // The last level lands on a target between two levels.
        assert_eq!(
            level_counts(1000, 531, 0.1, Schedule::Linear),
            vec![1000, 900, 800, 700, 600, 531]
        );
        assert_eq!(level_counts(1000, 1000, 0.1, Schedule::Linear), vec![1000]);
    }

    #[test]
    fn geometric_levels_remove_a_tenth_of_the_remaining_weights_each() {
        assert_eq!(
            level_counts(1000, 531, 0.1, Schedule::Geometric),
            vec![1000, 900, 810, 729, 656, 590, 531]
        );
        let n = 2_126_592;
        let target = (0.9f64.powi(6) * n as f64).round() as usize;
        let counts = level_counts(n, target, 0.1, Schedule::Geometric);
        assert_eq!(counts.len(), 7);
        for (r, c) in counts.iter().enumerate() {
            assert_eq!(
                *c,
                (0.9f64.powi(r as i32) * n as f64).round() as usize,
                "level {r}"
            );
        }
    }

    #[test]
    fn random_scores_are_uniform_and_seeded() {
        let v: Vec<f32> = (0..10_000).map(|i| uniform(7, i)).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_eq!(uniform(7, 3), uniform(7, 3));
        assert_ne!(uniform(7, 3), uniform(8, 3));
    }
}
