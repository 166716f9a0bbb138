//! Run configuration: typed sections, figment layering (defaults < TOML file < `LOTTERY_` env vars <
//! `--set key=value` < grid point), unknown keys rejected, and errors that name file, key and value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Profile};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::density::Density;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::params::PrunableRule;
use crate::plugin::{DensitySchedule, PruneGoal};
use crate::topk::Scope;

/// One experiment: model, data, method, target, training schedule, seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Study name: runs land in `results/<study>/<run-id>/`.
    pub study: String,
    /// Seed of the initial weights, data order, augmentation and the method's randomness.
    pub seed: u64,
    /// The network.
    pub model: ModelSection,
    /// The dataset.
    pub data: DataSection,
    /// The pruning method and target.
    pub prune: PruneSection,
    /// Training of the ticket.
    pub train: TrainSection,
    /// Options of each method, `[methods.<name>]`; only the chosen method's section is read.
    pub methods: BTreeMap<String, toml::Table>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            study: "default".into(),
            seed: 0,
            model: ModelSection::default(),
            data: DataSection::default(),
            prune: PruneSection::default(),
            train: TrainSection::default(),
            methods: BTreeMap::new(),
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Registered model name (`lottery list`).
    pub name: String,
    /// Initial weights from a safetensors file with PyTorch names, instead of the seeded init.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// How the seeded init draws convolution and linear weights.
    #[serde(skip_serializing_if = "is_default")]
    pub init: WeightInit,
    /// Whether batch norm learns its scale and shift.
    #[serde(skip_serializing_if = "is_default")]
    pub batch_norm: NormKind,
    /// Which layers carry a bias (image classifiers).
    #[serde(skip_serializing_if = "is_default")]
    pub bias: BiasLayout,
    /// Hidden units of a GCN (0: its default, 16); other models have fixed widths.
    #[serde(skip_serializing_if = "is_default")]
    pub hidden: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            name: "lenet-300-100".into(),
            init_from: None,
            init: WeightInit::default(),
            batch_norm: NormKind::default(),
            bias: BiasLayout::default(),
            hidden: 0,
        }
    }
}

/// Leaves a key at its default out of the canonical config, so adding one keeps the run ids of
/// configs that do not set it.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The seeded initialisation of a model's weights (`model.init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightInit {
    /// Kaiming normal: N(0, 2/fan_in), as the lottery-ticket papers use.
    #[default]
    KaimingNormal,
    /// The sign of a Kaiming-normal draw times its standard deviation √(2/fan_in): the "signed
    /// constant" init of the edge-popup and Gem-Miner references.
    SignedConstant,
    /// The Early-Bird reference's VGG init (`models/vgg.py:_initialize_weights`, network
    /// slimming's): convolution weights N(0, 2/(k·k·out_channels)) (fan-out), linear weights
    /// N(0, 0.01²), every bias 0, normalisation scales γ = 0.5 and shifts β = 0. Embeddings draw
    /// as [`WeightInit::KaimingNormal`] does.
    EarlyBird,
}

/// Batch norm with or without its learned scale and shift (`model.batch_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    /// γ and β are trained (PyTorch's `affine=True`).
    #[default]
    Affine,
    /// γ stays 1 and β stays 0 through all training (`affine=False`, the Gem-Miner reference's
    /// `NonAffineBatchNorm`).
    NonAffine,
}

/// Which layers of an image classifier carry a bias (`model.bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BiasLayout {
    /// Every convolution and linear layer has a bias (the ResNets' convolutions never do).
    #[default]
    All,
    /// Linear layers only: convolutions are bias-free (the Early-Bird reference's VGG).
    LinearOnly,
    /// No layer has a bias (the Gem-Miner and edge-popup references' networks).
    None,
}

impl BiasLayout {
    /// Whether convolutions carry a bias.
    pub fn convolutions(self) -> bool {
        self == Self::All
    }

