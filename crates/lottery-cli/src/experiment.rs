//! One experiment, from resolved config to a finished run directory.
//!
//! [`prepare`] resolves every name against the registries, checks the method's options, loads the
//! data and builds (or loads) the initial weights, so that bad input fails before any work and
//! leaves nothing in `results/`. [`execute`] prunes, trains, evaluates and writes the run directory
//! under a temporary name, renaming it into place only when complete.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use lottery_analysis::store::{self, LayerRow, RunClaim, RunSummary, StoreError};
use lottery_bert::{BertSettings, BertTask, Pretrained, TextTask};
use lottery_core::backend::{TrainBackend, backend_name, default_device};
use lottery_core::config::{self, ResolvedConfig, RunConfig};
use lottery_core::error::{ConfigError, ConfigErrorKind};
use lottery_core::plugin::{DensityOf, PrunerEntry, capability, find_pruner};
use lottery_core::{
    GRAPH_MASK, MaskSet, ParamValues, PruneContext, PruneError, PruneTarget, Scope,
};
use lottery_data::{DataError, Graph, ImageDataset, find_dataset, find_graph_dataset};
use lottery_gcn::GcnTask;
use lottery_models::{ImageModel, InputShape, find_model, view};
use lottery_train::Checkpoints;
use lottery_train::ImageTask;

use sha2::{Digest, Sha256};

use crate::weights;

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

/// A text task's dataset name, root, train and test subsets, and tokens per text.
type TextKey = (String, Option<PathBuf>, usize, usize, usize);

/// Datasets loaded once per process, keyed by name, root and subset sizes.
#[derive(Default)]
pub struct DataCache {
    loaded: HashMap<(String, Option<PathBuf>, usize, usize), Arc<ImageDataset>>,
    graphs: HashMap<(String, Option<PathBuf>), Arc<Graph>>,
    checkpoints: HashMap<PathBuf, Arc<Pretrained>>,
    folder_digests: HashMap<PathBuf, String>,
    texts: HashMap<TextKey, Arc<TextTask>>,
}

/// Tokens per text example of a run: `data.max_tokens`, or BERT's default.
fn max_tokens(cfg: &RunConfig) -> usize {
    if cfg.data.max_tokens == 0 {
        lottery_bert::DEFAULT_MAX_TOKENS
    } else {
        cfg.data.max_tokens
    }
}

