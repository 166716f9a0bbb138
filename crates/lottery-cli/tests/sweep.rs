//! Sweeps, tables and figures end to end on the generated `synthetic` dataset: every grid point is
//! computed exactly once (across workers, across concurrent sweeps and through a Slurm job array),
//! finished runs are skipped, a run held by another process is waited for (and computed if that
//! process lets go of it unfinished), a failing run is retried and reported without stopping the
//! others, `--status` only reads, a killed run leaves nothing in the tables, and the figures are
//! valid images.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn lottery_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lottery"));
    c.args(args).current_dir(dir).env_remove("LOTTERY_LOG");
    c
}

fn lottery(dir: &Path, args: &[&str]) -> Output {
    lottery_cmd(dir, args).output().expect("run lottery")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let body = format!(
        "study = \"t\"\nseed = 0\n[model]\nname = \"lenet-300-100\"\n[data]\nname = \"synthetic\"\nbatch_size = 64\ntrain_subset = 256\ntest_subset = 128\n[prune]\nmethod = \"magnitude\"\ndensity = 0.1\n[train]\nepochs = 1\nlr = 0.05\n{extra}"
    );
    let p = dir.join("c.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// Finished run directories of study `t`.
fn finished(dir: &Path) -> BTreeSet<String> {
    let study = dir.join("results/t");
    match std::fs::read_dir(&study) {
        Ok(rd) => rd
            .filter_map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (!name.starts_with('.') && e.path().join("summary.json").exists()).then_some(name)
            })
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn planned(dir: &Path, name: &str) -> Vec<String> {
    let plan: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("results/.sweeps/{name}/plan.json"))).unwrap(),
    )
    .unwrap();
    plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect()
}

const GRID8: &str = "[grid]\n\"prune.method\" = [\"random\", \"magnitude\"]\n\"prune.density\" = [0.1, 0.05]\nseed = [0, 1]\n";