    /// Whether linear layers carry a bias.
    pub fn linear(self) -> bool {
        self != Self::None
    }
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Registered dataset name.
    pub name: String,
    /// Folder holding the dataset's files (the dataset's default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Use only the first N training examples (0: all); of a dataset stored class by class
    /// (`mnist-digits`), N taken from the classes in turn.
    pub train_subset: usize,
    /// Use only the first N test examples (0: all); as `train_subset`.
    pub test_subset: usize,
    /// Random crop (padding 4) and horizontal flip on training batches.
    pub augment: bool,
    /// Tokens per text example, `[CLS]` and `[SEP]` included, longer texts truncated (0: the
    /// default, 64); text datasets only.
    #[serde(skip_serializing_if = "is_default")]
    pub max_tokens: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            name: "fashion-mnist".into(),
            root: None,
            batch_size: 128,
            train_subset: 0,
            test_subset: 0,
            augment: false,
            max_tokens: 0,
        }
    }
}

/// `[prune]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneSection {
    /// Registered method name.
    pub method: String,
    /// Target density: fraction of prunable weights kept, in (0, 1].
    pub density: f64,
    /// `global` or `layerwise`.
    pub scope: Scope,
    /// Score-then-mask rounds (1: one-shot). Unset: the method's default (1; SynFlow 100),
    /// filled in by [`RunConfig::canonical`] so that the run id records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    /// `exponential` or `linear` density schedule over the rounds.
    pub schedule: DensitySchedule,
    /// Prune biases too.
    pub prune_bias: bool,
    /// Prune batch-norm scales and shifts too.
    pub prune_batchnorm: bool,
    /// Prune residual shortcut projections too.
    pub prune_residual: bool,
    /// Parameters never pruned, by PyTorch name or glob (`["fc.weight"]`, open_lth's
    /// `pruning_layers_to_ignore`), for every method.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
}

impl Default for PruneSection {
    fn default() -> Self {
        Self {
            method: "magnitude".into(),
            density: 0.1,
            scope: Scope::Global,
            iterations: None,
            schedule: DensitySchedule::Exponential,
            prune_bias: false,
            prune_batchnorm: false,
            prune_residual: false,
            ignore: vec![],
        }
    }
}

/// Optimiser choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with optional (Nesterov) momentum.
    Sgd,
    /// Adam.
    Adam,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Constant learning rate.
    Constant,
    /// Multiply by `gamma` every `step_epochs`.
    Step,
    /// Multiply by `gamma` at each of `milestones` (epochs).
    Multistep,
    /// Cosine decay to zero over the training.
    Cosine,
    /// Linear decay to zero over the training (after any warm-up), as Hugging Face's
    /// `get_linear_schedule_with_warmup`: step `k` of `n` takes `lr · (n − k) / (n − warm-up)`.
    Linear,
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Training epochs of the ticket.
    pub epochs: usize,
    /// `sgd` or `adam`.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum (0: none).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub lr_schedule: LrSchedule,
    /// Epoch period of `step`.
    pub step_epochs: usize,
    /// Epochs at which `multistep` decays.
    pub milestones: Vec<usize>,
    /// Decay factor of `step` and `multistep`.
    pub gamma: f64,
    /// Linear warm-up epochs from 0 to `lr`.
    pub warmup_epochs: usize,
    /// Optimiser steps at which weights are checkpointed (rewind points; 0 is θ₀).
    pub checkpoints: Vec<usize>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 3,
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
            lr_schedule: LrSchedule::Cosine,
            step_epochs: 30,
            milestones: vec![],
            gamma: 0.1,
            warmup_epochs: 0,
            checkpoints: vec![],
        }
    }
}

impl RunConfig {
    /// The pruning goal this config asks for (density already validated by [`RunConfig::validate`]).
    pub fn goal(&self) -> Result<PruneGoal, ConfigError> {
        Ok(PruneGoal {
            density: Density::from_config(self.prune.density, "prune.density")?,
            scope: self.prune.scope,
            rule: PrunableRule {
                prune_bias: self.prune.prune_bias,
                prune_batchnorm: self.prune.prune_batchnorm,
                prune_residual: self.prune.prune_residual,
                ignore: self.prune.ignore.clone(),
            },
            iterations: self.prune.iterations.unwrap_or(1),
            schedule: self.prune.schedule,
        })
    }

