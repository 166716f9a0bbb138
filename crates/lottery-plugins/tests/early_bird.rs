//! Early-Bird on a real (small) VGG-style training task: the ticket keeps exactly its share of
//! channels, its weight mask prunes exactly what those channels gate, the detector's epoch is the
//! one its distance rows say, the retraining starts from the smaller network's fresh weights,
//! pruned weights stay zero through retraining, a rerun is bit-identical, a run that saved its
//! ticket does not search again, and the prune-after-training search is shared across densities.

mod common;

use common::Crashing;

use std::sync::Arc;

use lottery_core::backend::default_device;
use lottery_core::config::{LrSchedule, TrainSection};
use lottery_core::plugin::{DensityOf, find_pruner};
use lottery_core::{MaskSet, MetricRow, ParamValues, PrunableRule, PruneError, PruneTarget};
use lottery_data::{ImageShape, synthetic};
use lottery_models::arch::Plan;
use lottery_models::channel_masks::{ChannelKeep, expand};
use lottery_models::{Architecture, InputShape};
use lottery_train::{Checkpoints, ImageTask};

/// A VGG-style net with batch norm on generated 8×8 images: 4 steps an epoch, 6 epochs.
fn task() -> ImageTask {
    task_saving(vec![])
}

/// [`task`], keeping its weights at the `checkpoints` steps.
fn task_saving(checkpoints: Vec<usize>) -> ImageTask {
    let arch = Architecture::ConvNet {
        plan: vec![Plan::Conv(8), Plan::Pool, Plan::Conv(12), Plan::Conv(12)],
        hidden: vec![],
        batch_norm: true,
        global_pool: true,
    };
    let train = TrainSection {
        epochs: 6,
        lr: 0.1,
        momentum: 0.9,
        lr_schedule: LrSchedule::Constant,
        checkpoints,
        ..TrainSection::default()
    };
    common::small_task(arch, train)
}

fn early_bird(
    target: &mut dyn PruneTarget,
    density: f64,
    options: &str,
    work_dir: Option<std::path::PathBuf>,
) -> Result<MaskSet, PruneError> {
    common::run_method("early-bird", target, density, options, work_dir)
}

fn rows<'a>(rows: &'a [MetricRow], metric: &str) -> Vec<&'a MetricRow> {
    rows.iter()
        .filter(|r| r.split == "early-bird" && r.metric == metric)
        .collect()
}

fn value(all: &[MetricRow], metric: &str) -> f64 {
    let r = rows(all, metric);
    assert_eq!(r.len(), 1, "{metric}");
    r[0].value
}

fn prunable_template(t: &ImageTask) -> MaskSet {
    let rule = PrunableRule::default();
    let p: Vec<_> = t.params().into_iter().filter(|p| rule.admits(p)).collect();
    MaskSet::dense(p.iter().map(|p| (p.name.as_str(), p.shape.as_slice())))
}

/// The channel mask behind a weight mask: a channel is kept if anything of its producing conv row
/// is (the row's inputs from pruned channels are pruned too).
fn channels_of(t: &ImageTask, mask: &MaskSet) -> ChannelKeep {
    t.channel_groups()
        .unwrap()
        .iter()
        .map(|g| {
            let producer = &g.gates[0].param;
            let m = mask.get(producer).unwrap();
            let row = m.numel() / g.channels;
            let flags = (0..g.channels)
                .map(|c| m.keep[c * row..(c + 1) * row].iter().any(|&k| k))
                .collect();
            (g.scale.clone(), flags)
        })
        .collect()
}

#[test]
fn the_ticket_keeps_its_channels_exactly_and_retrains_from_the_smaller_network() {
    lottery_plugins::link();
    assert_eq!(
        find_pruner("early-bird").unwrap().density_of,
        DensityOf::Channels
    );
    let mut t = task();
    // ε = 1 fires as soon as the window is full: the initial mask and epochs 1..=2 (window 3).
    let mask = early_bird(&mut t, 0.5, "window = 3\nepsilon = 1.0", None).unwrap();
    let keep = channels_of(&t, &mask);
    let kept: usize = keep.values().flatten().filter(|&&k| k).count();
    assert_eq!(kept, 16, "half of 32 channels");
    assert_eq!(
        expand(&t.channel_groups().unwrap(), &keep, &prunable_template(&t)).unwrap(),
        mask
    );
    let all = PruneTarget::metrics(&t);
    assert_eq!(value(&all, "drawn-epoch"), 2.0);
    assert_eq!(value(&all, "detected"), 1.0);
    assert_eq!(value(&all, "channel-density"), 0.5);
    assert!(value(&all, "flops") < value(&all, "flops-dense"));
    assert!(value(&all, "params") < value(&all, "params-dense"));
    // Distances after epochs 1 and 2 to every earlier mask (the matrix), max once the window is full.
    assert_eq!(rows(&all, "distance-previous").len(), 2);
    assert_eq!(rows(&all, "distance/e000").len(), 2);
    assert_eq!(rows(&all, "distance/e001").len(), 1);
    assert_eq!(rows(&all, "distance-max").len(), 1);
    // The search trained under the penalty with phase `search`; the clock now sits at the draw,
    // the weights are the smaller network's fresh initialisation.
    assert!(all.iter().any(|r| r.phase == "search" && r.split == "test"));
    assert_eq!(t.clock().step, 2 * 4);
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    let fresh = t.fresh_channel_values(11 ^ 0x00EB_00EB, &keep).unwrap();
    assert_eq!(t.values(&names).unwrap(), fresh);

    // Retraining keeps pruned weights at zero.
    let end = t.clock().run_steps;
    t.train_until(&mask, end, &mut |_| {}).unwrap();
    let v = t.values(&names).unwrap();
    for (name, m) in mask.iter() {
        for (k, x) in m.keep.iter().zip(&v[name].values) {
            if !k {
                assert_eq!(*x, 0.0, "{name}");
            }
        }
    }
}

