//! A catalogue of bad inputs and faults, one case per test: each asserts the message a user sees
//! and that nothing finished-looking was written (or that a stale or damaged leftover did not
//! decide the result). All runs use the generated `synthetic` dataset and finish in seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn lottery_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lottery"));
    c.args(args).current_dir(dir).env_remove("LOTTERY_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("LOTTERY_") {
            c.env_remove(k);
        }
    }
    c
}

fn lottery(dir: &Path, args: &[&str]) -> Output {
    lottery_cmd(dir, args).output().expect("run lottery")
}

fn lottery_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = lottery_cmd(dir, args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run lottery")
}

const BASE: &str = "study = \"t\"\nseed = 0\n[model]\nname = \"lenet-300-100\"\n[data]\nname = \"synthetic\"\nbatch_size = 64\ntrain_subset = 256\ntest_subset = 128\n[prune]\nmethod = \"magnitude\"\ndensity = 0.1\n[train]\nepochs = 1\nlr = 0.05\n";

fn write_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{BASE}{extra}")).unwrap();
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Finished runs (folders with a summary) of a study.
fn finished(study: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(study) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("summary.json").exists())
            .collect(),
        Err(_) => vec![],
    };
    out.sort();
    out
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Asserts a config error (exit 2) whose message holds every needle, and an untouched results/.
fn assert_refused(d: &Path, o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert!(
        !d.join("results").exists()
            || std::fs::read_dir(d.join("results"))
                .unwrap()
                .next()
                .is_none(),
        "results/ was written: {err}"
    );
}

