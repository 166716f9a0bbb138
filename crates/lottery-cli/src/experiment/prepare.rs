//! A run's preparation: every name resolved against the registries, the method's options and its
//! fit to the network checked, the data loaded and the initial weights built (or loaded), so that
//! bad input fails before any work and leaves nothing in `results/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lottery_bert::{Pretrained, TextTask};
use lottery_core::backend::{TrainBackend, default_device};
use lottery_core::config::{self, ResolvedConfig, RunConfig};
use lottery_core::error::{ConfigError, ConfigErrorKind};
use lottery_core::plugin::{PrunerEntry, capability, find_pruner};
use lottery_data::{DataError, Graph, ImageDataset, find_dataset, find_graph_dataset};
use lottery_models::{ImageModel, InputShape, find_model, view};
use sha2::{Digest, Sha256};

use indicatif::ProgressBar;

use super::{RunError, io, target_of};
use crate::weights;

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
pub(super) fn max_tokens(cfg: &RunConfig) -> usize {
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