#[test]
fn the_detector_draws_when_its_distance_rows_say_and_reruns_are_bit_identical() {
    let opts = "window = 3\nepsilon = 0.2\nretrain_from = \"keep\"";
    let mut a = task();
    let ma = early_bird(&mut a, 0.4, opts, None).unwrap();
    let rows_a = PruneTarget::metrics(&a);
    let drawn = value(&rows_a, "drawn-epoch");
    let detected = value(&rows_a, "detected") == 1.0;
    // The first epoch whose max distance is within ε is the drawn one.
    let first = rows(&rows_a, "distance-max")
        .into_iter()
        .find(|r| r.value <= 0.2)
        .map(|r| r.epoch as f64);
    // Here the window's distances go 0.5 after epoch 2, then under ε: drawn at epoch 3.
    assert!(detected);
    assert_eq!(first, Some(drawn));
    assert!(rows(&rows_a, "distance-max").iter().any(|r| r.value > 0.2));
    let mut b = task();
    let mb = early_bird(&mut b, 0.4, opts, None).unwrap();
    assert_eq!(ma, mb);
    assert_eq!(rows_a, PruneTarget::metrics(&b));
    let names: Vec<String> = a.params().into_iter().map(|p| p.name).collect();
    assert_eq!(a.values(&names).unwrap(), b.values(&names).unwrap());
}

#[test]
fn a_saved_ticket_is_not_searched_again() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let opts = "window = 2\nepsilon = 1.0\nretrain_from = \"keep\"";
    // Weights kept at steps 0 and 4, before the draw at the end of epoch 2 (step 8).
    let mut first = task_saving(vec![0, 4]);
    let m1 = early_bird(&mut first, 0.5, opts, Some(work.clone())).unwrap();
    assert!(work.join("early-bird/ticket.safetensors").exists());
    assert_eq!(first.checkpoints().len(), 2);

    let mut again = task_saving(vec![0, 4]);
    let m2 = early_bird(&mut again, 0.5, opts, Some(work)).unwrap();
    assert_eq!(m1, m2);
    // Nothing was trained: the rows are the saved ones, the weights those at the draw.
    assert_eq!(PruneTarget::metrics(&first), PruneTarget::metrics(&again));
    let names: Vec<String> = first.params().into_iter().map(|p| p.name).collect();
    assert_eq!(first.values(&names).unwrap(), again.values(&names).unwrap());
    assert_eq!(again.clock().step, first.clock().step);
    assert!(
        again.checkpoints() == first.checkpoints(),
        "the search's checkpoints"
    );
}

/// Options under which a search can be stopped at epoch 2: the detector of the test above (it
/// draws at epoch 3), and the step clock (a mask every 3 steps, 4 steps an epoch) over 4 epochs.
const DETECTOR: &str = "window = 3\nepsilon = 0.2\nretrain_from = \"keep\"";
const STEP_CLOCK: &str =
    "detect_every = 3\ndraw = \"last\"\nmax_epochs = 4\nretrain_from = \"keep\"";
/// The epoch clock over 4 epochs, drawing at the end.
const EPOCH_LAST: &str = "draw = \"last\"\nmax_epochs = 4\nretrain_from = \"keep\"";

/// The folder of the training state saved at the end of `epoch` (4 steps an epoch).
fn state_of(work: &std::path::Path, epoch: usize) -> std::path::PathBuf {
    work.join(format!("early-bird/search/epoch-{:010}", epoch * 4))
}

/// A search crashed at the end of `epoch` (its training state saved there; the method heard of
/// that epoch or not), in `work`.
fn crash_search(work: &std::path::Path, opts: &str, epoch: usize, heard: bool) {
    let mut first = task();
    let mut crashing = Crashing {
        crash_after_epoch: Some((epoch, heard)),
        ..Crashing::new(&mut first)
    };
    let e = early_bird(&mut crashing, 0.4, opts, Some(work.to_path_buf())).unwrap_err();
    assert!(e.to_string().contains("simulated crash"), "{e}");
}

