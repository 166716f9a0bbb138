//! The plan of a sweep: its runs, each with its resolved config on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lottery_core::config::Override;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{SweepError, io};

/// What the caller knows of one run of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Run id (hash of the canonical config).
    pub run_id: String,
    /// Study (the run lands in `results/<study>/<run-id>/`).
    pub study: String,
    /// Short label for progress and reports (`imp d=0.05 seed=1`).
    pub label: String,
    /// The resolved config as TOML, without a grid: `lottery run` on it computes exactly this run.
    pub config_toml: String,
}

/// One run of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// Run id.
    pub run_id: String,
    /// Study.
    pub study: String,
    /// Label for progress and reports.
    pub label: String,
    /// The run's resolved config file.
    pub config: PathBuf,
}

/// A planned sweep, stored as `results/.sweeps/<name>/plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPlan {
    /// Name (from the config's path and its overrides, see [`sweep_name_with`]).
    pub name: String,
    /// The config file the plan came from.
    pub source: PathBuf,
    /// The results root (absolute).
    pub results: PathBuf,
    /// The runs, in grid order, each once.
    pub runs: Vec<PlannedRun>,
}

/// The name of the sweep of a config file: its path below a `configs` folder, joined by `-`
/// (`configs/gem-miner/conv-2.toml` → `gem-miner-conv-2`, `configs/quickstart.toml` →
/// `quickstart`), or its stem when it lies elsewhere (`/tmp/x/sweep.toml` → `sweep`).
pub fn sweep_name(config: &Path) -> String {
    let parts: Vec<String> = config
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let below = parts
        .iter()
        .rposition(|p| p == "configs")
        .map(|i| parts[i + 1..].to_vec())
        .filter(|rest| !rest.is_empty())
        .unwrap_or_else(|| parts.last().cloned().into_iter().collect());
    let mut name = below.join("-");
    if let Some(stem) = name.strip_suffix(".toml") {
        name = stem.to_string();
    }
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match name.trim_start_matches('.') {
        "" => "sweep".to_string(),
        n => n.to_string(),
    }
}

/// The name of the sweep of a config file swept with `--set` overrides: [`sweep_name`], and with
/// overrides a suffix `.set-<hash>`: the first 8 hex digits of SHA-256 over the overrides as they
/// resolve (the last value of each key, by key, each as its parsed value, length-prefixed). Each
/// set of overrides thus plans into a folder of its own (a sweep of the same config under
/// `--set study=x-rerun` never rewrites its plan), while `study=x` and `study="x"`, or the same
/// overrides in another order, share one.
pub fn sweep_name_with(config: &Path, overrides: &[Override]) -> String {
    let base = sweep_name(config);
    if overrides.is_empty() {
        return base;
    }
    let resolved: BTreeMap<&str, String> = overrides
        .iter()
        .map(|o| (o.key.as_str(), o.value.to_string()))
        .collect();
    let mut hasher = Sha256::new();
    for (key, value) in resolved {
        let entry = format!("{key}={value}");
        hasher.update((entry.len() as u64).to_le_bytes());
        hasher.update(entry.as_bytes());
    }
    let digest = hasher.finalize();
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{base}.set-{hash}")
}

impl SweepPlan {
    /// The folder of the sweep `name` under `results`.
    pub fn dir_of(results: &Path, name: &str) -> PathBuf {
        results.join(".sweeps").join(name)
    }

    /// This plan's folder.
    pub fn dir(&self) -> PathBuf {
        Self::dir_of(&self.results, &self.name)
    }

    /// The folder of a run's study.
    pub fn study_dir(&self, run: &PlannedRun) -> PathBuf {
        self.results.join(&run.study)
    }

    /// Writes the plan: one config file per run (a run id that occurs twice in the grid is kept
    /// once) and `plan.json`, each atomically. Rewriting a plan is safe at any time: the files of a
    /// run id never change meaning.
    pub fn create(
        results: &Path,
        name: &str,
        source: &Path,
        specs: Vec<RunSpec>,
    ) -> Result<Self, SweepError> {
        std::fs::create_dir_all(results).map_err(io(results))?;
        let results = results.canonicalize().map_err(io(results))?;
        let (plan, configs) = Self::build(results, name, source, specs);
        for (path, text) in configs {
            lottery_core::fsutil::write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
        }
        let path = plan.dir().join("plan.json");
        let json = serde_json::to_string_pretty(&plan).expect("plan serialises");
        lottery_core::fsutil::write_atomic(&path, json.as_bytes()).map_err(io(&path))?;
        Ok(plan)
    }

    /// The plan [`SweepPlan::create`] would write, without writing anything (its config files
    /// need not exist): enough to read where each run stands.
    pub fn in_memory(
        results: &Path,
        name: &str,
        source: &Path,
        specs: Vec<RunSpec>,
    ) -> Result<Self, SweepError> {
        let results = results
            .canonicalize()
            .or_else(|_| std::path::absolute(results))
            .map_err(io(results))?;
        Ok(Self::build(results, name, source, specs).0)
    }

