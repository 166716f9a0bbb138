//! One experiment, from resolved config to a finished run directory.
//!
//! [`prepare`] resolves every name against the registries, checks the method's options, loads the
//! data and builds (or loads) the initial weights, so that bad input fails before any work and
//! leaves nothing in `results/`. [`execute`] prunes, trains, evaluates and writes the run directory
//! under a temporary name, renaming it into place only when complete (`write`); an interrupted run
//! resumes from the progress kept in its work folder, its time counted across attempts (`clock`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;
use lottery_analysis::store::{self, RunClaim, RunSummary, StoreError};
use lottery_bert::{BertSettings, BertTask};
use lottery_core::backend::{backend_name, default_device, processor};
use lottery_core::config::RunConfig;
use lottery_core::error::{ConfigError, ConfigErrorKind};
use lottery_core::plugin::DensityOf;
use lottery_core::{
    GRAPH_MASK, MaskSet, ParamValues, PruneContext, PruneError, PruneTarget, Scope,
};
use lottery_data::DataError;
use lottery_gcn::GcnTask;
use lottery_train::Checkpoints;
use lottery_train::ImageTask;

mod clock;
mod prepare;
mod write;

pub use clock::save_interval;
use clock::{PhaseClock, finished_pruning_seconds};
use prepare::max_tokens;
pub use prepare::{DataCache, Network, Prepared, prepare};
use write::write_run;
pub use write::{git_state, write_weights};

/// Why a run could not be prepared or finished.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad or missing data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The method failed.
    #[error("pruning failed")]
    Prune(#[from] PruneError),
    /// Writing the results failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another process is computing this run now (it holds the run's claim).
    #[error("run {run_id} is being computed by another process")]
    Busy {
        /// The run id.
        run_id: String,
    },
    /// `LOTTERY_SAVE_EVERY` is not a number of seconds.
    #[error(
        "LOTTERY_SAVE_EVERY = `{value}` (environment variable): expected the seconds between saves of a training's state, a number ≥ 0"
    )]
    SaveInterval {
        /// The variable's value.
        value: String,
    },
    /// Other I/O on a named path.
    #[error("{}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Its directory.
    pub dir: PathBuf,
    /// Its summary.
    pub summary: RunSummary,
    /// Whether it was already finished and so skipped.
    pub skipped: bool,
}

/// The directory of a run.
pub fn run_dir(results: &Path, cfg: &RunConfig, run_id: &str) -> PathBuf {
    results.join(&cfg.study).join(run_id)
}

/// The directory where an unfinished run keeps its method's progress (hidden beside the run
/// directories, never read by tables, removed once the run is recorded).
pub fn work_dir(results: &Path, cfg: &RunConfig, run_id: &str) -> PathBuf {
    results.join(&cfg.study).join(format!(".{run_id}.work"))
}

/// The directory shared by the runs of `p`'s study that differ from it only in `prune.density`
/// (hidden beside the run directories, never read by tables, kept after the runs so that a
/// density added later reuses it): [`PruneContext::shared_dir`]. Its id covers the config
/// without the density, the run's inputs, the backend and the processor: what one machine and
/// backend computed is not read by another, whose kernels round differently.
pub fn shared_dir(results: &Path, p: &Prepared) -> PathBuf {
    let mut inputs = p.inputs.clone();
    inputs.insert("backend".into(), backend_name().to_string());
    inputs.insert("processor".into(), processor());
    let id = p.canonical.density_free_id(&inputs);
    results
        .join(&p.canonical.study)
        .join(format!(".{id}.shared"))
}

/// Announces the density of each unfinished run of `prepared` whose method shares work across
/// densities in the folder it shares with the other densities
/// ([`lottery_core::shared_folder::announce_density`]), so that a search serving several
/// densities at once serves all the planned ones, whichever run starts it. Call it after any
/// `--force` emptied the shared folders, before the runs.
pub fn announce_densities(results: &Path, prepared: &[Prepared]) -> Result<(), RunError> {
    for p in prepared.iter().filter(|p| p.method.shares_across_densities) {
        if run_dir(results, &p.canonical, &p.run_id).exists() {
            continue; // finished: nothing to serve
        }
        let dir = shared_dir(results, p);
        // Checked when the run was prepared.
        let Ok(density) = lottery_core::Density::new(p.canonical.prune.density) else {
            continue;
        };
        lottery_core::shared_folder::announce_density(&dir, density).map_err(io(&dir))?;
    }
    Ok(())
}