#[test]
fn a_search_crashed_at_an_epoch_end_resumes_there_and_draws_the_uninterrupted_ticket() {
    let cases = [
        (DETECTOR, 2, false),
        (DETECTOR, 2, true),
        (DETECTOR, 3, false), // the epoch of the draw: the replay draws it
        (STEP_CLOCK, 2, false),
        (STEP_CLOCK, 3, false), // step 12 is on the clock: its mask not yet saved
        (STEP_CLOCK, 3, true),
    ];
    for (opts, epoch, heard) in cases {
        let case = format!("{opts:?}, crashed after epoch {epoch}, heard: {heard}");
        let whole_dir = tempfile::tempdir().unwrap();
        let mut whole = task();
        let m_whole = early_bird(&mut whole, 0.4, opts, Some(whole_dir.path().to_path_buf()));
        let m_whole = m_whole.unwrap();
        // Saving changes nothing: a search without a work folder is the same.
        let mut unsaved = task();
        assert_eq!(early_bird(&mut unsaved, 0.4, opts, None).unwrap(), m_whole);
        assert_eq!(PruneTarget::metrics(&unsaved), PruneTarget::metrics(&whole));

        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        crash_search(&work, opts, epoch, heard);
        let search = work.join("early-bird/search");
        let masks = work.join("early-bird/scales.jsonl");
        let states: Vec<_> = std::fs::read_dir(&search).unwrap().collect();
        assert_eq!(states.len(), 1, "{case}");
        assert!(
            state_of(&work, epoch).exists(),
            "{case}: the state of epoch {epoch}"
        );
        assert!(masks.exists(), "{case}");

        let mut again = task();
        let mut watching = Crashing::new(&mut again);
        let m = early_bird(&mut watching, 0.4, opts, Some(work.clone())).unwrap();
        // The epochs before the restored one were replayed, not trained again.
        assert_eq!(watching.replayed, epoch - 1, "{case}");
        assert_eq!(m, m_whole, "{case}");
        assert_eq!(
            PruneTarget::metrics(&again),
            PruneTarget::metrics(&whole),
            "{case}"
        );
        let names: Vec<String> = whole.params().into_iter().map(|p| p.name).collect();
        assert_eq!(again.values(&names).unwrap(), whole.values(&names).unwrap());
        assert_eq!(again.clock().step, whole.clock().step, "{case}");
        // The ticket is saved: the search's progress is gone.
        assert!(!search.exists() && !masks.exists(), "{case}");
        assert!(
            work.join("early-bird/ticket.safetensors").exists(),
            "{case}"
        );
    }
}

/// A state older than the newest masks (saves are at most every `save_every`): the masks taken
/// after it are taken again, and the stale lines change nothing.
#[test]
fn masks_saved_after_the_restored_state_are_taken_again() {
    for opts in [EPOCH_LAST, STEP_CLOCK] {
        let mut whole = task();
        let m_whole = early_bird(&mut whole, 0.4, opts, None).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        crash_search(&work, opts, 2, true);
        let kept = dir.path().join("epoch-2");
        std::fs::create_dir(&kept).unwrap();
        for file in std::fs::read_dir(state_of(&work, 2)).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), kept.join(file.file_name())).unwrap();
        }
        // Resumed, it trains on from epoch 2 to the end of epoch 3, taking the masks of epoch 3
        // (of steps 9 and 12 under the step clock); then the state of epoch 2 is the latest again.
        crash_search(&work, opts, 3, true);
        std::fs::remove_dir_all(state_of(&work, 3)).unwrap();
        std::fs::rename(&kept, state_of(&work, 2)).unwrap();

        let mut again = task();
        let mut watching = Crashing::new(&mut again);
        let m = early_bird(&mut watching, 0.4, opts, Some(work)).unwrap();
        assert_eq!(watching.replayed, 1, "{opts:?}");
        assert_eq!(m, m_whole, "{opts:?}");
        assert_eq!(
            PruneTarget::metrics(&again),
            PruneTarget::metrics(&whole),
            "{opts:?}"
        );
    }
}

#[test]
fn a_resumed_search_without_its_masks_stops_as_damaged_progress() {
    for damage in ["garbage", "missing"] {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        crash_search(&work, DETECTOR, 2, true);
        let masks = work.join("early-bird/scales.jsonl");
        if damage == "missing" {
            std::fs::remove_file(&masks).unwrap();
        } else {
            let text = std::fs::read_to_string(&masks).unwrap();
            std::fs::write(&masks, format!("garbage\n{text}")).unwrap();
        }
        match early_bird(&mut task(), 0.4, DETECTOR, Some(work)) {
            Err(PruneError::DamagedProgress { path, why }) => {
                assert!(
                    path.ends_with("scales.jsonl"),
                    "{damage}: {}",
                    path.display()
                );
                assert!(
                    why.contains("line 1") || why.contains("step 4"),
                    "{damage}: {why}"
                );
            }
            other => panic!("{damage}: {other:?}"),
        }
    }
}