    /// Checks the values that need no registry: ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, expected: &str| {
            Err(ConfigError::new(
                ConfigErrorKind::Invalid,
                key,
                value,
                expected,
            ))
        };
        Density::from_config(self.prune.density, "prune.density")?;
        for g in &self.prune.ignore {
            if let Err(e) = glob::Pattern::new(g) {
                return bad(
                    "prune.ignore",
                    format!("\"{g}\""),
                    &format!("parameter names or glob patterns ({e})"),
                );
            }
        }
        if self.prune.iterations == Some(0) {
            return bad("prune.iterations", "0".into(), "at least 1 round");
        }
        if self.data.batch_size == 0 {
            return bad("data.batch_size", "0".into(), "a positive batch size");
        }
        if !(self.train.lr.is_finite() && self.train.lr > 0.0) {
            return bad(
                "train.lr",
                self.train.lr.to_string(),
                "a positive learning rate",
            );
        }
        if !(0.0..1.0).contains(&self.train.momentum) {
            return bad(
                "train.momentum",
                self.train.momentum.to_string(),
                "momentum in [0, 1)",
            );
        }
        if self.train.weight_decay < 0.0 || !self.train.weight_decay.is_finite() {
            return bad(
                "train.weight_decay",
                self.train.weight_decay.to_string(),
                "a non-negative weight decay",
            );
        }
        if self.train.nesterov && self.train.momentum == 0.0 {
            return bad(
                "train.nesterov",
                "true".into(),
                "Nesterov needs train.momentum > 0",
            );
        }
        if self.train.lr_schedule == LrSchedule::Step && self.train.step_epochs == 0 {
            return bad(
                "train.step_epochs",
                "0".into(),
                "a positive period for the step schedule",
            );
        }
        if self.study.is_empty() || self.study.contains(['/', '\\']) || self.study.starts_with('.')
        {
            return bad(
                "study",
                self.study.clone(),
                "a plain folder name (no slashes, not starting with '.')",
            );
        }
        Ok(())
    }

    /// The options table of the chosen method (empty when the config has none).
    pub fn method_options(&self) -> toml::Table {
        self.methods
            .get(&self.prune.method)
            .cloned()
            .unwrap_or_default()
    }

    /// The canonical form that identifies the run: this config with only the chosen method's
    /// options, given in full (`resolved_options`: defaults filled in), and the number of rounds
    /// (`default_iterations`, the method's, when the config leaves it unset).
    pub fn canonical(&self, resolved_options: toml::Table, default_iterations: usize) -> RunConfig {
        let mut c = self.clone();
        c.prune.iterations.get_or_insert(default_iterations);
        c.methods = BTreeMap::from([(self.prune.method.clone(), resolved_options)]);
        c
    }

    /// The run id: the first 16 hex digits of SHA-256 over the canonical JSON of this config
    /// (object keys sorted). Call it on [`RunConfig::canonical`].
    pub fn run_id(&self) -> String {
        let value = serde_json::to_value(self).expect("config serialises");
        let text = canonical_json(&value);
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

impl RunConfig {
    /// The run id of a run that also reads the files in `inputs` (config key → SHA-256 of the
    /// content): the same as [`RunConfig::run_id`] when there are none, else a hash over the
    /// canonical config and the digests, so new content under the same path is a new run.
    pub fn run_id_with_inputs(&self, inputs: &BTreeMap<String, String>) -> String {
        if inputs.is_empty() {
            return self.run_id();
        }
        let value = serde_json::json!({
            "config": serde_json::to_value(self).expect("config serialises"),
            "inputs": inputs,
        });
        let digest = Sha256::digest(canonical_json(&value).as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The id of the runs that differ from this one only in `prune.density` (the same inputs
    /// too): 16 hex digits of SHA-256 over this config without its density. It names the folder
    /// those runs share ([`crate::PruneContext::shared_dir`]). Call it on [`RunConfig::canonical`].
    pub fn density_free_id(&self, inputs: &BTreeMap<String, String>) -> String {
        let mut config = serde_json::to_value(self).expect("config serialises");
        if let Some(prune) = config.get_mut("prune").and_then(|p| p.as_object_mut()) {
            prune.remove("density");
        }
        let value = serde_json::json!({
            "config": config,
            "inputs": inputs,
            "shared-by": "density",
        });
        let digest = Sha256::digest(canonical_json(&value).as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// JSON with object keys sorted at every level, whatever map type serde_json was built with.
pub fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        canonical_json(&m[k])
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        serde_json::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// A config resolved from its layers, with where each value came from.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// The typed config.
    pub config: RunConfig,
    /// Dotted key → source ("default", a file path, "env LOTTERY_…", "--set", "grid").
    pub sources: BTreeMap<String, String>,
}

/// A `key=value` override from the command line; the value is TOML (`0.1`, `"sgd"`, `[1, 2]`) or,
/// failing that, a bare string.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted key.
    pub key: String,
    /// Value as TOML.
    pub value: toml::Value,
    /// Where it came from, as `lottery config` and error messages name it (`--set`,
    /// `--init-from`, `grid`).
    pub origin: &'static str,
}

impl Override {
    /// An override of `key` from `origin`.
    pub fn new(key: impl Into<String>, value: toml::Value, origin: &'static str) -> Self {
        Self {
            key: key.into(),
            value,
            origin,
        }
    }
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, raw) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected key=value"))?;
        let key = key.trim().to_string();
        if key.is_empty()
            || !key.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        {
            return Err(format!("`{s}`: `{key}` is not a dotted key"));
        }
        let raw = raw.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        Ok(Self::new(key, value, "--set"))
    }
}

fn nest(key: &str, value: toml::Value) -> toml::Table {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut table = toml::Table::new();
    table.insert(last.to_string(), value);
    for p in parts.into_iter().rev() {
        let mut outer = toml::Table::new();
        outer.insert(p.to_string(), toml::Value::Table(table));
        table = outer;
    }
    table
}

/// The grid of a sweep: dotted key → values, expanded as a cartesian product in key order.
pub type Grid = BTreeMap<String, Vec<toml::Value>>;

/// A config file may hold a `[grid]` table beside the run keys; this reads it.
fn read_grid(path: &Path) -> Result<Grid, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            ConfigErrorKind::Parse,
            "(file)",
            path.display().to_string(),
            format!("a readable TOML file ({e})"),
        )
        .in_file(path)
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        let key = e
            .span()
            .map(|s| line_of(&text, s.start))
            .unwrap_or_default();
        ConfigError::new(
            ConfigErrorKind::Parse,
            key,
            "(syntax)",
            format!("valid TOML: {}", e.message()),
        )
        .in_file(path)
    })?;
    let mut grid = Grid::new();
    if let Some(g) = table.remove("grid") {
        let toml::Value::Table(g) = g else {
            return Err(ConfigError::new(
                ConfigErrorKind::Invalid,
                "grid",
                g.to_string(),
                "a table of key = [values]",
            )
            .in_file(path));
        };
        for (k, v) in dotted_leaves(&g, "") {
            let toml::Value::Array(values) = v else {
                return Err(ConfigError::new(
                    ConfigErrorKind::Invalid,
                    format!("grid.{k}"),
                    v.to_string(),
                    "a list of values",
                )
                .in_file(path));
            };
            if values.is_empty() {
                return Err(ConfigError::new(
                    ConfigErrorKind::Invalid,
                    format!("grid.{k}"),
                    "[]",
                    "at least one value",
                )
                .in_file(path));
            }
            grid.insert(k, values);
        }
    }
    Ok(grid)
}

