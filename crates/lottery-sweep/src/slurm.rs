//! A sweep as a Slurm job array: one array task per unfinished run, each running `lottery run` on
//! the run's resolved config into the shared results directory.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::SweepPlan;
use crate::status::{RunState, state_of};
use crate::{SweepError, io};

/// What the job array asks of Slurm.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmOptions {
    /// The `lottery` executable, as the compute nodes see it (a shared file system).
    pub exe: PathBuf,
    /// Working directory of the tasks (relative paths of the configs resolve against it).
    pub workdir: PathBuf,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (e.g. `02:00:00`).
    pub time: Option<String>,
    /// `--cpus-per-task`; also each run's thread count.
    pub cpus_per_task: usize,
    /// `--mem` (e.g. `8G`).
    pub mem: Option<String>,
    /// At most this many tasks at once (`--array=…%N`).
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` options, verbatim (`--account=abc`, `--gres=gpu:1`).
    pub extra: Vec<String>,
}

/// A written job array.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmJob {
    /// The batch script.
    pub script: PathBuf,
    /// The config files, the one at index i for array task i (written into the script, which
    /// Slurm keeps from submission: a later submission cannot change what a queued task runs).
    pub configs: Vec<PathBuf>,
    /// Number of array tasks.
    pub tasks: usize,
    /// Where the tasks write their output.
    pub logs: PathBuf,
}

/// The outcome of [`submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// Submitted; the job id.
    Submitted(String),
    /// No `sbatch` on this machine: the script is ready to be submitted where Slurm is.
    NoSbatch,
}

/// Single-quotes a word for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

/// Writes `<plan dir>/slurm/job.sh` for the runs of the plan that are not finished or running,
/// their configs listed in the script itself; `None` when there is nothing left to do.
pub fn write_job(plan: &SweepPlan, opts: &SlurmOptions) -> Result<Option<SlurmJob>, SweepError> {
    if opts.cpus_per_task == 0 {
        return Err(SweepError::Options(
            "--cpus-per-task must be at least 1".into(),
        ));
    }
    if opts.max_parallel == Some(0) {
        return Err(SweepError::Options(
            "--max-parallel must be at least 1".into(),
        ));
    }
    let todo: Vec<_> = plan
        .runs
        .iter()
        .filter(|r| matches!(state_of(plan, r), RunState::Pending | RunState::Failed(_)))
        .collect();
    if todo.is_empty() {
        return Ok(None);
    }
    let dir = plan.dir().join("slurm");
    let logs = dir.join("logs");
    // `#SBATCH` lines are read by sbatch, not by a shell: a path there cannot be quoted.
    for (what, path) in [
        ("working directory", &opts.workdir),
        ("results directory", &logs),
    ] {
        if text(path).chars().any(char::is_whitespace) {
            return Err(SweepError::Options(format!(
                "--slurm: the {what} {} holds whitespace, which an #SBATCH line cannot carry; \
                 run from, and keep results under, a path without spaces",
                path.display()
            )));
        }
    }
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    let mut s = String::from("#!/usr/bin/env bash\n");
    let _ = writeln!(
        s,
        "# Sweep {} ({} runs), written by lottery sweep --slurm.",
        plan.name,
        todo.len()
    );
    let _ = writeln!(s, "#SBATCH --job-name=lottery-{}", plan.name);
    let throttle = opts
        .max_parallel
        .map(|n| format!("%{n}"))
        .unwrap_or_default();
    let _ = writeln!(s, "#SBATCH --array=0-{}{throttle}", todo.len() - 1);
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", opts.cpus_per_task);
    let _ = writeln!(s, "#SBATCH --ntasks=1");
    let _ = writeln!(s, "#SBATCH --chdir={}", text(&opts.workdir));
    // Slurm reads `%` in --output as a pattern (`%A` the job, `%a` the task): `%%` is a `%`.
    let _ = writeln!(
        s,
        "#SBATCH --output={}/%A_%a.log",
        text(&logs).replace('%', "%%")
    );
    if let Some(p) = &opts.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if let Some(t) = &opts.time {
        let _ = writeln!(s, "#SBATCH --time={t}");
    }
    if let Some(m) = &opts.mem {
        let _ = writeln!(s, "#SBATCH --mem={m}");
    }
    for e in &opts.extra {
        let _ = writeln!(s, "#SBATCH {e}");
    }
    s.push_str("set -euo pipefail\n");
    // The task list lives in the script itself: Slurm copies a batch script at submission, so a
    // later `--slurm` of the same sweep (after failures, or with the config edited) never shifts
    // what the queued tasks of this array run.
    s.push_str("configs=(\n");
    for r in &todo {
        let _ = writeln!(s, "  {}", quote(&text(&r.config)));
    }
    s.push_str(")\n");
    s.push_str("config=\"${configs[$SLURM_ARRAY_TASK_ID]}\"\n");
    let _ = writeln!(
        s,
        "export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-{}}}\"",
        opts.cpus_per_task
    );
    // LibTorch's (`--features tch`) thread pool.
    s.push_str("export OMP_NUM_THREADS=\"$RAYON_NUM_THREADS\"\n");
    s.push_str("echo \"task $SLURM_ARRAY_TASK_ID on $(hostname): $config\"\n");
    let _ = writeln!(
        s,
        "exec {} run \"$config\" --results {} --no-table",
        quote(&text(&opts.exe)),
        quote(&text(&plan.results))
    );
    let script = dir.join("job.sh");
    lottery_core::fsutil::write_atomic(&script, s.as_bytes()).map_err(io(&script))?;
    Ok(Some(SlurmJob {
        script,
        configs: todo.iter().map(|r| r.config.clone()).collect(),
        tasks: todo.len(),
        logs,
    }))
}

