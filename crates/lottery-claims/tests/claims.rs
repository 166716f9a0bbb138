//! The claims report over a generated results store: figures, verdicts, refusals.

use std::path::{Path, PathBuf};

use lottery_analysis::{MetricRecord, RunSummary, store};
use lottery_claims::{ClaimsError, Verdict, evaluate, render_markdown, spec, studies};

/// A finished run of study `s` in `root`: summary fields as given, and `levels` as the `level`
/// rows of its metrics (phase, density, accuracy).
#[allow(clippy::too_many_arguments)]
fn run(
    root: &Path,
    id: &str,
    method: &str,
    options: &str,
    seed: u64,
    density: f64,
    accuracy: f64,
    levels: &[(&str, f64, f64)],
) {
    let dir = root.join("s").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let summary = RunSummary {
        run_id: id.into(),
        study: "s".into(),
        method: method.into(),
        options: options.into(),
        model: "lenet-300-100".into(),
        dataset: "fashion-mnist".into(),
        seed,
        density_requested: density,
        density_achieved: density,
        kept: 1,
        prunable: 2,
        collapsed_layers: vec![],
        test_accuracy: accuracy,
        test_loss: 0.5,
        test_accuracy_at_init: 0.1,
        best_test_accuracy: None,
        best_test_epoch: None,
        epochs: 5,
        prune_seconds: 30.0,
        train_seconds: 30.0,
        backend: "burn-flex".into(),
        processor: String::new(),
        git_commit: "0123456789abcdef".into(),
        git_dirty: false,
        lottery_version: "0.1.0".into(),
        setting: String::new(),
    };
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string(&summary).unwrap(),
    )
    .unwrap();
    let mut rows = vec![MetricRecord {
        round: 0,
        phase: "ticket".into(),
        step: 10,
        epoch: 1,
        split: "prune".into(),
        metric: "drawn-epoch".into(),
        value: 7.0 + seed as f64,
    }];
    for (round, (phase, d, a)) in levels.iter().enumerate() {
        for (metric, value) in [("density", *d), ("accuracy", *a)] {
            rows.push(MetricRecord {
                round: round as u64,
                phase: phase.to_string(),
                step: 0,
                epoch: 0,
                split: "level".into(),
                metric: metric.into(),
                value,
            });
        }
    }
    store::write_metrics(&dir.join("metrics.parquet"), &rows).unwrap();
}

/// A store with three seeds of methods `a` (90, 91, 92 %) and `b` (85, 86, 87 %) at density 0.1,
/// two seeds of `c`, and three IMP-like runs whose ticket loses a point from 100 % to 80 %.
fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for seed in 0..3u64 {
        let s = seed as f64 / 100.0;
        run(
            d.path(),
            &format!("a{seed}"),
            "a",
            "",
            seed,
            0.1,
            0.90 + s,
            &[],
        );
        run(
            d.path(),
            &format!("b{seed}"),
            "b",
            "k=1",
            seed,
            0.1,
            0.85 + s,
            &[],
        );
        run(
            d.path(),
            &format!("imp{seed}"),
            "imp",
            "",
            seed,
            0.8,
            0.5,
            &[
                ("ticket", 1.0, 0.90 + s),
                ("ticket", 0.8007, 0.89 + s),
                ("reinit", 0.8007, 0.80),
            ],
        );
    }
    for seed in 0..2u64 {
        run(d.path(), &format!("c{seed}"), "c", "", seed, 0.1, 0.5, &[]);
    }
    d
}