/// The leaves of a TOML table under their dotted keys (`train.lr`), each prefixed by `prefix.`
/// unless `prefix` is empty.
pub fn dotted_leaves(t: &toml::Table, prefix: &str) -> Vec<(String, toml::Value)> {
    let mut out = vec![];
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => out.extend(dotted_leaves(inner, &key)),
            other => out.push((key, other.clone())),
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> String {
    format!(
        "line {}",
        text[..offset.min(text.len())].matches('\n').count() + 1
    )
}

/// Every point of a grid, as lists of overrides (one empty point for an empty grid).
pub fn expand_grid(grid: &Grid) -> Vec<Vec<Override>> {
    let mut points: Vec<Vec<Override>> = vec![vec![]];
    for (key, values) in grid {
        let mut next = Vec::with_capacity(points.len() * values.len());
        for p in &points {
            for v in values {
                let mut q = p.clone();
                q.push(Override::new(key.clone(), v.clone(), "grid"));
                next.push(q);
            }
        }
        points = next;
    }
    points
}

/// Loads a config file (or the defaults when `path` is `None`) with env vars and `--set` overrides,
/// expanding its `[grid]` into one resolved config per point.
///
/// An explicit value outranks the file's grid: a `LOTTERY_` variable or a `--set` of a key the
/// `[grid]` varies replaces that axis, and a `--set` whose value is a list where the key takes a
/// single value (`prune.density=[0.05, 0.01]`; a list of lists for a list-valued key such as
/// `train.milestones`) is itself an axis.
pub fn load(path: Option<&Path>, sets: &[Override]) -> Result<Vec<ResolvedConfig>, ConfigError> {
    load_with(path, sets, Environment::Read)
}

/// Whether [`load_with`] reads the `LOTTERY_` variables of the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Layer them in, as every command that computes runs does.
    Read,
    /// Resolve the file and the overrides alone (a check that must not depend on the shell it
    /// runs in, such as a claims file naming a config and its overrides).
    Ignore,
}

