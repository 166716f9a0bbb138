//! `bert-tickets` on the packaged MiniLM, at a toy size: the ticket's survivors are the
//! pre-trained weights, only encoder and pooler matrices are pruned, the linear schedule's counts,
//! the head carried across rounds and fresh for the final ticket, pruning first, the reinit
//! control, the one-shot baselines, and a transferred ticket coming back on the run's own task.

use std::path::Path;
use std::sync::Arc;

use indicatif::ProgressBar;
use lottery_bert::{BertSettings, BertTask, Pretrained, TextTask};
use lottery_bert_tickets::BertTicketsOptions;
use lottery_core::PrunerOptions;
use lottery_core::config::{OptimizerKind, TrainSection};
use lottery_core::plugin::{DensitySchedule, PruneGoal};
use lottery_core::{
    Density, MaskSet, ParamValues, PrunableRule, PruneContext, PruneTarget, Pruner, Scope,
};

fn task() -> BertTask {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(lottery_bert::MINILM_DIR);
    let c = Arc::new(Pretrained::load(&dir).expect("scripts/setup.sh installs MiniLM"));
    let t = Arc::new(TextTask::load("fortune-topics", None, &c.tokenizer, 12, 8, 8).unwrap());
    let settings = BertSettings {
        train: TrainSection {
            epochs: 1,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            ..TrainSection::default()
        },
        batch_size: 8,
        max_tokens: 12,
        train_subset: 8,
        test_subset: 8,
        seed: 5,
    };
    BertTask::new(c, t, settings).unwrap()
}

fn prune(
    target: &mut BertTask,
    options: BertTicketsOptions,
    density: f64,
) -> lottery_core::MaskSet {
    prune_in(target, options, density, None)
}

fn prune_in(
    target: &mut BertTask,
    options: BertTicketsOptions,
    density: f64,
    work_dir: Option<std::path::PathBuf>,
) -> lottery_core::MaskSet {
    let mut ctx = PruneContext {
        target,
        goal: PruneGoal {
            density: Density::new(density).unwrap(),
            scope: Scope::Global,
            rule: PrunableRule::default(),
            iterations: 1,
            schedule: DensitySchedule::Exponential,
        },
        seed: 5,
        progress: ProgressBar::hidden(),
        work_dir,
        save_every: std::time::Duration::ZERO,
        shared_dir: None,
        waited: std::time::Duration::ZERO,
    };
    let mut p: Box<dyn Pruner> = options.build();
    p.prune(&mut ctx).unwrap()
}

fn level_rows(t: &BertTask, phase: &str, metric: &str) -> Vec<(u64, f64)> {
    t.metrics()
        .into_iter()
        .filter(|r| r.split == "level" && r.metric == metric && r.phase == phase)
        .map(|r| (r.round, r.value))
        .collect()
}

#[test]
fn linear_rounds_prune_encoder_matrices_and_rewind_to_the_checkpoint() {
    let mut t = task();
    let head = vec![
        "classifier.weight".to_string(),
        "classifier.bias".to_string(),
    ];
    let head0 = t.values(&head).unwrap();
    let mask = prune(&mut t, BertTicketsOptions::default(), 0.8);
    assert_eq!(
        t.values(&head).unwrap(),
        head0,
        "the final ticket's head is fresh (its initialisation)"
    );
    assert_eq!(
        mask.len(),
        6 * 6 + 1,
        "six matrices per layer and the pooler"
    );
    assert!(
        mask.iter()
            .all(|(n, _)| n.starts_with("encoder.") || n == "pooler.dense.weight")
    );
    let total: usize = mask.iter().map(|(_, m)| m.numel()).sum();
    let kept: usize = mask.iter().map(|(_, m)| m.kept()).sum();
    assert_eq!(
        kept,
        (0.8 * total as f64).round() as usize,
        "exactly 1 − 2 · 0.1 kept"
    );
    // Level rows: the dense fine-tuning and the pruned level 0.9 before the final ticket 0.8.
    let densities = level_rows(&t, "ticket", "density");
    assert_eq!(densities.len(), 2);
    assert_eq!(densities[0], (0, 1.0));
    assert_eq!(densities[1].0, 1);
    assert_eq!(
        (densities[1].1 * total as f64).round() as usize,
        (0.9 * total as f64).round() as usize
    );
    let names: Vec<String> = mask.iter().map(|(n, _)| n.clone()).collect();
    let now = t.values(&names).unwrap();
    let c = t.pretrained();
    for (n, m) in mask.iter() {
        for (i, keep) in m.keep.iter().enumerate() {
            if *keep {
                assert_eq!(
                    now[n].values[i], c.values[n].values[i],
                    "{n}[{i}] not rewound"
                );
            }
        }
    }
}

