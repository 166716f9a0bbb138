//! Saved progress that does not load: IMP and UGS set a damaged level's (round's) file aside and
//! resume from the one before it, ending as the uninterrupted run; a file nothing earlier can
//! replace (IMP's rewind point, Gem-Miner's state, Early-Bird's ticket) is reported as
//! [`PruneError::DamagedProgress`] naming it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Crashing, run_method, small_task};
use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::{MaskSet, PruneError, PruneTarget};
use lottery_gcn::GcnTask;
use lottery_models::Architecture;
use lottery_models::arch::Plan;
use lottery_train::ImageTask;

/// What a crash while writing leaves (its first bytes read as an absurd header length).
fn damage(path: &Path) {
    assert!(path.exists(), "{} was saved", path.display());
    std::fs::write(path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
}

/// The copies of `path` set aside (`<file>.damaged-<unix seconds>`), holding the damaged bytes.
fn set_aside(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.damaged-", path.file_name().unwrap().to_string_lossy());
    let aside: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    for p in &aside {
        let bytes = std::fs::read(p).unwrap();
        assert!(bytes.ends_with(b"garbage"), "{}", p.display());
    }
    aside
}

/// The error is `DamagedProgress` naming `path`.
fn assert_damaged(e: PruneError, path: &Path) {
    let text = e.to_string();
    match e {
        PruneError::DamagedProgress { path: named, .. } => assert_eq!(named, path, "{text}"),
        other => panic!("not DamagedProgress: {other:?}"),
    }
    assert!(
        text.starts_with(&format!(
            "saved progress {} does not load: ",
            path.display()
        )),
        "{text}"
    );
}

fn names(t: &ImageTask) -> Vec<String> {
    t.params().into_iter().map(|p| p.name).collect()
}

/// IMP's task: a small conv net with batch norm, 4 steps an epoch, 2 epochs a training.
fn imp_task() -> ImageTask {
    let arch = Architecture::ConvNet {
        plan: vec![Plan::Conv(8), Plan::Pool, Plan::Conv(8)],
        hidden: vec![16],
        batch_norm: true,
        global_pool: false,
    };
    let train = TrainSection {
        epochs: 2,
        lr: 0.05,
        ..TrainSection::default()
    };
    small_task(arch, train)
}

/// Three levels (0.5, 0.25, then 0.2); trainings: θ_k, level 0, level 1, level 2.
const IMP: &str = "rate = 0.5\nrewind_step = 2";

/// Runs IMP on a fresh task in `work`; returns the mask, the task and the trainings it ran.
fn imp_run(work: &Path) -> (Result<MaskSet, PruneError>, ImageTask, usize) {
    let mut t = imp_task();
    let mut counting = Crashing::new(&mut t);
    let out = run_method("imp", &mut counting, 0.2, IMP, Some(work.to_path_buf()));
    let trainings = usize::MAX - counting.trainings_left;
    (out, t, trainings)
}

#[test]
fn imp_resumes_from_the_level_before_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let imp = work.join("imp");
    let (whole, whole_task, trainings) = imp_run(&work);
    let whole = whole.unwrap();
    assert_eq!(trainings, 4);
    let whole_values = whole_task.values(&names(&whole_task)).unwrap();
    let whole_rows = PruneTarget::metrics(&whole_task);

    // The last level's file damaged, the run not finished: level 2 is trained again.
    std::fs::remove_file(imp.join("final.safetensors")).unwrap();
    let level3 = imp.join("level-003.safetensors");
    damage(&level3);
    let (mask, t, trainings) = imp_run(&work);
    assert_eq!(mask.unwrap(), whole);
    assert_eq!(trainings, 1, "only level 2 trains again");
    assert_eq!(t.values(&names(&t)).unwrap(), whole_values);
    assert_eq!(PruneTarget::metrics(&t), whole_rows);
    assert_eq!(set_aside(&level3).len(), 1, "the damaged file is set aside");
    assert!(
        lottery_core::progress::load_mask_progress(&level3).is_ok(),
        "level 3 saved again"
    );

    // The finished run's file damaged: level 3's file finishes it, nothing trains.
    let last = imp.join("final.safetensors");
    damage(&last);
    let (mask, t, trainings) = imp_run(&work);
    assert_eq!(mask.unwrap(), whole);
    assert_eq!(trainings, 0);
    assert_eq!(PruneTarget::metrics(&t), whole_rows);
    assert_eq!(set_aside(&last).len(), 1);

    // Every level damaged: the run starts over and ends the same.
    for r in 1..=3 {
        damage(&imp.join(format!("level-{r:03}.safetensors")));
    }
    damage(&last);
    let (mask, t, trainings) = imp_run(&work);
    assert_eq!(mask.unwrap(), whole);
    assert_eq!(trainings, 4);
    assert_eq!(PruneTarget::metrics(&t), whole_rows);
    assert_eq!(
        set_aside(&last).len(),
        2,
        "the file damaged before is kept beside the one damaged now"
    );
}