/// [`load`], reading the environment or not.
pub fn load_with(
    path: Option<&Path>,
    sets: &[Override],
    environment: Environment,
) -> Result<Vec<ResolvedConfig>, ConfigError> {
    let read_env = environment == Environment::Read;
    // The file is parsed here for its [grid] and for syntax errors with line numbers; its run keys
    // reach figment through `FileToml`, which names the file in every error.
    let mut grid = match path {
        Some(p) => read_grid(p)?,
        None => Grid::new(),
    };
    let defaults = toml::Table::try_from(RunConfig::default()).expect("defaults serialise");
    if read_env {
        for key in env_override_keys() {
            grid.remove(&key);
        }
    }
    let mut values = vec![];
    let mut axes = BTreeMap::new();
    for s in sets {
        grid.remove(&s.key);
        axes.remove(&s.key);
        values.retain(|v: &Override| v.key != s.key);
        match axis_values(&s.key, &s.value, &defaults) {
            Some(axis) => {
                axes.insert(s.key.clone(), (axis, s.origin));
            }
            None => values.push(s.clone()),
        }
    }
    let origins: BTreeMap<String, &'static str> =
        axes.iter().map(|(k, (_, o))| (k.clone(), *o)).collect();
    grid.extend(axes.into_iter().map(|(k, (v, _))| (k, v)));
    let mut out = vec![];
    for point in expand_grid(&grid) {
        let mut fig = Figment::from(NamedLayer("default", defaults.clone()));
        if let Some(p) = path {
            fig = fig.merge(FileToml(p.to_path_buf()));
        }
        if read_env {
            fig = fig.merge(
                Env::prefixed(ENV_PREFIX)
                    .ignore(ENV_IGNORED)
                    .split("__")
                    .map(|k| k.as_str().to_ascii_lowercase().into()),
            );
        }
        for s in &values {
            fig = fig.merge(NamedLayer(s.origin, nest(&s.key, s.value.clone())));
        }
        for s in &point {
            let origin = origins.get(&s.key).copied().unwrap_or(s.origin);
            fig = fig.merge(NamedLayer(origin, nest(&s.key, s.value.clone())));
        }
        let config: RunConfig = fig.extract().map_err(|e| from_figment(e, path))?;
        let sources = sources_of(&fig, &config);
        config
            .validate()
            .map_err(|e| attribute_error(e, &sources, path))?;
        out.push(ResolvedConfig { config, sources });
    }
    Ok(out)
}

/// Prefix of the environment variables that set config keys (`LOTTERY_TRAIN__LR`).
const ENV_PREFIX: &str = "LOTTERY_";

/// `LOTTERY_` variables that are not config keys: the log filter, the sweep's progress channel,
/// the save interval and [`crate::allocator::OPT_OUT_VARIABLE`].
const ENV_IGNORED: &[&str] = &["log", "progress", "save_every", "malloc_defaults"];

/// The dotted config keys that `LOTTERY_` environment variables set.
fn env_override_keys() -> Vec<String> {
    std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix(ENV_PREFIX).map(str::to_ascii_lowercase))
        .filter(|k| !ENV_IGNORED.contains(&k.as_str()))
        .map(|k| k.replace("__", "."))
        .collect()
}

/// The environment variable that sets a dotted key.
fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// The values of a grid axis when an override's value is one: a list where the key takes a
/// single value, or a list of lists where it takes a list. Keys without a default (method options,
/// optional paths) take a list as a value.
fn axis_values(key: &str, value: &toml::Value, defaults: &toml::Table) -> Option<Vec<toml::Value>> {
    let toml::Value::Array(items) = value else {
        return None;
    };
    let mut parts = key.split('.');
    let mut current = defaults.get(parts.next()?)?;
    for p in parts {
        current = current.as_table()?.get(p)?;
    }
    let is_axis = match current {
        toml::Value::Array(_) => !items.is_empty() && items.iter().all(toml::Value::is_array),
        toml::Value::Table(_) => false,
        _ => true,
    };
    is_axis.then(|| items.clone())
}