fn export(d: &Path, cfg: &Path, out: &str) -> BTreeMap<String, lottery_core::FlatTensor> {
    let o = lottery(d, &["export-weights", cfg.to_str().unwrap(), "--out", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    lottery_core::weights::read(&d.join(out)).unwrap()
}

fn save(d: &Path, name: &str, values: &BTreeMap<String, lottery_core::FlatTensor>) {
    std::fs::write(
        d.join(name),
        lottery_core::weights::to_bytes(values, &BTreeMap::new()),
    )
    .unwrap();
}

// 1. `--init-from` with part of the model's tensors stops and names the missing ones.
#[test]
fn init_from_a_partial_file_names_the_missing_tensors() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let all = export(d.path(), &cfg, "w.safetensors");
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let dropped = names.last().unwrap().to_string();
    let mut lacking = all.clone();
    lacking.remove(&dropped);
    save(d.path(), "lacking.safetensors", &lacking);
    let only: BTreeMap<_, _> = all
        .iter()
        .filter(|(k, _)| **k == dropped)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    save(d.path(), "only.safetensors", &only);
    for (file, missing) in [
        ("lacking.safetensors", vec![dropped.clone()]),
        (
            "only.safetensors",
            names
                .iter()
                .filter(|n| ***n != dropped)
                .map(|n| n.to_string())
                .collect(),
        ),
    ] {
        let o = lottery(
            d.path(),
            &["run", cfg.to_str().unwrap(), "--init-from", file],
        );
        let mut needles = vec!["model.init_from", file, "--init-from"];
        needles.extend(missing.iter().map(String::as_str));
        assert_refused(d.path(), &o, &needles);
    }
}

// 2. Overwriting the weights file gives a new run, not the stale result of the old content.
#[test]
fn init_from_new_content_under_the_same_path_is_a_new_run() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let mut w = export(d.path(), &cfg, "w.safetensors");
    let run = |d: &Path| {
        let o = lottery(
            d,
            &[
                "run",
                cfg.to_str().unwrap(),
                "--init-from",
                "w.safetensors",
                "--no-table",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    run(d.path());
    let study = d.path().join("results/t");
    assert_eq!(finished(&study).len(), 1);
    let first = finished(&study).remove(0);
    let inputs = std::fs::read_to_string(first.join("inputs.json")).unwrap();
    assert!(
        inputs.contains("sha256") && inputs.contains("w.safetensors"),
        "{inputs}"
    );
    for t in w.values_mut() {
        for v in &mut t.values {
            *v *= -0.5;
        }
    }
    save(d.path(), "w.safetensors", &w);
    let err = run(d.path());
    assert!(!err.contains("skipped"), "stale result reused: {err}");
    assert_eq!(finished(&study).len(), 2, "{err}");
    // The same content again is the same run: skipped.
    let err = run(d.path());
    assert!(err.contains("skipped"), "{err}");
}

// 3. `--set` (or an env var) on a key the [grid] varies replaces that axis; a list sets it.
#[test]
fn set_on_a_grid_key_replaces_the_axis() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "c.toml",
        "[grid]\n\"prune.density\" = [0.1, 0.02]\n",
    );
    let c = cfg.to_str().unwrap();
    let o = lottery(d.path(), &["config", c, "--set", "prune.density=0.05"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.matches("density = 0.05").count(), 1, "{text}");
    assert!(!text.contains("density = 0.02"), "{text}");
    assert!(text.contains("# prune.density: --set"), "{text}");

    let o = lottery(
        d.path(),
        &["run", c, "--set", "prune.density=0.05", "--no-table"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = finished(&d.path().join("results/t"));
    assert_eq!(runs.len(), 1);
    assert_eq!(summary(&runs[0])["density_requested"], 0.05);

    let o = lottery(
        d.path(),
        &["config", c, "--set", "prune.density=[0.5, 0.25, 0.2]"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for v in ["0.5", "0.25", "0.2"] {
        assert!(text.contains(&format!("density = {v}\n")), "{v}: {text}");
    }
    assert!(!text.contains("density = 0.1\n"), "{text}");

    // A list-valued key takes a list as its value, a list of lists as an axis.
    let o = lottery(d.path(), &["config", c, "--set", "train.milestones=[1, 2]"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("milestones = [1, 2]").count(), 2);
    let o = lottery(
        d.path(),
        &["config", c, "--set", "train.milestones=[[1], [2]]"],
    );
    assert_eq!(
        stdout(&o).matches("milestones = [").count(),
        4,
        "{}",
        stdout(&o)
    );

    let o = lottery_env(
        d.path(),
        &["config", c],
        &[("LOTTERY_PRUNE__DENSITY", "0.3")],
    );
    let text = stdout(&o);
    assert_eq!(text.matches("density = 0.3").count(), 1, "{text}");
    assert!(
        text.contains("# prune.density: env LOTTERY_PRUNE__DENSITY"),
        "{text}"
    );
}

// 4. An unknown key under a method the config does not choose is still an error.
#[test]
fn unknown_key_under_an_unused_method_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "[methods.snip]\nbatchs = 2\n");
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap()]);
    assert_refused(d.path(), &o, &["methods.snip", "batchs", "c.toml"]);
}

// 6. A method on a network it cannot work on is refused while the grid is validated.
#[test]
fn a_method_on_the_wrong_network_is_refused_before_any_run() {
    let d = tempfile::tempdir().unwrap();
    for method in ["early-bird", "ugs", "bert-tickets", "gem-miner"] {
        let model = if method == "gem-miner" {
            // Gem-Miner mines image classifiers; a GCN is the wrong network.
            "\"prune.method\" = [\"magnitude\", \"gem-miner\"]\n\"model.name\" = [\"gcn\"]\n\"data.name\" = [\"sbm\"]\n".to_string()
        } else {
            format!("\"prune.method\" = [\"magnitude\", \"{method}\"]\n")
        };
        let cfg = write_config(d.path(), "c.toml", &format!("[grid]\n{model}"));
        let o = lottery(d.path(), &["run", cfg.to_str().unwrap()]);
        assert_refused(
            d.path(),
            &o,
            &["prune.method", method, "needs a network with"],
        );
    }
}

// 7. Diverging training says so, with epoch and step.
#[test]
fn diverging_training_is_reported_as_such() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let o = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--set",
            "train.lr=1e6",
            "--set",
            "train.momentum=0.9",
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("training diverged at epoch"), "{err}");
    assert!(!err.contains("internal error"), "{err}");
    assert!(finished(&d.path().join("results/t")).is_empty());
}

// 7. Non-finite initial weights are rejected at load, naming tensor and index.
#[test]
fn non_finite_initial_weights_are_rejected_at_load() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let mut w = export(d.path(), &cfg, "w.safetensors");
    let name = w.keys().next().unwrap().clone();
    w.get_mut(&name).unwrap().values[7] = f32::NAN;
    save(d.path(), "nan.safetensors", &w);
    let o = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--init-from",
            "nan.safetensors",
        ],
    );
    assert_refused(d.path(), &o, &["nan.safetensors", &name, "7"]);
}

