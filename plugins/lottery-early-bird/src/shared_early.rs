//! The `draw = "early"` search shared by the runs of a config that differ only in density, as
//! the reference trains one network with a detector per pruning ratio (`main.py`): one training
//! in the shared folder (`PruneContext::shared_dir`) with a detector for each density announced
//! there ([`lottery_core::shared_folder`]) and for the run's own. The training goes on until
//! every one of them has drawn its ticket (or the budget ends), and each draw is recorded: the
//! weights at its step (`early-bird/at/<step>.safetensors`, written when the detector fires) and,
//! once the training stops, the draw with its distance rows, the training's rows and the weights
//! kept at checkpoint steps (`early-bird/draws.safetensors`). A run whose draw is recorded reads it
//! and ends as if it had searched alone; a run whose density was not served (announced after the
//! shared training had passed its draw) searches alone. The training's saved state and the
//! scales watched stay in the shared folder, so that a density announced later continues the
//! training from where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lottery_core::{Density, MetricRow, ParamValues, PruneContext, PruneError, Scope, weights};
use lottery_models::channel_masks::ChannelGroup;
use lottery_train::Checkpoints;
use serde::{Deserialize, Serialize};

use crate::history::ChecksByStep;
use crate::{EarlyBird, OnCheck, Search, SearchProgress, Ticket, bn_network, channel_mask};

/// The record's layout; another is read as damaged (and the search trained again).
const FORMAT: &str = "1";

/// One density's draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SharedDraw {
    /// The step the ticket is drawn at.
    step: usize,
    /// Whether the detector fired (false: the budget ended first).
    detected: bool,
    /// The density's distance rows up to the draw.
    rows: Vec<MetricRow>,
}

/// What the shared training has drawn so far, by density.
#[derive(Debug, Clone, Default)]
struct Draws {
    /// The draws, by density (its shortest decimal form).
    by_density: BTreeMap<String, SharedDraw>,
    /// The step the training's rows reach.
    trained_to: usize,
    /// The training's rows up to `trained_to`.
    rows: Vec<MetricRow>,
    /// The weights kept at checkpoint steps up to `trained_to`.
    checkpoints: Checkpoints,
}

fn key(density: Density) -> String {
    f64::from(density).to_string()
}

fn dir(shared: &Path) -> PathBuf {
    shared.join("early-bird")
}

/// Where the weights at a draw's step lie.
fn weights_at(shared: &Path, step: usize) -> PathBuf {
    dir(shared)
        .join("at")
        .join(format!("{step:08}.safetensors"))
}

impl Draws {
    fn path(shared: &Path) -> PathBuf {
        dir(shared).join("draws.safetensors")
    }

    /// The draws recorded in `shared`, none when there is no record yet.
    fn load(shared: &Path) -> Result<Self, PruneError> {
        let path = Self::path(shared);
        if !path.exists() {
            return Ok(Self::default());
        }
        let damaged = |why: &dyn std::fmt::Display| PruneError::damaged_progress(&path, why);
        let (mut tensors, meta) = crate::shared::read_record(&path, FORMAT)?;
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| damaged(&format!("no `{key}` metadata")))
        };
        let checkpoints = lottery_train::take_checkpoints(&mut tensors).map_err(|e| damaged(&e))?;
        Ok(Self {
            by_density: serde_json::from_str(get("draws")?).map_err(|e| damaged(&e))?,
            trained_to: get("trained_to")?.parse().map_err(|e| damaged(&e))?,
            rows: serde_json::from_str(get("rows")?).map_err(|e| damaged(&e))?,
            checkpoints,
        })
    }

    /// Adds what a training of the shared search that stopped at step `end` made: its `drawn`
    /// densities, its rows (when it went at least as far as the record) and its checkpoints
    /// (those not kept before it); then saves the record in `shared` and puts the target's rows
    /// back to `before`.
    fn add_session(
        &mut self,
        ctx: &mut PruneContext<'_>,
        shared: &Path,
        drawn: BTreeMap<String, SharedDraw>,
        end: usize,
        before: &[MetricRow],
        checkpoints_before: &[usize],
    ) -> Result<(), PruneError> {
        self.by_density.extend(drawn);
        let mut rows = ctx.target.metrics();
        let rows = rows.split_off(before.len().min(rows.len()));
        if end >= self.trained_to {
            self.trained_to = end;
            self.rows = rows;
        }
        let mut checkpoints = bn_network(ctx.target)?.checkpoints().clone();
        checkpoints.retain(|step, _| !checkpoints_before.contains(step));
        self.checkpoints.extend(checkpoints);
        ctx.target.restore_metrics(before.to_vec());
        self.save(shared)
    }

    /// Writes the record atomically.
    fn save(&self, shared: &Path) -> Result<(), PruneError> {
        let path = Self::path(shared);
        let err = |e: &dyn std::fmt::Display| PruneError::progress(&path, e.to_string());
        let mut tensors = ParamValues::new();
        lottery_train::put_checkpoints(&mut tensors, &self.checkpoints);
        let json = |r: Result<String, serde_json::Error>| r.map_err(|e| err(&e));
        let meta = BTreeMap::from([
            ("format".to_string(), FORMAT.to_string()),
            (
                "draws".to_string(),
                json(serde_json::to_string(&self.by_density))?,
            ),
            ("trained_to".to_string(), self.trained_to.to_string()),
            ("rows".to_string(), json(serde_json::to_string(&self.rows))?),
        ]);
        let bytes = weights::to_bytes(&tensors, &meta);
        lottery_core::fsutil::write_atomic(&path, &bytes).map_err(|e| err(&e))
    }
}