/// Submits the job with `sbatch --parsable` when `sbatch` is on the `PATH`, and appends the job
/// id to `submissions.txt` beside the script.
pub fn submit(job: &SlurmJob) -> Result<Submission, SweepError> {
    let out = match Command::new("sbatch")
        .arg("--parsable")
        .arg(&job.script)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Submission::NoSbatch),
        Err(e) => {
            return Err(SweepError::Command {
                command: format!("sbatch {}", job.script.display()),
                why: e.to_string(),
            });
        }
    };
    if !out.status.success() {
        return Err(SweepError::Command {
            command: format!("sbatch {}", job.script.display()),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    let record = job.script.with_file_name("submissions.txt");
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&record)
        .map_err(io(&record))?;
    use std::io::Write as _;
    writeln!(f, "{id} {} tasks", job.tasks).map_err(io(&record))?;
    Ok(Submission::Submitted(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RunSpec;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    /// One CPU a task, nothing else asked of Slurm.
    fn one_cpu(exe: PathBuf, workdir: &Path) -> SlurmOptions {
        SlurmOptions {
            exe,
            workdir: workdir.to_path_buf(),
            partition: None,
            time: None,
            cpus_per_task: 1,
            mem: None,
            max_parallel: None,
            extra: vec![],
        }
    }

    /// Runs r0, r1 and r2 of study `s`.
    fn three_runs() -> Vec<RunSpec> {
        (0..3)
            .map(|i| RunSpec {
                run_id: format!("r{i}"),
                study: "s".into(),
                label: format!("run {i}"),
                config_toml: String::new(),
            })
            .collect()
    }

    #[test]
    fn the_array_has_one_task_per_unfinished_run() {
        let d = tempfile::tempdir().unwrap();
        let plan = SweepPlan::create(d.path(), "x", Path::new("c.toml"), three_runs()).unwrap();
        let done = plan.results.join("s").join("r1");
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(done.join("summary.json"), "{}").unwrap();
        let opts = SlurmOptions {
            exe: "/opt/lottery".into(),
            workdir: d.path().to_path_buf(),
            partition: Some("cpu".into()),
            time: None,
            cpus_per_task: 4,
            mem: None,
            max_parallel: Some(2),
            extra: vec!["--account=lab".into()],
        };
        let job = write_job(&plan, &opts).unwrap().unwrap();
        assert_eq!(job.tasks, 2);
        assert_eq!(job.configs.len(), 2);
        assert!(job.configs[0].ends_with("r0.toml") && job.configs[1].ends_with("r2.toml"));
        let script = std::fs::read_to_string(&job.script).unwrap();
        let listed: Vec<&str> = script
            .lines()
            .skip_while(|l| *l != "configs=(")
            .skip(1)
            .take_while(|l| *l != ")")
            .collect();
        assert_eq!(
            listed,
            job.configs
                .iter()
                .map(|c| format!("  {}", quote(&text(c))))
                .collect::<Vec<_>>()
        );
        for needle in [
            "#SBATCH --array=0-1%2",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --partition=cpu",
            "#SBATCH --account=lab",
            "exec '/opt/lottery' run \"$config\" --results",
        ] {
            assert!(script.contains(needle), "{needle} missing from\n{script}");
        }
        std::fs::create_dir_all(plan.results.join("s").join("r0")).unwrap();
        std::fs::write(plan.results.join("s/r0/summary.json"), "{}").unwrap();
        std::fs::create_dir_all(plan.results.join("s").join("r2")).unwrap();
        std::fs::write(plan.results.join("s/r2/summary.json"), "{}").unwrap();
        assert_eq!(write_job(&plan, &opts).unwrap(), None);
    }

    /// The script as bash runs it, in a results folder whose path holds a quote and a `%`: each
    /// task runs its own config, and a task past the list stops before running anything.
    #[cfg(unix)]
    #[test]
    fn each_task_runs_its_own_config_whatever_the_path() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let results = d.path().join("it's-100%");
        let plan = SweepPlan::create(&results, "x", Path::new("c.toml"), three_runs()).unwrap();
        // A stand-in for `lottery` that prints the config it was given.
        let exe = d.path().join("fake lottery");
        std::fs::write(&exe, "#!/bin/sh\nprintf '%s\\n' \"$2\"\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = one_cpu(exe, d.path());
        let job = write_job(&plan, &opts).unwrap().unwrap();
        let task = |i: usize| {
            Command::new("bash")
                .arg(&job.script)
                .env("SLURM_ARRAY_TASK_ID", i.to_string())
                .output()
                .unwrap()
        };
        for (i, config) in job.configs.iter().enumerate() {
            let o = task(i);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let printed = String::from_utf8_lossy(&o.stdout);
            let last = printed.lines().last().unwrap_or_default();
            assert_eq!(last, text(config), "task {i}: {printed}");
            assert!(last.contains("it's-100%/") && last.ends_with(&format!("r{i}.toml")));
        }
        let script = std::fs::read_to_string(&job.script).unwrap();
        assert!(
            script.contains("it's-100%%/.sweeps/x/slurm/logs/%A_%a.log\n"),
            "{script}"
        );
        let o = task(3);
        assert!(!o.status.success());
        assert!(!String::from_utf8_lossy(&o.stdout).contains(".toml"));
    }

    #[test]
    fn a_path_with_whitespace_is_refused_before_anything_is_written() {
        let d = tempfile::tempdir().unwrap();
        let results = d.path().join("my results");
        let plan = SweepPlan::create(&results, "x", Path::new("c.toml"), three_runs()).unwrap();
        let opts = one_cpu("/opt/lottery".into(), d.path());
        let err = write_job(&plan, &opts).unwrap_err().to_string();
        assert!(
            err.contains("results directory") && err.contains("my results"),
            "{err}"
        );
        assert!(!plan.dir().join("slurm").exists());
    }
}