#[test]
fn imp_with_a_damaged_rewind_point_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let (whole, _, _) = imp_run(&work);
    whole.unwrap();
    let rewind = work.join("imp/rewind.safetensors");
    damage(&rewind);
    let (out, _, trainings) = imp_run(&work);
    assert_damaged(out.unwrap_err(), &rewind);
    assert_eq!(trainings, 0);
}

#[test]
fn gem_miner_with_a_damaged_state_reports_it() {
    let task = || {
        small_task(
            Architecture::Mlp {
                hidden: vec![32, 16],
            },
            TrainSection {
                epochs: 2,
                ..TrainSection::default()
            },
        )
    };
    let options = "epochs = 4\niter_period = 2";
    let dir = tempfile::tempdir().unwrap();
    let work = Some(dir.path().to_path_buf());
    let mut first = task();
    run_method("gem-miner", &mut first, 0.2, options, work.clone()).unwrap();
    let state = dir.path().join("gem-miner/state.safetensors");
    damage(&state);
    let mut second = task();
    let e = run_method("gem-miner", &mut second, 0.2, options, work).unwrap_err();
    assert_damaged(e, &state);
}

#[test]
fn early_bird_with_a_damaged_ticket_reports_it() {
    let task = || {
        let arch = Architecture::ConvNet {
            plan: vec![Plan::Conv(8), Plan::Pool, Plan::Conv(12)],
            hidden: vec![],
            batch_norm: true,
            global_pool: true,
        };
        let train = TrainSection {
            epochs: 3,
            lr: 0.1,
            momentum: 0.9,
            lr_schedule: LrSchedule::Constant,
            ..TrainSection::default()
        };
        small_task(arch, train)
    };
    let options = "window = 2\nepsilon = 1.0\nretrain_from = \"keep\"";
    let dir = tempfile::tempdir().unwrap();
    let work = Some(dir.path().to_path_buf());
    let mut first = task();
    run_method("early-bird", &mut first, 0.5, options, work.clone()).unwrap();
    let ticket = dir.path().join("early-bird/ticket.safetensors");
    damage(&ticket);
    let mut second = task();
    let e = run_method("early-bird", &mut second, 0.5, options, work).unwrap_err();
    assert_damaged(e, &ticket);
}

#[test]
fn ugs_resumes_from_the_round_before_a_damaged_one() {
    let gcn = || {
        let train = TrainSection {
            epochs: 20,
            optimizer: OptimizerKind::Adam,
            lr: 0.01,
            weight_decay: 5e-4,
            ..Default::default()
        };
        GcnTask::new(Arc::new(lottery_data::graph::small_sbm()), 16, train, 2)
    };
    let dir = tempfile::tempdir().unwrap();
    let work = Some(dir.path().to_path_buf());
    let options = "epochs = 10";
    let density = 0.64; // two rounds of 20 %
    let mut first = gcn();
    let whole = run_method("ugs", &mut first, density, options, work.clone()).unwrap();
    let round2 = dir.path().join("ugs/round-002.safetensors");
    damage(&round2);
    let mut again = gcn();
    let resumed = run_method("ugs", &mut again, density, options, work).unwrap();
    assert_eq!(resumed, whole);
    assert_eq!(PruneTarget::metrics(&again), PruneTarget::metrics(&first));
    assert_eq!(set_aside(&round2).len(), 1);
}