/// Writes every parameter and buffer at a draw's step (once: the training is the same whichever
/// run repeats it).
fn save_weights_at(shared: &Path, step: usize, values: &ParamValues) -> Result<(), PruneError> {
    let path = weights_at(shared, step);
    if path.exists() {
        return Ok(());
    }
    let meta = BTreeMap::from([("format".to_string(), FORMAT.to_string())]);
    let bytes = weights::to_bytes(values, &meta);
    lottery_core::fsutil::write_atomic(&path, &bytes).map_err(|e| PruneError::progress(&path, e))
}

/// The detectors of the densities that the shared training serves.
struct ManyDensities<'a> {
    shared: &'a Path,
    groups: &'a [ChannelGroup],
    scope: Scope,
    /// The densities still waiting for their draw, with their searches.
    pending: Vec<(String, Density, Search)>,
    /// The draws made in this training.
    drawn: BTreeMap<String, SharedDraw>,
}

impl OnCheck for ManyDensities<'_> {
    fn check(
        &mut self,
        s: usize,
        e: usize,
        scales: &ParamValues,
        live: Option<&ParamValues>,
    ) -> Result<bool, PruneError> {
        let mut still = vec![];
        for (key, density, mut search) in std::mem::take(&mut self.pending) {
            let keep = channel_mask(self.groups, scales, density, self.scope)?;
            if !search.take(keep, s, e) {
                still.push((key, density, search));
                continue;
            }
            match live {
                Some(values) => save_weights_at(self.shared, s, values)?,
                // A check replayed from before a resume, whose weights no run kept: this density
                // was announced too late to be served; its run searches alone.
                None if !weights_at(self.shared, s).exists() => continue,
                None => {}
            }
            let draw = SharedDraw {
                step: s,
                detected: true,
                rows: search.rows,
            };
            self.drawn.insert(key, draw);
        }
        self.pending = still;
        Ok(self.pending.is_empty())
    }

    fn describe(&self) -> String {
        format!("{} densities waiting for their draw", self.pending.len())
    }
}

impl EarlyBird {
    /// This density's ticket from the `draw = "early"` search shared in `shared`: read from its
    /// record, or drawn by training the shared search on (holding the folder's lock) for every
    /// density announced there. The target then stands where the ticket was drawn, with the
    /// search's rows and this density's distance rows, as if it had searched alone. `None` when
    /// the shared training passed this density's draw without keeping its weights: search alone.
    pub(crate) fn search_shared_early(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
        shared: &Path,
    ) -> Result<Option<Ticket>, PruneError> {
        self.budget(ctx.target.clock())?;
        lottery_core::shared_folder::announce_density(shared, ctx.goal.density)
            .map_err(|e| PruneError::progress(shared, e))?;
        let lock = crate::lock_shared(ctx, shared)?;
        let drawn = crate::set_aside_if_damaged(shared, self.draw_shared(ctx, groups, shared))?;
        drop(lock);
        Ok(drawn)
    }

    /// [`EarlyBird::search_shared_early`] with the lock held.
    fn draw_shared(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
        shared: &Path,
    ) -> Result<Option<Ticket>, PruneError> {
        let (density, scope) = (ctx.goal.density, ctx.goal.scope);
        let own = key(density);
        let mut draws = Draws::load(shared)?;
        let before = ctx.target.metrics();
        let checkpoints_before: Vec<usize> = bn_network(ctx.target)?
            .checkpoints()
            .keys()
            .copied()
            .collect();
        if draws.by_density.contains_key(&own) {
            tracing::info!(
                "early-bird: read this density's draw from the search shared with this config's \
                 other densities, in {}",
                shared.display()
            );
        } else {
            // Whether the training went past this density's draw without keeping its weights.
            let progress = SearchProgress::in_dir(shared);
            let checks = progress.scales.read()?;
            if let Some(step) = self.first_draw(groups, density, scope, &checks)?
                && !weights_at(shared, step).exists()
            {
                tracing::info!(
                    "early-bird: the search shared with this config's other densities passed this \
                     density's draw (step {step}) without keeping it; searching alone"
                );
                return Ok(None);
            }
            self.train_shared(ctx, groups, shared, &mut draws, &before)?;
        }
        let Some(draw) = draws.by_density.get(&own) else {
            return Err(PruneError::damaged_progress(
                &Draws::path(shared),
                format!("the shared search ended without a draw for density {own}"),
            ));
        };

        // The target where the ticket was drawn: the weights and clock there, the training's
        // rows and checkpoints up to it, and this density's distance rows.
        let path = weights_at(shared, draw.step);
        let values = weights::read(&path).map_err(|e| PruneError::damaged_progress(&path, e))?;
        ctx.target.rewind(&values, draw.step)?;
        let task = bn_network(ctx.target)?;
        task.retain_checkpoints(|step| checkpoints_before.contains(&step));
        let mut kept = draws.checkpoints.clone();
        kept.retain(|&step, _| step <= draw.step);
        task.insert_checkpoints(kept);
        let mut rows = before;
        rows.extend(
            draws
                .rows
                .iter()
                .filter(|r| r.step as usize <= draw.step)
                .cloned(),
        );
        rows.extend(draw.rows.iter().cloned());
        ctx.target.restore_metrics(rows);
        let spe = ctx.target.clock().steps_per_epoch.max(1);
        Ok(Some(Ticket {
            keep: channel_mask(groups, &values, density, scope)?,
            drawn_epoch: draw.step / spe,
            drawn_step: Some(draw.step),
            detected: draw.detected,
        }))
    }