/// Names where a value that failed validation came from: the config file, or the variable, option
/// or grid that set it (`sources` as in [`ResolvedConfig::sources`]; `path`, the config file).
pub fn attribute_error(
    e: ConfigError,
    sources: &BTreeMap<String, String>,
    path: Option<&Path>,
) -> ConfigError {
    if e.file.is_some() {
        return e;
    }
    match sources.get(&e.key).map(String::as_str) {
        Some(env) if env.starts_with("env ") => ConfigError {
            expected: format!("{} (from {})", e.expected, &env[4..]),
            ..e
        },
        Some("grid") => match path {
            Some(p) => ConfigError {
                expected: format!("{} (from the [grid])", e.expected),
                ..e
            }
            .in_file(p),
            None => e,
        },
        Some(origin) if origin.starts_with("--") => ConfigError {
            expected: format!("{} (from {origin})", e.expected),
            ..e
        },
        Some("default") => ConfigError {
            expected: format!("{} (the default)", e.expected),
            ..e
        },
        _ => match path {
            Some(p) => e.in_file(p),
            None => e,
        },
    }
}

/// A layer of values with a name that shows as its source.
struct NamedLayer(&'static str, toml::Table);

impl figment::Provider for NamedLayer {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.0)
    }
    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        Serialized::from(&self.1, Profile::Default).data()
    }
}

/// TOML file provider that strips the `[grid]` table (read separately).
struct FileToml(PathBuf);

impl figment::Provider for FileToml {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::from("TOML file", figment::Source::File(self.0.clone()))
    }
    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        let inner = Toml::file_exact(&self.0).data()?;
        Ok(inner
            .into_iter()
            .map(|(p, mut d)| {
                d.remove("grid");
                (p, d)
            })
            .collect())
    }
}

fn sources_of(fig: &Figment, config: &RunConfig) -> BTreeMap<String, String> {
    let value = serde_json::to_value(config).expect("config serialises");
    let mut keys = vec![];
    leaf_keys(&value, "", &mut keys);
    keys.into_iter()
        .map(|k| {
            let src = fig
                .find_metadata(&k)
                .map(|m| match &m.source {
                    Some(figment::Source::File(p)) => p.display().to_string(),
                    _ if m.name.contains("environment") => format!("env {}", env_name(&k)),
                    _ => m.name.to_string(),
                })
                .unwrap_or_else(|| "default".into());
            (k, src)
        })
        .collect()
}

