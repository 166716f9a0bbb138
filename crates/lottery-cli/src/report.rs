//! Reading the results store: study tables, a run's mask layers and distance matrix.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lottery_analysis::{
    Best, TableFormat, TableOptions, WEIGHT_DENSITY, distance_matrix, levels_frame, recorded_frame,
    render_table_styled, row_fields, select_runs, store, study_frame,
};
use lottery_core::MaskSet;
use lottery_core::plugin::{DensityOf, find_pruner};

use crate::{Format, Selection};

pub(crate) fn table(
    results: &Path,
    study: &str,
    format: Format,
    metric: &str,
    levels: bool,
    select: &Selection,
) -> Result<String> {
    let (frame, header, name, density_meaning) =
        study_table_frame(results, study, metric, levels, select)?;
    let (fmt, ext) = match format {
        Format::Markdown => (TableFormat::Markdown, "md"),
        Format::Csv => (TableFormat::Csv, "csv"),
        Format::Latex => (TableFormat::Latex, "tex"),
    };
    let text = render_table_styled(
        &frame,
        fmt,
        &format!("{study}: {name}"),
        &header,
        Best::for_metric(&name),
        &density_meaning,
    )?;
    let out = results.join("tables").join(format!(
        "{study}.{}{}.{ext}",
        name.replace('/', "-"),
        suffix(select)
    ));
    lottery_core::fsutil::write_atomic(&out, text.as_bytes())
        .with_context(|| out.display().to_string())?;
    Ok(text)
}

/// A file-name suffix for a selection that is not the default (`.by-method-seed.method=imp`).
pub(crate) fn suffix(select: &Selection) -> String {
    let mut s = String::new();
    if !select.by.is_empty() {
        s.push_str(&format!(".by-{}", select.by.join("-")));
    }
    for (k, v) in &select.filters {
        s.push_str(&format!(".{k}={v}"));
    }
    s.chars()
        .map(|c| if c == '/' || c == ' ' { '_' } else { c })
        .collect()
}

/// What the density columns of a table over `runs` count: prunable weights, or for a structured
/// method (Early-Bird) batch-norm channels.
fn density_meaning(runs: &[store::RunSummary]) -> String {
    let mut by_channels: Vec<&str> = runs
        .iter()
        .map(|r| r.method.as_str())
        .filter(|m| find_pruner(m).is_ok_and(|e| e.density_of == DensityOf::Channels))
        .collect();
    by_channels.sort();
    by_channels.dedup();
    if by_channels.is_empty() {
        WEIGHT_DENSITY.to_string()
    } else if runs
        .iter()
        .all(|r| by_channels.contains(&r.method.as_str()))
    {
        "fraction of batch-norm channels kept".to_string()
    } else {
        format!(
            "{WEIGHT_DENSITY}; for {}, of batch-norm channels",
            by_channels.join(", ")
        )
    }
}

/// The study's folder and its finished runs that pass the selection's filters (an error when
/// none does; run folders without a summary are named in a warning).
pub(crate) fn study_runs(
    results: &Path,
    study: &str,
    select: &Selection,
) -> Result<(PathBuf, Vec<store::RunSummary>)> {
    let study_dir = results.join(study);
    let store::StudyRuns { runs: all, skipped } = store::scan_runs(&study_dir)?;
    if !skipped.is_empty() {
        tracing::warn!(
            "{} run folder{} under {} {} no summary.json and {} skipped: {}",
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" },
            study_dir.display(),
            if skipped.len() == 1 { "has" } else { "have" },
            if skipped.len() == 1 { "was" } else { "were" },
            skipped
                .iter()
                .map(|p| p.file_name().unwrap_or(p.as_os_str()).to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if all.is_empty() {
        bail!(
            "no finished runs under {}{}",
            study_dir.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({} run folders without summary.json)", skipped.len())
            }
        );
    }
    let runs = select_runs(&all, &select.filters)?;
    if runs.is_empty() {
        bail!(
            "no run of {} passes the filters {:?}",
            study_dir.display(),
            select.filters
        );
    }
    Ok((study_dir, runs))
}

/// The aggregated frame of a study's table, its row header, the metric's name and what its
/// density columns count.
pub(crate) fn study_table_frame(
    results: &Path,
    study: &str,
    metric: &str,
    levels: bool,
    select: &Selection,
) -> Result<(polars::prelude::DataFrame, String, String, String)> {
    let (study_dir, runs) = study_runs(results, study, select)?;
    let scale = if metric.contains("accuracy") {
        100.0
    } else {
        1.0
    };
    if levels {
        let frame = levels_frame(&study_dir, &runs, 100.0)?;
        return Ok((
            frame,
            "method".into(),
            "levels".into(),
            density_meaning(&runs),
        ));
    }
    let header = row_fields(&runs, &select.by)?.join("/");
    let frame = if metric.contains('/') {
        recorded_frame(&study_dir, &runs, metric, scale, &select.by)?
    } else {
        let opts = TableOptions {
            metric: metric.to_string(),
            scale,
            by: select.by.clone(),
        };
        study_frame(&runs, &opts)?
    };
    Ok((frame, header, metric.to_string(), density_meaning(&runs)))
}

pub(crate) fn distances(run: &Path) -> Result<String> {
    let d = distance_matrix(&run.join("metrics.parquet"))?;
    let mut out = String::from(if d.by_step { "step" } else { "epoch" });
    for m in &d.marks {
        out.push_str(&format!(",{m}"));
    }
    out.push('\n');
    for (m, row) in d.marks.iter().zip(&d.distances) {
        out.push_str(&m.to_string());
        for v in row {
            out.push_str(&format!(",{v:.4}"));
        }
        out.push('\n');
    }
    Ok(out)
}

pub(crate) fn inspect(run: &Path) -> Result<()> {
    let path = if run.is_dir() {
        run.join("masks.safetensors")
    } else {
        run.to_path_buf()
    };
    let masks = MaskSet::load(&path)?;
    println!(
        "{:<40} {:>18} {:>10} {:>10} {:>9}",
        "parameter", "shape", "numel", "kept", "density"
    );
    for l in masks.layers() {
        let flag = if l.kept == 0 { "  COLLAPSED" } else { "" };
        println!(
            "{:<40} {:>18} {:>10} {:>10} {:>8.4}%{flag}",
            l.name,
            format!("{:?}", l.shape),
            l.numel,
            l.kept,
            100.0 * l.kept as f64 / l.numel.max(1) as f64
        );
    }
    println!(
        "{:<40} {:>18} {:>10} {:>10} {:>8.4}%",
        "total",
        "",
        masks.numel(),
        masks.kept(),
        100.0 * masks.density()
    );
    let collapsed = masks.collapsed();
    if collapsed.is_empty() {
        println!("no layer collapsed");
    } else {
        println!("collapsed layers: {}", collapsed.join(", "));
    }
    Ok(())
}
