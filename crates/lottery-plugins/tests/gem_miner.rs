//! Gem-Miner through its registered entry: the bottom-k prunes follow the schedule exactly, the
//! unflagged ticket meets the target, the weights never change, and an interrupted run resumes to
//! the uninterrupted result.

mod common;

use common::{Crashing, run_method, small_task};
use lottery_core::config::TrainSection;
use lottery_core::{Density, MetricRow, ParamKind, PruneTarget};
use lottery_models::Architecture;
use lottery_train::ImageTask;

fn task() -> ImageTask {
    small_task(
        Architecture::Mlp {
            hidden: vec![32, 16],
        },
        TrainSection {
            epochs: 2,
            ..TrainSection::default()
        },
    )
}

/// 11 epochs with a period of 3: prunes after epochs 4, 7 and 10.
const OPTIONS: &str = "epochs = 11\niter_period = 3\nlambda = 1e-4";

fn rows(t: &ImageTask, metric: &str) -> Vec<MetricRow> {
    t.metrics()
        .iter()
        .filter(|r| r.split == "mining" && r.metric == metric)
        .cloned()
        .collect()
}

#[test]
fn prunes_follow_the_schedule_exactly_and_the_ticket_meets_the_target() {
    let mut t = task();
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    let kinds: Vec<ParamKind> = t.params().into_iter().map(|p| p.kind).collect();
    let before = t.values(&names).unwrap();
    let target = 0.05;
    let mask = run_method("gem-miner", &mut t, target, OPTIONS, None).unwrap();

    let total = mask.numel();
    let d = Density::new(target).unwrap();
    assert_eq!(
        mask.kept(),
        d.keep_count(total),
        "the ticket meets the target"
    );
    let flags = rows(&t, "flag-density");
    assert_eq!(flags.len(), 3);
    for (k, row) in flags.iter().enumerate() {
        let scheduled = lottery_core::density::exponential_schedule(d, k + 1, 3);
        let kept = (row.value * total as f64).round() as usize;
        assert_eq!(kept, scheduled.keep_count(total), "prune {}", k + 1);
        assert_eq!(row.epoch as usize, [4, 7, 10][k]);
    }
    // One row of each per epoch; the gem's accuracy is an accuracy.
    let acc = rows(&t, "accuracy");
    assert_eq!(acc.len(), 11);
    assert!(acc.iter().all(|r| (0.0..=1.0).contains(&r.value)));
    assert_eq!(rows(&t, "penalty").len(), 11);
    // Weights (and everything but batch-norm statistics) are bit for bit the initialisation.
    let after = t.values(&names).unwrap();
    for (name, kind) in names.iter().zip(kinds) {
        if kind == ParamKind::NormStatistic {
            continue;
        }
        for (a, b) in before[name].values.iter().zip(&after[name].values) {
            assert_eq!(a.to_bits(), b.to_bits(), "{name} changed");
        }
    }
}

#[test]
fn a_mining_shorter_than_one_period_prunes_once_to_the_target() {
    let mut t = task();
    let mask = run_method(
        "gem-miner",
        &mut t,
        0.1,
        "epochs = 2\niter_period = 5",
        None,
    )
    .unwrap();
    assert_eq!(
        mask.kept(),
        Density::new(0.1).unwrap().keep_count(mask.numel())
    );
    assert_eq!(rows(&t, "flag-density").len(), 1);
}

#[test]
fn a_run_is_the_same_twice() {
    let mut a = task();
    let mut b = task();
    let ma = run_method("gem-miner", &mut a, 0.2, OPTIONS, None).unwrap();
    let mb = run_method("gem-miner", &mut b, 0.2, OPTIONS, None).unwrap();
    assert_eq!(ma, mb);
    assert_eq!(a.metrics(), b.metrics());
}

#[test]
fn bad_options_are_refused() {
    let mut t = task();
    let e = run_method("gem-miner", &mut t, 0.2, "iter_period = 0", None).unwrap_err();
    assert!(e.to_string().contains("iter_period"), "{e}");
    lottery_core::plugin::assert_options_contract::<lottery_gem_miner::GemMinerOptions>(
        "lamda = 1.0",
    );
}

#[test]
fn an_interrupted_run_resumes_to_the_uninterrupted_result() {
    let mut whole = task();
    let whole_mask = run_method("gem-miner", &mut whole, 0.1, OPTIONS, None).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let work = Some(dir.path().to_path_buf());
    // Crash in epoch 6, after 5 saved epochs (one prune done, saved state of epoch 5): the hook
    // reads the values it saves once an epoch, and the sixth read fails.
    let mut first = task();
    let mut crashing = Crashing {
        value_reads_left: std::cell::Cell::new(5),
        ..Crashing::new(&mut first)
    };
    let e = run_method("gem-miner", &mut crashing, 0.1, OPTIONS, work.clone()).unwrap_err();
    assert!(e.to_string().contains("simulated crash"), "{e}");
    assert!(dir.path().join("gem-miner/state.safetensors").exists());
    assert_eq!(
        rows(&first, "accuracy").len(),
        6,
        "the crash came in epoch 6"
    );

    let mut second = task();
    let mask = run_method("gem-miner", &mut second, 0.1, OPTIONS, work).unwrap();
    assert_eq!(mask, whole_mask);
    assert_eq!(second.metrics(), whole.metrics());
    let names: Vec<String> = whole.params().into_iter().map(|p| p.name).collect();
    assert_eq!(
        second.values(&names).unwrap(),
        whole.values(&names).unwrap()
    );
}

