//! `lottery`: find and compare lottery tickets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lottery_analysis::{
    TableFormat, TableOptions, distance_matrix, levels_frame, recorded_frame, render_table, store,
    study_frame,
};
use lottery_cli::collapse;
use lottery_cli::experiment::{
    DataCache, Prepared, RunError, execute, initial_scores, prepare, write_weights,
};
use lottery_core::config::{self, Override};
use lottery_core::{ConfigError, MaskSet};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "lottery",
    version,
    about = "Find sparse trainable subnetworks and compare the methods that find them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the registered methods, models and datasets.
    List,
    /// Run the experiment(s) of a config file (one per point of its [grid]).
    Run {
        /// The config file (TOML).
        config: PathBuf,
        /// Override a key: --set prune.density=0.05 (repeatable; wins over the file and env vars).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<Override>,
        /// Initial weights from a safetensors file with PyTorch names (sets model.init_from).
        #[arg(long, value_name = "FILE")]
        init_from: Option<PathBuf>,
        /// Results root.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Rerun runs that are already finished.
        #[arg(long)]
        force: bool,
        /// Do not print the study table at the end.
        #[arg(long)]
        no_table: bool,
    },
    /// Print the resolved config of each run with the source of every value.
    Config {
        /// The config file (TOML).
        config: PathBuf,
        /// Overrides, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<Override>,
    },
    /// Method × density table of a study: mean ± std over seeds.
    Table {
        /// Study name (folder under the results root).
        study: String,
        /// Results root.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Markdown)]
        format: Format,
        /// Summary field to aggregate (`test_accuracy`, `test_loss`, `test_accuracy_at_init`,
        /// `density_achieved`, `prune_seconds`, `train_seconds`), or a recorded metric as
        /// `split/metric` (`early-bird/drawn-epoch`, `early-bird/train-flops-ratio`, ...).
        #[arg(long, default_value = "test_accuracy")]
        metric: String,
        /// Tabulate the accuracy of every level of the runs instead (IMP's accuracy-versus-density
        /// curve, one row per method and phase: the ticket and its controls).
        #[arg(long)]
        levels: bool,
    },
    /// Early-Bird's mask-distance matrix of a run (epoch × epoch, the paper's figure), as CSV.
    Distances {
        /// A run directory.
        run: PathBuf,
    },
    /// Layer table of a run's masks: shape, density per layer, collapsed layers.
    Inspect {
        /// A run directory, or its masks.safetensors.
        run: PathBuf,
    },
    /// Write a method's raw scores of a model's initial weights to safetensors (PyTorch names), to
    /// compare with another implementation on the same weights and batch.
    Score {
        /// The config file (its first run is scored).
        config: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Initial weights from a safetensors file with PyTorch names (sets model.init_from).
        #[arg(long, value_name = "FILE")]
        init_from: Option<PathBuf>,
        /// Overrides, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<Override>,
    },
    /// Layer-collapse study: for each run of the config (one per method), the largest
    /// compression 10^x at initialisation before some layer is pruned away.
    Collapse {
        /// The config file.
        config: PathBuf,
        /// Grid step in x (compression 10^x).
        #[arg(long, default_value_t = 0.02)]
        resolution: f64,
        /// Overrides, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<Override>,
        /// Results root (the table goes to <results>/tables/).
        #[arg(long, default_value = "results")]
        results: PathBuf,
    },
    /// Write a config's initial weights (PyTorch names and layout) to safetensors.
    ExportWeights {
        /// The config file.
        config: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Overrides, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<Override>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Markdown,
    Csv,
    Latex,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("LOTTERY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    lottery_plugins::link();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let config_error = e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<RunError>()
                    .is_some_and(|r| matches!(r, RunError::Config(_) | RunError::Data(_)));
            eprintln!("error: {e:#}");
            if config_error {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::List => list(),
        Command::Run {
            config,
            mut sets,
            init_from,
            results,
            force,
            no_table,
        } => {
            sets.extend(init_from_override(init_from));
            run(&config, &sets, &results, force, !no_table)
        }
        Command::Score {
            config,
            out,
            init_from,
            mut sets,
        } => {
            sets.extend(init_from_override(init_from));
            score(&config, &sets, &out)
        }
        Command::Collapse {
            config,
            resolution,
            sets,
            results,
        } => collapse(&config, &sets, resolution, &results),
        Command::Config { config, sets } => {
            for r in config::load(Some(&config), &sets)? {
                println!("{}", toml::to_string(&r.config)?);
                println!("# sources");
                for (k, v) in &r.sources {
                    println!("# {k}: {v}");
                }
                println!();
            }
            Ok(())
        }
        Command::Table {
            study,
            results,
            format,
            metric,
            levels,
        } => {
            let text = table(&results, &study, format, &metric, levels)?;
            print!("{text}");
            Ok(())
        }
        Command::Distances { run } => {
            print!("{}", distances(&run)?);
            Ok(())
        }
        Command::Inspect { run } => inspect(&run),
        Command::ExportWeights { config, out, sets } => export_weights(&config, &sets, &out),
    }
}

fn init_from_override(file: Option<PathBuf>) -> Option<Override> {
    file.map(|f| Override {
        key: "model.init_from".into(),
        value: toml::Value::String(f.display().to_string()),
    })
}

/// Every run of the config's grid, validated (names, options, data, weights) before any work.
fn prepare_all(config_path: &Path, sets: &[Override]) -> Result<Vec<Prepared>> {
    let mut cache = DataCache::default();
    let mut prepared = vec![];
    for r in config::load(Some(config_path), sets)? {
        prepared.push(prepare(r, Some(config_path), &mut cache)?);
    }
    Ok(prepared)
}

fn first_run(config_path: &Path, sets: &[Override]) -> Result<Prepared> {
    let first = config::load(Some(config_path), sets)?
        .into_iter()
        .next()
        .context("the config resolves to no run")?;
    Ok(prepare(
        first,
        Some(config_path),
        &mut DataCache::default(),
    )?)
}

fn score(config_path: &Path, sets: &[Override], out: &Path) -> Result<()> {
    let p = first_run(config_path, sets)?;
    let t0 = std::time::Instant::now();
    let scores = initial_scores(&p)?;
    let metadata = std::collections::BTreeMap::from([
        ("format".to_string(), "lottery-scores".to_string()),
        ("method".to_string(), p.method.name.to_string()),
        ("model".to_string(), p.canonical.model.name.clone()),
        ("run_id".to_string(), p.run_id.clone()),
    ]);
    lottery_core::fsutil::write_atomic(out, &lottery_cli::weights::to_bytes(&scores, &metadata))
        .with_context(|| out.display().to_string())?;
    println!(
        "wrote {} scores of {} for {} parameters of {} to {} ({:.1}s)",
        scores.values().map(|t| t.values.len()).sum::<usize>(),
        p.method.name,
        scores.len(),
        p.canonical.model.name,
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn collapse(config_path: &Path, sets: &[Override], resolution: f64, results: &Path) -> Result<()> {
    if !(resolution > 0.0 && resolution <= 1.0) {
        bail!("--resolution {resolution}: expected a grid step in (0, 1]");
    }
    let prepared = prepare_all(config_path, sets)?;
    let first = prepared.first().context("the config resolves to no run")?;
    let x_max = collapse::max_critical_x(first)?;
    let (study, model, dataset) = (
        first.canonical.study.clone(),
        first.canonical.model.name.clone(),
        first.canonical.data.name.clone(),
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:24} {bar:30} {pos} probes {elapsed_precise}")
            .expect("template"),
    );
    let mut points = vec![];
    for p in &prepared {
        bar.set_message(p.method.name.to_string());
        let point = collapse::critical_compression(p, resolution, &bar)?;
        tracing::info!(
            "{}: no collapse up to 10^{:.2} (maximal critical 10^{x_max:.2}), {:.1}s",
            point.method,
            point.critical_x,
            point.seconds
        );
        points.push(point);
    }
    bar.finish_and_clear();
    let text = collapse::render(&model, &dataset, x_max, &points);
    let out = results.join("tables").join(format!("{study}.{model}.md"));
    lottery_core::fsutil::write_atomic(&out, text.as_bytes())
        .with_context(|| out.display().to_string())?;
    print!("{text}");
    println!("\n(written to {})", out.display());
    Ok(())
}

fn list() -> Result<()> {
    println!("methods:");
    for e in lottery_core::plugin::pruners().map_err(anyhow::Error::msg)? {
        println!("  {:<16} {}", e.name, e.summary);
    }
    println!("models:");
    for e in lottery_models::models().map_err(anyhow::Error::msg)? {
        println!("  {:<16} {}", e.name, e.summary);
    }
    println!("datasets:");
    for e in lottery_data::datasets().map_err(anyhow::Error::msg)? {
        println!("  {:<16} {}", e.name, e.summary);
    }
    Ok(())
}

fn run(
    config_path: &Path,
    sets: &[Override],
    results: &Path,
    force: bool,
    print_table: bool,
) -> Result<()> {
    let prepared = prepare_all(config_path, sets)?;
    let studies: Vec<String> = {
        let mut s: Vec<String> = prepared.iter().map(|p| p.canonical.study.clone()).collect();
        s.dedup();
        s
    };
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new(prepared.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("runs {bar:30} {pos}/{len} {elapsed_precise} {msg}")
            .expect("template"),
    );
    let total = prepared.len();
    let t0 = std::time::Instant::now();
    for (i, p) in prepared.into_iter().enumerate() {
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "  {msg:32} {bar:30} {pos}/{len} steps {per_sec} eta {eta}",
            )
            .expect("template"),
        );
        let label = format!(
            "{} d={} seed={}",
            p.method.name, p.canonical.prune.density, p.canonical.seed
        );
        overall.set_message(label.clone());
        let outcome = execute(p, results, force, bar.clone())?;
        bar.finish_and_clear();
        multi.remove(&bar);
        overall.inc(1);
        let s = &outcome.summary;
        if outcome.skipped {
            tracing::info!(
                "run {}/{total} {label}: already finished ({}), skipped",
                i + 1,
                outcome.dir.display()
            );
        } else {
            tracing::info!(
                "run {}/{total} {label}: density {:.4}, test accuracy {:.2}% (at init {:.2}%), prune {:.1}s, train {:.1}s -> {}",
                i + 1,
                s.density_achieved,
                100.0 * s.test_accuracy,
                100.0 * s.test_accuracy_at_init,
                s.prune_seconds,
                s.train_seconds,
                outcome.dir.display()
            );
        }
        if !s.collapsed_layers.is_empty() {
            tracing::warn!("layer collapse: {:?} fully pruned", s.collapsed_layers);
        }
    }
    overall.finish_and_clear();
    tracing::info!("{total} runs in {:.1}s", t0.elapsed().as_secs_f64());
    if print_table {
        for study in studies {
            print!(
                "{}",
                table(results, &study, Format::Markdown, "test_accuracy", false)?
            );
        }
    }
    Ok(())
}