// 8. A range error names where the value came from: --set, an env var, not the config file.
#[test]
fn range_errors_name_the_real_source() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let c = cfg.to_str().unwrap();
    let o = lottery(d.path(), &["run", c, "--set", "train.lr=-1"]);
    assert_refused(d.path(), &o, &["train.lr", "-1", "from --set"]);
    assert!(!stderr(&o).contains("c.toml"), "{}", stderr(&o));
    let o = lottery_env(d.path(), &["run", c], &[("LOTTERY_TRAIN__MOMENTUM", "1.5")]);
    assert_refused(
        d.path(),
        &o,
        &["train.momentum", "1.5", "LOTTERY_TRAIN__MOMENTUM"],
    );
    assert!(!stderr(&o).contains("c.toml"), "{}", stderr(&o));
    let o = lottery(d.path(), &["run", c, "--init-from", "missing.safetensors"]);
    assert_refused(
        d.path(),
        &o,
        &["model.init_from", "missing.safetensors", "--init-from"],
    );
    let err = stderr(&o);
    assert!(!err.contains("c.toml"), "{err}");
    // The OS error is said once.
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    // A value from the file's grid names the file.
    let cfg = write_config(d.path(), "g.toml", "[grid]\n\"train.lr\" = [0.1, -2.0]\n");
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap()]);
    assert_refused(d.path(), &o, &["train.lr", "g.toml", "[grid]"]);
}

/// `lottery run` of the IMP config at density 0.25, without the table.
fn imp_args(cfg: &Path) -> Vec<&str> {
    let c = cfg.to_str().unwrap();
    let sets = ["--set", "prune.method=imp", "--set", "prune.density=0.25"];
    [&["run", c][..], &sets, &["--no-table"]].concat()
}

/// Runs IMP to completion once: its config, its run directory and its work folder's path.
fn imp_run(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let cfg = write_config(d, "imp.toml", "[methods.imp]\nrate = 0.5\n");
    let o = lottery(d, &imp_args(&cfg));
    assert!(o.status.success(), "{}", stderr(&o));
    let run = finished(&d.join("results/t")).remove(0);
    let id = run.file_name().unwrap().to_string_lossy().to_string();
    let work = d.join("results/t").join(format!(".{id}.work"));
    (cfg, run, work)
}

