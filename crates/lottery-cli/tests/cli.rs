//! End-to-end behaviour of the `lottery` binary on the generated `synthetic` dataset: runs finish,
//! reruns are bit-identical, finished runs are skipped, and bad input stops before any work with a
//! message naming file, key and value, leaving nothing in `results/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lottery(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lottery"))
        .args(args)
        .current_dir(dir)
        .env_remove("LOTTERY_LOG")
        .output()
        .expect("run lottery")
}

fn write_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = format!(
        "study = \"t\"\nseed = 0\n[model]\nname = \"lenet-300-100\"\n[data]\nname = \"synthetic\"\nbatch_size = 64\ntrain_subset = 256\ntest_subset = 128\n[prune]\nmethod = \"magnitude\"\ndensity = 0.1\n[train]\nepochs = 1\nlr = 0.05\n{extra}"
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn results_entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("results")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    }
}

/// The entries of a study folder but its claims (the lock files every run leaves, hidden).
fn study_entries(study: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(study)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(".claims"))
        .collect();
    out.sort();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_shows_both_plugins_models_and_datasets() {
    let d = tempfile::tempdir().unwrap();
    let o = lottery(d.path(), &["list"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "random",
        "magnitude",
        "snip",
        "grasp",
        "synflow",
        "imp",
        "early-bird",
        "gem-miner",
        "lenet-300-100",
        "vgg-16",
        "resnet-20",
        "fashion-mnist",
        "synthetic",
        "gcn",
        "gcn-tickets",
        "ugs",
        "graph-random",
        "graph-magnitude",
        "sbm",
        "karate-club",
        "cora",
    ] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
}

#[test]
fn grid_runs_rerun_bit_identical_and_skip_when_done() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "c.toml",
        "[grid]\n\"prune.method\" = [\"random\", \"magnitude\"]\n",
    );
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("| random |") && table.contains("| magnitude |"),
        "{table}"
    );
    let study = d.path().join("results/t");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(&study)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(".claims"))
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        for f in [
            "config.toml",
            "sources.json",
            "metrics.parquet",
            "layers.parquet",
            "masks.safetensors",
            "summary.json",
        ] {
            assert!(r.join(f).exists(), "{} lacks {f}", r.display());
        }
    }
    let snapshot = |r: &Path| {
        (
            std::fs::read(r.join("masks.safetensors")).unwrap(),
            std::fs::read(r.join("metrics.parquet")).unwrap(),
        )
    };
    let before: Vec<_> = runs.iter().map(|r| snapshot(r)).collect();

    // Same config: skipped, files untouched.
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap(), "--no-table"]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("skipped"), "{}", stderr(&o));

    // Forced rerun: bit-identical masks and metrics.
    let o = lottery(
        d.path(),
        &["run", cfg.to_str().unwrap(), "--force", "--no-table"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let after: Vec<_> = runs.iter().map(|r| snapshot(r)).collect();
    assert!(
        before == after,
        "a rerun with the same seed changed masks or metrics"
    );

    // Inspect reads the masks.
    let o = lottery(d.path(), &["inspect", runs[0].to_str().unwrap()]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("fc_layers.0.weight"));

    // Table in CSV, written under results/tables.
    let o = lottery(d.path(), &["table", "t", "--format", "csv"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("method,density,mean,std,n"));
    assert!(d.path().join("results/tables/t.test_accuracy.csv").exists());
}

#[test]
fn export_weights_then_init_from_reproduces_the_seeded_run() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let o = lottery(
        d.path(),
        &[
            "export-weights",
            cfg.to_str().unwrap(),
            "--out",
            "w.safetensors",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let a = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--no-table",
            "--results",
            "r1",
        ],
    );
    assert!(a.status.success(), "{}", stderr(&a));
    // Different seed for the model init, but weights loaded from the export of seed 0: the masks
    // (magnitude at init) must equal those of the seed-0 run.
    let b = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--no-table",
            "--results",
            "r2",
            "--init-from",
            "w.safetensors",
        ],
    );
    assert!(b.status.success(), "{}", stderr(&b));
    let mask = |root: &str| {
        let study = d.path().join(root).join("t");
        let run = study_entries(&study).remove(0);
        lottery_core::MaskSet::load(&run.join("masks.safetensors")).unwrap()
    };
    assert_eq!(mask("r1"), mask("r2"));
}

