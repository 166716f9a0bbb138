//! `bert-tickets` on the packaged MiniLM, at a toy size: the ticket's survivors are the
//! pre-trained weights, only encoder and pooler matrices are pruned, and a transferred ticket comes
//! back on the run's own task.

use std::path::Path;
use std::sync::Arc;

use indicatif::ProgressBar;
use lottery_bert::{BertSettings, BertTask, Pretrained, TextTask};
use lottery_bert_tickets::BertTicketsOptions;
use lottery_core::PrunerOptions;
use lottery_core::config::{OptimizerKind, TrainSection};
use lottery_core::plugin::{DensitySchedule, PruneGoal};
use lottery_core::{Density, PrunableRule, PruneContext, PruneTarget, Pruner, Scope};

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
        work_dir: None,
    };
    let mut p: Box<dyn Pruner> = options.build();
    p.prune(&mut ctx).unwrap()
}

#[test]
fn two_rounds_prune_encoder_matrices_and_rewind_to_the_checkpoint() {
    let mut t = task();
    let head = vec![
        "classifier.weight".to_string(),
        "classifier.bias".to_string(),
    ];
    let head0 = t.values(&head).unwrap();
    let mask = prune(&mut t, BertTicketsOptions::default(), 0.81);
    assert_eq!(
        t.values(&head).unwrap(),
        head0,
        "the head rewinds to its initialisation"
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
        (0.81 * total as f64).round() as usize,
        "exactly 0.9² kept"
    );
    // Level rows: the dense fine-tuning and one pruned level before the final ticket.
    let levels = t
        .metrics()
        .into_iter()
        .filter(|r| r.split == "level" && r.metric == "density")
        .count();
    assert_eq!(levels, 2);
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
