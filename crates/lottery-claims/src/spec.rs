//! The claims file: what each paper claims, and how the runs here test it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lottery_analysis::{FILTER_FIELDS, RunMetric};
use lottery_core::config::{Environment, Override, load_with};
use serde::Deserialize;

/// Errors of reading or checking a claims file, naming the file, the claim and the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    /// A file that cannot be read.
    #[error("{path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// A file that is not a claims file (TOML syntax, an unknown or missing key).
    #[error("{path}: {cause}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause, with line and column.
        cause: String,
    },
    /// A value that parses but cannot be used.
    #[error("{path}: claim `{id}`: {key} = {value}: {why}")]
    Invalid {
        /// The claims file.
        path: PathBuf,
        /// The claim's id.
        id: String,
        /// The key, dotted from the claim (`test.lhs.metric`).
        key: String,
        /// The value, as written.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// The results store could not be read.
    #[error(transparent)]
    Store(#[from] lottery_analysis::StoreError),
}

/// A claims file: `[[claim]]` tables.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsFile {
    /// The claims, in report order.
    pub claim: Vec<Claim>,
}

/// One claim of a paper and its test here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Short unique name (`lottery claims --claim ID` evaluates it alone).
    pub id: String,
    /// The paper, as cited.
    pub paper: String,
    /// What the paper claims, in its words where possible.
    pub claim: String,
    /// The paper's setting and figure (model, data, sparsity, the number it reports).
    pub paper_figure: String,
    /// What our setting scales or changes relative to the paper's, and why.
    #[serde(default)]
    pub scaled: String,
    /// The configs whose runs the test reads (`lottery sweep` each to reproduce the row): a path,
    /// or `{ path = "...", set = ["key=value", ...] }` for a study swept with `--set` overrides.
    #[serde(default)]
    pub configs: Vec<ConfigRef>,
    /// Seeds each measured figure needs before a verdict is given (default: 3 for a comparison
    /// of two figures, 1 for a figure against a bound).
    #[serde(default)]
    pub min_seeds: Option<usize>,
    /// The test.
    pub test: Test,
}

/// A config whose runs a claim's test reads, with the `--set` overrides it is swept with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct ConfigRef {
    /// The config file, relative to where the rows' commands run.
    pub path: PathBuf,
    /// `key=value` overrides, as `lottery sweep --set` takes them (`study=...` names the study
    /// the runs go to).
    pub set: Vec<String>,
}

/// The table form of a [`ConfigRef`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigTable {
    path: PathBuf,
    #[serde(default)]
    set: Vec<String>,
}

impl TryFrom<toml::Value> for ConfigRef {
    type Error = String;
    fn try_from(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(path) => Ok(Self {
                path: path.into(),
                set: vec![],
            }),
            toml::Value::Table(table) => {
                let t: ConfigTable = table.try_into().map_err(|e: toml::de::Error| {
                    format!("a config as {{ path = \"...\", set = [\"key=value\", ...] }}: {e}")
                })?;
                Ok(Self {
                    path: t.path,
                    set: t.set,
                })
            }
            other => Err(format!(
                "expected a config's path or {{ path = \"...\", set = [\"key=value\", ...] }}, found {other}"
            )),
        }
    }
}

impl ConfigRef {
    /// The config as `lottery sweep` (or `collapse`) takes it: the path, then `--set` for each
    /// override, each quoted for a POSIX shell where needed.
    pub fn arguments(&self) -> String {
        let mut out = shell_quoted(&self.path.display().to_string());
        for set in &self.set {
            out.push_str(" --set ");
            out.push_str(&shell_quoted(set));
        }
        out
    }
}

impl std::fmt::Display for ConfigRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.arguments())
    }
}