/// Empties a shared directory (all but its lock file), holding its lock: `--force` recomputes
/// what the runs of other densities would otherwise read from it. Call it once per directory
/// and invocation, before the runs (each forced density would otherwise compute it again).
pub fn discard_shared(dir: &Path) -> Result<(), RunError> {
    if !dir.exists() {
        return Ok(());
    }
    let _lock = lottery_core::fsutil::DirLock::acquire(dir).map_err(io(dir))?;
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        if entry.file_name() == lottery_core::fsutil::DirLock::FILE {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
    tracing::info!(
        "--force: discarded the search shared with the run's other densities in {}",
        dir.display()
    );
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Prunes, trains, evaluates and records the run under `results/`. A finished run with the same id
/// is skipped unless `force` (which also discards its saved progress). The run is claimed for the
/// whole computation ([`RunError::Busy`] when another process has it); a failure is recorded
/// beside the run for `lottery sweep --status` and forgotten once the run succeeds.
pub fn execute(
    p: &Prepared,
    results: &Path,
    force: bool,
    bar: ProgressBar,
) -> Result<RunOutcome, RunError> {
    let study_dir = results.join(&p.canonical.study);
    let run_id = p.run_id.clone();
    let finished = |dir: &Path| -> Result<Option<RunOutcome>, RunError> {
        Ok(if dir.join("summary.json").exists() && !force {
            Some(RunOutcome {
                summary: store::read_summary(&dir.join("summary.json"))?,
                dir: dir.to_path_buf(),
                skipped: true,
            })
        } else {
            None
        })
    };
    let dir = run_dir(results, &p.canonical, &run_id);
    if let Some(done) = finished(&dir)? {
        return Ok(done);
    }
    let Some(_claim) = RunClaim::try_acquire(&study_dir, &run_id)? else {
        return Err(RunError::Busy { run_id });
    };
    // Another process may have finished it between the check and the claim.
    if let Some(done) = finished(&dir)? {
        return Ok(done);
    }
    // With the claim held no other process writes this run: what a failed write of an earlier
    // attempt left behind can go, and so can the progress that --force discards.
    remove_stale_temporaries(&study_dir, &run_id)?;
    let work = work_dir(results, &p.canonical, &run_id);
    if force && work.exists() {
        tracing::info!(
            "--force: discarding the saved progress in {}",
            work.display()
        );
        std::fs::remove_dir_all(&work).map_err(io(&work))?;
    }
    let result = match compute(p, results, bar.clone()) {
        Err(RunError::Prune(PruneError::DamagedProgress { path, why })) => {
            let aside = lottery_core::fsutil::set_aside(&work).map_err(io(&work))?;
            tracing::warn!(
                "saved progress {} does not load ({why}); moved the run's progress to {} and starting the run over",
                path.display(),
                aside.display()
            );
            compute(p, results, bar)
        }
        other => other,
    };
    match result {
        Ok(outcome) => {
            store::clear_failure(&study_dir, &run_id)?;
            Ok(outcome)
        }
        Err(e) => {
            let why = error_chain(&e);
            if let Err(w) = store::record_failure(&study_dir, &run_id, &why) {
                tracing::warn!("could not record the failure of {run_id}: {w}");
            }
            Err(e)
        }
    }
}

/// Removes the temporary folders (`.<run-id>.tmp-<pid>`, `.<run-id>.old-<pid>`) that an
/// interrupted or failed write of this run left in its study folder.
fn remove_stale_temporaries(study_dir: &Path, run_id: &str) -> Result<(), RunError> {
    let Ok(entries) = std::fs::read_dir(study_dir) else {
        return Ok(());
    };
    let prefixes = [format!(".{run_id}.tmp-"), format!(".{run_id}.old-")];
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            let path = entry.path();
            tracing::info!("removing {} left by an earlier attempt", path.display());
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// The error and its causes, one per line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// The prune target of a run: an image task or a GCN task.
pub enum RunTarget {
    /// An image classifier with its data.
    Image(Box<ImageTask>),
    /// A GCN on its graph.
    Graph(Box<GcnTask>),
    /// A pre-trained BERT on its text task.
    Text(Box<BertTask>),
}

impl RunTarget {
    /// The target as the methods see it.
    pub fn target(&mut self) -> &mut dyn PruneTarget {
        match self {
            RunTarget::Image(t) => t.as_mut(),
            RunTarget::Graph(t) => t.as_mut(),
            RunTarget::Text(t) => t.as_mut(),
        }
    }

    /// Weights saved at the configured checkpoint steps (image tasks).
    fn checkpoints(&self) -> Checkpoints {
        match self {
            RunTarget::Image(t) => t.checkpoints().clone(),
            RunTarget::Graph(_) | RunTarget::Text(_) => Checkpoints::new(),
        }
    }
}

fn compute(p: &Prepared, results: &Path, bar: ProgressBar) -> Result<RunOutcome, RunError> {
    let cfg = p.canonical.clone();
    let dir = run_dir(results, &cfg, &p.run_id);
    let goal = cfg.goal()?;
    let mut run_target = target_of(p, bar.clone())?;
    let task = run_target.target();
    let work_dir = work_dir(results, &cfg, &p.run_id);
    // How often a training (the method's, then the final one) saves its state to resume from.
    let save_every = save_interval()?;

    bar.set_message(format!("{} pruning", p.method.name));
    let prune_clock = PhaseClock::start(&work_dir, "prune-seconds", "pruning");
    let mut pruner = build_pruner(p)?;
    let (mask, waited) = {
        let mut ctx = PruneContext {
            target: &mut *task,
            goal: goal.clone(),
            seed: cfg.seed,
            progress: bar.clone(),
            work_dir: Some(work_dir.clone()),
            save_every,
            shared_dir: Some(shared_dir(results, p)),
            waited: Duration::ZERO,
        };
        let expected = ctx.dense_mask();
        let mask = pruner.prune(&mut ctx)?;
        check_mask(&weights_only(&mask), &expected, &goal, p.method.density_of)?;
        (mask, ctx.waited)
    };
    // A run resumed in its training recomputes (or reloads) its mask: the time of the first
    // finished pruning is the one that counts. Time spent waiting for another process does not.
    let prune_seconds = (prune_clock.stop() - waited.as_secs_f64()).max(0.0);
    let prune_seconds = finished_pruning_seconds(&work_dir, prune_seconds)?;
    let weights = weights_only(&mask);

    task.record("prune", "density", weights.density());
    if let Some(g) = mask.get(GRAPH_MASK) {
        task.record("prune", "graph-density", g.density());
        task.record("prune", "edges-kept", g.kept() as f64);
    }
    if let (Ok(sparse), Ok(dense)) = (task.mask_flops(&mask), task.mask_flops(&MaskSet::new())) {
        task.record("prune", "inference-flops", sparse);
        task.record("prune", "inference-flops-ratio", sparse / dense);
    }
    let (init_loss, init_acc) = task.evaluate(&mask)?;
    task.record("test", "loss", init_loss);
    task.record("test", "accuracy", init_acc);

    bar.set_message(format!(
        "{} d={} training",
        p.method.name, cfg.prune.density
    ));
    let train_clock = PhaseClock::start(&work_dir, "train-seconds", "training");
    let mut last = (init_loss, init_acc);
    // (epoch, test accuracy) of every evaluated epoch of the final training.
    let mut evaluated: Vec<(u64, f64)> = vec![];
    // To the end of the run's schedule: a method that rewound to step k continues from there.
    let end = task.clock().run_steps;
    // Resumable: the training saves its state in the work folder and a rerun continues from it.
    task.save_training_in(Some(work_dir.join("train")), save_every)?;
    task.train_until(&mask, end, &mut |r| {
        last = (
            r.test_loss.unwrap_or(f64::NAN),
            r.test_accuracy.unwrap_or(f64::NAN),
        );
        if let Some(acc) = r.test_accuracy {
            evaluated.push((r.epoch as u64, acc));
        }
        tracing::info!(
            epoch = r.epoch,
            train_loss = format!("{:.4}", r.train_loss),
            test_accuracy = format!("{:.4}", r.test_accuracy.unwrap_or(f64::NAN)),
            "epoch"
        );
    })?;
    task.save_training_in(None, Duration::ZERO)?;
    let train_seconds = train_clock.stop();
    check_pruned_are_zero(&*task, &weights)?;
    task.record("level", "density", weights.density());
    task.record("level", "accuracy", last.1);
    let best = best_epoch(&evaluated);

    let (git_commit, git_dirty) = git_state();
    let summary = RunSummary {
        run_id: p.run_id.clone(),
        study: cfg.study.clone(),
        method: p.method.name.to_string(),
        options: changed_options(p),
        model: cfg.model.name.clone(),
        dataset: cfg.data.name.clone(),
        seed: cfg.seed,
        density_requested: cfg.prune.density,
        density_achieved: weights.density(),
        kept: weights.kept() as u64,
        prunable: weights.numel() as u64,
        collapsed_layers: weights.collapsed(),
        test_accuracy: last.1,
        test_loss: last.0,
        test_accuracy_at_init: init_acc,
        best_test_accuracy: best.map(|b| b.1),
        best_test_epoch: best.map(|b| b.0),
        epochs: cfg.train.epochs as u64,
        prune_seconds,
        train_seconds,
        backend: backend_name().to_string(),
        processor: processor(),
        git_commit,
        git_dirty,
        lottery_version: env!("CARGO_PKG_VERSION").to_string(),
        setting: String::new(),
    };
    let metrics = task.metrics();
    let checkpoints = run_target.checkpoints();
    write_run(&dir, p, &summary, metrics, &checkpoints, &mask)?;
    if work_dir.exists() {
        std::fs::remove_dir_all(&work_dir).map_err(io(&work_dir))?;
    }
    Ok(RunOutcome {
        dir,
        summary,
        skipped: false,
    })
}

/// The epoch of highest test accuracy and that accuracy (the first such epoch on ties; NaN never
/// wins), or `None` when no epoch was evaluated: the reference implementations' `best_prec1`.
fn best_epoch(evaluated: &[(u64, f64)]) -> Option<(u64, f64)> {
    evaluated
        .iter()
        .copied()
        .filter(|(_, acc)| !acc.is_nan())
        .fold(None, |best, (e, acc)| match best {
            Some((_, b)) if b >= acc => best,
            _ => Some((e, acc)),
        })
}

/// The method's options that differ from its defaults, `key=value` joined by `, `.
fn changed_options(p: &Prepared) -> String {
    let defaults = (p.method.default_options)();
    p.options
        .iter()
        .filter(|(k, v)| defaults.get(*k) != Some(*v))
        .map(|(k, v)| match v {
            toml::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The mask without the graph's edge mask: what `prune.density` counts.
fn weights_only(mask: &MaskSet) -> MaskSet {
    let mut out = MaskSet::new();
    for (name, m) in mask.iter().filter(|(n, _)| n.as_str() != GRAPH_MASK) {
        out.insert(name.clone(), m.clone());
    }
    out
}

/// Hidden units of a GCN by default (Kipf & Welling's 16; UGS's own runs use 512).
pub const GCN_HIDDEN: usize = 16;

/// Hidden units of the run's GCN: `model.hidden`, or [`GCN_HIDDEN`].
fn gcn_hidden(cfg: &RunConfig) -> usize {
    if cfg.model.hidden == 0 {
        GCN_HIDDEN
    } else {
        cfg.model.hidden
    }
}

/// The network, data and trainer of a prepared run, showing progress on `bar`.
pub fn target_of(p: &Prepared, bar: ProgressBar) -> Result<RunTarget, RunError> {
    let cfg = &p.canonical;
    Ok(match &p.network {
        Network::Image { data, model } => RunTarget::Image(Box::new(
            ImageTask::new(
                model.as_ref().clone(),
                data.clone(),
                cfg.train.clone(),
                cfg.data.batch_size,
                cfg.data.augment,
                cfg.seed,
                default_device(),
            )
            .with_model_options(cfg.model.init, cfg.model.batch_norm)
            .with_progress(bar),
        )),
        Network::Graph { graph } => RunTarget::Graph(Box::new(
            GcnTask::new(graph.clone(), gcn_hidden(cfg), cfg.train.clone(), cfg.seed)
                .with_progress(bar),
        )),
        Network::Text { checkpoint, task } => {
            let settings = BertSettings {
                train: cfg.train.clone(),
                batch_size: cfg.data.batch_size,
                max_tokens: max_tokens(cfg),
                train_subset: cfg.data.train_subset,
                test_subset: cfg.data.test_subset,
                seed: cfg.seed,
            };
            RunTarget::Text(Box::new(
                BertTask::new(checkpoint.clone(), task.clone(), settings)?.with_progress(bar),
            ))
        }
    })
}

/// Builds the run's method, mapping an options error to the config key at fault.
pub fn build_pruner(p: &Prepared) -> Result<Box<dyn lottery_core::Pruner>, RunError> {
    (p.method.build)(&p.options).map_err(|why| {
        ConfigError::new(
            ConfigErrorKind::Invalid,
            format!("methods.{}", p.method.name),
            "",
            why,
        )
        .into()
    })
}

/// The raw scores of the run's method for every prunable parameter at the run's initial weights
/// (first round, nothing pruned yet), PyTorch names and layout.
pub fn initial_scores(p: &Prepared) -> Result<ParamValues, RunError> {
    let mut run_target = target_of(p, ProgressBar::hidden())?;
    let mut pruner = build_pruner(p)?;
    let mut ctx = PruneContext {
        target: run_target.target(),
        goal: p.canonical.goal()?,
        seed: p.canonical.seed,
        progress: ProgressBar::hidden(),
        work_dir: None,
        save_every: std::time::Duration::ZERO,
        shared_dir: None,
        waited: std::time::Duration::ZERO,
    };
    let dense = ctx.dense_mask();
    let scorer = pruner.scorer().ok_or_else(|| {
        ConfigError::new(
            ConfigErrorKind::Invalid,
            "prune.method",
            p.method.name,
            "a method that ranks weights by a score",
        )
    })?;
    Ok(scorer.score(&mut ctx, &dense, 1)?)
}

fn check_mask(
    mask: &MaskSet,
    expected: &MaskSet,
    goal: &lottery_core::PruneGoal,
    density_of: DensityOf,
) -> Result<(), PruneError> {
    let names: Vec<&String> = mask.iter().map(|(n, _)| n).collect();
    let want: Vec<&String> = expected.iter().map(|(n, _)| n).collect();
    if names != want {
        return Err(PruneError::Internal(format!(
            "mask covers {names:?}, the prunable parameters are {want:?}"
        )));
    }
    if density_of == DensityOf::Channels {
        // The method keeps its share of channels exactly; the weight count follows from them.
        return Ok(());
    }
    let want_kept: usize = match goal.scope {
        Scope::Global => goal.density.keep_count(expected.numel()),
        Scope::Layerwise => expected
            .iter()
            .map(|(_, m)| goal.density.keep_count(m.numel()))
            .sum(),
    };
    if mask.kept() != want_kept {
        return Err(PruneError::Internal(format!(
            "mask keeps {} weights, the target is exactly {want_kept}",
            mask.kept()
        )));
    }
    Ok(())
}

fn check_pruned_are_zero(task: &dyn PruneTarget, mask: &MaskSet) -> Result<(), PruneError> {
    let names: Vec<String> = mask.iter().map(|(n, _)| n.clone()).collect();
    let values = task.values(&names)?;
    for (name, m) in mask.iter() {
        if let Some(i) = m
            .keep
            .iter()
            .zip(&values[name].values)
            .position(|(k, v)| !k && *v != 0.0)
        {
            return Err(PruneError::Internal(format!(
                "pruned weight {name}[{i}] is non-zero after training"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::best_epoch;

    #[test]
    fn the_best_epoch_is_the_first_of_highest_accuracy() {
        assert_eq!(best_epoch(&[]), None);
        let curve = [(3, 0.5), (4, 0.8), (5, 0.7), (6, 0.8), (7, f64::NAN)];
        assert_eq!(best_epoch(&curve), Some((4, 0.8)));
        assert_eq!(best_epoch(&[(1, f64::NAN)]), None);
        assert_eq!(best_epoch(&[(1, f64::NAN), (2, 0.1)]), Some((2, 0.1)));
    }
}