impl DataCache {
    /// SHA-256 over the names and contents of the files directly in `dir` (a checkpoint folder),
    /// computed once per process.
    fn folder_digest(&mut self, dir: &Path) -> Result<String, RunError> {
        if let Some(d) = self.folder_digests.get(dir) {
            return Ok(d.clone());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut hasher = Sha256::new();
        for f in &files {
            let name = f.file_name().map(|n| n.to_string_lossy().to_string());
            hasher.update(name.unwrap_or_default().as_bytes());
            hasher.update([0]);
            hasher.update(std::fs::read(f).map_err(io(f))?);
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.folder_digests
            .insert(dir.to_path_buf(), digest.clone());
        Ok(digest)
    }

    fn checkpoint(&mut self, cfg: &RunConfig) -> Result<Arc<Pretrained>, RunError> {
        let dir = lottery_bert::checkpoint_dir(cfg.model.init_from.as_deref());
        if let Some(c) = self.checkpoints.get(&dir) {
            return Ok(c.clone());
        }
        let c = Arc::new(Pretrained::load(&dir).map_err(|e| {
            named(
                ConfigErrorKind::Invalid,
                "model.init_from",
                &dir.display().to_string(),
                e.to_string(),
            )
        })?);
        self.checkpoints.insert(dir, c.clone());
        Ok(c)
    }

    fn text(
        &mut self,
        cfg: &RunConfig,
        checkpoint: &Pretrained,
    ) -> Result<Arc<TextTask>, RunError> {
        let d = &cfg.data;
        let key = (
            d.name.clone(),
            d.root.clone(),
            d.train_subset,
            d.test_subset,
            max_tokens(cfg),
        );
        if let Some(t) = self.texts.get(&key) {
            return Ok(t.clone());
        }
        lottery_data::find_text_dataset(&d.name).map_err(|why| {
            named(
                ConfigErrorKind::UnknownName,
                "data.name",
                &d.name,
                format!(
                    "{why} (model.name = \"{}\" reads text)",
                    lottery_bert::MODEL_NAME
                ),
            )
        })?;
        let t = TextTask::load(
            &d.name,
            d.root.as_deref(),
            &checkpoint.tokenizer,
            max_tokens(cfg),
            d.train_subset,
            d.test_subset,
        )?;
        if t.train_len() == 0 || t.test_len() == 0 {
            return Err(RunError::Data(DataError::Format {
                path: d.root.clone().unwrap_or_default(),
                why: format!("{}: a split is empty", d.name),
            }));
        }
        let t = Arc::new(t);
        self.texts.insert(key, t.clone());
        Ok(t)
    }

    fn graph(&mut self, cfg: &RunConfig) -> Result<Arc<Graph>, RunError> {
        let d = &cfg.data;
        let key = (d.name.clone(), d.root.clone());
        if let Some(g) = self.graphs.get(&key) {
            return Ok(g.clone());
        }
        let entry = find_graph_dataset(&d.name).map_err(|why| {
            named(
                ConfigErrorKind::UnknownName,
                "data.name",
                &d.name,
                format!(
                    "{why} (model.name = \"{}\" reads a graph)",
                    lottery_gcn::MODEL_NAME
                ),
            )
        })?;
        let root = entry.root(d.root.as_deref());
        let g = Arc::new((entry.load)(&root)?);
        self.graphs.insert(key, g.clone());
        Ok(g)
    }

    fn get(&mut self, cfg: &RunConfig) -> Result<Arc<ImageDataset>, RunError> {
        let d = &cfg.data;
        let key = (
            d.name.clone(),
            d.root.clone(),
            d.train_subset,
            d.test_subset,
        );
        if let Some(ds) = self.loaded.get(&key) {
            return Ok(ds.clone());
        }
        let entry = find_dataset(&d.name)
            .map_err(|why| named(ConfigErrorKind::UnknownName, "data.name", &d.name, why))?;
        let root = entry.root(d.root.as_deref());
        let mut ds = (entry.load)(&root)?;
        if entry.stored_by_class {
            ds.train.truncate_interleaved(d.train_subset, ds.shape);
            ds.test.truncate_interleaved(d.test_subset, ds.shape);
        } else {
            ds.train.truncate(d.train_subset, ds.shape);
            ds.test.truncate(d.test_subset, ds.shape);
        }
        if ds.train.is_empty() || ds.test.is_empty() {
            return Err(RunError::Data(DataError::Format {
                path: root,
                why: "a split is empty".into(),
            }));
        }
        ds.normalise();
        let ds = Arc::new(ds);
        self.loaded.insert(key, ds.clone());
        Ok(ds)
    }
}

/// A config error on `key`; [`prepare`] names where the value came from.
fn named(kind: ConfigErrorKind, key: &str, value: &str, why: String) -> ConfigError {
    ConfigError::new(kind, key, value, why)
}

/// A run checked and ready to execute.
pub struct Prepared {
    /// The resolved config with its sources.
    pub resolved: ResolvedConfig,
    /// The config that identifies the run (chosen method's options in full).
    pub canonical: RunConfig,
    /// Hash of `canonical`.
    pub run_id: String,
    /// The method.
    pub method: &'static PrunerEntry,
    /// The method's options, defaults filled in.
    pub options: toml::Table,
    /// The network and its data.
    pub network: Network,
    /// SHA-256 of each input file or folder the config names by path (`model.init_from`), keyed
    /// by its config key: part of the run id, so new content is a new run.
    pub inputs: BTreeMap<String, String>,
}

/// The network of a run and its data.
pub enum Network {
    /// An image classifier.
    Image {
        /// The data.
        data: Arc<ImageDataset>,
        /// The initialised network.
        model: Box<ImageModel<TrainBackend>>,
    },
    /// A GCN on a graph (initialised from the run's seed when its task is built).
    Graph {
        /// The graph.
        graph: Arc<Graph>,
    },
    /// A pre-trained BERT on a text task (the head initialised when its task is built).
    Text {
        /// The checkpoint.
        checkpoint: Arc<Pretrained>,
        /// The task.
        task: Arc<TextTask>,
    },
}

/// Resolves names, checks options and the method's fit to the network, loads data and weights.
/// `file` is the config file: an error names it, or the variable or option the bad value came
/// from.
pub fn prepare(
    resolved: ResolvedConfig,
    file: Option<&Path>,
    cache: &mut DataCache,
) -> Result<Prepared, RunError> {
    let sources = resolved.sources.clone();
    prepare_unattributed(resolved, cache).map_err(|e| match e {
        RunError::Config(c) => RunError::Config(config::attribute_error(c, &sources, file)),
        other => other,
    })
}

fn prepare_unattributed(
    resolved: ResolvedConfig,
    cache: &mut DataCache,
) -> Result<Prepared, RunError> {
    let cfg = &resolved.config;
    let method = find_pruner(&cfg.prune.method).map_err(|why| {
        named(
            ConfigErrorKind::UnknownName,
            "prune.method",
            &cfg.prune.method,
            why,
        )
    })?;
    // Every `[methods.<name>]` section is checked, not only the chosen method's: an unknown key
    // there is a typo that would silently do nothing.
    for (name, section) in &cfg.methods {
        let entry = find_pruner(name).map_err(|why| {
            named(
                ConfigErrorKind::UnknownName,
                &format!("methods.{name}"),
                name,
                why,
            )
        })?;
        let mut options = (entry.default_options)();
        options.extend(section.clone());
        if let Err(why) = (entry.build)(&options) {
            return Err(named(
                ConfigErrorKind::Invalid,
                &format!("methods.{name}"),
                &toml::Value::Table(section.clone()).to_string(),
                why,
            )
            .into());
        }
    }
    let mut options = (method.default_options)();
    options.extend(cfg.method_options());
    let image_model =
        cfg.model.name != lottery_gcn::MODEL_NAME && cfg.model.name != lottery_bert::MODEL_NAME;
    if !image_model && cfg.model.bias != Default::default() {
        return Err(named(
            ConfigErrorKind::Invalid,
            "model.bias",
            match cfg.model.bias {
                lottery_core::config::BiasLayout::All => "all",
                lottery_core::config::BiasLayout::LinearOnly => "linear-only",
                lottery_core::config::BiasLayout::None => "none",
            },
            format!(
                "only an image classifier's layers can be built without biases, not {}",
                cfg.model.name
            ),
        )
        .into());
    }
    let (network, inputs) = if cfg.model.name == lottery_gcn::MODEL_NAME {
        if let Some(path) = &cfg.model.init_from {
            return Err(named(
                ConfigErrorKind::Invalid,
                "model.init_from",
                &path.display().to_string(),
                "a GCN's initial weights come from its seed".into(),
            )
            .into());
        }
        let graph = cache.graph(cfg)?;
        (Network::Graph { graph }, BTreeMap::new())
    } else if cfg.model.name == lottery_bert::MODEL_NAME {
        let checkpoint = cache.checkpoint(cfg)?;
        let task = cache.text(cfg, &checkpoint)?;
        let mut inputs = BTreeMap::new();
        if let Some(dir) = &cfg.model.init_from {
            inputs.insert("model.init_from".to_string(), cache.folder_digest(dir)?);
        }
        (Network::Text { checkpoint, task }, inputs)
    } else {
        image_network(cfg, cache)?
    };
    check_fit(method, cfg, &network)?;
    let canonical = cfg.canonical(options.clone(), method.default_iterations);
    let run_id = canonical.run_id_with_inputs(&inputs);
    let prepared = Prepared {
        resolved,
        canonical,
        run_id,
        method,
        options,
        network,
        inputs,
    };
    check_ignore(&prepared)?;
    Ok(prepared)
}

/// Refuses a `prune.ignore` pattern that matches no parameter of the run's network: a typo would
/// otherwise prune the layer it meant to keep.
fn check_ignore(p: &Prepared) -> Result<(), RunError> {
    let rule = p.canonical.goal()?.rule;
    if rule.ignore.is_empty() {
        return Ok(());
    }
    let mut run_target = target_of(p, ProgressBar::hidden())?;
    let names: Vec<String> = run_target
        .target()
        .params()
        .into_iter()
        .map(|q| q.name)
        .collect();
    match rule.unmatched_ignores(&names).first() {
        None => Ok(()),
        Some(pattern) => Err(named(
            ConfigErrorKind::Invalid,
            "prune.ignore",
            &format!("\"{pattern}\""),
            format!(
                "names or patterns of parameters of {}: {}",
                p.canonical.model.name,
                names.join(", ")
            ),
        )
        .into()),
    }
}

/// What the run's network offers beyond the contract every target keeps
/// ([`lottery_core::plugin::capability`]).
fn capabilities(network: &Network) -> Vec<&'static str> {
    match network {
        Network::Graph { .. } => vec![capability::GRAPH],
        Network::Text { .. } => vec![capability::TEXT],
        Network::Image { model, data } => {
            let input = InputShape {
                channels: data.shape.channels,
                height: data.shape.height,
                width: data.shape.width,
            };
            let channels = lottery_models::channels::channel_groups(&model.architecture(), input)
                .is_ok_and(|g| !g.is_empty());
            if channels {
                vec![capability::IMAGE, capability::BN_CHANNELS]
            } else {
                vec![capability::IMAGE]
            }
        }
    }
}

/// Refuses a method on a network that lacks what the method needs, before any work.
fn check_fit(method: &PrunerEntry, cfg: &RunConfig, network: &Network) -> Result<(), RunError> {
    let Some(need) = method.needs else {
        return Ok(());
    };
    let offered = capabilities(network);
    if offered.contains(&need) {
        return Ok(());
    }
    Err(named(
        ConfigErrorKind::Invalid,
        "prune.method",
        method.name,
        format!(
            "{} needs a network with {need}; model {} on dataset {} offers {}",
            method.name,
            cfg.model.name,
            cfg.data.name,
            offered.join(", ")
        ),
    )
    .into())
}

/// The image model of a run, built from its seed or loaded whole from `model.init_from`, with
/// the digest of that file.
fn image_network(
    cfg: &RunConfig,
    cache: &mut DataCache,
) -> Result<(Network, BTreeMap<String, String>), RunError> {
    if cfg.data.max_tokens != 0 {
        return Err(named(
            ConfigErrorKind::Invalid,
            "data.max_tokens",
            &cfg.data.max_tokens.to_string(),
            format!(
                "only a text model (model.name = \"{}\") reads tokens",
                lottery_bert::MODEL_NAME
            ),
        )
        .into());
    }
    if cfg.model.hidden != 0 {
        return Err(named(
            ConfigErrorKind::Invalid,
            "model.hidden",
            &cfg.model.hidden.to_string(),
            format!(
                "only a GCN (model.name = \"{}\") has a hidden width to set",
                lottery_gcn::MODEL_NAME
            ),
        )
        .into());
    }
    let model_entry = find_model(&cfg.model.name).map_err(|why| {
        named(
            ConfigErrorKind::UnknownName,
            "model.name",
            &cfg.model.name,
            format!(
                "{why}; or \"{}\" on a graph dataset",
                lottery_gcn::MODEL_NAME
            ),
        )
    })?;
    let data = cache.get(cfg)?;
    let input = InputShape {
        channels: data.shape.channels,
        height: data.shape.height,
        width: data.shape.width,
    };
    let mut model = lottery_models::build_as(
        model_entry.name,
        input,
        data.classes,
        cfg.seed,
        cfg.model.init,
        cfg.model.bias,
        &default_device(),
    )
    .map_err(|why| named(ConfigErrorKind::Invalid, "model.name", &cfg.model.name, why))?;
    let mut inputs = BTreeMap::new();
    if let Some(path) = &cfg.model.init_from {
        let shown = path.display().to_string();
        let bad = |why: String| named(ConfigErrorKind::Invalid, "model.init_from", &shown, why);
        let values = weights::read(path).map_err(|e| bad(e.to_string()))?;
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let naming = model.naming();
        let missing: Vec<String> = view::entries::<TrainBackend, _>(&model, &naming)
            .into_iter()
            .map(|e| e.info.name)
            .filter(|name| !values.contains_key(name))
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "a file with every parameter of {}; it lacks {} of them: {}",
                cfg.model.name,
                missing.len(),
                missing.join(", ")
            ))
            .into());
        }
        model = view::set_values::<TrainBackend, _>(model, &naming, &values)
            .map_err(|e| bad(e.to_string()))?;
        inputs.insert("model.init_from".to_string(), sha256_hex(&bytes));
    }
    Ok((
        Network::Image {
            data,
            model: Box::new(model),
        },
        inputs,
    ))
}