#[test]
fn the_head_is_carried_across_rounds_and_fresh_for_the_final_ticket() {
    // Two trained levels (dense, 0.9), then the final ticket at 0.8. The head that level 1
    // starts from is the head level 0 trained; the encoder is the checkpoint's.
    let mut t = task();
    let all: Vec<String> = t.params().into_iter().map(|p| p.name).collect();
    let head: Vec<String> = all
        .iter()
        .filter(|n| lottery_bert::is_head(n))
        .cloned()
        .collect();
    assert_eq!(head.len(), 2);
    let theta0 = t.values(&all).unwrap();

    // Level 0 by hand, as the plugin trains it.
    let mut by_hand = task();
    let dense = MaskSet::dense(
        by_hand
            .params()
            .iter()
            .filter(|p| p.kind == lottery_core::ParamKind::LinearWeight)
            .map(|p| (p.name.as_str(), p.shape.as_slice()))
            .collect::<Vec<_>>(),
    );
    let end = by_hand.clock().run_steps;
    by_hand.train_until(&dense, end, &mut |_| {}).unwrap();
    let trained_head = by_hand.values(&head).unwrap();
    assert_ne!(
        trained_head,
        t.values(&head).unwrap(),
        "level 0 trains the head"
    );
    let start_1 = lottery_bert_tickets::overlaid(&theta0, &trained_head);
    for n in &all {
        if lottery_bert::is_head(n) {
            assert_eq!(start_1[n], trained_head[n]);
        } else {
            assert_eq!(start_1[n], theta0[n], "{n} rewinds to the checkpoint");
        }
    }

    // The plugin's level 1 accuracy is the accuracy of training from `start_1` under its mask;
    // from the head's initialisation instead it differs.
    let mask = prune(&mut t, BertTicketsOptions::default(), 0.8);
    let acc = level_rows(&t, "ticket", "accuracy");
    assert_eq!(acc.len(), 2);
    let level_1_mask = {
        let trained: ParamValues = by_hand
            .values(&dense.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>())
            .unwrap();
        let mut mags = trained;
        for v in mags.values_mut() {
            v.values.iter_mut().for_each(|x| *x = x.abs());
        }
        let total: usize = dense.iter().map(|(_, m)| m.numel()).sum();
        lottery_core::topk::top_k_count(&mags, (0.9 * total as f64).round() as usize, None).unwrap()
    };
    let train_from = |start: &ParamValues| {
        let mut u = task();
        u.rewind(start, 0).unwrap();
        let end = u.clock().run_steps;
        u.train_until(&level_1_mask, end, &mut |_| {}).unwrap();
        u.values(&all).unwrap()
    };
    let carried = train_from(&start_1);
    let fresh = train_from(&theta0);
    assert_ne!(carried, fresh, "the carried head changes the round");
    // The plugin's final mask is level 1's trained magnitudes at 0.8: the carried start's.
    let mut mags: ParamValues = dense
        .iter()
        .map(|(n, _)| (n.clone(), carried[n].clone()))
        .collect();
    for v in mags.values_mut() {
        v.values.iter_mut().for_each(|x| *x = x.abs());
    }
    let total: usize = dense.iter().map(|(_, m)| m.numel()).sum();
    let want = lottery_core::topk::top_k_count(
        &mags,
        (0.8 * total as f64).round() as usize,
        Some(&level_1_mask),
    )
    .unwrap();
    assert_eq!(mask, want, "level 1 trained from the carried head");
    // And the final ticket starts from the checkpoint with a fresh head.
    assert_eq!(t.values(&all).unwrap(), theta0);
}

