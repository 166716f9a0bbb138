//! `imp`: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).
//!
//! Level 0 is the dense network. At each level the masked network trains for the run's schedule,
//! a fraction `rate` of the weights still alive is removed by magnitude (one global threshold, or
//! per layer), and the survivors rewind to θ₀ — or to θ_k, the weights at optimiser step
//! `rewind_step` of the level-0 training, with the schedule and data order resuming at step k. The
//! density of level r is exactly `(1 − rate)^r` (as a count, `round((1 − rate)^r · n)`) until the
//! last level, which lands exactly on the run's target. The run's own training then trains the
//! final ticket, so one run records the whole accuracy-versus-density curve: every level writes
//! `level/density` and `level/accuracy` rows under its round.
//!
//! Controls, trained at every pruned level beside the ticket when configured: `reinit` (the same
//! mask, weights freshly re-initialised) and `random-mask` (a random mask with the ticket's
//! per-layer counts, the ticket's rewind weights). Both start at the rewind step, like the ticket.
//!
//! Progress is saved in the run's work directory after every level (the mask and every metric row
//! so far), so an interrupted run resumes at the last finished level and recomputes nothing. A
//! level's file that does not load is set aside (`<file>.damaged`) and the run resumes from the
//! level before it (or starts over); a rewind point that does not load is
//! [`PruneError::DamagedProgress`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lottery_core::params::ParamKind;
use lottery_core::topk::top_k_count;
use lottery_core::{
    Density, FlatTensor, MaskSet, MetricRow, ParamValues, PruneContext, PruneError, Pruner,
    PrunerEntry, PrunerOptions, Scope, weights,
};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

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

/// A control network trained beside the ticket at every pruned level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    /// The ticket's mask with freshly initialised weights.
    Reinit,
    /// A random mask with the ticket's per-layer counts and the ticket's rewind weights.
    RandomMask,
}

impl Control {
    /// The phase name its metric rows carry.
    pub fn phase(self) -> &'static str {
        match self {
            Control::Reinit => "reinit",
            Control::RandomMask => "random-mask",
        }
    }
}

/// Options of `imp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImpOptions {
    /// Fraction of the alive prunable weights removed per level (open_lth's `pruning_fraction`).
    pub rate: Rate,
    /// Rate of the output layer (the last linear weight), pruned apart from the others, as the
    /// paper prunes it at half the rate; global scope only. Unset: the output layer is in the pool.
    pub output_rate: Option<Rate>,
    /// Optimiser step the survivors rewind to: 0 is θ₀ (Frankle & Carbin), k > 0 is θ_k
    /// (rewinding, Frankle et al. 2020).
    pub rewind_step: usize,
    /// Controls trained at every pruned level: `reinit`, `random-mask`.
    pub controls: Vec<Control>,
}

impl Default for ImpOptions {
    fn default() -> Self {
        Self {
            rate: Rate(0.2),
            output_rate: None,
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

/// Weights pruned together under one count: the global pool, the output layer, or one layer.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    names: Vec<String>,
    numel: usize,
    rate: f64,
    /// Entries kept at the target.
    target: usize,
}

/// The kept count of every group at every level; level 0 is dense and the last level is the
/// target.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelPlan {
    groups: Vec<Group>,
    counts: Vec<Vec<usize>>,
}

impl LevelPlan {
    fn new(groups: Vec<Group>, global_target: Option<usize>) -> Self {
        let geometric = |g: &Group, r: usize| {
            Density::new((1.0 - g.rate).powi(r as i32))
                .expect("(1 - rate)^r lies in (0, 1]")
                .keep_count(g.numel)
        };
        let reached = |counts: &[usize]| match global_target {
            Some(t) => counts.iter().sum::<usize>() <= t,
            None => counts.iter().zip(&groups).all(|(c, g)| *c <= g.target),
        };
        let mut counts: Vec<Vec<usize>> = vec![groups.iter().map(|g| g.numel).collect()];
        let dense_at_target = match global_target {
            Some(t) => t >= counts[0].iter().sum::<usize>(),
            None => groups.iter().all(|g| g.target >= g.numel),
        };
        if !dense_at_target {
            for r in 1.. {
                let level: Vec<usize> = groups.iter().map(|g| geometric(g, r)).collect();
                if reached(&level) {
                    let prev = counts.last().expect("level 0").clone();
                    counts.push(Self::land(&groups, &prev, &level, global_target));
                    break;
                }
                // A group already at its target stays there (layer-wise rounding).
                let level = match global_target {
                    Some(_) => level,
                    None => level
                        .iter()
                        .zip(&groups)
                        .map(|(c, g)| (*c).max(g.target))
                        .collect(),
                };
                counts.push(level);
            }
        }
        Self { groups, counts }
    }