// 10. A damaged file of saved progress is set aside and the run starts over; --force clears it.
#[test]
fn damaged_saved_progress_is_set_aside_and_force_clears_it() {
    let d = tempfile::tempdir().unwrap();
    let (cfg, run, work) = imp_run(d.path());
    let accuracy = summary(&run)["test_accuracy"].clone();
    let args = imp_args(&cfg);
    // As if killed after saving a level whose file was then damaged.
    std::fs::remove_dir_all(&run).unwrap();
    std::fs::create_dir_all(work.join("imp")).unwrap();
    for file in ["rewind.safetensors", "final.safetensors"] {
        std::fs::write(work.join("imp").join(file), b"garbage, not safetensors").unwrap();
    }
    let o = lottery(d.path(), &args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("does not load"), "{err}");
    assert_eq!(summary(&run)["test_accuracy"], accuracy, "{err}");
    let aside: Vec<String> = std::fs::read_dir(d.path().join("results/t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".work.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");

    // --force discards whatever progress is there.
    std::fs::create_dir_all(work.join("imp")).unwrap();
    std::fs::write(work.join("imp/rewind.safetensors"), b"garbage").unwrap();
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = lottery(d.path(), &forced);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("--force: discarding"), "{err}");
    assert!(!work.exists());
    assert_eq!(summary(&run)["test_accuracy"], accuracy);
}

// 11. Temporary folders of a failed write are gone after the next run.
#[test]
fn leftover_temporary_folders_are_cleaned_by_the_next_run() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap(), "--no-table"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let study = d.path().join("results/t");
    let run = finished(&study).remove(0);
    let id = run.file_name().unwrap().to_string_lossy().to_string();
    let stale = study.join(format!(".{id}.tmp-999999"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("config.toml"), "half").unwrap();
    let o = lottery(
        d.path(),
        &["run", cfg.to_str().unwrap(), "--no-table", "--force"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stale.exists(), "{}", stderr(&o));
}

// 12. Two identical runs at once: the second waits for the first and reports its result.
#[test]
fn two_identical_concurrent_runs_both_succeed() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let c = cfg.to_str().unwrap();
    let spawn = || {
        lottery_cmd(d.path(), &["run", c])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", stderr(o));
        assert!(stdout(o).contains("| magnitude |"), "{}", stdout(o));
    }
    assert_eq!(finished(&d.path().join("results/t")).len(), 1);
}

// 12. A resumed run says so and its prune_seconds counts the earlier attempts.
#[test]
fn a_resumed_run_says_so_and_accumulates_its_prune_time() {
    let d = tempfile::tempdir().unwrap();
    let (cfg, run, work) = imp_run(d.path());
    let args = imp_args(&cfg);
    std::fs::remove_dir_all(&run).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("prune-seconds"), "1000.0").unwrap();
    let o = lottery(d.path(), &args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming from the saved progress"), "{err}");
    let seconds = summary(&run)["prune_seconds"].as_f64().unwrap();
    assert!(seconds > 1000.0, "{seconds}");
}

// 13. A reader that closes the pipe early ends the program quietly.
#[test]
fn a_closed_stdout_ends_quietly() {
    let d = tempfile::tempdir().unwrap();
    let mut child = lottery_cmd(d.path(), &["list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the program writes its first line.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(o.status.code(), Some(101), "{err}");
}

// 12. A run folder without a summary is not silently left out of a table.
#[test]
fn a_table_warns_about_and_counts_run_folders_without_a_summary() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap(), "--no-table"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let study = d.path().join("results/t");
    for name in ["copied-half", "another"] {
        std::fs::create_dir_all(study.join(name)).unwrap();
    }
    let o = lottery(d.path(), &["table", "t"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("2 run folders") && err.contains("no summary.json"),
        "{err}"
    );
    assert!(
        err.contains("copied-half") && err.contains("another"),
        "{err}"
    );
    assert!(stdout(&o).contains("| magnitude |"), "{}", stdout(&o));
}

// model.bias builds an image classifier's layers without biases; on a GCN it would do nothing.
#[test]
fn a_bias_layout_on_a_graph_network_is_refused_before_any_run() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "c.toml",
        "[grid]\n\"prune.density\" = [0.5, 0.1]\n",
    );
    let o = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--set",
            "model.name=\"gcn\"",
            "--set",
            "data.name=\"sbm\"",
            "--set",
            "model.bias=\"none\"",
        ],
    );
    assert_refused(d.path(), &o, &["model.bias", "none", "gcn"]);
}

/// Arguments of `lottery run CFG --set S … --no-table` for each override `S` of `sets`.
fn run_args(cfg: &Path, sets: &[&str]) -> Vec<String> {
    let mut args = vec!["run".to_string(), cfg.to_str().unwrap().to_string()];
    for set in sets {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    args.push("--no-table".into());
    args
}

/// Arguments of a run of 8 epochs of 62 steps (SGD with momentum) that keeps its weights at step
/// 40 and at the end, saving its training state at every epoch end.
fn long_run_args(cfg: &Path) -> Vec<String> {
    run_args(
        cfg,
        &[
            "data.train_subset=1984",
            "data.batch_size=32",
            "train.epochs=8",
            "train.momentum=0.9",
            "train.checkpoints=[40, 496]",
        ],
    )
}

fn run_files(run: &Path) -> BTreeMap<String, Vec<u8>> {
    [
        "metrics.parquet",
        "masks.safetensors",
        "checkpoint-step40.safetensors",
        "checkpoint-step496.safetensors",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read(run.join(f)).unwrap()))
    .collect()
}