const CONTROLS: &str =
    "epochs = 11\niter_period = 3\nlambda = 1e-4\ncontrols = [\"reinit\", \"shuffled-mask\"]";

fn level_rows(t: &ImageTask, phase: &str) -> Vec<MetricRow> {
    t.metrics()
        .iter()
        .filter(|r| r.split == "level" && r.phase == phase)
        .cloned()
        .collect()
}

#[test]
fn controls_record_level_rows_and_leave_the_ticket_as_it_was() {
    let mut plain = task();
    let plain_mask = run_method("gem-miner", &mut plain, 0.1, OPTIONS, None).unwrap();
    let mut t = task();
    let mask = run_method("gem-miner", &mut t, 0.1, CONTROLS, None).unwrap();
    assert_eq!(mask, plain_mask, "controls do not change the ticket");
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    assert_eq!(
        t.values(&names).unwrap(),
        plain.values(&names).unwrap(),
        "the ticket starts where it would have without controls"
    );
    assert_eq!(t.clock().step, plain.clock().step);
    for phase in ["reinit", "shuffled-mask"] {
        let rows = level_rows(&t, phase);
        let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(metrics, ["density", "accuracy"], "{phase}");
        assert_eq!(rows[0].value, mask.density(), "{phase}");
        assert!((0.0..=1.0).contains(&rows[1].value), "{phase}");
        assert_eq!(rows[0].round, 0);
        // The control trained: its own training rows, to the end of the run's schedule.
        assert!(
            t.metrics()
                .iter()
                .any(|r| r.phase == phase && r.split == "train"),
            "{phase} trained"
        );
    }
    // The mining rows are the same as without controls.
    assert_eq!(rows(&t, "accuracy"), rows(&plain, "accuracy"));
}

#[test]
fn a_control_starts_from_the_ticket_mask_or_the_ticket_weights() {
    let mut t = task();
    let mask = run_method("gem-miner", &mut t, 0.1, OPTIONS, None).unwrap();
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    let ticket = t.values(&names).unwrap();
    use lottery_gem_miner::{Control, control_start};

    let (values, m) = control_start(Control::Reinit, &t, &ticket, &mask, 11);
    assert_eq!(m, mask, "reinit keeps the ticket's mask");
    for (name, _) in mask.iter() {
        assert_eq!(values[name].shape, ticket[name].shape);
        assert_ne!(values[name].values, ticket[name].values, "{name} re-drawn");
    }

    let (values, m) = control_start(Control::ShuffledMask, &t, &ticket, &mask, 11);
    assert_eq!(
        values, ticket,
        "the shuffled mask sits on the ticket's weights"
    );
    assert_ne!(m, mask);
    for (name, kept) in mask.iter() {
        assert_eq!(m.get(name).unwrap().kept(), kept.kept(), "{name} count");
    }
}

#[test]
fn an_interrupted_control_resumes_to_the_uninterrupted_result() {
    let mut whole = task();
    let whole_mask = run_method("gem-miner", &mut whole, 0.1, CONTROLS, None).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let work = Some(dir.path().to_path_buf());
    // Mining trains through the image family, past the counter: the first training call is the
    // reinit control, the second (the shuffled mask) crashes.
    let mut first = task();
    let mut crashing = Crashing {
        trainings_left: 1,
        ..Crashing::new(&mut first)
    };
    let e = run_method("gem-miner", &mut crashing, 0.1, CONTROLS, work.clone()).unwrap_err();
    assert!(e.to_string().contains("simulated crash"), "{e}");
    assert_eq!(level_rows(&first, "reinit").len(), 2);

    let mut second = task();
    let mask = run_method("gem-miner", &mut second, 0.1, CONTROLS, work).unwrap();
    assert_eq!(mask, whole_mask);
    assert_eq!(second.metrics(), whole.metrics());
    let names: Vec<String> = whole.params().into_iter().map(|p| p.name).collect();
    assert_eq!(
        second.values(&names).unwrap(),
        whole.values(&names).unwrap()
    );
}

#[test]
fn the_tie_rule_meets_the_target_and_never_keeps_more_than_the_schedule() {
    let mut t = task();
    let target = 0.05;
    let options = format!("{OPTIONS}\nties = \"prune-tied\"");
    let mask = run_method("gem-miner", &mut t, target, &options, None).unwrap();
    let total = mask.numel();
    let d = Density::new(target).unwrap();
    assert_eq!(mask.kept(), d.keep_count(total), "floored at the target");
    let flags = rows(&t, "flag-density");
    assert_eq!(flags.len(), 3);
    for (k, row) in flags.iter().enumerate() {
        let scheduled = lottery_core::density::exponential_schedule(d, k + 1, 3);
        let kept = (row.value * total as f64).round() as usize;
        assert!(
            kept <= scheduled.keep_count(total),
            "prune {}: {kept} kept, the schedule says {}",
            k + 1,
            scheduled.keep_count(total)
        );
    }
    assert_eq!(rows(&t, "tied-pruned").len(), 3);
    assert_eq!(rows(&t, "tied-spared-by-floor").len(), 3);
    // The default rule records neither.
    let mut exact = task();
    run_method("gem-miner", &mut exact, target, OPTIONS, None).unwrap();
    assert!(rows(&exact, "tied-pruned").is_empty());
}