/// A claims file in `dir` with `body` after one config (`c.toml`, study `s`).
fn claims_file(dir: &Path, body: &str) -> PathBuf {
    std::fs::write(dir.join("c.toml"), "study = \"s\"\n").unwrap();
    let path = dir.join("claims.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn claim(id: &str, test: &str) -> String {
    format!(
        "[[claim]]\nid = \"{id}\"\npaper = \"P\"\nclaim = \"C {id}\"\npaper_figure = \"F\"\nconfigs = [\"c.toml\"]\n{test}\n"
    )
}

const A: &str =
    r#"{ label = "a", study = "s", metric = "test_accuracy", filter = { method = "a" } }"#;
const B: &str =
    r#"{ label = "b", study = "s", metric = "test_accuracy", filter = { method = "b" } }"#;

#[test]
fn figures_are_means_over_seeds_and_verdicts_follow_the_test() {
    let results = store();
    let d = tempfile::tempdir().unwrap();
    let body = [
        claim(
            "a-matches-b",
            &format!("[claim.test]\nkind = \"at-least\"\nlhs = {A}\nrhs = {B}"),
        ),
        claim(
            "b-beats-a",
            &format!("[claim.test]\nkind = \"above\"\nlhs = {B}\nrhs = {A}"),
        ),
        claim(
            "a-beats-b-by-6",
            &format!("[claim.test]\nkind = \"above\"\nmargin = 6.0\nlhs = {A}\nrhs = {B}"),
        ),
        claim(
            "a-in-range",
            &format!("[claim.test]\nkind = \"within\"\nat_least = 90.0\nat_most = 91.5\nlhs = {A}"),
        ),
        claim(
            "drawn-early",
            "[claim.test]\nkind = \"within\"\nat_most = 7.0\nlhs = { label = \"drawn\", study = \"s\", metric = \"prune/drawn-epoch\", filter = { method = \"imp\" } }",
        ),
        claim(
            "ticket-vs-dense",
            "[claim.test]\nkind = \"at-least\"\nmargin = 1.0\nlhs = { label = \"ticket 80 %\", study = \"s\", metric = \"level\", phase = \"ticket\", level_density = 0.8 }\nrhs = { label = \"dense\", study = \"s\", metric = \"level\", phase = \"ticket\", level_density = 1.0 }",
        ),
        claim(
            "ticket-beats-reinit",
            "[claim.test]\nkind = \"above\"\nlhs = { label = \"ticket 80 %\", study = \"s\", metric = \"level\", phase = \"ticket\", level_density = 0.8 }\nrhs = { label = \"reinit 80 %\", study = \"s\", metric = \"level\", phase = \"reinit\", level_density = 0.8 }",
        ),
        claim(
            "two-seeds",
            &format!(
                "[claim.test]\nkind = \"at-least\"\nlhs = {A}\nrhs = {{ label = \"c\", study = \"s\", metric = \"test_accuracy\", filter = {{ method = \"c\" }} }}"
            ),
        ),
        claim(
            "elsewhere",
            &format!(
                "[claim.test]\nkind = \"above\"\nlhs = {A}\nrhs = {{ label = \"x\", study = \"s\", metric = \"test_accuracy\", filter = {{ method = \"x\" }} }}"
            ),
        ),
        claim(
            "options",
            "[claim.test]\nkind = \"within\"\nat_most = 87.0\nlhs = { label = \"k=1\", study = \"s\", metric = \"test_accuracy\", options_include = [\"k=1\"] }",
        ),
        "[[claim]]\nid = \"cifar\"\npaper = \"Q\"\nclaim = \"On CIFAR\"\npaper_figure = \"F\"\n[claim.test]\nkind = \"not-testable\"\nwhy = \"no CIFAR here\"\n".to_string(),
    ]
    .concat();
    let file = spec::load_in(&claims_file(d.path(), &body), d.path()).unwrap();
    let got = evaluate(results.path(), &file.claim, &[]).unwrap();
    let by_id = |id: &str| got.iter().find(|e| e.claim.id == id).unwrap();

    let e = by_id("a-matches-b");
    assert_eq!(e.verdict, Verdict::Held);
    assert!((e.figures[0].mean - 91.0).abs() < 1e-9, "{e:?}");
    assert!((e.figures[0].std.unwrap() - 1.0).abs() < 1e-9, "{e:?}");
    assert_eq!(e.figures[0].seeds, [0, 1, 2]);
    assert!((e.figures[1].mean - 86.0).abs() < 1e-9, "{e:?}");
    assert_eq!(
        e.figures[0].setting,
        "lenet-300-100 on fashion-mnist, 5 epochs"
    );
    assert_eq!(by_id("b-beats-a").verdict, Verdict::NotHeld);
    // 5 points ahead, 6 needed.
    assert_eq!(by_id("a-beats-b-by-6").verdict, Verdict::NotHeld);
    assert!(by_id("a-beats-b-by-6").reasoning.contains("+5.00"));
    assert_eq!(by_id("a-in-range").verdict, Verdict::Held);
    // Drawn at 7, 8, 9: mean 8 > 7.
    let drawn = by_id("drawn-early");
    assert_eq!(drawn.verdict, Verdict::NotHeld);
    assert!((drawn.figures[0].mean - 8.0).abs() < 1e-9);
    // The level nearest 0.8 (0.8007) is read: 90 vs 91 mean, within the 1-point margin.
    let levels = by_id("ticket-vs-dense");
    assert_eq!(levels.verdict, Verdict::Held, "{levels:?}");
    assert!((levels.figures[0].mean - 90.0).abs() < 1e-9);
    assert!((levels.figures[1].mean - 91.0).abs() < 1e-9);
    assert_eq!(by_id("ticket-beats-reinit").verdict, Verdict::Held);
    assert!(
        matches!(&by_id("two-seeds").verdict, Verdict::NotTestable(why) if why.contains("2 seeds")),
        "{:?}",
        by_id("two-seeds").verdict
    );
    assert!(
        matches!(&by_id("elsewhere").verdict, Verdict::NotRun(why) if why.contains("x (study `s`)")),
        "{:?}",
        by_id("elsewhere").verdict
    );
    assert_eq!(by_id("options").verdict, Verdict::Held);
    assert_eq!(
        by_id("cifar").verdict,
        Verdict::NotTestable("no CIFAR here".into())
    );

    // Only the claims asked for.
    let one = evaluate(results.path(), &file.claim, &["b-beats-a".into()]).unwrap();
    assert_eq!(one.len(), 1);

    // The report: a row per claim with its verdict and command, a line per study; the same
    // store gives the same bytes.
    let lines = studies(results.path(), &got).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].runs, 11);
    assert_eq!(lines[0].commits, ["0123456"]);
    let report = render_markdown("claims.toml", &got, &lines);
    assert!(
        report.contains("11 claims: 5 held, 3 not held, 2 not testable here, 1 not run"),
        "{report}"
    );
    // A claims file other than the default is named in each row's command.
    assert!(
        report.contains(
            "`lottery sweep c.toml && lottery claims --spec claims.toml --claim a-matches-b`"
        ),
        "{report}"
    );
    let from_default = render_markdown(lottery_claims::DEFAULT_SPEC, &got, &lines);
    assert!(from_default.contains("`lottery sweep c.toml && lottery claims --claim a-matches-b`"));
    assert!(
        report.contains("a: 91.00 ± 1.00 (n=3); b: 86.00 ± 1.00 (n=3)"),
        "{report}"
    );
    assert!(
        report.contains("| s | 11 | 0, 1, 2 | burn-flex | not recorded | 0123456 | 11.0 min |"),
        "{report}"
    );
    // Runs that predate the processor field raise no warning by themselves.
    assert!(!report.contains("processors.**"), "{report}");
    assert!(!report.contains("predate the processor field"), "{report}");
    let again = render_markdown(
        "claims.toml",
        &evaluate(results.path(), &file.claim, &[]).unwrap(),
        &lines,
    );
    assert_eq!(report, again);
}