/// Waits until a run of `study` has saved a training state in `sub` of its work folder (it is
/// then inside the next epoch), kills it, and checks that it finished nothing.
fn kill_once_a_state_is_saved(child: &mut std::process::Child, study: &Path, sub: &str) {
    let saved = |study: &Path| -> bool {
        std::fs::read_dir(study)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_dir(e.path().join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|s| s.file_name().to_string_lossy().starts_with("epoch-"))
            })
    };
    let t0 = std::time::Instant::now();
    while !saved(study) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it saved a state in {sub}"
        );
        assert!(t0.elapsed().as_secs() < 300, "no state saved in 300 s");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        finished(study).is_empty(),
        "the run finished before the kill"
    );
}

/// Runs `args(config)` from a config of `extra` twice: once uninterrupted, and once killed as soon
/// as it saved a training state in `sub` of its work folder, then run again. Returns the temporary
/// folders (kept while the caller reads), both runs' folders (the same run id) and the second
/// attempt's standard error.
fn uninterrupted_and_resumed(
    extra: &str,
    args: impl Fn(&Path) -> Vec<String>,
    sub: &str,
) -> ([tempfile::TempDir; 2], PathBuf, PathBuf, String) {
    let env = [("LOTTERY_SAVE_EVERY", "0")];
    let whole = tempfile::tempdir().unwrap();
    let whole_args = args(&write_config(whole.path(), "c.toml", extra));
    let whole_args: Vec<&str> = whole_args.iter().map(String::as_str).collect();
    let o = lottery_env(whole.path(), &whole_args, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let uninterrupted = finished(&whole.path().join("results/t")).remove(0);

    let d = tempfile::tempdir().unwrap();
    let args = args(&write_config(d.path(), "c.toml", extra));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = lottery_cmd(d.path(), &args)
        .env("LOTTERY_SAVE_EVERY", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let study = d.path().join("results/t");
    kill_once_a_state_is_saved(&mut child, &study, sub);

    let o = lottery_env(d.path(), &args, &env);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let resumed = finished(&study).remove(0);
    assert_eq!(resumed.file_name(), uninterrupted.file_name());
    ([whole, d], uninterrupted, resumed, err)
}

// 15. A run killed in the middle of its training resumes at its last saved epoch and finishes
// with the figures, metric rows and weights of an uninterrupted run.
#[test]
fn a_run_killed_mid_epoch_resumes_and_equals_an_uninterrupted_run() {
    let (_dirs, uninterrupted, resumed, err) =
        uninterrupted_and_resumed("", long_run_args, "train");
    assert!(err.contains("training resumed at step"), "{err}");
    let (a, b) = (summary(&uninterrupted), summary(&resumed));
    for key in [
        "test_accuracy",
        "test_loss",
        "best_test_accuracy",
        "best_test_epoch",
        "kept",
    ] {
        assert_eq!(a[key], b[key], "{key}: {err}");
    }
    for (file, bytes) in run_files(&uninterrupted) {
        assert!(run_files(&resumed)[&file] == bytes, "{file} differs");
    }
    // The work folder is gone once the run is written.
    let id = resumed.file_name().unwrap().to_string_lossy().to_string();
    let study = resumed.parent().unwrap();
    assert!(!study.join(format!(".{id}.work")).exists());
}

// 16. A save interval that is not a number of seconds is refused before anything is written.
#[test]
fn a_bad_save_interval_is_refused_before_any_run() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    // `sweep` too: it would otherwise write its plan before each run refused the value.
    for command in ["run", "sweep"] {
        let o = lottery_env(
            d.path(),
            &[command, cfg.to_str().unwrap()],
            &[("LOTTERY_SAVE_EVERY", "soon")],
        );
        let err = stderr(&o);
        assert!(!o.status.success(), "{command}: {err}");
        assert!(
            err.contains("LOTTERY_SAVE_EVERY") && err.contains("soon"),
            "{command}: {err}"
        );
        assert!(!d.path().join("results").exists(), "{command}: {err}");
    }
}

/// Early-Bird's prune-after-training baseline, searching 4 of 6 epochs.
const EARLY_BIRD_LAST: &str = "[methods.early-bird]\ndraw = \"last\"\nmax_epochs = 4\n";

/// Arguments of an Early-Bird run of VGG-11 at `density` (6 epochs of 4 steps, weights kept at
/// step 8, inside the search, and at the end).
fn early_bird_last_args(cfg: &Path, density: &str) -> Vec<String> {
    run_args(
        cfg,
        &[
            "prune.method=early-bird",
            &format!("prune.density={density}"),
            "model.name=vgg-11",
            "train.epochs=6",
            "train.momentum=0.9",
            "data.train_subset=128",
            "data.test_subset=32",
            "data.batch_size=32",
            "train.checkpoints=[8, 24]",
        ],
    )
}

// 17. An Early-Bird run killed in the middle of its search resumes at the search's last saved
// epoch and finishes with the ticket, figures, rows and weights of an uninterrupted run.
#[test]
fn an_early_bird_run_killed_mid_search_resumes_and_equals_an_uninterrupted_run() {
    let args = |cfg: &Path| early_bird_last_args(cfg, "0.5");
    let (_dirs, uninterrupted, resumed, err) =
        uninterrupted_and_resumed(EARLY_BIRD_LAST, args, "early-bird/search");
    // The search resumed from its own state (not its final training).
    assert!(
        err.lines()
            .any(|l| l.contains("training resumed at step") && l.contains("search")),
        "{err}"
    );
    let (a, b) = (summary(&uninterrupted), summary(&resumed));
    for key in ["test_accuracy", "test_loss", "kept"] {
        assert_eq!(a[key], b[key], "{key}: {err}");
    }
    // The rows, the mask and the final weights (6 epochs of 4 steps).
    for file in [
        "metrics.parquet",
        "masks.safetensors",
        "checkpoint-step24.safetensors",
    ] {
        let bytes = |run: &Path| std::fs::read(run.join(file)).unwrap();
        assert!(bytes(&uninterrupted) == bytes(&resumed), "{file} differs");
    }
}

/// The finished run of `study` at `density`.
fn run_at(study: &Path, density: f64) -> PathBuf {
    let runs: Vec<PathBuf> = finished(study)
        .into_iter()
        .filter(|r| summary(r)["density_requested"] == density)
        .collect();
    assert_eq!(runs.len(), 1, "one run at {density} in {}", study.display());
    runs[0].clone()
}

/// The folders a study's runs share across densities.
fn shared_folders(study: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(study)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".shared"))
        .collect()
}

