//! Time of one BERT fine-tuning step on this build's backend, as BERT tickets run it: the packaged
//! MiniLM-L6 (6 layers, 384 hidden, 12 heads) with a fresh 8-class classifier on the pooled output,
//! a batch of 16 sequences of 32 word pieces, dropout 0.1 at BERT's places, cross-entropy, the
//! global gradient norm clipped to 1.0, and an Adam step on every parameter (embeddings included).
//! The token ids are generated (`id(s, t)` below), so that `benches/torch_bert.py` feeds PyTorch the
//! very same batch.
//!
//! Prints `bert minilm-l6 batch=16x32 median_ms=<t> min_ms=<t> backend=<name>`: the median over
//! `CHUNKS` chunks of the mean step time of `STEPS` steps, after one warm-up chunk.
//!
//! `cargo bench -p lottery-bert --bench fine_tune_step [--features simd,rayon]`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use lottery_bert::{
    BertSettings, BertTask, Examples, FineTuning, MINILM_DIR, Pretrained, TextTask,
};
use lottery_core::backend::backend_name;
use lottery_core::config::{LrSchedule, OptimizerKind, TrainSection};
use lottery_core::{MaskSet, PruneTarget};

const BATCH: usize = 16;
const TOKENS: usize = 32;
const CLASSES: usize = 8;
const STEPS: usize = 4;
const CHUNKS: usize = 5;

/// Token `t` of generated sequence `s`: `[CLS]` (101), 30 pieces from the vocabulary's word
/// range (1996..30522), `[SEP]` (102). `benches/torch_bert.py` computes the same.
fn id(s: usize, t: usize) -> u32 {
    match t {
        0 => 101,
        t if t == TOKENS - 1 => 102,
        t => 1996 + ((s * 7919 + t * 104_729) % (30522 - 1996)) as u32,
    }
}

fn main() {
    let allocator = lottery_core::allocator::keep_large_buffers_in_heap();
    eprintln!("allocator settings: {allocator:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pretrained =
        Pretrained::load(&root.join(MINILM_DIR)).expect("the MiniLM checkpoint (run `just setup`)");
    let n = BATCH * (STEPS * (CHUNKS + 1) + 1) * 4;
    let examples: Vec<(Vec<u32>, usize)> = (0..n)
        .map(|s| ((0..TOKENS).map(|t| id(s, t)).collect(), s % CLASSES))
        .collect();
    let task = TextTask {
        name: "generated".into(),
        examples: Examples::Classes {
            classes: (0..CLASSES).map(|c| format!("class-{c}")).collect(),
            train: examples.clone(),
            test: examples[..BATCH].to_vec(),
        },
    };
    let settings = BertSettings {
        train: TrainSection {
            epochs: 1,
            optimizer: OptimizerKind::Adam,
            lr: 2e-5,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::Constant,
            ..Default::default()
        },
        batch_size: BATCH,
        max_tokens: TOKENS,
        train_subset: 0,
        test_subset: 0,
        seed: 0,
    };
    let mut bert = BertTask::new(Arc::new(pretrained), Arc::new(task), settings).expect("model");
    bert.set_fine_tuning(FineTuning {
        dropout: 0.1,
        clip_grad_norm: 1.0,
    })
    .expect("fine-tuning settings");
    let dense = MaskSet::new();
    let mut chunk_ms = vec![];
    for chunk in 0..=CHUNKS {
        let end = bert.clock().step + STEPS;
        let t = Instant::now();
        bert.train_until(&dense, end, &mut |_| {}).expect("steps");
        if chunk > 0 {
            chunk_ms.push(t.elapsed().as_secs_f64() * 1e3 / STEPS as f64);
        }
    }
    chunk_ms.sort_by(f64::total_cmp);
    println!(
        "bert minilm-l6 batch={BATCH}x{TOKENS} median_ms={:.1} min_ms={:.1} backend={}",
        chunk_ms[chunk_ms.len() / 2],
        chunk_ms[0],
        backend_name().replace(' ', "_")
    );
}
