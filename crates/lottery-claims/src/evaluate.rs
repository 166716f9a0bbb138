//! Reading each claim's figures from the results store and deciding its verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lottery_analysis::{RunSummary, StoreError, run_value, select_runs, store};

use crate::spec::{Claim, ClaimsError, Measure, Reading, Test};

/// A measured figure: the mean over seeds of one metric of the matching runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The measure's label.
    pub label: String,
    /// Mean, in display units.
    pub mean: f64,
    /// Sample standard deviation over seeds (`None` for one seed).
    pub std: Option<f64>,
    /// The seeds measured.
    pub seeds: Vec<u64>,
    /// The runs' setting: model, dataset, epochs.
    pub setting: String,
}

/// The verdict on a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The runs show what the paper claims.
    Held,
    /// The runs show otherwise.
    NotHeld,
    /// The runs here cannot decide it (why).
    NotTestable(String),
    /// The runs it needs are not in the store (which).
    NotRun(String),
}

/// A claim with its figures and verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// The claim.
    pub claim: Claim,
    /// Its figures, in the test's order (left, then right).
    pub figures: Vec<Figure>,
    /// The verdict.
    pub verdict: Verdict,
    /// How the verdict was reached (`difference +1.20 ≥ −0.50`), empty without figures.
    pub reasoning: String,
}

/// The layer-collapse gap of a method: `Ok(None)` when the study has no record of the model or
/// the record no entry of the method.
fn collapse_gap(
    results: &Path,
    m: &Measure,
    model: &str,
    method: &str,
) -> Result<Option<Figure>, ClaimsError> {
    let Some(record) = store::read_collapse(&results.join(&m.study), model)? else {
        return Ok(None);
    };
    let Some(point) = record.methods.iter().find(|p| p.method == method) else {
        return Ok(None);
    };
    Ok(Some(Figure {
        label: m.label.clone(),
        mean: (record.max_critical_x - point.critical_x) * m.scale(),
        std: None,
        seeds: vec![record.seed],
        setting: format!(
            "{} at initialisation ({} for data-driven scores), bisection step {}",
            record.model, record.dataset, record.resolution
        ),
    }))
}