    /// The last level: exactly the target, no group above its previous count.
    fn land(
        groups: &[Group],
        prev: &[usize],
        geometric: &[usize],
        global_target: Option<usize>,
    ) -> Vec<usize> {
        match global_target {
            None => groups.iter().map(|g| g.target).collect(),
            Some(t) if groups.len() == 1 => vec![t],
            Some(t) => {
                // Pool first (group 0), output layer (group 1) takes the rest.
                let output = geometric[1].min(t);
                let pool = (t - output).min(prev[0]);
                vec![pool, t - pool]
            }
        }
    }

    /// Number of pruning levels (the final ticket is level `levels()`).
    pub fn levels(&self) -> usize {
        self.counts.len() - 1
    }

    /// Overall density of level `r`.
    pub fn density(&self, r: usize) -> f64 {
        let total: usize = self.groups.iter().map(|g| g.numel).sum();
        self.counts[r].iter().sum::<usize>() as f64 / total as f64
    }

    /// The mask of level `r + 1`: each group keeps its count of the largest |θ| among its alive.
    fn next_mask(
        &self,
        r: usize,
        magnitudes: &ParamValues,
        current: &MaskSet,
    ) -> Result<MaskSet, PruneError> {
        let mut out = MaskSet::new();
        for (g, count) in self.groups.iter().zip(&self.counts[r + 1]) {
            let part: ParamValues = g
                .names
                .iter()
                .map(|n| (n.clone(), magnitudes[n].clone()))
                .collect();
            for (name, m) in top_k_count(&part, *count, Some(current))?.iter() {
                out.insert(name.clone(), m.clone());
            }
        }
        Ok(out)
    }
}

/// The level plan of a context: groups from the scope and the output rate, rates, targets.
pub fn plan_for(ctx: &PruneContext<'_>, options: &ImpOptions) -> Result<LevelPlan, PruneError> {
    let prunable = ctx.prunable();
    let density = ctx.goal.density;
    let rate = options.rate.0;
    let group = |names: Vec<String>, numel: usize, rate: f64| Group {
        target: density.keep_count(numel),
        names,
        numel,
        rate,
    };
    match (ctx.goal.scope, options.output_rate) {
        (Scope::Layerwise, Some(_)) => Err(PruneError::Unsupported {
            method: "imp".into(),
            why: "`output_rate` needs `prune.scope = \"global\"`: layer-wise every layer lands on \
                  the target density"
                .into(),
        }),
        (Scope::Layerwise, None) => Ok(LevelPlan::new(
            prunable
                .iter()
                .map(|p| group(vec![p.name.clone()], p.numel(), rate))
                .collect(),
            None,
        )),
        (Scope::Global, output_rate) => {
            let total: usize = prunable.iter().map(|p| p.numel()).sum();
            let output = output_rate.and_then(|q| {
                // The output layer is the last linear weight in the model's declaration order.
                let last = ctx
                    .target
                    .params()
                    .into_iter()
                    .rfind(|p| p.kind == ParamKind::LinearWeight)?;
                prunable
                    .iter()
                    .find(|p| p.name == last.name)
                    .map(|p| (p.clone(), q.0))
            });
            let groups = match output {
                None => vec![group(
                    prunable.iter().map(|p| p.name.clone()).collect(),
                    total,
                    rate,
                )],
                Some((out, q)) => vec![
                    group(
                        prunable
                            .iter()
                            .filter(|p| p.name != out.name)
                            .map(|p| p.name.clone())
                            .collect(),
                        total - out.numel(),
                        rate,
                    ),
                    group(vec![out.name.clone()], out.numel(), q),
                ],
            };
            Ok(LevelPlan::new(groups, Some(density.keep_count(total))))
        }
    }
}

/// Saved progress: the rewind point and the masks of finished levels.
struct Progress {
    dir: Option<PathBuf>,
}

/// What a resumed run starts from.
struct Resumed {
    level: usize,
    mask: MaskSet,
    metrics: Vec<MetricRow>,
    finished: bool,
    rewind: ParamValues,
}

impl Progress {
    fn rewind_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("rewind.safetensors"))
    }

    fn level_path(&self, r: usize) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("level-{r:03}.safetensors")))
    }

    fn final_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("final.safetensors"))
    }

    fn save_rewind(&self, values: &ParamValues) -> Result<(), PruneError> {
        let Some(path) = self.rewind_path() else {
            return Ok(());
        };
        let bytes = weights::to_bytes(values, &BTreeMap::new());
        lottery_core::fsutil::write_atomic(&path, &bytes).map_err(|e| failed(&path, e))
    }

    fn load_rewind(path: &Path) -> Result<ParamValues, PruneError> {
        weights::read(path).map_err(|e| damaged(path, e))
    }

    fn save_mask(
        &self,
        path: Option<PathBuf>,
        mask: &MaskSet,
        metrics: &[MetricRow],
    ) -> Result<(), PruneError> {
        match path {
            Some(path) => lottery_core::progress::save_mask_progress(&path, mask, metrics),
            None => Ok(()),
        }
    }

    fn load_mask(path: &Path) -> Result<(MaskSet, Vec<MetricRow>), PruneError> {
        lottery_core::progress::load_mask_progress(path).map_err(PruneError::into_damaged)
    }

    /// The furthest saved point that loads, if the rewind point was saved. A level's file that
    /// does not load is set aside and the level before it is tried; a rewind point that does not
    /// load is an error.
    fn resume(&self, levels: usize) -> Result<Option<Resumed>, PruneError> {
        let Some(rewind_path) = self.rewind_path().filter(|p| p.exists()) else {
            return Ok(None);
        };
        let rewind = Self::load_rewind(&rewind_path)?;
        let saved = self
            .final_path()
            .map(|p| (p, levels, true))
            .into_iter()
            .chain(
                (1..=levels)
                    .rev()
                    .filter_map(|r| self.level_path(r).map(|p| (p, r, false))),
            );
        for (path, level, finished) in saved {
            if !path.exists() {
                continue;
            }
            match Self::load_mask(&path) {
                Ok((mask, metrics)) => {
                    return Ok(Some(Resumed {
                        level,
                        mask,
                        metrics,
                        finished,
                        rewind,
                    }));
                }
                Err(e) => set_aside(&path, &e)?,
            }
        }
        Ok(None)
    }
}