#[test]
fn a_sweep_computes_each_grid_point_once_and_skips_finished_runs() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), GRID8);
    let o = lottery(
        d.path(),
        &["sweep", cfg.to_str().unwrap(), "--workers", "2"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let ids = planned(d.path(), "c");
    assert_eq!(ids.len(), 8);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 8);
    assert_eq!(finished(d.path()), ids.iter().cloned().collect());
    assert!(
        text(&o.stderr).contains("8 computed, 0 already finished"),
        "{}",
        text(&o.stderr)
    );
    let table = text(&o.stdout);
    assert!(
        table.contains("| magnitude |") && table.contains("| random |"),
        "{table}"
    );
    assert!(table.contains("(n=2)"), "{table}");

    // The resolved configs are the grid's runs: `lottery run` on the source finds them done.
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap(), "--no-table"]);
    assert!(o.status.success());
    assert_eq!(text(&o.stderr).matches("already finished").count(), 8);

    let stamp = |id: &str| {
        std::fs::metadata(d.path().join("results/t").join(id).join("summary.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before: Vec<_> = ids.iter().map(|i| stamp(i)).collect();
    let o = lottery(d.path(), &["sweep", cfg.to_str().unwrap(), "--no-table"]);
    assert!(o.status.success());
    assert!(
        text(&o.stderr).contains("0 computed, 8 already finished"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(before, ids.iter().map(|i| stamp(i)).collect::<Vec<_>>());
    let o = lottery(d.path(), &["sweep", cfg.to_str().unwrap(), "--status"]);
    assert!(text(&o.stdout).contains("8 runs: 8 finished, 0 running, 0 failed, 0 pending"));

    // Tables with a filter and per-seed rows; the figure of the study and of one run's layers.
    let o = lottery(
        d.path(),
        &[
            "table",
            "t",
            "--filter",
            "method=random",
            "--by",
            "method,seed",
            "--format",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let csv = text(&o.stdout);
    assert!(csv.starts_with("method/seed,density,mean,std,n\n"), "{csv}");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(!csv.contains("magnitude"));
    assert!(
        d.path()
            .join("results/tables/t.test_accuracy.by-method-seed.method=random.csv")
            .exists()
    );
    let o = lottery(d.path(), &["plot", "t"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let png = d.path().join("results/plots/t.test_accuracy.png");
    let img = image::open(&png).expect("a valid PNG").to_rgb8();
    assert_eq!((img.width(), img.height()), (960, 640));
    let svg = std::fs::read_to_string(d.path().join("results/plots/t.test_accuracy.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("magnitude") && svg.contains("random"));
    let run = d.path().join("results/t").join(&ids[0]);
    let o = lottery(d.path(), &["plot", "--layers", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let png = d
        .path()
        .join(format!("results/plots/t.{}.layers.png", ids[0]));
    image::open(&png).expect("a valid PNG");
    let o = lottery(d.path(), &["table", "t", "--filter", "colour=red"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unknown field `colour`"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_failing_run_is_retried_and_reported_without_stopping_the_others() {
    let d = tempfile::tempdir().unwrap();
    // IMP refuses a rewind step past the end of training when it starts pruning: a failure at
    // run time, after the sweep validated every run.
    let cfg = write_config(
        d.path(),
        "[methods.imp]\nrewind_step = 1000000\n[grid]\n\"prune.method\" = [\"imp\", \"magnitude\", \"random\"]\n",
    );
    let o = lottery(
        d.path(),
        &[
            "sweep",
            cfg.to_str().unwrap(),
            "--workers",
            "1",
            "--retries",
            "1",
        ],
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("1 runs failed"), "{err}");
    assert!(err.contains("2 computed"), "{err}");
    assert_eq!(finished(d.path()).len(), 2);
    let ids = planned(d.path(), "c");
    let log = std::fs::read_to_string(
        d.path()
            .join(format!("results/.sweeps/c/logs/{}.log", ids[0])),
    )
    .unwrap();
    assert!(
        log.contains("attempt 1") && log.contains("attempt 2"),
        "{log}"
    );
    let o = lottery(d.path(), &["sweep", cfg.to_str().unwrap(), "--status"]);
    let status = text(&o.stdout);
    assert!(
        status.contains("3 runs: 2 finished, 0 running, 1 failed, 0 pending"),
        "{status}"
    );
    assert!(status.contains("rewind_step"), "{status}");
}

#[test]
fn a_run_being_computed_is_left_alone_and_a_killed_run_leaves_no_row() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("epochs = 1", "epochs = 100000"),
    )
    .unwrap();
    let mut long = lottery_cmd(d.path(), &["run", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let study = d.path().join("results/t");
    let t0 = Instant::now();
    let lock = loop {
        let lock = std::fs::read_dir(study.join(".claims"))
            .ok()
            .and_then(|rd| {
                rd.filter_map(|e| e.ok())
                    .find(|e| e.file_name().to_string_lossy().ends_with(".lock"))
            });
        if let Some(l) = lock {
            break l.path();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run never claimed itself"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    // A second process waits for the claimed run's owner instead of computing it.
    let mut second = lottery_cmd(d.path(), &["run", cfg.to_str().unwrap(), "--no-table"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second process did not wait"
    );
    let o = lottery(d.path(), &["sweep", cfg.to_str().unwrap(), "--status"]);
    assert!(text(&o.stdout).contains("1 running"), "{}", text(&o.stdout));
    second.kill().unwrap();
    let o = second.wait_with_output().unwrap();
    assert!(
        text(&o.stderr).contains("being computed by another process"),
        "{}",
        text(&o.stderr)
    );
    long.kill().unwrap();
    long.wait().unwrap();
    assert!(lock.exists());
    assert!(finished(d.path()).is_empty());
    let o = lottery(d.path(), &["table", "t"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no finished runs"),
        "{}",
        text(&o.stderr)
    );
    let o = lottery(d.path(), &["sweep", cfg.to_str().unwrap(), "--status"]);
    assert!(text(&o.stdout).contains("1 pending"), "{}", text(&o.stdout));
}

#[test]
fn two_sweeps_at_once_compute_each_run_exactly_once() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), GRID8);
    let spawn = || {
        lottery_cmd(
            d.path(),
            &[
                "sweep",
                cfg.to_str().unwrap(),
                "--workers",
                "2",
                "--no-table",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let computed = |o: &Output| -> usize {
        let err = text(&o.stderr);
        let at = err.find(" computed,").expect("the sweep's report");
        let head = &err[..at];
        head[head.rfind(' ').unwrap() + 1..].parse().unwrap()
    };
    assert_eq!(
        computed(&a) + computed(&b),
        8,
        "{}\n{}",
        text(&a.stderr),
        text(&b.stderr)
    );
    assert_eq!(finished(d.path()).len(), 8);
}

#[cfg(unix)]
#[test]
fn a_slurm_job_array_runs_every_pending_run() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "[grid]\n\"prune.method\" = [\"random\", \"magnitude\"]\nseed = [0, 1]\n",
    );
    // Written without submitting: one task per run.
    let o = lottery(
        d.path(),
        &["sweep", cfg.to_str().unwrap(), "--slurm", "--no-submit"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let script = d.path().join("results/.sweeps/c/slurm/job.sh");
    let body = std::fs::read_to_string(&script).unwrap();
    assert!(body.contains("#SBATCH --array=0-3\n"), "{body}");
    // A stand-in for sbatch that runs the array's tasks one after the other, as Slurm would on
    // one node, then prints the job id like `sbatch --parsable`.
    let bin = d.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("sbatch");
    std::fs::write(
        &fake,
        "#!/usr/bin/env bash\nset -euo pipefail\nscript=\"${@: -1}\"\nrange=$(sed -n 's/^#SBATCH --array=\\([0-9]*\\)-\\([0-9]*\\).*/\\1 \\2/p' \"$script\")\nfor i in $(seq $range); do SLURM_ARRAY_TASK_ID=$i SLURM_CPUS_PER_TASK=1 bash \"$script\" > \"$script.task$i.log\" 2>&1; done\necho 4242\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // One run finished beforehand is not part of the array.
    let single = d.path().join("single.toml");
    let body = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&single, &body[..body.find("[grid]").unwrap()]).unwrap();
    let o = lottery(
        d.path(),
        &[
            "run",
            single.to_str().unwrap(),
            "--set",
            "prune.method=random",
            "--no-table",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = lottery_cmd(d.path(), &["sweep", cfg.to_str().unwrap(), "--slurm"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("3 of 4 runs"),
        "{}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stdout).contains("submitted job 4242"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(finished(d.path()).len(), 4);
    let record =
        std::fs::read_to_string(d.path().join("results/.sweeps/c/slurm/submissions.txt")).unwrap();
    assert_eq!(record.trim(), "4242 3 tasks");
    let o = lottery(d.path(), &["sweep", cfg.to_str().unwrap(), "--status"]);
    assert!(
        text(&o.stdout).contains("4 runs: 4 finished"),
        "{}",
        text(&o.stdout)
    );
}

/// The run ids of `--status`, by label, read without planning anything.
fn pending_ids(dir: &Path, cfg: &Path) -> Vec<(String, String)> {
    let o = lottery(dir, &["sweep", cfg.to_str().unwrap(), "--status"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(|l| {
            let (id, rest) = l.split_once(' ').unwrap();
            (id.to_string(), rest.trim().to_string())
        })
        .collect()
}

#[test]
fn status_reads_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "[grid]\nseed = [0, 1]\n");
    let results = d.path().join("results");
    std::fs::create_dir(&results).unwrap();
    let o = lottery(d.path(), &["sweep", cfg.to_str().unwrap(), "--status"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("2 runs: 0 finished, 0 running, 0 failed, 2 pending"),
        "{}",
        text(&o.stdout)
    );
    let left: Vec<_> = std::fs::read_dir(&results).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir(&results).unwrap();
    let o = lottery(d.path(), &["sweep", cfg.to_str().unwrap(), "--status"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!results.exists());
}

#[test]
fn status_reads_the_grid_as_given_not_an_earlier_plan() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "[grid]\nseed = [0, 1]\n");
    let c = cfg.to_str().unwrap();
    let o = lottery(
        d.path(),
        &["sweep", c, "--set", "prune.method=random", "--no-table"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A sweep with overrides plans apart from the config's own sweep.
    let sweeps = d.path().join("results/.sweeps");
    let names: Vec<String> = std::fs::read_dir(&sweeps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("c.set-"), "{names:?}");
    let plan = sweeps.join(&names[0]).join("plan.json");
    // The same overrides as they resolve (a key set twice, the last value a TOML string) plan
    // into the same folder, with nothing to compute.
    let o = lottery(
        d.path(),
        &[
            "sweep",
            c,
            "--set",
            "prune.method=magnitude",
            "--set",
            "prune.method=\"random\"",
            "--no-table",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("0 computed, 2 already finished"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read_dir(&sweeps).unwrap().count(), 1);
    let stored = std::fs::read(&plan).unwrap();
    // Without the override the grid is the magnitude runs: none of them ran, none was planned.
    let o = lottery(d.path(), &["sweep", c, "--status"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("2 runs: 0 finished, 0 running, 0 failed, 2 pending"),
        "{out}"
    );
    assert!(!out.contains("not in this grid"), "{out}");
    let with = ["sweep", c, "--set", "prune.method=random", "--status"];
    let o = lottery(d.path(), &with);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("2 runs: 2 finished"), "{out}");
    assert!(!out.contains("not in this grid"), "{out}");
    // The config edited since its sweep: the grid as it reads now, and the drift from the plan.
    write_config(d.path(), "[grid]\nseed = [0, 1, 2]\n");
    let o = lottery(d.path(), &with);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("3 runs: 2 finished"), "{out}");
    assert!(
        out.contains(
            "planned 2 runs: 0 of them are not in this grid, 1 of this grid were not in it"
        ),
        "{out}"
    );
    // Reading only: the stored plan is left as the sweep wrote it.
    assert_eq!(std::fs::read(&plan).unwrap(), stored);
}

/// Starts a sweep of `cfg` on one worker while the test holds the claim of its run `held`; once
/// the other run is recorded and the sweep is still waiting, `let_go` runs and the claim is
/// dropped. Returns the sweep's output.
fn sweep_around_a_held_run(
    dir: &Path,
    cfg: &Path,
    held: &str,
    other: &str,
    let_go: impl FnOnce(),
) -> Output {
    let study = dir.join("results/t");
    let claim = lottery_analysis::RunClaim::try_acquire(&study, held)
        .unwrap()
        .unwrap();
    let child = lottery_cmd(
        dir,
        &[
            "sweep",
            cfg.to_str().unwrap(),
            "--workers",
            "1",
            "--no-table",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while !study.join(other).join("summary.json").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the free run never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!finished(dir).contains(held));
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the sweep did not wait for the held run"
    );
    let_go();
    drop(claim);
    child.wait_with_output().unwrap()
}

#[test]
fn a_sweep_waits_for_a_held_run_and_computes_it_when_its_holder_dies() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "[grid]\nseed = [0, 1]\n");
    let ids = pending_ids(d.path(), &cfg);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let o = sweep_around_a_held_run(d.path(), &cfg, &ids[0].0, &ids[1].0, || {});
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("2 computed, 0 already finished, 0 finished by another process"),
        "{err}"
    );
    assert_eq!(
        finished(d.path()),
        ids.iter().map(|(id, _)| id.clone()).collect()
    );
}

#[test]
fn a_sweep_waits_for_a_held_run_that_its_holder_finishes() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "[grid]\nseed = [0, 1]\n");
    let ids = pending_ids(d.path(), &cfg);
    assert!(ids[0].1.contains("seed=0"), "{ids:?}");
    // The holder's result: the same run, computed into another results folder beforehand.
    let single = d.path().join("single.toml");
    let body = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&single, &body[..body.find("[grid]").unwrap()]).unwrap();
    let o = lottery(
        d.path(),
        &[
            "run",
            single.to_str().unwrap(),
            "--results",
            "other",
            "--no-table",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let done = d.path().join("other/t").join(&ids[0].0);
    assert!(done.join("summary.json").exists());
    let o = sweep_around_a_held_run(d.path(), &cfg, &ids[0].0, &ids[1].0, || {
        std::fs::rename(&done, d.path().join("results/t").join(&ids[0].0)).unwrap();
    });
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("1 computed, 0 already finished, 1 finished by another process"),
        "{err}"
    );
    assert_eq!(finished(d.path()).len(), 2);
}