/// The runs of a measure and their values: `Ok(None)` when the store holds none that match.
fn measure(results: &Path, m: &Measure) -> Result<Option<Figure>, ClaimsError> {
    let metric = match m.reading().map_err(StoreError::Query)? {
        Reading::Runs(metric) => metric,
        Reading::CollapseGap { model, method } => {
            return collapse_gap(results, m, &model, &method);
        }
    };
    let study_dir = results.join(&m.study);
    let runs = if study_dir.is_dir() {
        store::finished_runs(&study_dir)?
    } else {
        vec![]
    };
    let filters: Vec<(String, String)> = m
        .filter
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut runs = select_runs(&runs, &filters)?;
    runs.retain(|r| m.options_match(&r.options));
    let mut by_seed: BTreeMap<u64, f64> = BTreeMap::new();
    let mut kept: Vec<&RunSummary> = vec![];
    for r in &runs {
        let Some(v) = run_value(&study_dir, r, &metric)? else {
            continue;
        };
        if by_seed.insert(r.seed, v * m.scale()).is_some() {
            return Err(StoreError::Query(format!(
                "measure `{}`: more than one run of study `{}` with seed {} passes the filter {:?}; \
                 narrow it (by method, options, density, ...) so that each seed is one run",
                m.label, m.study, r.seed, m.filter
            ))
            .into());
        }
        kept.push(r);
    }
    if kept.is_empty() {
        return Ok(None);
    }
    for field in lottery_analysis::table::NEVER_AVERAGED_FIELDS {
        let values: BTreeSet<String> = kept
            .iter()
            .map(|r| lottery_analysis::table::field_of(r, field))
            .collect();
        if values.len() > 1 {
            return Err(StoreError::Query(format!(
                "measure `{}`: the runs it selects in study `{}` differ in {field} ({}); add it to the filter",
                m.label,
                m.study,
                values.into_iter().collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
    }
    let values: Vec<f64> = by_seed.values().copied().collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.len() > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    let first = kept[0];
    let epochs: BTreeSet<u64> = kept.iter().map(|r| r.epochs).collect();
    let epochs = epochs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/");
    Ok(Some(Figure {
        label: m.label.clone(),
        mean,
        std,
        seeds: by_seed.keys().copied().collect(),
        setting: format!(
            "{} on {}, {epochs} epoch{}",
            first.model,
            first.dataset,
            if epochs == "1" { "" } else { "s" }
        ),
    }))
}

/// Evaluates `claim` over the runs under `results`.
pub fn evaluate_one(results: &Path, claim: &Claim) -> Result<Evaluated, ClaimsError> {
    let done = |figures, verdict, reasoning: String| {
        Ok(Evaluated {
            claim: claim.clone(),
            figures,
            verdict,
            reasoning,
        })
    };
    if let Test::NotTestable { why } = &claim.test {
        return done(vec![], Verdict::NotTestable(why.clone()), String::new());
    }
    let mut figures = vec![];
    let mut missing = vec![];
    for (_, m) in claim.test.measures() {
        match measure(results, m)? {
            Some(f) => figures.push(f),
            None => missing.push(format!("{} (study `{}`)", m.label, m.study)),
        }
    }
    if !missing.is_empty() {
        let why = format!("no finished run gives {}", missing.join(", "));
        return done(figures, Verdict::NotRun(why), String::new());
    }
    let needed = claim.seeds_needed();
    if let Some(short) = figures.iter().find(|f| f.seeds.len() < needed) {
        let why = format!(
            "{} has {} seed{}; this claim needs {needed}",
            short.label,
            short.seeds.len(),
            if short.seeds.len() == 1 { "" } else { "s" }
        );
        return done(figures, Verdict::NotTestable(why), String::new());
    }
    let verdict = |held: bool| {
        if held {
            Verdict::Held
        } else {
            Verdict::NotHeld
        }
    };
    let (verdict, reasoning) = match &claim.test {
        Test::AtLeast { margin, .. } => {
            let d = figures[0].mean - figures[1].mean;
            (
                verdict(d >= -margin),
                format!("difference {d:+.2}, held if ≥ {:.2}", 0.0 - margin),
            )
        }
        Test::Above { margin, lhs, .. } => {
            let (a, b) = (figures[0].mean, figures[1].mean);
            let d = a - b;
            // A ratio says something of times and costs, not of accuracies.
            let accuracy = lhs.metric == "level" || lhs.metric.contains("accuracy");
            let ratio = if !accuracy && a > 0.0 && b > 0.0 {
                format!(", ratio {:.2}×", a / b)
            } else {
                String::new()
            };
            (
                verdict(d > *margin),
                format!("difference {d:+.2}{ratio}, held if > {margin:.2}"),
            )
        }
        Test::Within {
            at_most, at_least, ..
        } => {
            let v = figures[0].mean;
            let held = at_most.is_none_or(|b| v <= b) && at_least.is_none_or(|b| v >= b);
            let bounds = match (at_least, at_most) {
                (Some(lo), Some(hi)) => format!("held if in [{lo}, {hi}]"),
                (Some(lo), None) => format!("held if ≥ {lo}"),
                (None, Some(hi)) => format!("held if ≤ {hi}"),
                (None, None) => unreachable!("checked when the file was read"),
            };
            (verdict(held), bounds)
        }
        Test::NotTestable { .. } => unreachable!("handled above"),
    };
    done(figures, verdict, reasoning)
}

/// Evaluates the claims (all, or those whose id is in `only`) over the runs under `results`.
pub fn evaluate(
    results: &Path,
    claims: &[Claim],
    only: &[String],
) -> Result<Vec<Evaluated>, ClaimsError> {
    claims
        .iter()
        .filter(|c| only.is_empty() || only.contains(&c.id))
        .map(|c| evaluate_one(results, c))
        .collect()
}

/// How [`StudyLine::processors`] names the processor of a run written before it was recorded.
pub const PROCESSOR_NOT_RECORDED: &str = "not recorded";

/// What the store holds of one study the claims read.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyLine {
    /// The study.
    pub study: String,
    /// Its finished runs.
    pub runs: usize,
    /// Their seeds.
    pub seeds: Vec<u64>,
    /// The models of its layer-collapse records.
    pub collapse_models: Vec<String>,
    /// The backends they ran on.
    pub backends: Vec<String>,
    /// The processors they computed on; [`PROCESSOR_NOT_RECORDED`] for runs and records written
    /// before the processor was recorded.
    pub processors: Vec<String>,
    /// The commits they ran at (short, `+dirty` for a modified tree).
    pub commits: Vec<String>,
    /// Pruning and training seconds, summed over the runs.
    pub compute_seconds: f64,
}

/// The studies the claims read, in order of first use, with what the store holds of each.
pub fn studies(results: &Path, claims: &[Evaluated]) -> Result<Vec<StudyLine>, ClaimsError> {
    let mut names: Vec<&str> = vec![];
    for e in claims {
        for (_, m) in e.claim.test.measures() {
            if !names.contains(&m.study.as_str()) {
                names.push(&m.study);
            }
        }
    }
    names
        .into_iter()
        .map(|study| {
            let dir = results.join(study);
            let runs = if dir.is_dir() {
                store::finished_runs(&dir)?
            } else {
                vec![]
            };
            let collapse: Vec<store::CollapseRecord> = store::collapse_models(&dir)
                .iter()
                .map(|model| store::read_collapse(&dir, model))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
            let mut backends: BTreeSet<String> = runs.iter().map(|r| r.backend.clone()).collect();
            backends.extend(collapse.iter().map(|c| c.backend.clone()));
            let processors: BTreeSet<String> = runs
                .iter()
                .map(|r| r.processor.as_str())
                .chain(collapse.iter().map(|c| c.processor.as_str()))
                .map(|p| {
                    if p.is_empty() {
                        PROCESSOR_NOT_RECORDED.to_string()
                    } else {
                        p.to_string()
                    }
                })
                .collect();
            let mut commits: BTreeSet<String> = runs
                .iter()
                .map(|r| short_commit(&r.git_commit, r.git_dirty))
                .collect();
            commits.extend(
                collapse
                    .iter()
                    .map(|c| short_commit(&c.git_commit, c.git_dirty)),
            );
            Ok(StudyLine {
                study: study.to_string(),
                runs: runs.len(),
                collapse_models: collapse.iter().map(|c| c.model.clone()).collect(),
                seeds: runs
                    .iter()
                    .map(|r| r.seed)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                backends: backends.into_iter().collect(),
                processors: processors.into_iter().collect(),
                commits: commits.into_iter().collect(),
                compute_seconds: runs
                    .iter()
                    .map(|r| r.prune_seconds + r.train_seconds)
                    .chain(
                        collapse
                            .iter()
                            .flat_map(|c| c.methods.iter().map(|m| m.seconds)),
                    )
                    .sum(),
            })
        })
        .collect()
}

/// A commit as the report shows it: 7 characters, `+dirty` for a modified tree.
fn short_commit(commit: &str, dirty: bool) -> String {
    let short: String = commit.chars().take(7).collect();
    if dirty {
        format!("{short}+dirty")
    } else {
        short
    }
}