// 18. Early-Bird's prune-after-training baseline (`draw = "last"`) at two densities trains its
// search once: the second density reads it from the study's shared folder, and its rows, mask and
// weights equal those of the same run made alone; `--force` trains the search again, and so does
// a run that finds the shared record damaged.
#[test]
fn early_bird_runs_of_two_densities_share_one_search_and_equal_their_runs_alone() {
    let extra = EARLY_BIRD_LAST;
    let run = |dir: &Path, cfg: &Path, density: &str, more: &[&str]| -> String {
        let mut a = early_bird_last_args(cfg, density);
        a.extend(more.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = lottery(dir, &a);
        let err = stderr(&o);
        assert!(o.status.success(), "{density}: {err}");
        err
    };
    const READ: &str = "read the search shared";
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", extra);
    let err = run(d.path(), &cfg, "0.5", &[]);
    assert!(!err.contains(READ), "the first density searches: {err}");
    let err = run(d.path(), &cfg, "0.7", &[]);
    assert!(err.contains(READ), "the second density reads: {err}");
    let study = d.path().join("results/t");
    let shared = shared_folders(&study);
    assert_eq!(shared.len(), 1, "one shared folder for the two densities");
    assert!(shared[0].join("early-bird/record.safetensors").exists());
    // The table sees the two runs, not the shared folder.
    assert_eq!(finished(&study).len(), 2);

    let alone = tempfile::tempdir().unwrap();
    let alone_cfg = write_config(alone.path(), "c.toml", extra);
    run(alone.path(), &alone_cfg, "0.7", &[]);
    // Step 8 is kept during the search, step 24 at the end of the retraining.
    let files = [
        "metrics.parquet",
        "masks.safetensors",
        "checkpoint-step8.safetensors",
        "checkpoint-step24.safetensors",
    ];
    let same = |a: &Path, b: &Path, what: &str| {
        for file in files {
            let bytes = |run: &Path| std::fs::read(run.join(file)).unwrap();
            assert!(bytes(a) == bytes(b), "{what}: {file} differs");
        }
    };
    let alone_run = run_at(&alone.path().join("results/t"), 0.7);
    same(
        &run_at(&study, 0.7),
        &alone_run,
        "read from the shared search",
    );

    // Forced, both densities in one invocation: the search is trained again once, then read.
    let err = run(d.path(), &cfg, "[0.5, 0.7]", &["--force"]);
    assert_eq!(
        err.matches("discarded the search shared").count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches(READ).count(), 1, "{err}");
    same(&run_at(&study, 0.7), &alone_run, "forced");

    // A damaged record is set aside and the run, retried, searches again.
    let record = shared[0].join("early-bird/record.safetensors");
    std::fs::write(&record, b"torn").unwrap();
    let err = run(d.path(), &cfg, "0.3", &[]);
    assert!(
        err.contains("does not load") && !err.contains(READ),
        "{err}"
    );
    assert!(record.exists(), "recorded again: {err}");
    assert_eq!(finished(&study).len(), 3);
}

// 19. Early-Bird's early draw at two densities in one invocation trains one search: the command
// announces both densities in the study's shared folder, the first run trains until both have
// drawn, the second reads its draw, and its rows, mask and weights equal the same run made alone.
#[test]
fn early_bird_early_draws_of_two_densities_share_one_search_and_equal_their_runs_alone() {
    const EARLY: &str = "[methods.early-bird]\nwindow = 3\nepsilon = 0.3\n";
    const READ: &str = "read this density's draw from the search shared";
    let run = |dir: &Path, density: &str| -> String {
        let cfg = write_config(dir, "c.toml", EARLY);
        let a = early_bird_last_args(&cfg, density);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = lottery(dir, &a);
        let err = stderr(&o);
        assert!(o.status.success(), "{density}: {err}");
        err
    };
    let d = tempfile::tempdir().unwrap();
    let err = run(d.path(), "[0.5, 0.7]");
    assert_eq!(
        err.matches(READ).count(),
        1,
        "the second density reads: {err}"
    );
    let study = d.path().join("results/t");
    let shared = shared_folders(&study);
    assert_eq!(shared.len(), 1, "one shared folder for the two densities");
    for announced in [
        "densities/0.5",
        "densities/0.7",
        "early-bird/draws.safetensors",
    ] {
        assert!(shared[0].join(announced).exists(), "{announced}");
    }
    assert_eq!(finished(&study).len(), 2);

    let alone = tempfile::tempdir().unwrap();
    run(alone.path(), "0.7");
    for file in [
        "metrics.parquet",
        "masks.safetensors",
        "checkpoint-step24.safetensors",
    ] {
        let bytes = |run: &Path| std::fs::read(run.join(file)).unwrap();
        let (a, b) = (
            run_at(&study, 0.7),
            run_at(&alone.path().join("results/t"), 0.7),
        );
        assert!(bytes(&a) == bytes(&b), "{file} differs from the run alone");
    }
}