/// SHA-256 of `bytes`, in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
            let aside = set_aside(&work)?;
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

/// Moves a run's work folder aside (`<work>.damaged-<unix seconds>`), keeping it for inspection.
fn set_aside(work: &Path) -> Result<PathBuf, RunError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = PathBuf::from(format!("{}.damaged-{stamp}", work.display()));
    if work.exists() {
        std::fs::rename(work, &aside).map_err(io(work))?;
    }
    Ok(aside)
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

    bar.set_message(format!("{} pruning", p.method.name));
    let prune_clock = PhaseClock::start(&work_dir, "prune-seconds", "pruning");
    let mut pruner = build_pruner(p)?;
    let mask = {
        let mut ctx = PruneContext {
            target: &mut *task,
            goal: goal.clone(),
            seed: cfg.seed,
            progress: bar.clone(),
            work_dir: Some(work_dir.clone()),
        };
        let expected = ctx.dense_mask();
        let mask = pruner.prune(&mut ctx)?;
        check_mask(&weights_only(&mask), &expected, &goal, p.method.density_of)?;
        mask
    };
    // A run resumed in its training recomputes (or reloads) its mask: the time of the first
    // finished pruning is the one that counts.
    let prune_seconds = finished_pruning_seconds(&work_dir, prune_clock.stop())?;
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
    task.save_training_in(Some(work_dir.join("train")), save_interval()?)?;
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
        git_commit,
        git_dirty,
        lottery_version: env!("CARGO_PKG_VERSION").to_string(),
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

