//! Figures of the results store (PNG and SVG under `<results>/plots/`): a study's metric versus
//! compression, a run's layer densities, an Early-Bird run's mask-distance matrix, and a metric
//! recorded once an epoch.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lottery_analysis::{distance_matrix, epoch_curves, store};
use lottery_core::MaskSet;

use crate::Selection;
use crate::report::{study_runs, study_table_frame, suffix};

/// `<results>/plots/<stem>.png` and `.svg`, the folder created.
fn figure_paths(results: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = results.join("plots");
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    Ok((
        dir.join(format!("{stem}.png")),
        dir.join(format!("{stem}.svg")),
    ))
}

pub(crate) fn plot_study(
    results: &Path,
    study: &str,
    metric: &str,
    levels: bool,
    select: &Selection,
) -> Result<()> {
    let (frame, header, name, density_meaning) =
        study_table_frame(results, study, metric, levels, select)?;
    let row = frame.column("row")?.str()?;
    let density = frame.column("density")?.f64()?;
    let mean = frame.column("mean")?.f64()?;
    let std = frame.column("std")?.f64()?;
    let mut series: Vec<lottery_plot::Series> = vec![];
    for i in 0..frame.height() {
        let (Some(label), Some(d), Some(m)) = (row.get(i), density.get(i), mean.get(i)) else {
            continue;
        };
        let point = lottery_plot::Point {
            density: d,
            mean: m,
            std: std.get(i),
        };
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push(point),
            None => series.push(lottery_plot::Series {
                label: label.to_string(),
                points: vec![point],
            }),
        }
    }
    let y_label = if levels {
        "test accuracy of each level (%)".to_string()
    } else if name.contains("accuracy") {
        format!("{name} (%)")
    } else {
        name.clone()
    };
    let (png, svg) = figure_paths(
        results,
        &format!("{study}.{}{}", name.replace('/', "-"), suffix(select)),
    )?;
    lottery_plot::accuracy_plot(
        &format!("{study}: {name} by {header}, mean ± std over seeds"),
        &y_label,
        &density_meaning,
        &series,
        &png,
        &svg,
    )?;
    println!("wrote {} and {}", png.display(), svg.display());
    Ok(())
}

pub(crate) fn plot_layers(run: &Path, results: &Path) -> Result<()> {
    let masks = MaskSet::load(&run.join("masks.safetensors"))?;
    let layers: Vec<lottery_plot::LayerDensity> = masks
        .layers()
        .into_iter()
        .map(|l| lottery_plot::LayerDensity {
            density: l.kept as f64 / l.numel.max(1) as f64,
            name: l.name,
        })
        .collect();
    let summary = store::read_summary(&run.join("summary.json"))?;
    let (png, svg) = figure_paths(
        results,
        &format!("{}.{}.layers", summary.study, summary.run_id),
    )?;
    lottery_plot::layer_plot(
        &format!(
            "{} {} at density {:.4} (seed {}): density per layer",
            summary.model, summary.method, summary.density_achieved, summary.seed
        ),
        &layers,
        &png,
        &svg,
    )?;
    println!("wrote {} and {}", png.display(), svg.display());
    Ok(())
}

/// An Early-Bird run's mask-distance matrix (epoch × epoch; the paper's Fig. 2) as a heatmap:
/// `<study>.<run>.distances`.
pub(crate) fn plot_distances(run: &Path, results: &Path) -> Result<()> {
    let d = distance_matrix(&run.join("metrics.parquet"))?;
    let summary = store::read_summary(&run.join("summary.json"))?;
    let axis = if d.by_step {
        "mask after step (0: before training)"
    } else {
        "mask after epoch (0: before training)"
    };
    let (png, svg) = figure_paths(
        results,
        &format!("{}.{}.distances", summary.study, summary.run_id),
    )?;
    lottery_plot::heatmap_plot(
        &format!(
            "{} {} at density {} (seed {}): mask distances",
            summary.model, summary.method, summary.density_requested, summary.seed
        ),
        axis,
        &d.marks,
        &d.distances,
        &png,
        &svg,
    )?;
    println!("wrote {} and {}", png.display(), svg.display());
    Ok(())
}

/// A metric recorded once an epoch (`split/name`, the rows `name/eNNN`) against the epoch, one
/// line per row and density, mean ± std over seeds; each line marked at the mean of `mark` (a
/// recorded `split/metric`, e.g. the drawn epoch) over its runs whose detector fired, and
/// `threshold` as a dashed line: `<study>.<split>-<name>.per-epoch<selection>`.
pub(crate) fn plot_per_epoch(
    results: &Path,
    study: &str,
    metric: &str,
    mark: Option<&str>,
    threshold: Option<f64>,
    select: &Selection,
) -> Result<()> {
    let (study_dir, runs) = study_runs(results, study, select)?;
    let curves = epoch_curves(&study_dir, &runs, metric, mark, &select.by)?;
    let mark_name = mark.map(|m| m.split_once('/').map_or(m, |(_, name)| name));
    let lines: Vec<lottery_plot::EpochLine> = curves
        .iter()
        .map(|c| {
            let mut label = format!("{} at density {}", c.label, (c.density * 1e4).round() / 1e4);
            if let Some(name) = mark_name {
                let seeds = format!("{} of {} seeds", c.marked_runs, c.runs);
                label.push_str(&match c.mark {
                    Some(m) => format!(", {name} {m:.1} ({seeds})"),
                    None => format!(", no {name} ({seeds}: the detector never fired)"),
                });
            }
            lottery_plot::EpochLine {
                label,
                points: c
                    .points
                    .iter()
                    .map(|p| (p.epoch as f64, p.mean, p.std))
                    .collect(),
                marked_epoch: c.mark,
            }
        })
        .collect();
    let (png, svg) = figure_paths(
        results,
        &format!(
            "{study}.{}.per-epoch{}",
            metric.replace('/', "-"),
            suffix(select)
        ),
    )?;
    lottery_plot::epoch_plot(
        &format!("{study}: {metric} per epoch, mean ± std over seeds"),
        metric,
        &lines,
        threshold,
        &png,
        &svg,
    )?;
    println!("wrote {} and {}", png.display(), svg.display());
    Ok(())
}
