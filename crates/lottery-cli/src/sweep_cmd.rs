//! `lottery sweep`: a config's grid as separate processes on local workers or a Slurm array.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use indicatif::MultiProgress;
use lottery_analysis::store;
use lottery_core::config::Override;

use crate::report::table;
use crate::{Format, Selection, prepare_all};

/// Arguments of `lottery sweep`.
#[derive(clap::Args)]
pub(crate) struct SweepArgs {
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

pub(crate) fn sweep(a: SweepArgs) -> Result<()> {
    let name = lottery_sweep::sweep_name_with(&a.config, &a.sets);
    if a.status {
        // Reading only: the grid of the config and overrides as given now, never a plan stored
        // by an earlier sweep (the config or its overrides may have changed since).
        let plan =
            lottery_sweep::SweepPlan::in_memory(&a.results, &name, &a.config, run_specs(&a)?)?;
        print!("{}", lottery_sweep::render_status(&plan));
        if let Ok(stored) = lottery_sweep::SweepPlan::load(&a.results, &name) {
            let ids = |p: &lottery_sweep::SweepPlan| -> std::collections::BTreeSet<String> {
                p.runs.iter().map(|r| r.run_id.clone()).collect()
            };
            let (now, before) = (ids(&plan), ids(&stored));
            let dropped = before.difference(&now).count();
            let added = now.difference(&before).count();
            if dropped + added > 0 {
                println!(
                    "(the last sweep of this config with these overrides planned {} runs: {dropped} of them are not in this grid, {added} of this grid were not in it; e.g. the config or a LOTTERY_ variable changed since)",
                    before.len()
                );
            }
        }
        return Ok(());
    }
    // Each run reads the save interval; a bad one is refused before the plan is written.
    lottery_cli::experiment::save_interval()?;
    let prepared = prepare_all(&a.config, &a.sets)?;
    let plan =
        lottery_sweep::SweepPlan::create(&a.results, &name, &a.config, specs_of(&prepared)?)?;
    // The runs that share a search across densities serve every density of the grid, in
    // whatever order the workers or the array start them.
    lottery_cli::experiment::announce_densities(&a.results, &prepared)?;
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
                "submitted job {id}; logs in {}; progress: {}",
                job.logs.display(),
                status_command(&a)
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
        "sweep {name}: {} computed, {} already finished, {} finished by another process, {} failed, {} interrupted, in {:.1}s ({} workers × {} threads; logs in {})",
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
    // The store, not the report, has the last word: every run of the plan must be recorded.
    let unfinished = lottery_sweep::unfinished(&plan);
    if !unfinished.is_empty() {
        let (mut failed, mut interrupted) = (0, 0);
        let list: Vec<String> = unfinished
            .iter()
            .map(|(run, state)| {
                let failure = report
                    .failed
                    .iter()
                    .find(|(id, _)| *id == run.run_id)
                    .map(|(_, why)| why.clone());
                let why = if let Some(why) = failure {
                    failed += 1;
                    format!("failed: {}", why.lines().next().unwrap_or(""))
                } else if report.interrupted.contains(&run.run_id) {
                    interrupted += 1;
                    "interrupted".to_string()
                } else {
                    match state {
                        lottery_sweep::RunState::Running => {
                            "still being computed by another process".to_string()
                        }
                        lottery_sweep::RunState::Failed(why) => {
                            format!("failed elsewhere: {}", why.lines().next().unwrap_or(""))
                        }
                        _ => "not computed".to_string(),
                    }
                };
                format!("{} {}: {why}", run.run_id, run.label)
            })
            .collect();
        let mut kinds = vec![];
        if failed > 0 {
            kinds.push(format!("{failed} runs failed"));
        }
        if interrupted > 0 {
            kinds.push(format!("{interrupted} interrupted"));
        }
        let other = unfinished.len() - failed - interrupted;
        if other > 0 {
            kinds.push(format!("{other} otherwise not finished"));
        }
        let resume = if interrupted > 0 {
            "; run the same command again to resume"
        } else {
            ""
        };
        bail!(
            "{} of {} runs of the sweep are not finished ({}){resume}:\n  {}",
            unfinished.len(),
            plan.runs.len(),
            kinds.join(", "),
            list.join("\n  ")
        );
    }
    Ok(())
}

/// The `lottery sweep ... --status` command of this sweep, its overrides and results root
/// included, quoted for a POSIX shell.
fn status_command(a: &SweepArgs) -> String {
    let mut words = vec![
        "lottery".to_string(),
        "sweep".to_string(),
        a.config.display().to_string(),
    ];
    for s in &a.sets {
        words.push("--set".into());
        words.push(format!("{}={}", s.key, s.value));
    }
    if a.results != std::path::Path::new("results") {
        words.push("--results".into());
        words.push(a.results.display().to_string());
    }
    words.push("--status".into());
    // Quoting fails only on a NUL byte, which no argument can hold.
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

/// Validates every run of the config and resolves each one's config.
fn run_specs(a: &SweepArgs) -> Result<Vec<lottery_sweep::RunSpec>> {
    specs_of(&prepare_all(&a.config, &a.sets)?)
}

/// The plan's line for each prepared run.
fn specs_of(prepared: &[lottery_cli::experiment::Prepared]) -> Result<Vec<lottery_sweep::RunSpec>> {
    prepared
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sweep: SweepArgs,
    }

    fn status_of(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("lottery").chain(args.iter().copied()))
            .expect("valid arguments");
        status_command(&cli.sweep)
    }

    #[test]
    fn the_status_command_keeps_overrides_and_results_as_shell_words() {
        assert_eq!(
            status_of(&["configs/a.toml"]),
            "lottery sweep configs/a.toml --status"
        );
        assert_eq!(
            status_of(&[
                "configs/a b.toml",
                "--set",
                "prune.method=imp",
                "--set",
                "seed=[0, 1]",
                "--results",
                "/scratch/r",
                "--slurm"
            ]),
            "lottery sweep 'configs/a b.toml' --set 'prune.method=\"imp\"' --set 'seed=[0, 1]' --results /scratch/r --status"
        );
    }
}
