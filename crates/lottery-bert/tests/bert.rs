//! The packaged MiniLM against the reference outputs of its own Python stack, and the properties
//! BERT tickets rely on: exact loading, masks that survive fine-tuning, rewinding, task switching.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use lottery_bert::data::mask_for_mlm;
use lottery_bert::{BertSettings, BertTask, FineTuning, Pretrained, TextTask};
use lottery_core::config::{OptimizerKind, TrainSection};
use lottery_core::{Mask, MaskSet, ParamKind, PruneTarget};
use serde::Deserialize;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn checkpoint() -> Arc<Pretrained> {
    static C: OnceLock<Arc<Pretrained>> = OnceLock::new();
    C.get_or_init(|| {
        Arc::new(
            Pretrained::load(&root().join(lottery_bert::MINILM_DIR))
                .expect("scripts/setup.sh installs the MiniLM checkpoint"),
        )
    })
    .clone()
}

#[derive(Deserialize)]
struct Reference {
    texts: Vec<ReferenceText>,
}

#[derive(Deserialize)]
struct ReferenceText {
    text: String,
    ids: Vec<u32>,
    decoded: String,
    hidden: Vec<Vec<f32>>,
    sentence: Vec<f32>,
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn settings(optimizer: OptimizerKind, lr: f64, epochs: usize) -> BertSettings {
    BertSettings {
        train: TrainSection {
            epochs,
            optimizer,
            lr,
            momentum: 0.9,
            weight_decay: 0.01,
            ..TrainSection::default()
        },
        batch_size: 8,
        max_tokens: 16,
        train_subset: 16,
        test_subset: 8,
        seed: 3,
    }
}

fn supersenses(c: &Pretrained) -> Arc<TextTask> {
    Arc::new(TextTask::load("wordnet-supersenses", None, &c.tokenizer, 16, 16, 8).unwrap())
}

#[test]
fn tokenizer_matches_the_reference_and_round_trips() {
    let c = checkpoint();
    for r in reference().texts {
        let ids = c.tokenizer.encode(&r.text, 512);
        assert_eq!(ids, r.ids, "{}", r.text);
        assert_eq!(c.tokenizer.decode(&ids), r.decoded);
    }
    let plain = "the ticket was found early in training";
    assert_eq!(c.tokenizer.decode(&c.tokenizer.encode(plain, 64)), plain);
    let short = c.tokenizer.encode(plain, 4);
    assert_eq!(short.len(), 4);
    assert_eq!((short[0], short[3]), (c.tokenizer.cls, c.tokenizer.sep));
}

#[test]
fn weights_load_exactly_and_the_encoder_matches_the_reference() {
    let c = checkpoint();
    let task = BertTask::new(
        c.clone(),
        supersenses(&c),
        settings(OptimizerKind::Adam, 1e-4, 1),
    )
    .unwrap();
    let encoder: Vec<String> = task
        .params()
        .into_iter()
        .filter(|p| p.kind != ParamKind::Other)
        .map(|p| p.name)
        .collect();
    assert_eq!(encoder.len(), 5 + 6 * 16 + 2);
    let loaded = task.values(&encoder).unwrap();
    for name in &encoder {
        assert_eq!(
            loaded[name], c.values[name],
            "{name} is not the checkpoint's"
        );
    }

    let refs = reference().texts;
    let ids: Vec<Vec<u32>> = refs.iter().map(|r| r.ids.clone()).collect();
    let states = task.hidden_states(&ids);
    let mut worst = 0f32;
    for (r, s) in refs.iter().zip(&states) {
        assert_eq!(s.shape, vec![r.ids.len(), 384]);
        for (row, want) in s.values.chunks(384).zip(&r.hidden) {
            for (a, b) in row.iter().zip(want) {
                worst = worst.max((a - b).abs());
            }
        }
        // The package's sentence embedding: mean over the pieces, L2-normalised.
        let mut mean = vec![0f32; 384];
        for row in s.values.chunks(384) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += x / r.ids.len() as f32;
            }
        }
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (m, want) in mean.iter().zip(&r.sentence) {
            assert!(
                (m / norm - want).abs() < 1e-4,
                "sentence embedding of {}",
                r.text
            );
        }
    }
    eprintln!("largest difference to the reference hidden states: {worst:e}");
    assert!(worst < 2e-4, "largest difference to the reference: {worst}");
}