fn failed(path: &Path, why: impl ToString) -> PruneError {
    PruneError::Progress {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn damaged(path: &Path, why: impl ToString) -> PruneError {
    PruneError::DamagedProgress {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// Renames a file of saved progress that does not load to `<file>.damaged`, with a warning, so
/// that the run goes on from an earlier one.
fn set_aside(path: &Path, error: &PruneError) -> Result<(), PruneError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".damaged");
    let aside = PathBuf::from(aside);
    tracing::warn!(
        "{error}; set aside as {} and going on from earlier progress, if any",
        aside.display()
    );
    std::fs::rename(path, &aside).map_err(|e| failed(path, format!("setting it aside: {e}")))
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

    /// The configured controls at level `r` (mask `mask`, rewind weights `rewind`).
    fn controls(
        &self,
        ctx: &mut PruneContext<'_>,
        r: usize,
        mask: &MaskSet,
        rewind: &ParamValues,
    ) -> Result<(), PruneError> {
        for control in &self.options.controls {
            ctx.progress
                .set_message(format!("imp level {r}: control {}", control.phase()));
            match control {
                Control::Reinit => {
                    let fresh = ctx.target.fresh_values(reinit_seed(ctx.seed, r));
                    self.train_level(ctx, r, control.phase(), &fresh, mask)?;
                }
                Control::RandomMask => {
                    let random = random_mask_like(mask, ctx.seed, r)?;
                    self.train_level(ctx, r, control.phase(), rewind, &random)?;
                }
            }
        }
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
                progress.save_rewind(&theta_k)?;
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

fn reinit_seed(seed: u64, r: usize) -> u64 {
    seed ^ 0x005E_ED0F_5EED ^ (r as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A uniformly random mask with the same number of kept entries in every parameter as `like`.
pub fn random_mask_like(like: &MaskSet, seed: u64, r: usize) -> Result<MaskSet, PruneError> {
    let mut out = MaskSet::new();
    for (i, (name, m)) in like.iter().enumerate() {
        let stream = seed ^ (r as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (i as u64) << 48;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
        let scores = ParamValues::from([(
            name.clone(),
            FlatTensor::new(
                m.shape.clone(),
                (0..m.numel()).map(|_| rng.random::<f32>()).collect(),
            ),
        )]);
        let chosen = top_k_count(&scores, m.kept(), None)?;
        out.insert(
            name.clone(),
            chosen.get(name).expect("one parameter").clone(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(numel: usize, rate: f64, target: usize) -> Group {
        Group {
            names: vec![format!("g{numel}")],
            numel,
            rate,
            target,
        }
    }

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

    #[test]
    fn level_counts_follow_the_geometric_rate_and_land_on_the_target() {
        let n = 266_200;
        let target = Density::new(0.02).unwrap().keep_count(n);
        let plan = LevelPlan::new(vec![group(n, 0.2, target)], Some(target));
        assert_eq!(plan.levels(), 18, "0.8^17 > 0.02 >= 0.8^18");
        for r in 0..18 {
            let want = (0.8f64.powi(r as i32) * n as f64).round() as usize;
            assert_eq!(plan.counts[r], vec![want], "level {r}");
        }
        assert_eq!(plan.counts[18], vec![target]);
    }

    #[test]
    fn output_layer_at_its_own_rate_and_the_total_exact() {
        let (pool, out) = (100_000, 1_000);
        let target = Density::new(0.05).unwrap().keep_count(pool + out);
        let plan = LevelPlan::new(vec![group(pool, 0.2, 0), group(out, 0.1, 0)], Some(target));
        let last = plan.levels();
        for r in 1..last {
            assert_eq!(
                plan.counts[r][1],
                (0.9f64.powi(r as i32) * out as f64).round() as usize
            );
        }
        assert_eq!(plan.counts[last].iter().sum::<usize>(), target);
        for r in 1..=last {
            assert!(plan.counts[r][0] <= plan.counts[r - 1][0]);
            assert!(plan.counts[r][1] <= plan.counts[r - 1][1]);
        }
    }

    #[test]
    fn layerwise_levels_end_on_every_layer_target() {
        let groups = vec![group(1000, 0.2, 100), group(30, 0.2, 3)];
        let plan = LevelPlan::new(groups, None);
        assert_eq!(plan.counts.last().unwrap(), &vec![100, 3]);
        assert!(plan.counts.iter().all(|c| c[0] >= 100 && c[1] >= 3));
    }

    #[test]
    fn density_one_needs_no_level() {
        let plan = LevelPlan::new(vec![group(10, 0.2, 10)], Some(10));
        assert_eq!(plan.levels(), 0);
    }

    #[test]
    fn random_mask_keeps_the_per_layer_counts() {
        let mut like = MaskSet::dense([("a", &[4usize, 5][..]), ("b", &[7][..])]);
        let scores = ParamValues::from([
            (
                "a".to_string(),
                FlatTensor::new(vec![4, 5], (0..20).map(|i| i as f32).collect()),
            ),
            (
                "b".to_string(),
                FlatTensor::new(vec![7], (0..7).map(|i| i as f32).collect()),
            ),
        ]);
        like = top_k_count(&scores, 9, Some(&like)).unwrap();
        let r = random_mask_like(&like, 3, 2).unwrap();
        for (name, m) in like.iter() {
            assert_eq!(r.get(name).unwrap().kept(), m.kept());
        }
        assert_ne!(r, like, "a random mask, not the ticket's");
        assert_eq!(r, random_mask_like(&like, 3, 2).unwrap(), "seeded");
    }
}