#[test]
fn bad_input_stops_early_with_a_named_error_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("typo", "lrr = 0.1\n".into(), &["train.lrr"]),
        ("density", "".into(), &["prune.density", "1.5"]),
        (
            "method",
            "".into(),
            &["prune.method", "no-such-method", "magnitude"],
        ),
        (
            "model",
            "".into(),
            &["model.name", "no-such-model", "lenet-300-100"],
        ),
        (
            "dataset-missing",
            "".into(),
            &["train-images-idx3-ubyte", "missing"],
        ),
        (
            "option",
            "[methods.magnitude]\nbogus = 1\n".into(),
            &["methods.magnitude", "bogus"],
        ),
        ("grid", "[grid]\nseed = 3\n".into(), &["grid.seed", "list"]),
    ];
    for (name, extra, needles) in cases {
        let cfg = write_config(d.path(), &format!("{name}.toml"), &extra);
        let mut args = vec!["run".to_string(), cfg.to_str().unwrap().to_string()];
        match name {
            "density" => args.extend(["--set".into(), "prune.density=1.5".into()]),
            "method" => args.extend(["--set".into(), "prune.method=no-such-method".into()]),
            "model" => args.extend(["--set".into(), "model.name=no-such-model".into()]),
            "dataset-missing" => args.extend([
                "--set".into(),
                "data.name=fashion-mnist".into(),
                "--set".into(),
                format!("data.root={}", d.path().join("nowhere").display()),
            ]),
            _ => {}
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = lottery(d.path(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        for n in needles {
            assert!(err.contains(n), "{name}: `{n}` not in: {err}");
        }
        if !matches!(name, "dataset-missing" | "method" | "model" | "density") {
            assert!(
                err.contains(&format!("{name}.toml")),
                "{name}: file not named in: {err}"
            );
        }
        assert!(
            results_entries(d.path()).is_empty(),
            "{name} left {:?} in results/",
            results_entries(d.path())
        );
    }
}

#[test]
fn env_vars_layer_between_the_file_and_set() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "");
    let o = Command::new(env!("CARGO_BIN_EXE_lottery"))
        .args(["config", cfg.to_str().unwrap(), "--set", "train.lr=0.3"])
        .current_dir(d.path())
        .env("LOTTERY_TRAIN__EPOCHS", "7")
        .env("LOTTERY_TRAIN__LR", "0.2")
        .env("LOTTERY_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("epochs = 7"), "{out}");
    assert!(out.contains("lr = 0.3"), "{out}");
    assert!(out.contains("# train.epochs: env"), "{out}");
    assert!(out.contains("# train.lr: --set"), "{out}");
    assert!(
        out.contains(&format!("# prune.density: {}", cfg.display())),
        "{out}"
    );
}

#[test]
fn score_writes_a_methods_scores_for_given_weights() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "s.toml", "");
    let o = lottery(
        d.path(),
        &[
            "export-weights",
            "s.toml",
            "--out",
            "w.safetensors",
            "--set",
            "seed=4",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let score = |out: &str| {
        let o = lottery(
            d.path(),
            &[
                "score",
                cfg.to_str().unwrap(),
                "--out",
                out,
                "--init-from",
                "w.safetensors",
                "--set",
                "prune.method=snip",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(d.path().join(out)).unwrap()
    };
    let a = score("a.safetensors");
    assert_eq!(a, score("b.safetensors"), "scores are deterministic");
    let text = String::from_utf8_lossy(&a[..a.len().min(4096)]).into_owned();
    for key in ["fc.weight", "fc_layers.0.weight", "lottery-scores", "snip"] {
        assert!(text.contains(key), "{key} missing from the header");
    }
    assert!(
        !text.contains("fc.bias"),
        "biases are not prunable by default"
    );
}

#[test]
fn collapse_finds_a_critical_compression_per_method() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "c.toml",
        "[grid]\n\"prune.method\" = [\"magnitude\", \"synflow\"]\n",
    );
    // A checkout whose committed table the study rewrites: the record names the clean commit it
    // started from, not the tree its own table made dirty.
    let tables = d.path().join("results/tables");
    std::fs::create_dir_all(&tables).unwrap();
    std::fs::write(tables.join("t.lenet-300-100.md"), "an older table\n").unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(d.path())
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "c.toml", "results/tables/t.lenet-300-100.md"]);
    git(&["commit", "-q", "-m", "start"]);
    let head = git(&["rev-parse", "HEAD"]);
    let o = lottery(
        d.path(),
        &[
            "collapse",
            cfg.to_str().unwrap(),
            "--resolution",
            "0.1",
            "--set",
            "prune.iterations=20",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table =
        std::fs::read_to_string(d.path().join("results/tables/t.lenet-300-100.md")).unwrap();
    assert!(
        table.contains("| magnitude | 20 |") && table.contains("| synflow | 20 |"),
        "{table}"
    );
    assert!(table.contains("Maximal critical compression"), "{table}");
    // The record the claims report reads, beside the study's runs.
    let study = d.path().join("results/t");
    let record = lottery_analysis::store::read_collapse(&study, "lenet-300-100")
        .unwrap()
        .expect("a collapse record");
    let methods: Vec<&str> = record.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(methods, ["magnitude", "synflow"]);
    // The table says where it was computed: the backend, the processor, the commit it started
    // from.
    let computed_on = format!(
        "Seed 0, backend {}, processor `{}`, commit {}.",
        record.backend,
        record.processor,
        &head[..7]
    );
    assert!(table.contains(&computed_on), "{computed_on} not in {table}");
    assert_eq!(
        (record.git_commit.as_str(), record.git_dirty),
        (head.as_str(), false)
    );
    assert!(!git(&["status", "--porcelain", "--untracked-files=no"]).is_empty());
    assert!(
        record
            .methods
            .iter()
            .all(|m| m.critical_x <= record.max_critical_x)
    );
    assert!(
        table.contains(&format!("10^{:.2}", record.max_critical_x)),
        "{table}"
    );
}

#[test]
fn imp_run_records_its_levels_and_controls_and_cleans_its_work_dir() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "imp.toml",
        "[methods.imp]\nrate = 0.5\ncontrols = [\"reinit\", \"random-mask\"]\n",
    );
    let o = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--set",
            "prune.method=imp",
            "--set",
            "prune.density=0.25",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let study = d.path().join("results/t");
    let entries: Vec<String> = std::fs::read_dir(&study)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".claims")
        .collect();
    assert_eq!(entries.len(), 1, "one run, no work dir left: {entries:?}");
    let o = lottery(d.path(), &["table", "t", "--levels"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    // Levels 1 (dense), 0.5 and 0.25; controls at the pruned levels only.
    for row in [
        "| imp ticket |",
        "| imp reinit | – |",
        "| imp random-mask | – |",
    ] {
        assert!(table.contains(row), "{row} in\n{table}");
    }
    assert!(
        table.contains("| 100% (10^0.00) | 50% (10^0.30) | 25% (10^0.60) |"),
        "{table}"
    );
    assert!(d.path().join("results/tables/t.levels.md").exists());
    // The same curves as a figure: one line per phase.
    let o = lottery(d.path(), &["plot", "t", "--levels"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(d.path().join("results/plots/t.levels.svg")).unwrap();
    for line in [
        "imp ticket",
        "imp reinit",
        "imp random-mask",
        "test accuracy of each level",
    ] {
        assert!(svg.contains(line), "{line} in the figure");
    }
}

#[test]
fn early_bird_run_counts_channels_and_tables_its_recorded_metrics() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "eb.toml",
        "[methods.early-bird]\nwindow = 2\nepsilon = 1.0\n",
    );
    let o = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--set",
            "prune.method=early-bird",
            "--set",
            "prune.density=0.5",
            "--set",
            "model.name=vgg-11",
            "--set",
            "train.epochs=3",
            "--set",
            "data.train_subset=64",
            "--set",
            "data.test_subset=32",
            "--set",
            "data.batch_size=32",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let study = d.path().join("results/t");
    // The folder shared with the config's other densities stays (a density added later reads it).
    let entries = study_entries(&study);
    let runs: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with(".shared"))
        .collect();
    assert_eq!(runs.len(), 1, "one run, no work dir left: {entries:?}");
    let run = runs[0].clone();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    // Half of the channels kept: about a quarter of the conv weights (rows and inputs) survive.
    let achieved = summary["density_achieved"].as_f64().unwrap();
    assert!(achieved > 0.1 && achieved < 0.5, "{achieved}");
    // The processor it computed on (its figures can depend on the instruction set).
    let processor = summary["processor"].as_str().unwrap_or("");
    assert!(processor.contains("; "), "{summary}");
    // The distance matrix of the masks before training and after epoch 1.
    let o = lottery(d.path(), &["distances", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,0,1", "{csv}");
    assert!(lines[1].starts_with("0,0.0000,"), "{csv}");
    assert!(lines[2].ends_with(",0.0000"), "{csv}");
    // The same matrix as a heatmap, named by the run.
    let o = lottery(d.path(), &["plot", "--distances", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run_id = summary["run_id"].as_str().unwrap();
    let svg = d
        .path()
        .join(format!("results/plots/t.{run_id}.distances.svg"));
    let svg = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("{}: {e}", svg.display()));
    assert!(svg.contains("mask after epoch"), "the axes name the clock");
    let o = lottery(
        d.path(),
        &["table", "t", "--metric", "early-bird/drawn-epoch"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    // Window 2 and ε = 1: drawn after the first epoch.
    assert!(table.contains("| early-bird | 1.00 (n=1) |"), "{table}");
    // Early-Bird's density counts channels, and the table says so.
    assert!(
        table.contains("density (fraction of batch-norm channels kept)"),
        "{table}"
    );
    assert!(
        d.path()
            .join("results/tables/t.early-bird-drawn-epoch.md")
            .exists()
    );
}

#[test]
fn gem_miner_run_meets_its_target_and_tables_the_gem_accuracy() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "gm.toml",
        "[methods.gem-miner]\nepochs = 3\niter_period = 1\n",
    );
    let o = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--set",
            "prune.method=gem-miner",
            "--set",
            "model.init=signed-constant",
            "--set",
            "prune.density=0.1",
            "--set",
            "train.epochs=1",
            "--set",
            "data.train_subset=128",
            "--set",
            "data.test_subset=64",
            "--set",
            "data.batch_size=64",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let study = d.path().join("results/t");
    let runs = study_entries(&study);
    assert_eq!(runs.len(), 1, "one run, no work dir left: {runs:?}");
    let run = runs[0].clone();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let achieved = summary["density_achieved"].as_f64().unwrap();
    assert!((achieved - 0.1).abs() < 1e-5, "{achieved}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("signed-constant"), "{config}");
    let o = lottery(d.path(), &["table", "t", "--metric", "mining/accuracy"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| gem-miner |"), "{table}");
}

#[test]
fn an_unknown_init_is_refused_with_its_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "bad.toml", "");
    let o = lottery(
        d.path(),
        &["run", cfg.to_str().unwrap(), "--set", "model.init=xavier"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("model.init") && err.contains("xavier"),
        "{err}"
    );
}

#[test]
fn a_graph_run_prunes_edges_and_weights_and_tables_them() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("g.toml");
    std::fs::write(
        &cfg,
        "study = \"g\"\nseed = 0\n[model]\nname = \"gcn\"\n[data]\nname = \"sbm\"\n[prune]\nmethod = \"gcn-tickets\"\ndensity = 0.2\n[methods.gcn-tickets]\nmax_epochs = 30\ngraph_density = 0.5\n[train]\nepochs = 20\noptimizer = \"adam\"\nlr = 0.01\nweight_decay = 5e-4\nlr_schedule = \"constant\"\n",
    )
    .unwrap();
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = study_entries(&d.path().join("results/g"));
    assert_eq!(runs.len(), 1, "{runs:?}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("summary.json")).unwrap())
            .unwrap();
    let achieved = summary["density_achieved"].as_f64().unwrap();
    assert!((achieved - 0.2).abs() < 1e-3, "weights only: {achieved}");
    for metric in [
        "prune/graph-density",
        "prune/inference-flops-ratio",
        "gcn-tickets/drawn-epoch",
    ] {
        let o = lottery(d.path(), &["table", "g", "--metric", metric]);
        assert!(o.status.success(), "{metric}: {}", stderr(&o));
        let table = String::from_utf8_lossy(&o.stdout);
        assert!(table.contains("| gcn-tickets |"), "{table}");
        if metric == "prune/graph-density" {
            assert!(table.contains("0.50"), "{table}");
        }
    }
    // The normalised distances per epoch, the drawn epoch marked.
    let o = lottery(
        d.path(),
        &[
            "plot",
            "g",
            "--per-epoch",
            "gcn-tickets/joint-distance",
            "--mark-epoch",
            "gcn-tickets/drawn-epoch",
            "--threshold",
            "0.1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = d
        .path()
        .join("results/plots/g.gcn-tickets-joint-distance.per-epoch.svg");
    let svg = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("{}: {e}", svg.display()));
    assert!(
        svg.contains("gcn-tickets at density 0.2") && svg.contains("drawn-epoch"),
        "the line and its drawn epoch are labelled"
    );
    // A figure per epoch is not a figure of levels, and ε must be a number.
    for bad in [["--levels", "--per-epoch"], ["--threshold", "inf"]] {
        let mut args = vec!["plot", "g", "--per-epoch", "gcn-tickets/joint-distance"];
        args.extend(bad);
        if bad[1] == "--per-epoch" {
            args.pop();
        }
        let o = lottery(d.path(), &args);
        assert!(!o.status.success(), "{bad:?}");
        assert!(stderr(&o).contains(bad[0]), "{}", stderr(&o));
    }
    // A metric the runs never recorded per epoch is an error naming it.
    let o = lottery(
        d.path(),
        &["plot", "g", "--per-epoch", "gcn-tickets/nothing"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("gcn-tickets/nothing"), "{}", stderr(&o));
    // A graph dataset with an image model, and the reverse, name the key at fault.
    let o = lottery(
        d.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--set",
            "model.name=lenet-300-100",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("data.name"), "{}", stderr(&o));
    let o = lottery(
        d.path(),
        &["run", cfg.to_str().unwrap(), "--set", "data.name=synthetic"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("data.name") && err.contains("synthetic"),
        "{err}"
    );
}

#[test]
fn ignored_parameters_stay_dense_for_every_method() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        "ignore.toml",
        "[methods.imp]\nrate = 0.5\n[grid]\n\"prune.method\" = [\"magnitude\", \"imp\", \"snip\"]\n",
    );
    let c = cfg.to_str().unwrap();
    let ignore = "prune.ignore=[\"fc.weight\"]";
    let o = lottery(
        d.path(),
        &["run", c, "--set", ignore, "--set", "prune.density=0.25"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = study_entries(&d.path().join("results/t"));
    assert_eq!(runs.len(), 3);
    for run in &runs {
        let masks = lottery_core::MaskSet::load(&run.join("masks.safetensors")).unwrap();
        assert!(masks.get("fc.weight").is_none(), "{}", run.display());
        // The two hidden layers hold every prunable weight, a quarter of them kept exactly.
        assert_eq!(masks.numel(), 784 * 300 + 300 * 100);
        assert_eq!(masks.kept(), (784 * 300 + 300 * 100) / 4);
        let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(config.contains("ignore = [\"fc.weight\"]"), "{config}");
    }
    // A pattern that matches nothing is a typo, refused before any run.
    let e = tempfile::tempdir().unwrap();
    let o = lottery(
        e.path(),
        &["run", c, "--set", "prune.ignore=[\"fc.wieght\"]"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("prune.ignore")
            && err.contains("fc.wieght")
            && err.contains("fc_layers.0.weight"),
        "{err}"
    );
    assert!(results_entries(e.path()).is_empty());
}

#[test]
fn claims_reads_the_runs_writes_the_report_and_reruns_one_row() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "c.toml", "[grid]\nseed = [0, 1, 2]\n");
    let o = lottery(d.path(), &["run", cfg.to_str().unwrap(), "--no-table"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let claims = d.path().join("claims.toml");
    std::fs::write(
        &claims,
        r#"[[claim]]
id = "trains"
paper = "P"
claim = "Magnitude pruning to 10 % leaves a network that trains above chance."
paper_figure = "F"
configs = ["c.toml"]
[claim.test]
kind = "within"
at_least = 20.0
lhs = { label = "magnitude at 10 %", study = "t", metric = "test_accuracy", filter = { method = "magnitude" } }

[[claim]]
id = "elsewhere"
paper = "P"
claim = "Not run here."
paper_figure = "F"
configs = ["c.toml"]
[claim.test]
kind = "above"
lhs = { label = "magnitude", study = "t", metric = "test_accuracy", filter = { method = "magnitude" } }
rhs = { label = "random", study = "t", metric = "test_accuracy", filter = { method = "random" } }
"#,
    )
    .unwrap();
    let o = lottery(d.path(), &["claims", "--spec", "claims.toml"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("2 claims: 1 held, 0 not held, 0 not testable here, 1 not run"),
        "{out}"
    );
    assert!(
        out.contains("magnitude at 10 %: ") && out.contains("(n=3)"),
        "{out}"
    );
    let report = d.path().join("results/CLAIMS.md");
    assert_eq!(std::fs::read_to_string(&report).unwrap(), out);

    // One row: printed, nothing rewritten; an unknown id is refused with the ids there are.
    std::fs::write(&report, "kept").unwrap();
    let o = lottery(
        d.path(),
        &["claims", "--spec", "claims.toml", "--claim", "trains"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("1 claims: 1 held"),
        "{out}"
    );
    let o = lottery(
        d.path(),
        &["claims", "--spec", "claims.toml", "--claim", "nope"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("--claim nope") && err.contains("trains, elsewhere"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "kept");
}