#[test]
fn draw_last_trains_the_whole_budget_and_a_net_without_batch_norm_is_refused() {
    let mut t = task();
    early_bird(
        &mut t,
        0.5,
        "draw = \"last\"\nmax_epochs = 3\nretrain_from = \"keep\"",
        None,
    )
    .unwrap();
    assert_eq!(value(&PruneTarget::metrics(&t), "drawn-epoch"), 3.0);
    assert_eq!(t.clock().step, 3 * 4);

    let e = early_bird(&mut task(), 0.5, "draw = \"last\"", None).unwrap_err();
    assert!(e.to_string().contains("retrain_clock"), "{e}");

    let shape = ImageShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let data = synthetic::generate(5, shape, 4, 32, 16, 0.5);
    let input = InputShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    let mlp = Architecture::Mlp { hidden: vec![8] }.build(input, 4, &default_device());
    let mut plain = ImageTask::new(
        mlp,
        Arc::new(data),
        TrainSection::default(),
        16,
        false,
        0,
        default_device(),
    );
    let e = early_bird(&mut plain, 0.5, "", None).unwrap_err();
    assert!(e.to_string().contains("batch norm"), "{e}");
}

/// What a pruned target ends with: the mask, the rows, the weights and the clock.
fn outcome(t: &ImageTask, mask: MaskSet) -> Outcome {
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    (
        mask,
        PruneTarget::metrics(t),
        t.values(&names).unwrap(),
        t.clock().step,
        t.checkpoints().clone(),
    )
}

type Outcome = (MaskSet, Vec<MetricRow>, ParamValues, usize, Checkpoints);

/// Asserts two outcomes equal, naming the first part that differs (and the first differing row).
fn assert_same(a: &Outcome, b: &Outcome, what: &str) {
    assert!(a.0 == b.0, "{what}: the masks differ");
    if a.1 != b.1 {
        let n = a.1.len().min(b.1.len());
        let i = (0..n).find(|&i| a.1[i] != b.1[i]).unwrap_or(n);
        panic!(
            "{what}: the rows differ ({} vs {}), first at {i}: {:?} vs {:?}",
            a.1.len(),
            b.1.len(),
            a.1.get(i),
            b.1.get(i)
        );
    }
    for (name, t) in &a.2 {
        assert!(
            b.2.get(name) == Some(t),
            "{what}: the weights of {name} differ"
        );
    }
    assert_eq!(a.2.len(), b.2.len(), "{what}: weights");
    assert_eq!(a.3, b.3, "{what}: the clock");
    let steps = |o: &Outcome| o.4.keys().copied().collect::<Vec<_>>();
    assert_eq!(steps(a), steps(b), "{what}: the checkpoints' steps");
    assert!(a.4 == b.4, "{what}: the checkpoints' weights");
}

/// A run of `early-bird` at `density` with `options`, its work folder in `dir` and sharing
/// `shared` (if any), on a target allowed `trainings` training calls.
fn shared_run(
    density: f64,
    options: &str,
    dir: &std::path::Path,
    shared: Option<&std::path::Path>,
    trainings: usize,
) -> Result<Outcome, PruneError> {
    // Weights kept at steps the search trains through (it ends at step 16 or 12).
    let mut t = task_saving(vec![0, 8]);
    let mut limited = Crashing {
        trainings_left: trainings,
        ..Crashing::new(&mut t)
    };
    let work = dir.join(format!("work-{density}"));
    let mask = common::run_method_sharing(
        "early-bird",
        &mut limited,
        density,
        options,
        Some(work),
        shared.map(std::path::Path::to_path_buf),
    )?;
    Ok(outcome(&t, mask))
}

// The prune-after-training baseline's search does not depend on the density: the runs of other
// densities read it from the shared folder without training, and each ends as if it had searched
// alone (mask, rows, weights, clock), under the epoch and the step clock, retraining from a fresh
// initialisation or from the searched weights.
#[test]
fn draw_last_searches_once_for_every_density_and_each_density_ends_as_if_alone() {
    for opts in [
        EPOCH_LAST,
        STEP_CLOCK,
        "draw = \"last\"\nmax_epochs = 3\nretrain_clock = \"zero\"",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let first = shared_run(0.4, opts, dir.path(), Some(&shared), usize::MAX).unwrap();
        assert!(
            shared.join("early-bird/record.safetensors").exists(),
            "{opts:?}"
        );
        // The search's progress is gone once it is recorded; the lock file stays.
        assert!(!shared.join("early-bird/search").exists(), "{opts:?}");
        assert!(!shared.join("early-bird/scales.jsonl").exists(), "{opts:?}");
        // No training call is allowed: the record serves.
        let second = shared_run(0.6, opts, dir.path(), Some(&shared), 0).unwrap();
        let again = shared_run(0.4, opts, &dir.path().join("b"), Some(&shared), 0).unwrap();
        assert_same(&again, &first, &format!("{opts:?}: rerun from the record"));

        let alone = tempfile::tempdir().unwrap();
        for (density, shared_result) in [(0.4, &first), (0.6, &second)] {
            let own = shared_run(density, opts, alone.path(), None, usize::MAX).unwrap();
            assert_same(
                shared_result,
                &own,
                &format!("{opts:?} at {density}, alone"),
            );
        }
        assert_ne!(
            first.0, second.0,
            "{opts:?}: the densities draw their own masks"
        );
    }
}