fn table(
    results: &Path,
    study: &str,
    format: Format,
    metric: &str,
    levels: bool,
) -> Result<String> {
    let runs = store::finished_runs(&results.join(study))?;
    if runs.is_empty() {
        bail!("no finished runs under {}", results.join(study).display());
    }
    let opts = TableOptions {
        metric: metric.to_string(),
        scale: if metric.contains("accuracy") {
            100.0
        } else {
            1.0
        },
    };
    let (frame, metric) = if levels {
        let frame = levels_frame(&results.join(study), &runs, 100.0)?;
        (frame, "levels")
    } else if metric.contains('/') {
        let frame = recorded_frame(&results.join(study), &runs, metric, opts.scale)?;
        (frame, metric)
    } else {
        (study_frame(&runs, &opts)?, metric)
    };
    let (fmt, ext) = match format {
        Format::Markdown => (TableFormat::Markdown, "md"),
        Format::Csv => (TableFormat::Csv, "csv"),
        Format::Latex => (TableFormat::Latex, "tex"),
    };
    let text = render_table(&frame, fmt, &format!("{study}: {metric}"))?;
    let out = results
        .join("tables")
        .join(format!("{study}.{}.{ext}", metric.replace('/', "-")));
    lottery_core::fsutil::write_atomic(&out, text.as_bytes())
        .with_context(|| out.display().to_string())?;
    Ok(text)
}

