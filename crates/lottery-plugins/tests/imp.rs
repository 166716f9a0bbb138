//! IMP against its definition on a real (small) training task: the density of level r is
//! (1 − p)^r exactly, survivors rewind to θ₀ or θ_k bit for bit, pruned weights stay zero through
//! training, and a run interrupted mid-way resumes to the same result as one that never stopped.
//! Layouts with several rates (`groups`, layer-wise or global) keep exact counts per layer or pool
//! at every level, an ignored layer stays dense, bad layouts are refused before any training, and
//! the controls start from the values they are defined to start from.

mod common;

use common::Crashing;

use std::path::Path;

use indicatif::ProgressBar;
use lottery_core::config::TrainSection;
use lottery_core::plugin::{DensitySchedule, find_pruner};
use lottery_core::{
    Density, MaskSet, MetricRow, PrunableRule, PruneContext, PruneError, PruneGoal, PruneTarget,
    Scope,
};
use lottery_models::Architecture;
use lottery_models::arch::Plan;
use lottery_train::ImageTask;

/// A small conv net with batch norm (so buffers rewind too) on generated 8×8 images: 4 steps an
/// epoch, 2 epochs a training.
fn task() -> ImageTask {
    task_keeping(vec![])
}

/// [`task`], keeping the weights at the `checkpoints` steps (`train.checkpoints`).
fn task_keeping(checkpoints: Vec<usize>) -> ImageTask {
    let arch = Architecture::ConvNet {
        plan: vec![Plan::Conv(8), Plan::Pool, Plan::Conv(8)],
        hidden: vec![16],
        batch_norm: true,
        global_pool: false,
    };
    let train = TrainSection {
        epochs: 2,
        lr: 0.05,
        checkpoints,
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
    // Weights kept at step 1, before the rewind point (only level 0's dense training passes it),
    // at the rewind point and after it.
    let task = || task_keeping(vec![1, 2, 6]);

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
    let kept: Vec<usize> = whole.checkpoints().keys().copied().collect();
    assert_eq!(kept, vec![1, 2, 6]);
    assert!(
        second.checkpoints() == whole.checkpoints(),
        "the resumed run keeps the weights level 0 kept before the rewind point"
    );

    // Once the levels are done, a restart recomputes nothing at all.
    let mut third = task();
    let mut counting = Crashing::new(&mut third);
    assert_eq!(
        imp(&mut counting, 0.2, options, Some(work)).unwrap(),
        whole_mask
    );
    assert_eq!(counting.trainings_left, usize::MAX);
    // The final training (the CLI's, after the method) keeps the steps from the rewind point on;
    // the steps before it come from the saved progress.
    let before_rewind = |t: &ImageTask| -> Vec<usize> {
        t.checkpoints().keys().copied().filter(|&s| s < 2).collect()
    };
    assert_eq!(before_rewind(&third), vec![1]);
    assert!(third.checkpoints()[&1] == whole.checkpoints()[&1]);
}

/// Runs `imp` with `options` at `density` under `scope`, the parameters matching `ignore` never
/// pruned (`prune.ignore`), seed 11.
fn imp_with(
    target: &mut dyn PruneTarget,
    density: f64,
    scope: Scope,
    ignore: &[&str],
    options: &str,
    work_dir: Option<std::path::PathBuf>,
) -> Result<MaskSet, PruneError> {
    lottery_plugins::link();
    let entry = find_pruner("imp").unwrap();
    let mut table = (entry.default_options)();
    table.extend(toml::from_str::<toml::Table>(options).unwrap());
    let mut pruner = (entry.build)(&table).unwrap();
    let mut ctx = PruneContext {
        target,
        goal: PruneGoal {
            density: Density::new(density).unwrap(),
            scope,
            rule: PrunableRule {
                ignore: ignore.iter().map(|s| s.to_string()).collect(),
                ..PrunableRule::default()
            },
            iterations: 1,
            schedule: DensitySchedule::Exponential,
        },
        seed: 11,
        progress: ProgressBar::hidden(),
        work_dir,
        save_every: std::time::Duration::ZERO,
        shared_dir: None,
        waited: std::time::Duration::ZERO,
    };
    pruner.prune(&mut ctx)
}

/// The masks of levels 1..=n saved in a run's work directory.
fn level_masks(work: &Path) -> Vec<MaskSet> {
    (1..)
        .map(|r| work.join(format!("imp/level-{r:03}.safetensors")))
        .take_while(|p| p.exists())
        .map(|p| lottery_core::progress::load_mask_progress(&p).unwrap().0)
        .collect()
}

/// `round(keep^r · n)`, the count of a layer or pool at level r.
fn geometric(n: usize, rate: f64, r: usize) -> usize {
    Density::new((1.0 - rate).powi(r as i32))
        .unwrap()
        .keep_count(n)
}

fn numel_of(t: &ImageTask, name: &str) -> usize {
    t.params()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap()
        .numel()
}

const CONVS: [&str; 2] = ["layers.0.conv.weight", "layers.2.conv.weight"];
const HIDDEN: &str = "fc_layers.0.weight";
const OUTPUT: &str = "fc.weight";

#[test]
fn layerwise_groups_keep_each_layer_at_its_own_rate_exactly() {
    // Frankle & Carbin's conv layout in miniature: convolutions at 15 %, the hidden linear layer
    // at 20 % (`rate`), the output layer at 10 %, every layer cut apart.
    let options = "rate = 0.2\ngroups = [{ params = [\"layers.*.conv.weight\"], rate = 0.15 }, \
                   { params = [\"fc.weight\"], rate = 0.1 }]";
    let rates = [
        (CONVS[0], 0.15),
        (CONVS[1], 0.15),
        (HIDDEN, 0.2),
        (OUTPUT, 0.1),
    ];
    let mut t = task();
    let dir = tempfile::tempdir().unwrap();
    let mask = imp_with(
        &mut t,
        0.6,
        Scope::Layerwise,
        &[],
        options,
        Some(dir.path().into()),
    )
    .unwrap();
    let levels = level_masks(dir.path());
    let n: Vec<usize> = rates.iter().map(|(name, _)| numel_of(&t, name)).collect();
    // Layer-wise, the run's total is the sum of every layer's count at the density.
    let target: usize = n
        .iter()
        .map(|n| Density::new(0.6).unwrap().keep_count(*n))
        .sum();
    // Levels 1 and 2 are 0.814 and 0.663 dense, level 3 would be 0.541: it lands on 0.6.
    assert_eq!(levels.len(), 3);
    for (r, level) in levels.iter().enumerate().map(|(i, m)| (i + 1, m)) {
        assert_eq!(level.iter().count(), 4, "level {r}: the four weights only");
        for ((name, rate), n) in rates.iter().zip(&n) {
            let kept = level.get(name).unwrap().kept();
            if r < 3 {
                assert_eq!(kept, geometric(*n, *rate, r), "level {r}, {name}");
            } else {
                assert!(kept >= geometric(*n, *rate, r), "level {r}, {name}");
                assert!(kept <= geometric(*n, *rate, r - 1), "level {r}, {name}");
            }
        }
    }
    assert_eq!(levels[2].kept(), target);
    assert_eq!(&levels[2], &mask);
    // Pruned once, pruned for good.
    for pair in levels.windows(2) {
        for (name, m) in pair[1].iter() {
            let before = &pair[0].get(name).unwrap().keep;
            assert!(m.keep.iter().zip(before).all(|(now, was)| !now || *was));
        }
    }
}

#[test]
fn global_groups_keep_each_pool_at_its_own_rate_and_an_ignored_layer_stays_dense() {
    // open_lth's mnist_lenet_300_100 layout (one global pool at 20 %, fc.weight never pruned),
    // then two pools (convolutions at 10 %, the hidden layer at 30 %) with the output ignored.
    for (options, pools) in [
        ("rate = 0.2", vec![(vec![CONVS[0], CONVS[1], HIDDEN], 0.2)]),
        (
            "rate = 0.3\ngroups = [{ params = [\"layers.*\"], rate = 0.1 }]",
            vec![(vec![HIDDEN], 0.3), (vec![CONVS[0], CONVS[1]], 0.1)],
        ),
    ] {
        let mut t = task();
        let names = all_names(&t);
        let theta_0 = t.values(&names).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mask = imp_with(
            &mut t,
            0.5,
            Scope::Global,
            &[OUTPUT],
            options,
            Some(dir.path().into()),
        )
        .unwrap();
        let levels = level_masks(dir.path());
        let n: Vec<usize> = pools
            .iter()
            .map(|(names, _)| names.iter().map(|p| numel_of(&t, p)).sum())
            .collect();
        let total: usize = n.iter().sum();
        assert_eq!(mask.numel(), total, "{options}");
        assert_eq!(mask.kept(), Density::new(0.5).unwrap().keep_count(total));
        let last = levels.len();
        assert!(last >= 3, "{options}: {last} levels");
        for (r, level) in levels.iter().enumerate().map(|(i, m)| (i + 1, m)) {
            assert!(
                level.get(OUTPUT).is_none(),
                "{options}: the output is no one's"
            );
            for ((pool, rate), n) in pools.iter().zip(&n) {
                let kept: usize = pool.iter().map(|p| level.get(p).unwrap().kept()).sum();
                if r < last {
                    assert_eq!(kept, geometric(*n, *rate, r), "{options}: level {r}");
                } else {
                    assert!(kept >= geometric(*n, *rate, r) && kept <= geometric(*n, *rate, r - 1));
                }
            }
        }
        // The ignored output layer trained dense at every level and rewinds whole to θ₀.
        let now = t.values(&[OUTPUT.to_string()]).unwrap();
        assert_eq!(now[OUTPUT], theta_0[OUTPUT], "{options}");
        assert!(now[OUTPUT].values.iter().all(|v| *v != 0.0));
    }
}

#[test]
fn bad_layouts_are_refused_before_any_training() {
    let cases: [(&str, Scope, &[&str], &[&str]); 6] = [
        (
            "groups = [{ params = [\"fc.weight\"], rate = 0.1 }, \
             { params = [\"conv*.weight\"], rate = 0.1 }]",
            Scope::Global,
            &[],
            &[
                "methods.imp.groups[1].params",
                "\"conv*.weight\"",
                "matches no parameter",
            ],
        ),
        (
            "groups = [{ params = [\"fc.weight\"], rate = 0.1 }]",
            Scope::Layerwise,
            &[OUTPUT],
            &[
                "methods.imp.groups[0].params",
                "\"fc.weight\"",
                "not prunable",
                "prune.ignore",
            ],
        ),
        (
            "groups = [{ params = [\"fc*\"], rate = 0.1 }, { params = [\"fc.weight\"], rate = 0.2 }]",
            Scope::Global,
            &[],
            &["parameter fc.weight is in groups[0] (by \"fc*\") and in groups[1]"],
        ),
        (
            "output_rate = 0.1\ngroups = [{ params = [\"fc.weight\"], rate = 0.1 }]",
            Scope::Global,
            &[],
            &["methods.imp.output_rate = 0.1", "groups"],
        ),
        (
            "output_rate = 0.1",
            Scope::Global,
            &[OUTPUT],
            &["methods.imp.output_rate = 0.1", "fc.weight", "prune.ignore"],
        ),
        (
            "output_rate = 0.1",
            Scope::Layerwise,
            &[],
            &["methods.imp.output_rate = 0.1", "prune.scope"],
        ),
    ];
    for (options, scope, ignore, wanted) in cases {
        let mut t = task();
        let mut none = Crashing {
            trainings_left: 0,
            ..Crashing::new(&mut t)
        };
        let e = imp_with(&mut none, 0.5, scope, ignore, options, None)
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("simulated crash"),
            "{options}: trained first: {e}"
        );
        for w in wanted {
            assert!(e.contains(w), "{options}: {w:?} not in {e}");
        }
    }
    // Rates outside (0, 1) are refused as the options are read, naming the group.
    lottery_plugins::link();
    let entry = find_pruner("imp").unwrap();
    for (rate, shown) in [("1.5", "1.5"), ("0.0", "0"), ("1.0", "1"), ("-0.2", "-0.2")] {
        let mut table = (entry.default_options)();
        table.extend(
            toml::from_str::<toml::Table>(&format!(
                "groups = [{{ params = [\"fc.weight\"], rate = 0.1 }}, \
                 {{ params = [\"fc_layers.*\"], rate = {rate} }}]"
            ))
            .unwrap(),
        );
        let e = (entry.build)(&table).err().unwrap();
        assert!(e.contains(&format!("groups[1].rate = {shown}")), "{e}");
    }
}