    /// The plan and the text of each run's config file.
    fn build(
        results: PathBuf,
        name: &str,
        source: &Path,
        specs: Vec<RunSpec>,
    ) -> (Self, Vec<(PathBuf, String)>) {
        let configs = Self::dir_of(&results, name).join("configs");
        let mut seen = std::collections::BTreeSet::new();
        let mut runs = vec![];
        let mut files = vec![];
        for s in specs {
            if !seen.insert(s.run_id.clone()) {
                continue;
            }
            let path = configs.join(format!("{}.toml", s.run_id));
            let text = format!(
                "# Run {} of sweep {name}, resolved from {}.\n{}",
                s.run_id,
                source.display(),
                s.config_toml
            );
            files.push((path.clone(), text));
            runs.push(PlannedRun {
                run_id: s.run_id,
                study: s.study,
                label: s.label,
                config: path,
            });
        }
        let plan = SweepPlan {
            name: name.to_string(),
            source: source.to_path_buf(),
            results,
            runs,
        };
        (plan, files)
    }

    /// Reads the plan of sweep `name` under `results`.
    pub fn load(results: &Path, name: &str) -> Result<Self, SweepError> {
        let path = Self::dir_of(results, name).join("plan.json");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|e| SweepError::Format {
            path,
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> RunSpec {
        RunSpec {
            run_id: id.into(),
            study: "s".into(),
            label: format!("run {id}"),
            config_toml: "study = \"s\"\n".into(),
        }
    }

    #[test]
    fn names_come_from_the_config_path() {
        assert_eq!(
            sweep_name(Path::new("configs/gem-miner/conv-2.toml")),
            "gem-miner-conv-2"
        );
        assert_eq!(
            sweep_name(Path::new("configs/quickstart.toml")),
            "quickstart"
        );
        assert_eq!(sweep_name(Path::new("my sweep.toml")), "my_sweep");
        assert_eq!(sweep_name(Path::new("/tmp/.tmpab/c.toml")), "c");
        assert_eq!(
            sweep_name(Path::new("/home/u/lottery/configs/imp/conv-2.toml")),
            "imp-conv-2"
        );
    }

    #[test]
    fn overrides_name_a_plan_of_their_own() {
        let sets = |entries: &[&str]| -> Vec<Override> {
            entries.iter().map(|e| e.parse().unwrap()).collect()
        };
        let config = Path::new("configs/bert-tickets/mlm.toml");
        assert_eq!(sweep_name_with(config, &[]), "bert-tickets-mlm");
        let one = sweep_name_with(config, &sets(&["study=mlm-4ep"]));
        let other = sweep_name_with(config, &sets(&["study=mlm-8ep"]));
        assert!(
            one.starts_with("bert-tickets-mlm.set-")
                && one.len() == "bert-tickets-mlm.set-".len() + 8
        );
        assert_ne!(one, other);
        assert_eq!(one, sweep_name_with(config, &sets(&["study=mlm-4ep"])));
        assert_ne!(
            sweep_name_with(config, &sets(&["a=1", "b=2"])),
            sweep_name_with(config, &sets(&["a=1\nb=2"]))
        );
        // As they resolve: the parsed value, the last value of a key, any order.
        assert_eq!(one, sweep_name_with(config, &sets(&["study=\"mlm-4ep\""])));
        assert_eq!(
            one,
            sweep_name_with(config, &sets(&["study=mlm-8ep", "study=mlm-4ep"]))
        );
        assert_eq!(
            sweep_name_with(config, &sets(&["a=1", "b=2"])),
            sweep_name_with(config, &sets(&["b=2", "a=1"]))
        );
    }

    #[test]
    fn a_plan_round_trips_and_keeps_each_run_once() {
        let d = tempfile::tempdir().unwrap();
        let plan = SweepPlan::create(
            d.path(),
            "x",
            Path::new("c.toml"),
            vec![spec("a"), spec("b"), spec("a")],
        )
        .unwrap();
        assert_eq!(plan.runs.len(), 2);
        let text = std::fs::read_to_string(&plan.runs[1].config).unwrap();
        assert!(text.ends_with("study = \"s\"\n"));
        assert_eq!(SweepPlan::load(d.path(), "x").unwrap(), plan);
    }

    #[test]
    fn a_plan_in_memory_writes_nothing_and_matches_the_written_one() {
        let d = tempfile::tempdir().unwrap();
        let results = d.path().canonicalize().unwrap().join("results");
        let specs = vec![spec("a"), spec("b"), spec("a")];
        let mem = SweepPlan::in_memory(&results, "x", Path::new("c.toml"), specs.clone()).unwrap();
        assert!(!results.exists());
        assert_eq!(mem.runs.len(), 2);
        let written = SweepPlan::create(&results, "x", Path::new("c.toml"), specs).unwrap();
        assert_eq!(mem, written);
    }
}
