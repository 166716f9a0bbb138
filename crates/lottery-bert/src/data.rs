//! A text task tokenised for BERT: sequence classification or masked language modelling, and the
//! masking of BERT's MLM objective.

use std::path::Path;

use lottery_data::{DataError, TextData, find_text_dataset};
use rand::{RngExt, SeedableRng};

use crate::tokens::WordPiece;

/// Share of the word pieces of a sequence chosen for prediction (BERT's 15 %).
pub const MLM_PROBABILITY: f64 = 0.15;

/// The examples of a task, tokenised.
#[derive(Debug, Clone)]
pub enum Examples {
    /// Sequence classification.
    Classes {
        /// Class names.
        classes: Vec<String>,
        /// Token ids and label of each training example.
        train: Vec<(Vec<u32>, usize)>,
        /// Token ids and label of each test example.
        test: Vec<(Vec<u32>, usize)>,
    },
    /// Masked language modelling on a corpus.
    Corpus {
        /// Token ids of each training sentence.
        train: Vec<Vec<u32>>,
        /// Token ids of each held-out sentence.
        test: Vec<Vec<u32>>,
    },
}

/// One task: its dataset name and its examples.
#[derive(Debug, Clone)]
pub struct TextTask {
    /// The dataset's registered name.
    pub name: String,
    /// The tokenised examples.
    pub examples: Examples,
}

impl TextTask {
    /// Loads the registered text dataset `name` (from `root`, or its default folder), keeps the
    /// first `train_subset` / `test_subset` examples (0: all), and tokenises them to at most
    /// `max_tokens` ids each.
    pub fn load(
        name: &str,
        root: Option<&Path>,
        tokenizer: &WordPiece,
        max_tokens: usize,
        train_subset: usize,
        test_subset: usize,
    ) -> Result<Self, DataError> {
        let entry = find_text_dataset(name).map_err(|why| DataError::Format {
            path: root.map(Path::to_path_buf).unwrap_or_default(),
            why,
        })?;
        let mut data = (entry.load)(&entry.root(root))?;
        data.truncate(train_subset, test_subset);
        let enc = |t: &str| tokenizer.encode(t, max_tokens);
        let examples = match data {
            TextData::Classification {
                classes,
                train,
                test,
            } => Examples::Classes {
                classes,
                train: train.iter().map(|e| (enc(&e.text), e.label)).collect(),
                test: test.iter().map(|e| (enc(&e.text), e.label)).collect(),
            },
            TextData::Corpus { train, test } => Examples::Corpus {
                train: train.iter().map(|t| enc(t)).collect(),
                test: test.iter().map(|t| enc(t)).collect(),
            },
        };
        Ok(Self {
            name: name.to_string(),
            examples,
        })
    }

    /// Training examples.
    pub fn train_len(&self) -> usize {
        match &self.examples {
            Examples::Classes { train, .. } => train.len(),
            Examples::Corpus { train, .. } => train.len(),
        }
    }

    /// Test examples.
    pub fn test_len(&self) -> usize {
        match &self.examples {
            Examples::Classes { test, .. } => test.len(),
            Examples::Corpus { test, .. } => test.len(),
        }
    }

    /// Classes of a classification task; None for MLM.
    pub fn classes(&self) -> Option<usize> {
        match &self.examples {
            Examples::Classes { classes, .. } => Some(classes.len()),
            Examples::Corpus { .. } => None,
        }
    }
}

/// One sequence prepared for MLM: the input ids and the (position, original id) of every
/// position to predict.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedSequence {
    /// Ids fed to the network.
    pub input: Vec<u32>,
    /// Positions to predict and the ids they held.
    pub targets: Vec<(usize, u32)>,
}

/// BERT's masking of `seq` with `seed`: each non-special piece is chosen with probability
/// [`MLM_PROBABILITY`] (at least one per sequence); a chosen piece becomes `[MASK]` 80 % of the
/// time, a random piece 10 %, and stays 10 %.
pub fn mask_for_mlm(seq: &[u32], tokenizer: &WordPiece, seed: u64) -> MaskedSequence {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let candidates: Vec<usize> = (0..seq.len())
        .filter(|&i| !tokenizer.is_special(seq[i]))
        .collect();
    let mut chosen: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|_| rng.random::<f64>() < MLM_PROBABILITY)
        .collect();
    if chosen.is_empty() && !candidates.is_empty() {
        chosen.push(candidates[rng.random_range(0..candidates.len())]);
    }
    let mut input = seq.to_vec();
    let mut targets = Vec::with_capacity(chosen.len());
    for i in chosen {
        targets.push((i, seq[i]));
        let r = rng.random::<f64>();
        if r < 0.8 {
            input[i] = tokenizer.mask;
        } else if r < 0.9 {
            input[i] = rng.random_range(0..tokenizer.vocab as u32);
        }
    }
    MaskedSequence { input, targets }
}