/// A mask pruning every other entry of each prunable matrix.
fn checkerboard(task: &BertTask) -> MaskSet {
    let mut mask = MaskSet::new();
    for p in task.params() {
        if p.kind == ParamKind::LinearWeight {
            let keep: Vec<bool> = (0..p.numel()).map(|i| i % 2 == 0).collect();
            mask.insert(
                p.name,
                Mask {
                    shape: p.shape,
                    keep,
                },
            );
        }
    }
    mask
}

#[test]
fn masks_on_named_weights_survive_fine_tuning_and_rewind_restores_the_checkpoint() {
    let c = checkpoint();
    let mut task = BertTask::new(
        c.clone(),
        supersenses(&c),
        settings(OptimizerKind::Adam, 1e-3, 1),
    )
    .unwrap();
    let mask = checkerboard(&task);
    let names: Vec<String> = mask.iter().map(|(n, _)| n.clone()).collect();
    assert!(names.contains(&"encoder.layer.5.attention.self.value.weight".to_string()));
    assert!(names.contains(&"pooler.dense.weight".to_string()));
    assert_eq!(names.len(), 6 * 6 + 1);
    let all: Vec<String> = task.params().into_iter().map(|p| p.name).collect();
    let theta0 = task.values(&all).unwrap();

    let end = task.clock().run_steps;
    assert_eq!(end, 2);
    task.train_until(&mask, end, &mut |_| {}).unwrap();
    let trained = task.values(&names).unwrap();
    for (name, m) in mask.iter() {
        let v = &trained[name];
        let mut moved = 0;
        for (i, keep) in m.as_f32().iter().enumerate() {
            if *keep == 0.0 {
                assert_eq!(v.values[i], 0.0, "{name}[{i}] revived by Adam");
            } else if v.values[i] != theta0[name].values[i] {
                moved += 1;
            }
        }
        assert!(moved > 0, "{name}: no surviving weight was fine-tuned");
    }

    task.rewind(&theta0, 0).unwrap();
    let rewound = task.values(&names).unwrap();
    for (name, m) in mask.iter() {
        for (i, keep) in m.as_f32().iter().enumerate() {
            if *keep == 1.0 {
                assert_eq!(
                    rewound[name].values[i], c.values[name].values[i],
                    "{name}[{i}]"
                );
            }
        }
    }
    assert_eq!(task.clock().step, 0);
}

#[test]
fn a_rerun_with_the_same_seed_is_bit_identical() {
    let c = checkpoint();
    let run = || {
        let mut task = BertTask::new(
            c.clone(),
            supersenses(&c),
            settings(OptimizerKind::Sgd, 1e-2, 1),
        )
        .unwrap();
        let mask = checkerboard(&task);
        task.train_until(&mask, 1, &mut |_| {}).unwrap();
        task.values(&["encoder.layer.0.output.dense.weight".to_string()])
            .unwrap()
    };
    assert_eq!(run(), run());
}

