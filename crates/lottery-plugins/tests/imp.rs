//! IMP against its definition on a real (small) training task: the density of level r is
//! (1 − p)^r exactly, survivors rewind to θ₀ or θ_k bit for bit, pruned weights stay zero through
//! training, and a run interrupted mid-way resumes to the same result as one that never stopped.

mod common;

use common::Crashing;

use lottery_core::config::TrainSection;
use lottery_core::{Density, MaskSet, MetricRow, PrunableRule, PruneError, PruneTarget};
use lottery_models::Architecture;
use lottery_models::arch::Plan;
use lottery_train::ImageTask;

/// A small conv net with batch norm (so buffers rewind too) on generated 8×8 images: 4 steps an
/// epoch, 2 epochs a training.
fn task() -> ImageTask {
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
    common::small_task(arch, train)
}

fn imp(
    target: &mut dyn PruneTarget,
    density: f64,
    options: &str,
    work_dir: Option<std::path::PathBuf>,
) -> Result<MaskSet, PruneError> {
    common::run_method("imp", target, density, options, work_dir)
}

fn level_rows(rows: &[MetricRow], phase: &str, metric: &str) -> Vec<(u64, f64)> {
    rows.iter()
        .filter(|r| r.split == "level" && r.phase == phase && r.metric == metric)
        .map(|r| (r.round, r.value))
        .collect()
}

fn prunable(t: &ImageTask) -> Vec<String> {
    let rule = PrunableRule::default();
    let mut n: Vec<String> = t
        .params()
        .into_iter()
        .filter(|p| rule.admits(p))
        .map(|p| p.name)
        .collect();
    n.sort();
    n
}

fn all_names(t: &ImageTask) -> Vec<String> {
    t.params().into_iter().map(|p| p.name).collect()
}

#[test]
fn level_densities_follow_the_rate_exactly_and_survivors_rewind_to_theta_0() {
    let mut t = task();
    let names = all_names(&t);
    let theta_0 = t.values(&names).unwrap();
    let mask = imp(&mut t, 0.3, "rate = 0.25", None).unwrap();

    let total: usize = mask.numel();
    let rows = t.metrics();
    let densities = level_rows(rows, "ticket", "density");
    // 0.75^4 = 0.316 > 0.3 >= 0.75^5: five levels, the last one at the target; the final ticket's
    // own training (level 5) belongs to the run, not to the method.
    assert_eq!(densities.len(), 5);
    for (r, d) in &densities {
        let kept = Density::new(0.75f64.powi(*r as i32))
            .unwrap()
            .keep_count(total);
        assert_eq!(*d, kept as f64 / total as f64, "level {r}");
    }
    assert_eq!(mask.kept(), Density::new(0.3).unwrap().keep_count(total));
    assert_eq!(level_rows(rows, "ticket", "accuracy").len(), 5);

    // Survivors (and every unprunable parameter and buffer) are θ₀ bit for bit, the clock at 0.
    assert_eq!(t.clock().step, 0);
    let now = t.values(&names).unwrap();
    for name in &names {
        let (a, b) = (&now[name].values, &theta_0[name].values);
        match mask.get(name) {
            Some(m) => {
                for (i, keep) in m.keep.iter().enumerate() {
                    if *keep {
                        assert_eq!(a[i].to_bits(), b[i].to_bits(), "{name}[{i}]");
                    }
                }
            }
            None => assert_eq!(a, b, "{name}"),
        }
    }

    // Pruned weights stay exactly zero through the ticket's training.
    let end = t.clock().run_steps;
    t.train_until(&mask, end, &mut |_| {}).unwrap();
    let trained = t.values(&prunable(&t)).unwrap();
    for (name, m) in mask.iter() {
        for (i, keep) in m.keep.iter().enumerate() {
            if !keep {
                assert_eq!(trained[name].values[i], 0.0, "{name}[{i}]");
            }
        }
    }
}

#[test]
fn rewinding_to_step_k_restores_theta_k_and_the_clock() {
    let k = 3; // inside the first epoch (4 steps an epoch)
    let mut reference = task();
    let dense = MaskSet::dense(
        prunable(&reference)
            .iter()
            .map(|n| {
                let p = reference
                    .params()
                    .into_iter()
                    .find(|p| &p.name == n)
                    .unwrap();
                (n.clone(), p.shape)
            })
            .collect::<Vec<_>>()
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice())),
    );
    reference.train_until(&dense, k, &mut |_| {}).unwrap();
    let names = all_names(&reference);
    let theta_k = reference.values(&names).unwrap();

    let mut t = task();
    let mask = imp(&mut t, 0.5, "rewind_step = 3", None).unwrap();
    assert_eq!(t.clock().step, k);
    let now = t.values(&names).unwrap();
    for name in &names {
        let keep = mask.get(name).map(|m| m.keep.clone());
        for (i, (a, b)) in now[name]
            .values
            .iter()
            .zip(&theta_k[name].values)
            .enumerate()
        {
            if keep.as_ref().is_none_or(|k| k[i]) {
                assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}]");
            }
        }
    }
}

#[test]
fn rewind_step_past_the_schedule_is_refused() {
    let mut t = task();
    let e = imp(&mut t, 0.5, "rewind_step = 1000", None).unwrap_err();
    assert!(e.to_string().contains("rewind_step = 1000"), "{e}");
}

#[test]
fn an_interrupted_run_resumes_to_the_uninterrupted_result() {
    let options = "rate = 0.5\nrewind_step = 2\ncontrols = [\"reinit\", \"random-mask\"]";
    let names = |t: &ImageTask| all_names(t);

    let mut whole = task();
    let whole_mask = imp(&mut whole, 0.2, options, None).unwrap();
    let whole_values = whole.values(&names(&whole)).unwrap();
    let whole_rows = PruneTarget::metrics(&whole);
    // Three levels (0.5, 0.25, then 0.2), controls at levels 1, 2 and 3.
    assert_eq!(level_rows(&whole_rows, "reinit", "accuracy").len(), 3);
    assert_eq!(level_rows(&whole_rows, "random-mask", "density").len(), 3);

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    // Crash in the middle of level 2 (trainings: θ_k, level 0, level 1 + 2 controls, level 2).
    {
        let mut first = task();
        let mut crashing = Crashing {
            trainings_left: 5,
            ..Crashing::new(&mut first)
        };
        let e = imp(&mut crashing, 0.2, options, Some(work.clone())).unwrap_err();
        assert!(e.to_string().contains("simulated crash"));
    }
    assert!(work.join("imp/level-002.safetensors").exists());
    assert!(!work.join("imp/level-003.safetensors").exists());

    // A fresh process: level 2 onward is recomputed, levels 0 and 1 are not.
    let mut second = task();
    let mut counting = Crashing::new(&mut second);
    let mask = imp(&mut counting, 0.2, options, Some(work.clone())).unwrap();
    let trainings = usize::MAX - counting.trainings_left;
    assert_eq!(
        trainings,
        1 + 2 + 2,
        "level 2 and its controls, then level 3's controls"
    );
    assert_eq!(mask, whole_mask);
    let values = second.values(&names(&second)).unwrap();
    assert_eq!(values, whole_values);
    assert_eq!(PruneTarget::metrics(&second), whole_rows);

    // Once the levels are done, a restart recomputes nothing at all.
    let mut third = task();
    let mut counting = Crashing::new(&mut third);
    assert_eq!(
        imp(&mut counting, 0.2, options, Some(work)).unwrap(),
        whole_mask
    );
    assert_eq!(counting.trainings_left, usize::MAX);
}