    /// The step at which the detector of `density` fires over the recorded `checks`, if it does.
    fn first_draw(
        &self,
        groups: &[ChannelGroup],
        density: Density,
        scope: Scope,
        checks: &ChecksByStep,
    ) -> Result<Option<usize>, PruneError> {
        let mut all = checks.iter();
        let Some((0, first)) = all.next() else {
            return Ok(None);
        };
        let mut search = Search::new(
            &self.options,
            channel_mask(groups, &first.scales, density, scope)?,
        );
        for (&step, c) in all {
            if search.take(
                channel_mask(groups, &c.scales, density, scope)?,
                step,
                c.epoch,
            ) {
                return Ok(Some(step));
            }
        }
        Ok(None)
    }

    /// Trains the shared search on (resuming it from the shared folder) with a detector for
    /// every announced density not drawn yet and the run's own, until each has drawn or the
    /// budget ends; adds the draws, the training's rows and its checkpoints to `draws`. The
    /// target's rows are `before` again afterwards.
    fn train_shared(
        &self,
        ctx: &mut PruneContext<'_>,
        groups: &[ChannelGroup],
        shared: &Path,
        draws: &mut Draws,
        before: &[MetricRow],
    ) -> Result<(), PruneError> {
        let o = &self.options;
        let budget = self.budget(ctx.target.clock())?;
        let scope = ctx.goal.scope;
        let scales: Vec<String> = groups.iter().map(|g| g.scale.clone()).collect();
        let mut densities = lottery_core::shared_folder::announced_densities(shared)
            .map_err(|e| PruneError::progress(shared, e))?;
        if !densities.contains(&ctx.goal.density) {
            densities.push(ctx.goal.density);
        }
        bn_network(ctx.target)?.set_norm_l1(o.l1)?;
        ctx.target.set_phase(0, "search");
        let start = ctx.target.values(&scales)?;
        let mut pending = vec![];
        for density in densities {
            let key = key(density);
            if !draws.by_density.contains_key(&key) {
                let first = channel_mask(groups, &start, density, scope)?;
                pending.push((key, density, Search::new(o, first)));
            }
        }
        let served = pending.len();
        let checkpoints_before: Vec<usize> = bn_network(ctx.target)?
            .checkpoints()
            .keys()
            .copied()
            .collect();

        let progress = SearchProgress::in_dir(shared);
        let saved = progress.resumable_checks(&start)?;
        ctx.target
            .save_training_in(Some(progress.training.clone()), ctx.save_every)?;
        let mut many = ManyDensities {
            shared,
            groups,
            scope,
            pending,
            drawn: BTreeMap::new(),
        };
        let trained = self.train_searching(
            ctx,
            groups,
            &mut many,
            &saved,
            Some(&progress.scales),
            budget,
            true,
        );
        ctx.target.save_training_in(None, Duration::ZERO)?;
        let end = ctx.target.clock().step;
        if let Err(e) = trained {
            // The draws made before the failure are kept; a run whose own draw came before it
            // ends as its run alone would have (which stopped there), the others fail as theirs.
            let own_drawn = many.drawn.contains_key(&key(ctx.goal.density));
            many.pending.clear();
            draws.add_session(ctx, shared, many.drawn, end, before, &checkpoints_before)?;
            if !own_drawn {
                return Err(e);
            }
            tracing::warn!(
                "early-bird: the search shared with this config's other densities failed after \
                 this density's draw ({e}); the densities still waiting will search again"
            );
            return Ok(());
        }
        if !many.pending.is_empty() {
            // The budget ended before these detectors fired: their tickets are the last masks.
            let all: Vec<String> = ctx.target.params().into_iter().map(|p| p.name).collect();
            save_weights_at(shared, end, &ctx.target.values(&all)?)?;
            for (key, _, search) in std::mem::take(&mut many.pending) {
                let draw = SharedDraw {
                    step: end,
                    detected: false,
                    rows: search.rows,
                };
                many.drawn.insert(key, draw);
            }
        }
        tracing::info!(
            "early-bird: the shared search served {served} densities to step {end}; {} drawn",
            many.drawn.len()
        );
        draws.add_session(ctx, shared, many.drawn, end, before, &checkpoints_before)
    }
}