#[test]
fn a_measure_that_mixes_settings_is_refused_not_averaged() {
    let results = store();
    let d = tempfile::tempdir().unwrap();
    // Every run of the study at density 0.1: methods a, b, c mixed, seeds repeated.
    let body = claim(
        "mixed",
        "[claim.test]\nkind = \"within\"\nat_most = 1.0\nlhs = { label = \"all\", study = \"s\", metric = \"test_accuracy\", filter = { density = \"0.1\" } }",
    );
    let file = spec::load_in(&claims_file(d.path(), &body), d.path()).unwrap();
    let err = evaluate(results.path(), &file.claim, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than one run") && err.contains("seed 0"),
        "{err}"
    );
}

#[test]
fn a_bad_claims_file_is_refused_naming_the_file_claim_key_and_value() {
    let d = tempfile::tempdir().unwrap();
    let refused = |body: &str| -> String {
        let path = claims_file(d.path(), body);
        match spec::load_in(&path, d.path()) {
            Ok(_) => panic!("accepted:\n{body}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("claims.toml"), "{msg}");
                msg
            }
        }
    };
    let msg = refused(&claim(
        "x",
        &format!("[claim.test]\nkind = \"at-least\"\nlhs = {A}\nrhs = {B}\nmargn = 1.0"),
    ));
    assert!(msg.contains("margn"), "{msg}");
    let msg = refused(&claim(
        "x",
        "[claim.test]\nkind = \"within\"\nat_most = 1.0\nlhs = { label = \"a\", study = \"s\", metric = \"test_acuracy\" }",
    ));
    assert!(
        msg.contains("claim `x`") && msg.contains("test.lhs.metric = test_acuracy"),
        "{msg}"
    );
    let msg = refused(&claim(
        "x",
        "[claim.test]\nkind = \"within\"\nat_most = 1.0\nlhs = { label = \"a\", study = \"s\", metric = \"test_accuracy\", filter = { methd = \"a\" } }",
    ));
    assert!(msg.contains("test.lhs.filter.methd = a"), "{msg}");
    let msg = refused(&claim(
        "x",
        "[claim.test]\nkind = \"within\"\nat_most = 1.0\nlhs = { label = \"a\", study = \"other\", metric = \"test_accuracy\" }",
    ));
    assert!(msg.contains("no config writes the study `other`"), "{msg}");
    let msg = refused(&claim(
        "x",
        "[claim.test]\nkind = \"within\"\nlhs = { label = \"a\", study = \"s\", metric = \"level\", phase = \"ticket\" }",
    ));
    assert!(msg.contains("at_most"), "{msg}");
    let msg = refused(&claim(
        "x",
        "[claim.test]\nkind = \"within\"\nat_most = 1.0\nlhs = { label = \"a\", study = \"s\", metric = \"level\", phase = \"ticket\" }",
    ));
    assert!(msg.contains("level_density"), "{msg}");
    let twice = claim(
        "x",
        &format!("[claim.test]\nkind = \"within\"\nat_most = 1.0\nlhs = {A}"),
    );
    let msg = refused(&format!("{twice}{twice}"));
    assert!(msg.contains("another claim has this id"), "{msg}");
    let msg = refused(&twice.replace("c.toml", "missing.toml"));
    assert!(
        msg.contains("missing.toml") && msg.contains("cannot read"),
        "{msg}"
    );
    let msg = refused(
        "[[claim]]\nid = \"y\"\npaper = \"P\"\nclaim = \"C\"\npaper_figure = \"F\"\nconfigs = [\"c.toml\"]\n[claim.test]\nkind = \"not-testable\"\nwhy = \"w\"\n",
    );
    assert!(msg.contains("names no config"), "{msg}");
    assert!(matches!(
        spec::load_in(&d.path().join("absent.toml"), d.path()),
        Err(ClaimsError::Read { .. })
    ));
}