/// Commit and dirty flag of the working tree, when it is a git checkout.
pub fn git_state() -> (String, bool) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let commit = run(&["rev-parse", "HEAD"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|o| !o.stdout.is_empty());
    (commit, dirty)
}

fn write_run(
    dir: &Path,
    p: &Prepared,
    summary: &RunSummary,
    metrics: Vec<lottery_core::MetricRow>,
    checkpoints: &Checkpoints,
    mask: &MaskSet,
) -> Result<(), RunError> {
    let parent = dir.parent().expect("run dir has a parent");
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dir.file_name().and_then(|n| n.to_str()).expect("run id");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let written = write_run_files(&tmp, p, summary, metrics, checkpoints, mask);
    if written.is_err() {
        // A failed write (a full disk, say) leaves no hidden half-run behind.
        let _ = std::fs::remove_dir_all(&tmp);
        return written;
    }
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(io(dir))?;
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
    }
    Ok(())
}

/// Writes every file of a run into the folder `tmp`, the summary last.
fn write_run_files(
    tmp: &Path,
    p: &Prepared,
    summary: &RunSummary,
    metrics: Vec<lottery_core::MetricRow>,
    checkpoints: &Checkpoints,
    mask: &MaskSet,
) -> Result<(), RunError> {
    std::fs::create_dir_all(tmp).map_err(io(tmp))?;
    let write = |file: &str, text: String| {
        let path = tmp.join(file);
        std::fs::write(&path, text).map_err(io(&path))
    };
    write(
        "config.toml",
        toml::to_string(&p.canonical).expect("config serialises to TOML"),
    )?;
    write(
        "sources.json",
        serde_json::to_string_pretty(&p.resolved.sources).expect("json"),
    )?;
    if !p.inputs.is_empty() {
        let inputs: BTreeMap<&String, serde_json::Value> = p
            .inputs
            .iter()
            .map(|(key, sha256)| {
                let path = match key.as_str() {
                    "model.init_from" => p.canonical.model.init_from.clone(),
                    _ => None,
                };
                (key, serde_json::json!({ "path": path, "sha256": sha256 }))
            })
            .collect();
        write(
            "inputs.json",
            serde_json::to_string_pretty(&inputs).expect("json"),
        )?;
    }
    store::write_metrics(&tmp.join("metrics.parquet"), &metrics)?;
    let layers: Vec<LayerRow> = mask
        .layers()
        .into_iter()
        .map(|l| LayerRow {
            parameter: l.name,
            shape: l.shape,
            numel: l.numel as u64,
            kept: l.kept as u64,
        })
        .collect();
    store::write_layers(&tmp.join("layers.parquet"), &layers)?;
    let meta = BTreeMap::from([
        ("method".to_string(), summary.method.clone()),
        ("density".to_string(), summary.density_requested.to_string()),
        (
            "density_achieved".to_string(),
            summary.density_achieved.to_string(),
        ),
        ("run_id".to_string(), summary.run_id.clone()),
        ("layout".to_string(), "pytorch".to_string()),
    ]);
    mask.save(&tmp.join("masks.safetensors"), &meta, "")
        .map_err(|e| RunError::Io {
            path: tmp.join("masks.safetensors"),
            source: std::io::Error::other(e.to_string()),
        })?;
    for (step, values) in checkpoints {
        write_weights(
            &tmp.join(format!("checkpoint-step{step}.safetensors")),
            values,
            &summary.run_id,
        )?;
    }
    // The summary marks the run finished: written last, then the directory moves into place.
    write(
        "summary.json",
        serde_json::to_string_pretty(summary).expect("json"),
    )
}

