//! Tabling a large results store: 10,000 generated runs (7 methods × 10 densities × ~143 seeds,
//! each with its summary and a metrics file of 40 rows), then the summary table and a table of a
//! metric recorded in the Parquet files, timed. A benchmark, never a test: `cargo bench -p
//! lottery-analysis --bench store_table` (or `just bench`).

use std::path::Path;
use std::time::Instant;

use lottery_analysis::store::{self, MetricRecord, RunSummary};
use lottery_analysis::{TableFormat, TableOptions, recorded_frame, render_table, study_frame};

const RUNS: usize = 10_000;

fn summary(i: usize) -> RunSummary {
    let methods = [
        "random",
        "magnitude",
        "snip",
        "grasp",
        "synflow",
        "imp",
        "gem-miner",
    ];
    let method = methods[i % methods.len()];
    let density = 0.5f64.powi(((i / methods.len()) % 10) as i32 + 1);
    let seed = (i / (methods.len() * 10)) as u64;
    let acc = 0.9 - 0.02 * (i % 13) as f64 / 13.0;
    RunSummary {
        run_id: format!("{i:016x}"),
        study: "big".into(),
        method: method.into(),
        model: "lenet-300-100".into(),
        dataset: "fashion-mnist".into(),
        seed,
        density_requested: density,
        density_achieved: density,
        kept: 0,
        prunable: 266_200,
        collapsed_layers: vec![],
        test_accuracy: acc,
        test_loss: 0.3,
        test_accuracy_at_init: 0.1,
        best_test_accuracy: None,
        best_test_epoch: None,
        epochs: 10,
        prune_seconds: 1.0,
        train_seconds: 7.0,
        backend: "flex".into(),
        processor: String::new(),
        git_commit: "x".into(),
        git_dirty: false,
        lottery_version: "0.1.0".into(),
        setting: String::new(),
        options: String::new(),
    }
}

fn write_store(dir: &Path) {
    for i in 0..RUNS {
        let s = summary(i);
        let run = dir.join(&s.run_id);
        std::fs::create_dir_all(&run).unwrap();
        let rows: Vec<MetricRecord> = (0..40)
            .map(|e| MetricRecord {
                round: 0,
                phase: "ticket".into(),
                step: e * 100,
                epoch: e,
                split: if e % 2 == 0 { "train" } else { "test" }.into(),
                metric: "accuracy".into(),
                value: s.test_accuracy - 0.001 * (40 - e) as f64,
            })
            .collect();
        store::write_metrics(&run.join("metrics.parquet"), &rows).unwrap();
        std::fs::write(
            run.join("summary.json"),
            serde_json::to_string_pretty(&s).unwrap(),
        )
        .unwrap();
    }
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("big");
    let t = Instant::now();
    write_store(&study);
    println!(
        "store: wrote {RUNS} runs in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let runs = store::finished_runs(&study).unwrap();
    let read = t.elapsed().as_secs_f64();
    let frame = study_frame(&runs, &TableOptions::default()).unwrap();
    let text = render_table(&frame, TableFormat::Markdown, "big", "method").unwrap();
    let total = t.elapsed().as_secs_f64();
    assert_eq!(runs.len(), RUNS);
    assert_eq!(frame.height(), 70);
    println!(
        "store: summary table of {RUNS} runs in {total:.2}s ({read:.2}s reading summaries), {} lines",
        text.lines().count()
    );

    let t = Instant::now();
    let frame = recorded_frame(&study, &runs, "test/accuracy", 100.0, &[]).unwrap();
    assert_eq!(frame.height(), 70);
    println!(
        "store: recorded-metric table (test/accuracy from {RUNS} metrics.parquet) in {:.2}s",
        t.elapsed().as_secs_f64()
    );
}
