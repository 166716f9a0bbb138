//! WordPiece tokenisation (Hugging Face's `tokenizers` crate reading the checkpoint's
//! `tokenizer.json`) and padded batches.

use std::path::Path;

use lottery_data::DataError;
use tokenizers::Tokenizer;

/// A BERT tokenizer with its special ids.
pub struct WordPiece {
    inner: Tokenizer,
    /// `[CLS]`.
    pub cls: u32,
    /// `[SEP]`.
    pub sep: u32,
    /// `[PAD]`.
    pub pad: u32,
    /// `[MASK]`.
    pub mask: u32,
    /// Word pieces in the vocabulary.
    pub vocab: usize,
}

impl WordPiece {
    /// Reads `tokenizer.json`; truncation and padding are switched off (done by the batcher).
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let bad = |why: String| DataError::Format {
            path: path.to_path_buf(),
            why,
        };
        if !path.exists() {
            return Err(DataError::Missing {
                path: path.to_path_buf(),
                hint: "a BERT checkpoint folder holds its tokenizer.json".into(),
            });
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        inner
            .with_truncation(None)
            .map_err(|e| bad(e.to_string()))?;
        inner.with_padding(None);
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| bad(format!("no {t} token in the vocabulary")))
        };
        Ok(Self {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            mask: id("[MASK]")?,
            vocab: inner.get_vocab_size(true),
            inner,
        })
    }

    /// `[CLS] pieces… [SEP]`, at most `max_tokens` ids (the pieces truncated).
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let enc = self
            .inner
            .encode(text, false)
            .expect("BERT's WordPiece encodes any text");
        let keep = max_tokens.saturating_sub(2);
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.cls);
        ids.extend(enc.get_ids().iter().take(keep));
        ids.push(self.sep);
        ids
    }

    /// The text of `ids`, special tokens dropped and word pieces joined.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner
            .decode(ids, true)
            .expect("ids of this vocabulary decode")
    }

    /// Whether `id` is `[CLS]`, `[SEP]` or `[PAD]` (never masked for MLM).
    pub fn is_special(&self, id: u32) -> bool {
        id == self.cls || id == self.sep || id == self.pad
    }
}

/// Sequences padded with `pad` to the longest: row-major ids and attention (1 real, 0 pad),
/// and the common length.
pub fn pad_batch(seqs: &[&[u32]], pad: u32) -> (Vec<i64>, Vec<f32>, usize) {
    let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(seqs.len() * len);
    let mut attention = Vec::with_capacity(seqs.len() * len);
    for s in seqs {
        for t in 0..len {
            match s.get(t) {
                Some(&id) => {
                    ids.push(id as i64);
                    attention.push(1.0);
                }
                None => {
                    ids.push(pad as i64);
                    attention.push(0.0);
                }
            }
        }
    }
    (ids, attention, len)
}
