//! Deterministic safetensors writing. The `safetensors` crate writes the `__metadata__` map in hash
//! order, so two writes of the same masks differ byte for byte; this writer sorts everything, so a
//! rerun of a run reproduces its files exactly. Reading uses the `safetensors` crate.

use std::collections::BTreeMap;

/// One tensor to write: dtype name as safetensors spells it (`U8`, `F32`), shape, little-endian bytes.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// `U8`, `F32`, …
    pub dtype: &'static str,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian data.
    pub bytes: Vec<u8>,
}

/// Serialises `tensors` (written in name order) with `metadata`.
pub fn serialize(
    tensors: &BTreeMap<String, RawTensor>,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let end = offset + t.bytes.len();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    // Keys sorted whatever serde_json's map type is.
    let mut text = crate::config::canonical_json(&serde_json::Value::Object(header)).into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for t in tensors.values() {
        out.extend_from_slice(&t.bytes);
    }
    out
}

/// The `__metadata__` map of a safetensors file (empty when it has none).
pub fn metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    Ok(header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    #[test]
    fn output_is_readable_and_byte_stable() {
        let tensors = BTreeMap::from([
            (
                "b".to_string(),
                RawTensor {
                    dtype: "U8",
                    shape: vec![3],
                    bytes: vec![1, 0, 1],
                },
            ),
            (
                "a".to_string(),
                RawTensor {
                    dtype: "F32",
                    shape: vec![1],
                    bytes: 2.5f32.to_le_bytes().to_vec(),
                },
            ),
        ]);
        let meta = BTreeMap::from([
            ("z".to_string(), "1".to_string()),
            ("format".to_string(), "x".to_string()),
        ]);
        let bytes = serialize(&tensors, &meta);
        assert_eq!(bytes, serialize(&tensors, &meta));
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("b").unwrap().data(), &[1, 0, 1]);
        assert_eq!(st.tensor("a").unwrap().data(), &2.5f32.to_le_bytes());
        let (_, m) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap()["z"], "1");
        assert_eq!(metadata(&bytes).unwrap(), meta);
    }
}