/// `word` as a POSIX shell reads it back: unchanged when it holds only characters the shell
/// leaves alone, else in single quotes.
pub(crate) fn shell_quoted(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.=/,:+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How a claim is decided.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Test {
    /// Held when `lhs ≥ rhs − margin` (the means over seeds, in the figures' display units):
    /// "matches" claims.
    AtLeast {
        /// The figure claimed to be no worse.
        lhs: Measure,
        /// The figure it is held against.
        rhs: Measure,
        /// Allowed shortfall (0: none).
        #[serde(default)]
        margin: f64,
    },
    /// Held when `lhs > rhs + margin`: "beats" claims.
    Above {
        /// The figure claimed to be better.
        lhs: Measure,
        /// The figure it is held against.
        rhs: Measure,
        /// The lead it needs.
        #[serde(default)]
        margin: f64,
    },
    /// Held when the mean of `lhs` lies within the bounds given.
    Within {
        /// The figure.
        lhs: Measure,
        /// Largest value that holds.
        #[serde(default)]
        at_most: Option<f64>,
        /// Smallest value that holds.
        #[serde(default)]
        at_least: Option<f64>,
    },
    /// A claim that nothing here can test (data or scale out of reach).
    NotTestable {
        /// Why.
        why: String,
    },
}

/// One figure of a study: a metric of the runs that pass the filter, averaged over seeds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// What the figure is, for the report ("winning ticket at 10.7 %").
    pub label: String,
    /// The study (folder under the results root).
    pub study: String,
    /// A summary field (`test_accuracy`, `prune_seconds`, …), a recorded `split/metric`,
    /// `level` (an iterative method's level accuracy; needs `phase` and `level_density`), or
    /// `collapse-gap` (the layer-collapse record's shortfall of a method from the maximal critical
    /// compression, in decades; needs exactly `filter.method` and `filter.model`).
    pub metric: String,
    /// Only runs whose fields have these values (`method`, `options`, `model`, `dataset`,
    /// `seed`, `density`), as `lottery table --filter`.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Only runs whose method options (`lottery table`'s `options`: the non-default ones,
    /// `key=value, …`) include each of these `key=value` entries.
    #[serde(default)]
    pub options_include: Vec<String>,
    /// With `metric = "level"`: the phase (`ticket`, `reinit`, …).
    #[serde(default)]
    pub phase: Option<String>,
    /// With `metric = "level"`: the level's density.
    #[serde(default)]
    pub level_density: Option<f64>,
    /// Display scale (default: 100 for accuracies and levels, so percent; 1 otherwise).
    #[serde(default)]
    pub scale: Option<f64>,
}

/// What a measure reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A metric of each run that passes the filter.
    Runs(RunMetric),
    /// The layer-collapse record of `model` (`lottery collapse`): how far `method`'s critical
    /// compression falls short of the maximal one, in decades (x of 10^x).
    CollapseGap {
        /// Model.
        model: String,
        /// Method.
        method: String,
    },
}

/// The metric name of [`Reading::CollapseGap`].
pub const COLLAPSE_GAP: &str = "collapse-gap";

impl Measure {
    /// What this measure reads.
    pub fn reading(&self) -> Result<Reading, String> {
        if self.metric != COLLAPSE_GAP {
            return self.run_metric().map(Reading::Runs);
        }
        let fields: Vec<&str> = self.filter.keys().map(String::as_str).collect();
        if fields != ["method", "model"] || !self.options_include.is_empty() {
            return Err(format!(
                "`{COLLAPSE_GAP}` reads one method of one model's layer-collapse record: give `filter = {{ method = …, model = … }}` and nothing else"
            ));
        }
        Ok(Reading::CollapseGap {
            model: self.filter["model"].clone(),
            method: self.filter["method"].clone(),
        })
    }

    /// The run metric this measure reads.
    fn run_metric(&self) -> Result<RunMetric, String> {
        if self.metric == "level" {
            let phase = self.phase.clone().ok_or("`level` needs `phase`")?;
            let density = self.level_density.ok_or("`level` needs `level_density`")?;
            if !(density > 0.0 && density <= 1.0) {
                return Err(format!("level_density {density} is not in (0, 1]"));
            }
            return Ok(RunMetric::Level { phase, density });
        }
        if self.phase.is_some() || self.level_density.is_some() {
            return Err("`phase` and `level_density` belong to `metric = \"level\"`".into());
        }
        RunMetric::parse(&self.metric).map_err(|e| e.to_string())
    }