#[test]
fn overflowing_weights_stop_fine_tuning_as_diverged() {
    let c = checkpoint();
    let mut task = BertTask::new(
        c.clone(),
        supersenses(&c),
        settings(OptimizerKind::Sgd, 1e-2, 1),
    )
    .unwrap();
    let names: Vec<String> = task.params().into_iter().map(|p| p.name).collect();
    let mut huge = task.values(&names).unwrap();
    for v in huge.values_mut() {
        v.values.iter_mut().for_each(|x| *x *= 1e30);
    }
    task.set_values(&huge).unwrap();
    let mask = checkerboard(&task);
    let e = task.train_until(&mask, 2, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            lottery_core::PruneError::Diverged {
                epoch: 1,
                step: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("training diverged at epoch 1, step 1 (loss "),
        "{e}"
    );
}

#[test]
fn switching_task_swaps_the_head_and_restores_the_encoder() {
    let c = checkpoint();
    let mut task = BertTask::new(
        c.clone(),
        supersenses(&c),
        settings(OptimizerKind::Sgd, 1e-2, 1),
    )
    .unwrap();
    let q = "encoder.layer.2.attention.self.query.weight".to_string();
    task.train_until(&MaskSet::new(), 1, &mut |_| {}).unwrap();
    assert_ne!(
        task.values(std::slice::from_ref(&q)).unwrap()[&q],
        c.values[&q]
    );
    let own = task.switch_task("wordnet-examples").unwrap();
    assert_eq!(own, "wordnet-supersenses");
    assert_eq!(
        task.values(std::slice::from_ref(&q)).unwrap()[&q],
        c.values[&q]
    );
    let names: Vec<String> = task.params().into_iter().map(|p| p.name).collect();
    assert!(names.contains(&"cls.predictions.bias".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("classifier")));
    let (loss, accuracy) = task.evaluate(&MaskSet::new()).unwrap();
    assert!(loss.is_finite() && (0.0..=1.0).contains(&accuracy));
    task.switch_task(&own).unwrap();
    assert!(task.params().iter().any(|p| p.name == "classifier.weight"));
}

#[test]
fn mlm_masking_follows_bert() {
    let c = checkpoint();
    let t = &c.tokenizer;
    let seq = t.encode(
        "a corpus of short english sentences for masked language modelling, \
         long enough that fifteen percent of its pieces is a fair count of them all",
        64,
    );
    let (mut chosen, mut candidates, mut as_mask) = (0usize, 0usize, 0usize);
    for seed in 0..400 {
        let m = mask_for_mlm(&seq, t, seed);
        assert!(!m.targets.is_empty());
        for &(pos, id) in &m.targets {
            assert_eq!(seq[pos], id);
            assert!(!t.is_special(id), "a special token was chosen");
            as_mask += usize::from(m.input[pos] == t.mask);
        }
        chosen += m.targets.len();
        candidates += seq.len() - 2;
        assert_eq!(m, mask_for_mlm(&seq, t, seed), "masking is seeded");
    }
    let rate = chosen as f64 / candidates as f64;
    assert!((rate - 0.15).abs() < 0.01, "{rate}");
    let masked = as_mask as f64 / chosen as f64;
    assert!((masked - 0.8).abs() < 0.03, "{masked}");
}

#[test]
fn dropout_and_clipping_change_training_and_reruns_stay_bit_identical() {
    let c = checkpoint();
    let run = |fine_tuning: FineTuning| {
        let mut task = BertTask::new(
            c.clone(),
            supersenses(&c),
            settings(OptimizerKind::Sgd, 1e-2, 1),
        )
        .unwrap();
        task.set_fine_tuning(fine_tuning).unwrap();
        let mask = checkerboard(&task);
        task.train_until(&mask, 2, &mut |_| {}).unwrap();
        task.values(&[
            "encoder.layer.0.output.dense.weight".to_string(),
            "classifier.weight".to_string(),
        ])
        .unwrap()
    };
    let plain = run(FineTuning::default());
    let dropout = FineTuning {
        dropout: 0.1,
        ..FineTuning::default()
    };
    let with_dropout = run(dropout);
    assert_eq!(with_dropout, run(dropout), "dropout is seeded");
    assert_ne!(with_dropout, plain, "dropout changes the updates");
    let clipped = FineTuning {
        clip_grad_norm: 1e-3,
        ..FineTuning::default()
    };
    let with_clipping = run(clipped);
    assert_eq!(with_clipping, run(clipped));
    assert_ne!(
        with_clipping, plain,
        "a tiny maximum norm shrinks the steps"
    );
    let bad = BertTask::new(
        c.clone(),
        supersenses(&c),
        settings(OptimizerKind::Sgd, 1e-2, 1),
    )
    .unwrap()
    .set_fine_tuning(FineTuning {
        dropout: 1.0,
        ..FineTuning::default()
    });
    assert!(bad.is_err());
}

#[test]
fn an_interrupted_fine_tuning_resumes_from_its_saved_state_as_if_never_stopped() {
    // Adam's state, the seeded dropout and the rows carry over.
    let c = checkpoint();
    let new_task = || {
        let mut task = BertTask::new(
            c.clone(),
            supersenses(&c),
            settings(OptimizerKind::Adam, 1e-3, 3),
        )
        .unwrap();
        task.set_fine_tuning(FineTuning {
            dropout: 0.1,
            ..FineTuning::default()
        })
        .unwrap();
        task
    };
    let names = [
        "encoder.layer.0.output.dense.weight".to_string(),
        "classifier.weight".to_string(),
    ];
    let task = new_task();
    let mask = checkerboard(&task);
    let end = task.clock().run_steps;
    lottery_train::resume::assert_resumes_exactly(new_task, &mask, end, 1, &names);
}