// The shared search of one density's run, crashed, is resumed by another density's run, which
// ends as if it had searched alone.
#[test]
fn a_shared_search_crashed_in_one_density_resumes_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let run = |target: &mut Crashing, density: f64| {
        common::run_method_sharing(
            "early-bird",
            target,
            density,
            EPOCH_LAST,
            Some(dir.path().join(format!("work-{density}"))),
            Some(shared.clone()),
        )
    };
    let mut t = task_saving(vec![0, 8]);
    let mut crashing = Crashing {
        crash_after_epoch: Some((2, true)),
        ..Crashing::new(&mut t)
    };
    let e = run(&mut crashing, 0.4).unwrap_err();
    assert!(e.to_string().contains("simulated crash"), "{e}");
    assert!(shared.join("early-bird/scales.jsonl").exists());
    assert!(!shared.join("early-bird/record.safetensors").exists());

    let mut again = task_saving(vec![0, 8]);
    let mut watching = Crashing::new(&mut again);
    let mask = run(&mut watching, 0.6).unwrap();
    assert_eq!(watching.replayed, 1, "epoch 1 replayed, epoch 2 restored");
    let resumed = outcome(&again, mask);
    let alone = tempfile::tempdir().unwrap();
    let own = shared_run(0.6, EPOCH_LAST, alone.path(), None, usize::MAX).unwrap();
    assert_same(&resumed, &own, "resumed in another density, alone");
}

// A shared record that does not load is moved aside and reported as damaged progress (the CLI
// then retries the run on a fresh network); the retry searches again and ends as if alone.
#[test]
fn a_damaged_shared_record_is_set_aside_and_the_retry_searches_again() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    shared_run(0.4, EPOCH_LAST, dir.path(), Some(&shared), usize::MAX).unwrap();
    let record = shared.join("early-bird/record.safetensors");
    std::fs::write(&record, b"not a record").unwrap();
    match shared_run(0.6, EPOCH_LAST, dir.path(), Some(&shared), usize::MAX) {
        Err(PruneError::DamagedProgress { path, .. }) => assert_eq!(path, record),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let aside: Vec<String> = std::fs::read_dir(&shared)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("early-bird.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged search is kept aside");
    assert!(!shared.join("early-bird").exists());
    let retried = shared_run(0.6, EPOCH_LAST, dir.path(), Some(&shared), usize::MAX).unwrap();
    assert!(record.exists(), "recorded again");
    let alone = tempfile::tempdir().unwrap();
    let own = shared_run(0.6, EPOCH_LAST, alone.path(), None, usize::MAX).unwrap();
    assert_same(&retried, &own, "searched again after the damage, alone");
}

#[test]
fn retraining_the_smaller_network_matches_retraining_the_masked_one() {
    let opts = "window = 2\nepsilon = 1.0\nretrain_from = \"keep\"";
    let mut small = task();
    let mask = early_bird(&mut small, 0.5, opts, None).unwrap();
    let mut masked = task();
    early_bird(&mut masked, 0.5, &format!("{opts}\nshrink = false"), None).unwrap();
    let names: Vec<String> = small.params().into_iter().map(|p| p.name).collect();
    assert_eq!(
        small.values(&names).unwrap(),
        masked.values(&names).unwrap()
    );

    let end = small.clock().step + 3;
    small.train_until(&mask, end, &mut |_| {}).unwrap();
    masked.train_until(&mask, end, &mut |_| {}).unwrap();
    let (a, b) = (
        small.values(&names).unwrap(),
        masked.values(&names).unwrap(),
    );
    // Every entry that acts on the output trained alike, up to summation order: kept weights,
    // and the biases and batch norm of kept channels. (A removed channel's batch norm acts on
    // nothing; the masked network still decays its statistics.)
    let keep = channels_of(&small, &mask);
    for name in &names {
        let m = mask.get(name);
        let channel = keep
            .iter()
            .find(|(scale, _)| {
                let layer = scale.trim_end_matches(".bn.weight");
                name.starts_with(&format!("{layer}.bn.")) || *name == format!("{layer}.conv.bias")
            })
            .map(|(_, flags)| flags);
        for (i, (x, y)) in a[name].values.iter().zip(&b[name].values).enumerate() {
            if m.is_some_and(|m| !m.keep[i]) {
                assert_eq!(*x, 0.0, "{name}[{i}] pruned");
            } else if channel.is_none_or(|flags| flags[i]) {
                assert!((x - y).abs() < 1e-3, "{name}[{i}]: {x} vs {y}");
            }
        }
    }
    let (_, acc_small) = PruneTarget::evaluate(&mut small, &mask).unwrap();
    let (_, acc_masked) = PruneTarget::evaluate(&mut masked, &mask).unwrap();
    assert!(
        (acc_small - acc_masked).abs() < 0.05,
        "{acc_small} vs {acc_masked}"
    );
}