#[test]
fn prune_first_skips_the_dense_round_and_reinit_trains_beside_the_ticket() {
    let mut t = task();
    let options = BertTicketsOptions {
        prune_first: true,
        controls: vec![lottery_bert_tickets::Control::Reinit],
        ..BertTicketsOptions::default()
    };
    let mask = prune(&mut t, options, 0.8);
    let tickets = level_rows(&t, "ticket", "density");
    assert_eq!(
        tickets.len(),
        1,
        "only level 1 (0.9) trains before the final ticket"
    );
    assert_eq!(tickets[0].0, 1);
    let reinit = level_rows(&t, "reinit", "density");
    assert_eq!(
        reinit.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2],
        "the control at every pruned level, the final one included"
    );
    assert!((reinit[1].1 - mask.density()).abs() < 1e-12);
}

#[test]
fn one_shot_baselines_land_on_the_density_without_training() {
    for how in [
        lottery_bert_tickets::OneShot::Magnitude,
        lottery_bert_tickets::OneShot::Random,
    ] {
        let mut t = task();
        let options = BertTicketsOptions {
            one_shot: Some(how),
            dropout: 0.1,
            clip_grad_norm: 1.0,
            ..BertTicketsOptions::default()
        };
        let mask = prune(&mut t, options, 0.6);
        assert!(t.metrics().is_empty(), "{how:?} trains nothing");
        let total: usize = mask.iter().map(|(_, m)| m.numel()).sum();
        let kept: usize = mask.iter().map(|(_, m)| m.kept()).sum();
        assert_eq!(kept, (0.6 * total as f64).round() as usize);
        assert_eq!(
            t.fine_tuning().dropout,
            0.1,
            "the recipe is set for the run"
        );
        t.record("level", "accuracy", 0.0);
        assert_eq!(
            t.metrics()[0].phase,
            how.phase(),
            "the run's rows are the baseline's"
        );
    }
}

#[test]
fn a_ticket_found_on_another_task_comes_back_to_the_own_task() {
    let mut t = task();
    let options = BertTicketsOptions {
        find_on: Some("wordnet-supersenses".into()),
        ..BertTicketsOptions::default()
    };
    let mask = prune(&mut t, options, 0.9);
    assert_eq!(t.task().name, "fortune-topics");
    assert_eq!(t.clock().step, 0);
    let rows = t.metrics();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r.phase.starts_with("source-")),
        "source rows are marked"
    );
    let kept: usize = mask.iter().map(|(_, m)| m.kept()).sum();
    let total: usize = mask.iter().map(|(_, m)| m.numel()).sum();
    assert_eq!(kept, (0.9 * total as f64).round() as usize);
}

#[test]
fn a_finished_imp_resumes_from_its_saved_levels_without_training() {
    let dir = std::env::temp_dir().join(format!("bert-tickets-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut t = task();
    let mask = prune_in(
        &mut t,
        BertTicketsOptions::default(),
        0.8,
        Some(dir.clone()),
    );
    let rows = t.metrics();
    assert!(
        dir.join("bert-tickets-fortune-topics/level-001.safetensors")
            .exists()
    );
    assert!(
        dir.join("bert-tickets-fortune-topics/level-002.safetensors")
            .exists()
    );
    let mut again = task();
    let resumed = prune_in(
        &mut again,
        BertTicketsOptions::default(),
        0.8,
        Some(dir.clone()),
    );
    assert_eq!(resumed, mask);
    assert_eq!(
        again.metrics(),
        rows,
        "the rows come back, nothing retrains"
    );
    assert_eq!(again.clock().step, 0);
    // Resuming at level 1 (the last level's file gone) retrains level 1 only, to the same mask.
    std::fs::remove_file(dir.join("bert-tickets-fortune-topics/level-002.safetensors")).unwrap();
    let mut third = task();
    let from_1 = prune_in(
        &mut third,
        BertTicketsOptions::default(),
        0.8,
        Some(dir.clone()),
    );
    assert_eq!(from_1, mask, "level 1 resumed with its carried head");
    assert_eq!(
        third.metrics(),
        rows,
        "level 1's rows recomputed bit for bit"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