/// The seconds between saves of a run's training state: `LOTTERY_SAVE_EVERY` (default 60; 0
/// saves at every epoch end).
pub fn save_interval() -> Result<Duration, RunError> {
    match std::env::var("LOTTERY_SAVE_EVERY") {
        Err(_) => Ok(Duration::from_secs(60)),
        Ok(value) => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or(RunError::SaveInterval { value }),
    }
}

/// `seconds` the first time a run finishes its pruning (kept in the work folder); the kept value
/// when an earlier attempt finished it.
fn finished_pruning_seconds(work_dir: &Path, seconds: f64) -> Result<f64, RunError> {
    let file = work_dir.join("prune-seconds-finished");
    let kept = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0);
    if let Some(kept) = kept {
        return Ok(kept);
    }
    std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
    lottery_core::fsutil::write_atomic(&file, format!("{seconds:.3}").as_bytes())
        .map_err(io(&file))?;
    Ok(seconds)
}

/// Time spent in a phase of a run (pruning, training), across interruptions: a phase that saves
/// its progress in the run's work folder resumes, and the seconds of earlier attempts (kept beside
/// that progress in `file`, updated every second) count too.
struct PhaseClock {
    previous: f64,
    started: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl PhaseClock {
    /// Starts the clock of the phase `what` whose seconds so far `file` in `work_dir` keeps.
    fn start(work_dir: &Path, file: &str, what: &str) -> Self {
        let file = work_dir.join(file);
        let previous = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        if previous > 0.0 {
            tracing::info!(
                "resuming from the saved progress in {} ({previous:.1}s of {what} so far)",
                work_dir.display()
            );
        }
        let started = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let (stop, file, dir) = (stop.clone(), file.clone(), work_dir.to_path_buf());
            std::thread::spawn(move || {
                let tick = std::time::Duration::from_millis(100);
                let mut since_write = std::time::Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    since_write += tick;
                    if since_write < std::time::Duration::from_secs(1) {
                        continue;
                    }
                    since_write = std::time::Duration::ZERO;
                    // Only a method that keeps progress creates the folder; nothing to add else.
                    if dir.is_dir() {
                        let total = previous + started.elapsed().as_secs_f64();
                        let _ = lottery_core::fsutil::write_atomic(
                            &file,
                            format!("{total:.3}").as_bytes(),
                        );
                    }
                }
            })
        };
        Self {
            previous,
            started,
            stop,
            ticker: Some(ticker),
        }
    }

    /// The seconds spent so far, this attempt included.
    fn stop(mut self) -> f64 {
        self.halt();
        self.previous + self.started.elapsed().as_secs_f64()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PhaseClock {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Writes weights as f32 safetensors with PyTorch names.
pub fn write_weights(path: &Path, values: &ParamValues, run_id: &str) -> Result<(), RunError> {
    let meta = BTreeMap::from([
        ("format".to_string(), "lottery-weights/1".to_string()),
        ("run_id".to_string(), run_id.to_string()),
        ("layout".to_string(), "pytorch".to_string()),
    ]);
    lottery_core::fsutil::write_atomic(path, &weights::to_bytes(values, &meta)).map_err(io(path))
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