#[test]
fn a_search_that_never_fires_takes_the_last_mask_and_retrains_a_whole_schedule() {
    // A window longer than the schedule never fills, so the detector cannot fire.
    let opts = "window = 8\nepsilon = 0.1";
    let mut t = task();
    let mask = early_bird(&mut t, 0.5, opts, None).unwrap();
    let all = PruneTarget::metrics(&t);
    assert_eq!(value(&all, "detected"), 0.0);
    assert_eq!(value(&all, "drawn-epoch"), 6.0);
    assert_eq!(value(&all, "retrain-start-epoch"), 0.0);
    // Retraining has the whole schedule (6 epochs of 4 steps), from step 0.
    assert_eq!(t.clock().step, 0);
    assert!(value(&all, "train-flops-ratio") > 1.0);
    // The ticket is the last mask of the search: exactly half the channels.
    let keep = channels_of(&t, &mask);
    let kept: usize = keep.values().flatten().filter(|&&k| k).count();
    let total: usize = keep.values().map(Vec::len).sum();
    assert_eq!(kept, total / 2);
}

#[test]
fn the_step_clock_draws_between_epoch_ends_and_retraining_resumes_at_that_step() {
    // Masks before training and after steps 3 and 6 (4 steps an epoch): ε = 1 fires once the
    // window of 3 is full, at step 6, half-way through epoch 2.
    let opts = "window = 3\nepsilon = 1.0\ndetect_every = 3";
    let mut t = task();
    let mask = early_bird(&mut t, 0.5, opts, None).unwrap();
    let all = PruneTarget::metrics(&t);
    assert_eq!(value(&all, "detected"), 1.0);
    assert_eq!(value(&all, "drawn-step"), 6.0);
    assert_eq!(value(&all, "drawn-epoch"), 1.5);
    assert_eq!(value(&all, "retrain-start-epoch"), 1.5);
    // The distance rows sit on the step clock: to the masks at steps 0 and 3, none at the epoch
    // end (step 4), none in epoch units.
    let steps = |metric: &str| -> Vec<u64> { rows(&all, metric).iter().map(|r| r.step).collect() };
    assert_eq!(steps("distance-previous"), vec![3, 6]);
    assert_eq!(steps("distance/s000000"), vec![3, 6]);
    assert_eq!(steps("distance/s000003"), vec![6]);
    assert_eq!(steps("distance-max"), vec![6]);
    assert!(rows(&all, "distance/e000").is_empty());
    // Retraining resumes the schedule at step 6, inside epoch 2, and runs to its end.
    assert_eq!(t.clock().step, 6);
    let end = t.clock().run_steps;
    let mut epochs = vec![];
    t.train_until(&mask, end, &mut |r| epochs.push((r.epoch, r.step)))
        .unwrap();
    assert_eq!(epochs.first(), Some(&(2, 8)));
    assert_eq!(epochs.last(), Some(&(6, 24)));
    let names: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    let v = t.values(&names).unwrap();
    for (name, m) in mask.iter() {
        for (k, x) in m.keep.iter().zip(&v[name].values) {
            if !k {
                assert_eq!(*x, 0.0, "{name}");
            }
        }
    }
}

#[test]
fn a_step_clock_of_one_epoch_is_the_epoch_clock() {
    // Four steps an epoch: `detect_every = 4` checks exactly at the epoch ends.
    let base = "window = 3\nepsilon = 0.2\nretrain_from = \"keep\"";
    let mut by_epoch = task();
    let m1 = early_bird(&mut by_epoch, 0.4, base, None).unwrap();
    let mut by_step = task();
    let m2 = early_bird(
        &mut by_step,
        0.4,
        &format!("{base}\ndetect_every = 4"),
        None,
    )
    .unwrap();
    assert_eq!(m1, m2);
    let (a, b) = (
        PruneTarget::metrics(&by_epoch),
        PruneTarget::metrics(&by_step),
    );
    // The same rows, the distance matrix's named by step (4·j) instead of epoch (j).
    let renamed: Vec<MetricRow> = a
        .iter()
        .cloned()
        .map(|mut r| {
            if let Some(j) = r.metric.strip_prefix("distance/e") {
                r.metric = format!("distance/s{:06}", 4 * j.parse::<usize>().unwrap());
            }
            r
        })
        .collect();
    assert_eq!(renamed, b);
    assert_eq!(by_epoch.clock().step, by_step.clock().step);
}