#[test]
fn the_projects_claims_files_are_valid_and_read_an_empty_store_as_not_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = spec::load_in(&root.join("configs/claims.toml"), &root).unwrap();
    assert!(file.claim.len() >= 20);
    // Every claims file of the project (configs/claims*.toml), each a report of its own.
    let mut specs: Vec<_> = std::fs::read_dir(root.join("configs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("claims") && name.ends_with(".toml")
        })
        .collect();
    specs.sort();
    assert!(specs.len() >= 3, "{specs:?}");
    let empty = tempfile::tempdir().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for path in &specs {
        let claims = spec::load_in(path, &root)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .claim;
        assert!(!claims.is_empty(), "{}", path.display());
        let got = evaluate(empty.path(), &claims, &[]).unwrap();
        for e in &got {
            assert!(
                matches!(e.verdict, Verdict::NotRun(_) | Verdict::NotTestable(_)),
                "{}: {:?}",
                e.claim.id,
                e.verdict
            );
        }
        // No claim id is in two files: `--claim ID` names one row.
        for c in &claims {
            assert!(ids.insert(c.id.clone()), "{} is in two claims files", c.id);
        }
    }
}

#[test]
fn a_layer_collapse_record_gives_each_methods_shortfall() {
    let results = tempfile::tempdir().unwrap();
    let study = results.path().join("lc");
    let method = |name: &str, x: f64| lottery_analysis::CollapseMethod {
        method: name.into(),
        iterations: 1,
        critical_x: x,
        collapsed_beyond: vec!["fc.weight".into()],
        seconds: 60.0,
    };
    store::write_collapse(
        &study,
        &lottery_analysis::CollapseRecord {
            model: "vgg-16".into(),
            dataset: "synthetic-cifar".into(),
            seed: 0,
            max_critical_x: 6.02,
            resolution: 0.02,
            methods: vec![method("snip", 3.94), method("synflow", 6.0)],
            backend: "burn-flex".into(),
            processor: "Test CPU; avx2".into(),
            git_commit: "abcdef0123".into(),
            git_dirty: true,
        },
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("lc.toml"), "study = \"lc\"\n").unwrap();
    let gap = |m: &str| {
        format!(
            "{{ label = \"{m}\", study = \"lc\", metric = \"collapse-gap\", filter = {{ method = \"{m}\", model = \"vgg-16\" }} }}"
        )
    };
    let body = format!(
        "[[claim]]\nid = \"near\"\npaper = \"P\"\nclaim = \"C\"\npaper_figure = \"F\"\nconfigs = [\"lc.toml\"]\nmin_seeds = 1\n[claim.test]\nkind = \"within\"\nat_most = 0.05\nlhs = {}\n\n\
         [[claim]]\nid = \"early\"\npaper = \"P\"\nclaim = \"C\"\npaper_figure = \"F\"\nconfigs = [\"lc.toml\"]\nmin_seeds = 1\n[claim.test]\nkind = \"above\"\nmargin = 1.0\nlhs = {}\nrhs = {}\n",
        gap("synflow"),
        gap("snip"),
        gap("synflow")
    );
    let path = d.path().join("claims.toml");
    std::fs::write(&path, body).unwrap();
    let file = spec::load_in(&path, d.path()).unwrap();
    let got = evaluate(results.path(), &file.claim, &[]).unwrap();
    assert_eq!(got[0].verdict, Verdict::Held, "{:?}", got[0]);
    assert!((got[0].figures[0].mean - 0.02).abs() < 1e-9);
    assert_eq!(got[1].verdict, Verdict::Held, "{:?}", got[1]);
    assert!((got[1].figures[0].mean - 2.08).abs() < 1e-9);
    let lines = studies(results.path(), &got).unwrap();
    assert_eq!(lines[0].collapse_models, ["vgg-16"]);
    assert_eq!(lines[0].commits, ["abcdef0+dirty"]);
    assert_eq!(lines[0].processors, ["Test CPU; avx2"]);
    let report = render_markdown("claims.toml", &got, &lines);
    assert!(
        report.contains("| Test CPU; avx2 | abcdef0+dirty |"),
        "{report}"
    );
    assert!(!report.contains("processors.**"), "{report}");
    assert!(
        report.contains(
            "`lottery collapse lc.toml && lottery claims --spec claims.toml --claim early`"
        ),
        "{report}"
    );
    // The record is a file beside the runs, not a run.
    assert!(store::finished_runs(&study).unwrap().is_empty());
    assert!(store::scan_runs(&study).unwrap().skipped.is_empty());

    // Records from two processors, and one written before the processor was recorded (no
    // `processor` key): the report lists each and says what that means for its rows.
    let mut other = store::read_collapse(&study, "vgg-16").unwrap().unwrap();
    other.model = "resnet-20".into();
    other.processor = "Other CPU; avx512f".into();
    store::write_collapse(&study, &other).unwrap();
    let mut old: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(store::collapse_path(&study, "vgg-16")).unwrap(),
    )
    .unwrap();
    old["model"] = "conv-2".into();
    old.as_object_mut().unwrap().remove("processor");
    std::fs::write(store::collapse_path(&study, "conv-2"), old.to_string()).unwrap();
    assert_eq!(
        store::read_collapse(&study, "conv-2")
            .unwrap()
            .unwrap()
            .processor,
        ""
    );
    let lines = studies(results.path(), &got).unwrap();
    assert_eq!(
        lines[0].processors,
        ["Other CPU; avx512f", "Test CPU; avx2", "not recorded"]
    );
    let report = render_markdown("claims.toml", &got, &lines);
    assert!(
        report.contains("**These runs computed on 2 processors.**"),
        "{report}"
    );
    assert!(report.contains("predate the processor field"), "{report}");

    // Its filter must name the method and the model, nothing else.
    std::fs::write(
        &path,
        "[[claim]]\nid = \"x\"\npaper = \"P\"\nclaim = \"C\"\npaper_figure = \"F\"\nconfigs = [\"lc.toml\"]\n[claim.test]\nkind = \"within\"\nat_most = 1.0\nlhs = { label = \"g\", study = \"lc\", metric = \"collapse-gap\", filter = { method = \"snip\" } }\n",
    )
    .unwrap();
    let err = spec::load_in(&path, d.path()).unwrap_err().to_string();
    assert!(err.contains("test.lhs.metric = collapse-gap"), "{err}");
}

