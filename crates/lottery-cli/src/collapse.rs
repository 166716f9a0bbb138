//! The layer-collapse study of Tanaka et al. (2020): for each method, the largest compression
//! 10^x at which every prunable layer keeps at least one weight, beside the maximal critical
//! compression N/L (each of the L prunable layers keeps one weight: one path from input to output).
//!
//! Collapse is monotone in the compression for a one-shot method (its masks are nested), so the
//! critical compression is found by bisection over a grid of x. One-shot methods are scored once
//! and thresholded at each probe; iterative methods (SynFlow's 100 rounds) prune anew per probe.

use std::time::Instant;

use indicatif::ProgressBar;
use lottery_analysis::store::{CollapseMethod, CollapseRecord};
use lottery_core::topk::top_k_mask;
use lottery_core::{Density, MaskSet, PruneContext};

use crate::experiment::{Prepared, RunError, build_pruner, initial_scores, target_of};

/// log10 of the maximal critical compression of the run's prunable parameters: N / L.
pub fn max_critical_x(p: &Prepared) -> Result<f64, RunError> {
    let mut run_target = target_of(p, ProgressBar::hidden())?;
    let task = run_target.target();
    let rule = p.canonical.goal()?.rule;
    let prunable: Vec<_> = task
        .params()
        .into_iter()
        .filter(|q| rule.admits(q))
        .collect();
    let n: usize = prunable.iter().map(|q| q.numel()).sum();
    Ok((n as f64 / prunable.len().max(1) as f64).log10())
}

/// Finds the critical compression of the run's method on a grid of step `resolution` in x, up to
/// one step past the maximal critical compression. `progress` advances once per probe.
pub fn critical_compression(
    p: &Prepared,
    resolution: f64,
    progress: &ProgressBar,
) -> Result<CollapseMethod, RunError> {
    let t0 = Instant::now();
    let goal = p.canonical.goal()?;
    let x_max = max_critical_x(p)?;
    let steps = (x_max / resolution).ceil() as usize + 1;
    let one_shot = goal.iterations == 1;
    let scores = if one_shot {
        Some(initial_scores(p)?)
    } else {
        None
    };
    let mut run_target = target_of(p, ProgressBar::hidden())?;
    let task = run_target.target();
    let mut probe = |step: usize| -> Result<MaskSet, RunError> {
        progress.inc(1);
        let density = Density::new(10f64.powf(-(step as f64) * resolution))
            .map_err(|e| RunError::Prune(lottery_core::PruneError::Internal(e.to_string())))?;
        match &scores {
            Some(s) => Ok(top_k_mask(s, density, goal.scope, None)?),
            None => {
                let mut pruner = build_pruner(p)?;
                let mut ctx = PruneContext {
                    target: &mut *task,
                    goal: lottery_core::PruneGoal {
                        density,
                        ..goal.clone()
                    },
                    seed: p.canonical.seed,
                    progress: ProgressBar::hidden(),
                    work_dir: None,
                    save_every: std::time::Duration::ZERO,
                    shared_dir: None,
                    waited: std::time::Duration::ZERO,
                };
                Ok(pruner.prune(&mut ctx)?)
            }
        }
    };
    // Invariant: no collapse at `lo`, collapse at `hi` (or `hi` is past the grid).
    let (mut lo, mut hi) = (0usize, steps);
    let mut beyond = vec![];
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let collapsed = probe(mid)?.collapsed();
        if collapsed.is_empty() {
            lo = mid;
        } else {
            hi = mid;
            beyond = collapsed;
        }
    }
    if hi == steps {
        beyond = probe(hi)?.collapsed();
    }
    Ok(CollapseMethod {
        method: p.method.name.to_string(),
        iterations: goal.iterations,
        critical_x: lo as f64 * resolution,
        collapsed_beyond: beyond,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The study's table as Markdown: one row per method, and where it was computed.
pub fn render(record: &CollapseRecord) -> String {
    let x_max = record.max_critical_x;
    // The processor's own text holds `;` (`name; widest vector set`), so it is set apart.
    let processor = if record.processor.is_empty() {
        "not recorded".to_string()
    } else {
        format!("`{}`", record.processor)
    };
    let dirty = if record.git_dirty {
        ", uncommitted changes"
    } else {
        ""
    };
    let mut out = format!(
        "### Layer collapse at initialisation: {} on {}\n\n\
         Seed {}, backend {}, processor {processor}, commit {}{dirty}.\n\n\
         Maximal critical compression (each prunable layer keeps one weight): 10^{x_max:.2}\n\n\
         | method | rounds | largest compression without collapse | x | gap to maximal | first layer pruned away beyond | seconds |\n\
         |---|---:|---:|---:|---:|---|---:|\n",
        record.model,
        record.dataset,
        record.seed,
        record.backend,
        record.git_commit.get(..7).unwrap_or(&record.git_commit)
    );
    for m in &record.methods {
        out.push_str(&format!(
            "| {} | {} | 10^{:.2} | {:.2} | {:.2} | {} | {:.1} |\n",
            m.method,
            m.iterations,
            m.critical_x,
            m.critical_x,
            x_max - m.critical_x,
            m.collapsed_beyond.first().map_or("–", |s| s.as_str()),
            m.seconds
        ));
    }
    out
}