    /// Whether a run's `options` string includes every entry of `options_include`, each as a
    /// whole item (between the start or `, ` and `, ` or the end).
    pub fn options_match(&self, options: &str) -> bool {
        self.options_include.iter().all(|entry| {
            options.match_indices(entry.as_str()).any(|(at, _)| {
                let before = &options[..at];
                let after = &options[at + entry.len()..];
                (before.is_empty() || before.ends_with(", "))
                    && (after.is_empty() || after.starts_with(", "))
            })
        })
    }

    /// The display scale.
    pub fn scale(&self) -> f64 {
        self.scale.unwrap_or(
            if self.metric == "level" || self.metric.contains("accuracy") {
                100.0
            } else {
                1.0
            },
        )
    }
}

impl Test {
    /// The measures of the test.
    pub fn measures(&self) -> Vec<(&'static str, &Measure)> {
        match self {
            Test::AtLeast { lhs, rhs, .. } | Test::Above { lhs, rhs, .. } => {
                vec![("lhs", lhs), ("rhs", rhs)]
            }
            Test::Within { lhs, .. } => vec![("lhs", lhs)],
            Test::NotTestable { .. } => vec![],
        }
    }
}

impl Claim {
    /// The seeds each figure needs.
    pub fn seeds_needed(&self) -> usize {
        self.min_seeds.unwrap_or(match self.test {
            Test::AtLeast { .. } | Test::Above { .. } => 3,
            _ => 1,
        })
    }
}

/// Reads and checks the claims file at `path`: every id unique, every measure readable, every
/// config present with the `study` its measures read (config paths relative to the working
/// directory, where the rows' commands run). Nothing is evaluated.
pub fn load(path: &Path) -> Result<ClaimsFile, ClaimsError> {
    load_in(path, Path::new("."))
}

/// [`load`] with the configs' paths relative to `root`.
pub fn load_in(path: &Path, root: &Path) -> Result<ClaimsFile, ClaimsError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ClaimsError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let file: ClaimsFile = toml::from_str(&text).map_err(|e| ClaimsError::Parse {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })?;
    check(path, root, &file)?;
    Ok(file)
}