#[test]
fn watching_between_epoch_ends_leaves_training_alone_and_draw_last_takes_the_budget_end() {
    // Checks after steps 5 and 10; the budget (3 epochs) ends at step 12, off the step clock.
    let opts = "draw = \"last\"\nmax_epochs = 3\nretrain_from = \"keep\"";
    let mut stepped = task();
    let m1 = early_bird(
        &mut stepped,
        0.5,
        &format!("{opts}\ndetect_every = 5"),
        None,
    )
    .unwrap();
    let all = PruneTarget::metrics(&stepped);
    assert_eq!(value(&all, "drawn-step"), 12.0);
    assert_eq!(value(&all, "drawn-epoch"), 3.0);
    assert_eq!(rows(&all, "distance-previous").len(), 2);
    assert_eq!(stepped.clock().step, 12);
    // The same training as under the epoch clock: the same weights at the draw, the same mask
    // (the last one), the same training curve.
    let mut plain = task();
    let m2 = early_bird(&mut plain, 0.5, opts, None).unwrap();
    assert_eq!(m1, m2);
    let names: Vec<String> = plain.params().into_iter().map(|p| p.name).collect();
    assert_eq!(
        stepped.values(&names).unwrap(),
        plain.values(&names).unwrap()
    );
    let curve = |rows: &[MetricRow]| -> Vec<MetricRow> {
        rows.iter()
            .filter(|r| r.split == "test" || r.split == "train")
            .cloned()
            .collect()
    };
    assert_eq!(curve(&all), curve(&PruneTarget::metrics(&plain)));
}

/// The epoch clock drawing early (a window of 3 masks within 0.2), keeping the drawn weights.
const EPOCH_EARLY: &str = "window = 3\nepsilon = 0.2\nretrain_from = \"keep\"";
/// The step clock drawing early (a mask every 3 steps, a window of 3 within 0.3).
const STEP_EARLY: &str = "window = 3\nepsilon = 0.3\ndetect_every = 3";

fn announce(shared: &std::path::Path, densities: &[f64]) {
    for &d in densities {
        let density = lottery_core::Density::new(d).unwrap();
        lottery_core::shared_folder::announce_density(shared, density).unwrap();
    }
}

fn drawn_step(o: &Outcome) -> usize {
    value(&o.1, "drawn-step") as usize
}

/// The weights a shared early search kept at a draw's step.
fn kept_at(shared: &std::path::Path, step: usize) -> std::path::PathBuf {
    shared.join(format!("early-bird/at/{step:08}.safetensors"))
}

// As the reference trains one network with a detector per pruning ratio, the early-drawing search
// is trained once for the densities announced in the shared folder: the first run trains on until
// each has drawn (the densities here draw at different steps), the others train nothing, and
// every density ends as if it had searched alone (mask, rows, weights, clock, checkpoints), on the
// epoch and the step clock, keeping the drawn weights or re-initialising.
#[test]
fn draw_early_trains_one_search_for_the_announced_densities_and_each_ends_as_if_alone() {
    let step_keep = format!("{STEP_EARLY}\nretrain_from = \"keep\"");
    for opts in [
        EPOCH_EARLY,
        STEP_EARLY,
        &step_keep,
        "window = 3\nepsilon = 0.2",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let densities = [0.3, 0.5, 0.7];
        announce(&shared, &densities);
        let first = shared_run(0.5, opts, dir.path(), Some(&shared), usize::MAX).unwrap();
        let mut outcomes = vec![];
        for d in densities {
            let o = if d == 0.5 {
                first.clone()
            } else {
                // No training call is allowed: the first run's search drew for them too.
                shared_run(d, opts, dir.path(), Some(&shared), 0).unwrap()
            };
            outcomes.push(o);
        }
        let alone = tempfile::tempdir().unwrap();
        for (d, shared_result) in densities.iter().zip(&outcomes) {
            let own = shared_run(*d, opts, alone.path(), None, usize::MAX).unwrap();
            assert_same(shared_result, &own, &format!("{opts:?} at {d}, alone"));
            assert!(kept_at(&shared, drawn_step(&own)).exists(), "{opts:?}");
        }
        let steps: std::collections::BTreeSet<usize> = outcomes.iter().map(drawn_step).collect();
        assert!(
            steps.len() > 1,
            "{opts:?}: the densities draw at different steps ({steps:?}), so the search trained past a draw"
        );
        // A rerun of a density reads its draw again.
        let again = shared_run(0.3, opts, &dir.path().join("b"), Some(&shared), 0).unwrap();
        assert_same(
            &again,
            &outcomes[0],
            &format!("{opts:?}: rerun from the record"),
        );
    }
}