#[test]
fn a_config_swept_with_overrides_is_named_with_them_and_its_study_read_from_them() {
    let results = store();
    let d = tempfile::tempdir().unwrap();
    // A config of another study, swept into study `s` by its overrides.
    std::fs::write(d.path().join("c2.toml"), "study = \"rerun-of-nothing\"\n").unwrap();
    let with_sets = |sets: &str| {
        format!(
            "[[claim]]\nid = \"a-in-range\"\npaper = \"P\"\nclaim = \"C\"\npaper_figure = \"F\"\n\
             configs = [{{ path = \"c2.toml\", set = [{sets}] }}]\n\
             [claim.test]\nkind = \"within\"\nat_least = 90.0\nlhs = {A}\n"
        )
    };
    let path = claims_file(
        d.path(),
        &with_sets(
            r#""study=s", "train.lr=0.2", "prune.density=[0.5, 0.25]", "data.name='it''s'", "data.root=a|b""#,
        ),
    );
    let file = spec::load_in(&path, d.path()).unwrap();
    assert_eq!(file.claim[0].configs[0].set.len(), 5);
    let got = evaluate(results.path(), &file.claim, &[]).unwrap();
    assert_eq!(got[0].verdict, Verdict::Held);
    let report = render_markdown("claims.toml", &got, &studies(results.path(), &got).unwrap());
    // Each override follows its config, quoted where a shell would split or read it (a pipe
    // also escaped for the table).
    let command = "`lottery sweep c2.toml --set study=s --set train.lr=0.2 --set 'prune.density=[0.5, 0.25]' \
                   --set 'data.name='\\''it'\\'''\\''s'\\''' --set 'data.root=a\\|b' \
                   && lottery claims --spec claims.toml --claim a-in-range`";
    assert!(report.contains(command), "{command} not in {report}");

    let refused = |body: &str| -> String {
        let path = claims_file(d.path(), body);
        match spec::load_in(&path, d.path()) {
            Ok(_) => panic!("accepted:\n{body}"),
            Err(e) => e.to_string(),
        }
    };
    // Without the study override, c2.toml writes another study than the test reads.
    let msg = refused(&with_sets(r#""train.lr=0.2""#));
    assert!(
        msg.contains("configs = [c2.toml --set train.lr=0.2]")
            && msg.contains("no config writes the study `s`"),
        "{msg}"
    );
    let msg = refused(&with_sets(r#""train.lr""#));
    assert!(
        msg.contains("claim `a-in-range`") && msg.contains("`train.lr`: expected key=value"),
        "{msg}"
    );
    let msg = refused(&with_sets(r#""study=[1]""#));
    assert!(msg.contains("a study is a name"), "{msg}");
    // The config resolves under its overrides as `lottery sweep` resolves it: an unknown key or a
    // value of the wrong type or range is refused now, not when the row's command is rerun. (The
    // message repeats the command; the reason follows it.)
    let reason = |sets: &str, last: &str| -> String {
        let msg = refused(&with_sets(sets));
        assert!(msg.contains("claim `a-in-range`"), "{msg}");
        let (_, why) = msg
            .split_once(&format!("--set {last}: "))
            .unwrap_or_else(|| panic!("no reason after `{last}` in {msg}"));
        why.to_string()
    };
    let why = reason(r#""study=s", "train.epoch=4""#, "train.epoch=4");
    assert!(
        why.starts_with("train.epoch = epoch: one of the known keys"),
        "{why}"
    );
    let why = reason(r#""study=s", "train.epochs=four""#, "train.epochs=four");
    assert!(why.starts_with("train.epochs = "), "{why}");
    assert!(why.contains("four"), "{why}");
    let why = reason(r#""study=s", "train.lr=-1""#, "train.lr=-1");
    assert!(why.contains("a positive learning rate"), "{why}");
    let msg = refused(&with_sets(r#""study=s""#).replace("set = [", "sets = ["));
    assert!(msg.contains("claims.toml") && msg.contains("sets"), "{msg}");
    let msg = refused(&with_sets(r#""study=s""#).replace(
        "configs = [{ path = \"c2.toml\", set = [\"study=s\"] }]",
        "configs = [3]",
    ));
    assert!(msg.contains("expected a config's path"), "{msg}");
}