fn check(path: &Path, root: &Path, file: &ClaimsFile) -> Result<(), ClaimsError> {
    let invalid =
        |id: &str, key: &str, value: &dyn std::fmt::Display, why: &str| ClaimsError::Invalid {
            path: path.to_path_buf(),
            id: id.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            why: why.to_string(),
        };
    let mut ids = BTreeSet::new();
    // Each config resolved once under its overrides: the studies it writes, or why it does not.
    let mut resolved: BTreeMap<(PathBuf, Vec<String>), Result<BTreeSet<String>, String>> =
        BTreeMap::new();
    for c in &file.claim {
        let id = c.id.as_str();
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch))
        {
            return Err(invalid(
                id,
                "id",
                &format!("{id:?}"),
                "use letters, digits, `-`, `.` and `_`",
            ));
        }
        if !ids.insert(id) {
            return Err(invalid(
                id,
                "id",
                &format!("{id:?}"),
                "another claim has this id",
            ));
        }
        if c.min_seeds == Some(0) {
            return Err(invalid(id, "min_seeds", &0, "must be at least 1"));
        }
        if let Test::AtLeast { margin, .. } | Test::Above { margin, .. } = &c.test
            && !(margin.is_finite() && *margin >= 0.0)
        {
            return Err(invalid(
                id,
                "test.margin",
                margin,
                "must be a finite number ≥ 0",
            ));
        }
        if let Test::Within {
            at_most, at_least, ..
        } = &c.test
            && at_most.is_none()
            && at_least.is_none()
        {
            return Err(invalid(
                id,
                "test",
                &"within",
                "give `at_most`, `at_least` or both",
            ));
        }
        let measures = c.test.measures();
        if measures.is_empty() != c.configs.is_empty() {
            let why = if measures.is_empty() {
                "a claim that is not testable here names no config"
            } else {
                "name the configs whose runs the test reads"
            };
            return Err(invalid(id, "configs", &configs_listed(&c.configs), why));
        }
        let mut studies = BTreeSet::new();
        for (side, m) in &measures {
            m.reading()
                .map_err(|why| invalid(id, &format!("test.{side}.metric"), &m.metric, &why))?;
            for (field, value) in &m.filter {
                if !FILTER_FIELDS.contains(&field.as_str()) {
                    return Err(invalid(
                        id,
                        &format!("test.{side}.filter.{field}"),
                        value,
                        &format!(
                            "unknown field; expected one of {}",
                            FILTER_FIELDS.join(", ")
                        ),
                    ));
                }
                if field == "density" && value.parse::<f64>().is_err() {
                    return Err(invalid(
                        id,
                        &format!("test.{side}.filter.{field}"),
                        value,
                        "not a number",
                    ));
                }
            }
            for entry in &m.options_include {
                if !entry.contains('=') {
                    return Err(invalid(
                        id,
                        &format!("test.{side}.options_include"),
                        entry,
                        "expected key=value, as in `lottery table`'s options column",
                    ));
                }
            }
            studies.insert(m.study.as_str());
        }
        let mut written = BTreeSet::new();
        for config in &c.configs {
            let key = (config.path.clone(), config.set.clone());
            let studies = resolved
                .entry(key)
                .or_insert_with(|| config_studies(&root.join(&config.path), &config.set))
                .as_ref()
                .map_err(|why| invalid(id, "configs", config, why))?;
            written.extend(studies.iter().cloned());
        }
        for study in studies {
            if !written.contains(study) {
                return Err(invalid(
                    id,
                    "configs",
                    &configs_listed(&c.configs),
                    &format!("no config writes the study `{study}` that the test reads"),
                ));
            }
        }
    }
    Ok(())
}

/// The configs of a claim as the report's error names them: `[a.toml, b.toml --set k=v]`.
fn configs_listed(configs: &[ConfigRef]) -> String {
    let listed: Vec<String> = configs.iter().map(ConfigRef::arguments).collect();
    format!("[{}]", listed.join(", "))
}

/// The studies a config file writes its runs to under the overrides `set` (a `study=` override
/// wins over the file's, as on `lottery sweep`'s command line). Each override must be `key=value`
/// with a dotted key, and the config must resolve under them as `lottery sweep` resolves it
/// (every key known, every value of its type and range), so that a row's command is refused here
/// rather than when someone reruns it. The environment's `LOTTERY_` variables are left out: the
/// check is the file's and its overrides', whatever shell it runs in. Method, model and dataset
/// names, and method options, are checked by the run itself.
fn config_studies(config: &Path, set: &[String]) -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("cannot read it: {e}"))?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| format!("not TOML: {e}"))?;
    let grid_sets_study = value
        .get("grid")
        .and_then(toml::Value::as_table)
        .is_some_and(|g| g.contains_key("study"));
    let mut names_study = value.contains_key("study") || grid_sets_study;
    let mut overrides = vec![];
    for entry in set {
        let o: Override = entry.parse()?;
        if o.key == "study" {
            match &o.value {
                toml::Value::String(_) => names_study = true,
                other => return Err(format!("`{entry}`: a study is a name, not {other}")),
            }
        }
        overrides.push(o);
    }
    if !names_study {
        return Err("it sets no `study`".into());
    }
    let resolved =
        load_with(Some(config), &overrides, Environment::Ignore).map_err(|e| e.to_string())?;
    Ok(resolved.into_iter().map(|r| r.config.study).collect())
}