fn leaf_keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            for (k, inner) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(inner, &key, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn from_figment(e: figment::Error, path: Option<&Path>) -> ConfigError {
    use figment::error::Kind;
    let file = e.metadata.as_ref().and_then(|m| match &m.source {
        Some(figment::Source::File(p)) => Some(p.clone()),
        _ => None,
    });
    let source_name = e
        .metadata
        .as_ref()
        .map(|m| m.name.to_string())
        .unwrap_or_default();
    let mut key = e.path.join(".");
    let (kind, value, expected) = match &e.kind {
        Kind::UnknownField(field, known) => {
            key = if key.is_empty() {
                field.clone()
            } else if key.ends_with(field.as_str()) {
                key
            } else {
                format!("{key}.{field}")
            };
            (
                ConfigErrorKind::UnknownKey,
                field.clone(),
                format!("one of the known keys: {}", known.join(", ")),
            )
        }
        Kind::UnknownVariant(v, known) => (
            ConfigErrorKind::Invalid,
            format!("\"{v}\""),
            format!("one of: {}", known.join(", ")),
        ),
        Kind::InvalidType(actual, exp) => {
            (ConfigErrorKind::Invalid, actual.to_string(), exp.clone())
        }
        Kind::InvalidValue(actual, exp) => {
            (ConfigErrorKind::Invalid, actual.to_string(), exp.clone())
        }
        other => (ConfigErrorKind::Invalid, "?".into(), other.to_string()),
    };
    let mut err = ConfigError::new(kind, key, value, expected);
    if !source_name.is_empty() && file.is_none() && source_name != "TOML file" {
        err.expected = format!("{} (from {source_name})", err.expected);
    }
    match file.or_else(|| path.map(Path::to_path_buf)) {
        Some(f)
            if e.metadata
                .as_ref()
                .is_none_or(|m| matches!(m.source, Some(figment::Source::File(_)))) =>
        {
            err.in_file(f)
        }
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn the_allocator_opt_out_is_not_read_as_a_config_key() {
        let key = crate::allocator::OPT_OUT_VARIABLE
            .strip_prefix(ENV_PREFIX)
            .map(str::to_ascii_lowercase);
        assert!(
            key.is_none_or(|k| ENV_IGNORED.contains(&k.as_str())),
            "{} would be read as a config key",
            crate::allocator::OPT_OUT_VARIABLE
        );
    }

    #[test]
    fn layers_file_then_set() {
        let f = write("study = \"s\"\n[prune]\ndensity = 0.05\n[train]\nlr = 0.2\n");
        let sets = vec![
            "train.lr=0.3".parse().unwrap(),
            "prune.method=random".parse().unwrap(),
        ];
        let r = load(Some(f.path()), &sets).unwrap();
        assert_eq!(r.len(), 1);
        let c = &r[0].config;
        assert_eq!(c.prune.density, 0.05);
        assert_eq!(c.train.lr, 0.3);
        assert_eq!(c.prune.method, "random");
        assert_eq!(
            r[0].sources["prune.density"],
            f.path().display().to_string()
        );
        assert_eq!(r[0].sources["train.lr"], "--set");
        assert_eq!(r[0].sources["train.epochs"], "default");
    }

    #[test]
    fn unknown_key_names_file_key_and_value() {
        let f = write("[train]\nlrr = 0.2\n");
        let e = load(Some(f.path()), &[]).unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::UnknownKey);
        assert_eq!(e.key, "train.lrr");
        assert_eq!(e.file.as_deref(), Some(f.path()));
        let msg = e.to_string();
        assert!(
            msg.contains("train.lrr") && msg.contains(&f.path().display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn density_out_of_range_is_rejected_with_file() {
        for bad in ["0.0", "1.5", "-0.2"] {
            let f = write(&format!("[prune]\ndensity = {bad}\n"));
            let e = load(Some(f.path()), &[]).unwrap_err();
            assert_eq!(e.key, "prune.density", "{e}");
            assert_eq!(e.file.as_deref(), Some(f.path()));
        }
    }

    #[test]
    fn wrong_type_and_bad_variant_are_named() {
        let f = write("[train]\nepochs = \"three\"\n");
        let e = load(Some(f.path()), &[]).unwrap_err();
        assert_eq!(e.key, "train.epochs", "{e}");
        let f = write("[prune]\nscope = \"everywhere\"\n");
        let e = load(Some(f.path()), &[]).unwrap_err();
        assert_eq!(e.key, "prune.scope", "{e}");
        assert!(e.to_string().contains("layerwise"), "{e}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let f = write("study = \"x\"\n[prune\n");
        let e = load(Some(f.path()), &[]).unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::Parse);
        assert!(e.key.starts_with("line 2"), "{e}");
    }

    #[test]
    fn grid_expands_to_the_cartesian_product() {
        let f = write(
            "[grid]\nseed = [0, 1]\n\"prune.density\" = [0.1, 0.02]\nprune.method = [\"random\", \"magnitude\"]\n",
        );
        let r = load(Some(f.path()), &[]).unwrap();
        assert_eq!(r.len(), 8);
        let mut ids: Vec<String> = r
            .iter()
            .map(|c| c.config.canonical(toml::Table::new(), 1).run_id())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8);
        assert_eq!(r[0].sources["seed"], "grid");
    }

    #[test]
    fn run_ids_are_pinned() {
        // A rename or a new default changes these: that is a breaking change to the results store.
        let c = RunConfig::default().canonical(toml::Table::new(), 1);
        assert_eq!(c.run_id(), "fd0ee7b01d1e300d");
        let mut d = RunConfig::default();
        d.prune.density = 0.02;
        d.seed = 1;
        assert_eq!(
            d.canonical(toml::Table::new(), 1).run_id(),
            "b3533eebf709ed6c"
        );
    }

    #[test]
    fn density_free_ids_are_shared_across_densities_only() {
        let none = BTreeMap::new();
        let id = |density: f64, seed: u64, inputs: &BTreeMap<String, String>| {
            let mut c = RunConfig::default();
            c.prune.density = density;
            c.seed = seed;
            c.canonical(toml::Table::new(), 1).density_free_id(inputs)
        };
        assert_eq!(id(0.5, 0, &none), id(0.3, 0, &none));
        assert_ne!(id(0.5, 0, &none), id(0.5, 1, &none));
        let input = BTreeMap::from([("model.init_from".to_string(), "ab".to_string())]);
        assert_ne!(id(0.5, 0, &none), id(0.5, 0, &input));
        // Never a run id: the shared folder cannot be taken for a run's.
        let c = RunConfig::default().canonical(toml::Table::new(), 1);
        assert_ne!(c.density_free_id(&none), c.run_id());
    }

    #[test]
    fn set_on_a_grid_key_replaces_the_axis_and_a_list_is_an_axis() {
        let f = write("[grid]\nseed = [0, 1]\n\"prune.density\" = [0.1, 0.02]\n");
        let one: Override = "prune.density=0.05".parse().unwrap();
        let r = load(Some(f.path()), std::slice::from_ref(&one)).unwrap();
        assert_eq!(
            r.len(),
            2,
            "the seed axis stays, the density axis is replaced"
        );
        assert!(r.iter().all(|c| c.config.prune.density == 0.05));
        assert_eq!(r[0].sources["prune.density"], "--set");
        let list: Override = "prune.density=[0.5, 0.25, 0.2]".parse().unwrap();
        let r = load(Some(f.path()), &[list]).unwrap();
        let densities: Vec<f64> = r.iter().map(|c| c.config.prune.density).collect();
        assert_eq!(densities, [0.5, 0.5, 0.25, 0.25, 0.2, 0.2]);
        assert_eq!(r[0].sources["prune.density"], "--set");
        // A list-valued key: a list is its value, a list of lists an axis.
        let m: Override = "train.milestones=[1, 2]".parse().unwrap();
        let r = load(Some(f.path()), &[m]).unwrap();
        assert_eq!(r.len(), 4);
        assert!(r.iter().all(|c| c.config.train.milestones == [1, 2]));
        let m: Override = "train.milestones=[[1], [2]]".parse().unwrap();
        assert_eq!(load(Some(f.path()), &[m]).unwrap().len(), 8);
    }

    #[test]
    fn a_bad_value_names_where_it_came_from() {
        let f = write("[train]\nlr = 0.1\n[grid]\n\"train.momentum\" = [0.5, 2.0]\n");
        let set: Override = "train.lr=-1".parse().unwrap();
        let e = load(Some(f.path()), &[set]).unwrap_err();
        assert_eq!((e.key.as_str(), e.file.as_deref()), ("train.lr", None));
        assert!(e.to_string().contains("(from --set)"), "{e}");
        let e = load(Some(f.path()), &[]).unwrap_err();
        assert_eq!(e.key, "train.momentum");
        assert_eq!(e.file.as_deref(), Some(f.path()));
        assert!(e.to_string().contains("[grid]"), "{e}");
        let f = write("[train]\nlr = -0.5\n");
        let e = load(Some(f.path()), &[]).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(f.path()));
    }

    #[test]
    fn input_digests_change_the_run_id() {
        let c = RunConfig::default().canonical(toml::Table::new(), 1);
        assert_eq!(c.run_id_with_inputs(&BTreeMap::new()), c.run_id());
        let a = BTreeMap::from([("model.init_from".to_string(), "aa".to_string())]);
        let b = BTreeMap::from([("model.init_from".to_string(), "bb".to_string())]);
        assert_ne!(c.run_id_with_inputs(&a), c.run_id());
        assert_ne!(c.run_id_with_inputs(&a), c.run_id_with_inputs(&b));
    }

    #[test]
    fn override_values_parse_as_toml_or_string() {
        let o: Override = "a.b=0.5".parse().unwrap();
        assert_eq!(o.value, toml::Value::Float(0.5));
        let o: Override = "prune.method=snip".parse().unwrap();
        assert_eq!(o.value, toml::Value::String("snip".into()));
        assert!("nokey".parse::<Override>().is_err());
    }
}