// Densities that were not announced are served as their runs come: a run whose draw lies past
// where the shared search stopped trains it on from its saved state; a run whose draw the search
// passed without keeping it searches alone. Either way each ends as if it had searched alone.
#[test]
fn a_density_announced_late_trains_the_shared_search_on_or_searches_alone() {
    let alone = tempfile::tempdir().unwrap();
    let own: Vec<(f64, Outcome)> = [0.3, 0.5, 0.7]
        .into_iter()
        .map(|d| {
            let o = shared_run(d, EPOCH_EARLY, alone.path(), None, usize::MAX).unwrap();
            (d, o)
        })
        .collect();
    let mut by_step = own.clone();
    by_step.sort_by_key(|(_, o)| drawn_step(o));
    let (earliest, latest) = (&by_step[0], &by_step[2]);
    assert!(
        drawn_step(&earliest.1) < drawn_step(&latest.1),
        "the densities draw at different steps"
    );
    // The middle one first, then the latest (trained on), then the earliest (passed: alone).
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    for (d, o) in [&by_step[1], latest, earliest] {
        let run = shared_run(*d, EPOCH_EARLY, dir.path(), Some(&shared), usize::MAX).unwrap();
        assert_same(&run, o, &format!("at {d}, alone"));
    }
    assert!(kept_at(&shared, drawn_step(&latest.1)).exists());
    assert!(!kept_at(&shared, drawn_step(&earliest.1)).exists());
}

// A shared early search crashed in one density's run is resumed by another density's run; every
// density then ends as if it had searched alone.
#[test]
fn a_shared_early_search_crashed_in_one_density_resumes_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    announce(&shared, &[0.3, 0.5, 0.7]);
    let mut t = task_saving(vec![0, 8]);
    // After epoch 1, before any draw (a window of 3 masks is full after epoch 2).
    let mut crashing = Crashing {
        crash_after_epoch: Some((1, true)),
        ..Crashing::new(&mut t)
    };
    let e = common::run_method_sharing(
        "early-bird",
        &mut crashing,
        0.5,
        EPOCH_EARLY,
        Some(dir.path().join("work-0.5")),
        Some(shared.clone()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("simulated crash"), "{e}");
    assert!(shared.join("early-bird/scales.jsonl").exists());

    let resumed = shared_run(0.3, EPOCH_EARLY, dir.path(), Some(&shared), usize::MAX).unwrap();
    let alone = tempfile::tempdir().unwrap();
    let own = shared_run(0.3, EPOCH_EARLY, alone.path(), None, usize::MAX).unwrap();
    assert_same(&resumed, &own, "resumed in another density, alone");
    for d in [0.5, 0.7] {
        let read = shared_run(d, EPOCH_EARLY, dir.path(), Some(&shared), 0).unwrap();
        let own = shared_run(d, EPOCH_EARLY, alone.path(), None, usize::MAX).unwrap();
        assert_same(&read, &own, &format!("at {d} after the resume, alone"));
    }
}

// The shared search failing after a density's draw does not fail that density's run (alone it
// would have stopped at its draw): its run ends as alone, the draw is recorded, and a density still
// waiting trains the search on from its saved state and ends as alone too.
#[test]
fn a_shared_early_search_failing_after_a_draw_keeps_that_draw() {
    let alone = tempfile::tempdir().unwrap();
    let mut own: Vec<(f64, Outcome)> = [0.3, 0.5, 0.7]
        .into_iter()
        .map(|d| {
            let o = shared_run(d, EPOCH_EARLY, alone.path(), None, usize::MAX).unwrap();
            (d, o)
        })
        .collect();
    own.sort_by_key(|(_, o)| drawn_step(o));
    let (earliest, latest) = (&own[0], &own[2]);
    // 4 steps an epoch: crash at the end of the epoch of the earliest draw, after its check.
    let crash_epoch = drawn_step(&earliest.1) / 4;
    assert!(
        drawn_step(&latest.1) / 4 > crash_epoch,
        "draws at different epochs"
    );
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    announce(&shared, &[0.3, 0.5, 0.7]);
    let mut t = task_saving(vec![0, 8]);
    let mut crashing = Crashing {
        crash_after_epoch: Some((crash_epoch, true)),
        ..Crashing::new(&mut t)
    };
    let mask = common::run_method_sharing(
        "early-bird",
        &mut crashing,
        earliest.0,
        EPOCH_EARLY,
        Some(dir.path().join(format!("work-{}", earliest.0))),
        Some(shared.clone()),
    )
    .unwrap();
    assert_same(
        &outcome(&t, mask),
        &earliest.1,
        "drawn before the failure, alone",
    );
    let resumed = shared_run(latest.0, EPOCH_EARLY, dir.path(), Some(&shared), usize::MAX).unwrap();
    assert_same(&resumed, &latest.1, "drawn after the failure, alone");
}