fn distances(run: &Path) -> Result<String> {
    let (epochs, matrix) = distance_matrix(&run.join("metrics.parquet"))?;
    let mut out = String::from("epoch");
    for e in &epochs {
        out.push_str(&format!(",{e}"));
    }
    out.push('\n');
    for (e, row) in epochs.iter().zip(&matrix) {
        out.push_str(&e.to_string());
        for v in row {
            out.push_str(&format!(",{v:.4}"));
        }
        out.push('\n');
    }
    Ok(out)
}

fn inspect(run: &Path) -> Result<()> {
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

fn export_weights(config_path: &Path, sets: &[Override], out: &Path) -> Result<()> {
    let p = first_run(config_path, sets)?;
    let naming = p.model.naming();
    let names: Vec<String> =
        lottery_models::view::entries::<lottery_core::backend::TrainBackend, _>(&p.model, &naming)
            .into_iter()
            .map(|e| e.info.name)
            .collect();
    let values = lottery_models::view::values::<lottery_core::backend::TrainBackend, _>(
        &p.model, &naming, &names,
    );
    write_weights(out, &values, &p.run_id)?;
    println!(
        "wrote {} tensors of {} (seed {}) to {}",
        values.len(),
        p.canonical.model.name,
        p.canonical.seed,
        out.display()
    );
    Ok(())
}