#[test]
fn random_mask_controls_start_from_the_rewind_values_or_from_zero_outside_the_ticket() {
    // One level (0.5 at rate 0.5); the run stops at the control's training, whose start values
    // are then on the network: θ_k for `random-mask`, θ_k times the ticket's mask for
    // `random-mask-zero-outside-ticket` (open_lth's randomly_prune branch).
    let k = 2;
    let mut start = vec![];
    for control in ["random-mask", "random-mask-zero-outside-ticket"] {
        let options = format!("rate = 0.5\nrewind_step = {k}\ncontrols = [\"{control}\"]");
        let mut t = task();
        let names = all_names(&t);
        let dir = tempfile::tempdir().unwrap();
        {
            let mut crashing = Crashing {
                trainings_left: 2, // θ_k, level 0; the control's is the third
                ..Crashing::new(&mut t)
            };
            let e = imp_with(
                &mut crashing,
                0.5,
                Scope::Global,
                &[],
                &options,
                Some(dir.path().into()),
            )
            .unwrap_err();
            assert!(e.to_string().contains("simulated crash"), "{e}");
        }
        let ticket = level_masks(dir.path()).pop().unwrap();
        let theta_k =
            lottery_core::weights::read(&dir.path().join("imp/rewind.safetensors")).unwrap();
        assert_eq!(t.clock().step, k, "controls start at the rewind step");
        let now = t.values(&names).unwrap();
        for name in &names {
            let (a, b) = (&now[name].values, &theta_k[name].values);
            for i in 0..a.len() {
                let outside = ticket.get(name).is_some_and(|m| !m.keep[i]);
                if control == "random-mask-zero-outside-ticket" && outside {
                    assert_eq!(a[i].to_bits(), 0f32.to_bits(), "{control}: {name}[{i}]");
                } else {
                    assert_eq!(a[i].to_bits(), b[i].to_bits(), "{control}: {name}[{i}]");
                }
            }
        }
        // Both controls prune with the same random mask (seed and level), which keeps weights
        // outside the ticket: those start at θ_k in one control and at zero in the other.
        let random = lottery_imp::random_mask_like(&ticket, 11, 1).unwrap();
        let kept_outside: usize = random
            .iter()
            .map(|(name, m)| {
                let t = &ticket.get(name).unwrap().keep;
                m.keep.iter().zip(t).filter(|(r, t)| **r && !**t).count()
            })
            .sum();
        assert!(kept_outside > 100, "{kept_outside}");
        start.push(now);
    }
    assert_ne!(start[0], start[1]);
}
