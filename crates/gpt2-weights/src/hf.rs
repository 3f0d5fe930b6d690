//! The Hugging Face hub layout: `config.json` + `model.safetensors`, or several
//! safetensors files listed in `model.safetensors.index.json`.
//!
//! Tensor names may carry the `transformer.` prefix (as `GPT2LMHeadModel` checkpoints
//! saved by `transformers` do) or not (as the hub's `openai-community/gpt2` files).
//! The attention-mask buffers `h.N.attn.bias` and `h.N.attn.masked_bias` that older
//! files contain are ignored, and an explicit `lm_head.weight` is accepted only when it
//! equals `wte.weight` bit for bit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::names::{hf_to_canonical, is_hf_buffer};
use crate::weights::{DataFile, RawTensor};
use crate::{Config, Dtype, Layout, Weights, WeightsError};

pub(crate) fn open(dir: &Path) -> Result<Weights, WeightsError> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(WeightsError::MissingFile {
            path: config_path,
            needed_for: "the hyperparameters of a Hugging Face model directory".into(),
        });
    }
    let config = Config::from_config_json(&config_path)?;
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let file_names: Vec<String> = if single.is_file() {
        vec!["model.safetensors".into()]
    } else if index.is_file() {
        shard_names(&index)?
    } else {
        let hint = if dir.join("pytorch_model.bin").is_file() {
            "; pytorch_model.bin (PyTorch pickle) is not read: use the hub's model.safetensors"
        } else {
            ""
        };
        return Err(WeightsError::MissingFile {
            path: single,
            needed_for: format!(
                "the weights (or model.safetensors.index.json for sharded weights){hint}"
            ),
        });
    };
    let mut files = Vec::new();
    let mut raw = Vec::new();
    for name in &file_names {
        let file = DataFile::map(&dir.join(name))?;
        read_safetensors(&file, files.len(), &mut raw)?;
        files.push(file);
    }
    Weights::assemble(dir, Layout::HuggingFace, config, files, raw)
}

/// The distinct file names in an index's `weight_map`, in sorted order.
fn shard_names(index: &Path) -> Result<Vec<String>, WeightsError> {
    let text = std::fs::read_to_string(index).map_err(|e| WeightsError::io(index, e))?;
    let bad = |m: String| WeightsError::format(index.display(), m);
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("expected an object `weight_map` {tensor name: file name}".into()))?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("`weight_map` entry `{tensor}` is not a file name")))?;
        let plain = Path::new(file).file_name().and_then(|f| f.to_str()) == Some(file);
        if !plain || file == ".." {
            return Err(bad(format!(
                "`weight_map` entry `{tensor}`: `{file}` is not a plain file name in this directory"
            )));
        }
        names.insert(file.to_string());
    }
    if names.is_empty() {
        return Err(bad("`weight_map` lists no files".into()));
    }
    Ok(names.into_iter().collect())
}

fn read_safetensors(
    file: &DataFile,
    index: usize,
    raw: &mut Vec<RawTensor>,
) -> Result<(), WeightsError> {
    let (n, metadata) = safetensors::SafeTensors::read_metadata(&file.bytes).map_err(|e| {
        WeightsError::format(
            file.path.display(),
            format!("not a valid safetensors file: {e}"),
        )
    })?;
    // `n` bytes of JSON after the 8-byte length (read_metadata checked both).
    if let Some(key) = file.bytes.get(8..8 + n).and_then(duplicate_key) {
        return Err(WeightsError::format(
            file.path.display(),
            format!(
                "the safetensors header names tensor {} twice (a JSON object with a duplicated \
                 key: which one is meant is ambiguous)",
                quoted(&key)
            ),
        ));
    }
    let base = 8 + n;
    let mut tensors: BTreeMap<String, &safetensors::tensor::TensorInfo> =
        metadata.tensors().into_iter().collect();
    for (name, info) in std::mem::take(&mut tensors) {
        let canonical = hf_to_canonical(&name);
        if is_hf_buffer(canonical) {
            continue;
        }
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => Ok(Dtype::F32),
            safetensors::Dtype::F16 => Ok(Dtype::F16),
            safetensors::Dtype::BF16 => Ok(Dtype::BF16),
            other => Err(format!("{other:?}")),
        };
        let (s, e) = info.data_offsets;
        raw.push(RawTensor {
            canonical: Some(canonical.to_string()),
            stored_name: name,
            dtype,
            shape: info.shape.clone(),
            transposed: false,
            file: index,
            start: base + s,
            len: e - s,
            crc32c: None,
        });
    }
    Ok(())
}

/// The first key that appears twice at the top level of the JSON object `header` (serde_json
/// keeps the last one silently, as does the safetensors crate).
fn duplicate_key(header: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // Every entry is read (serde_json checks the object's end), the first repeat kept.
            let (mut seen, mut repeated) = (std::collections::HashSet::new(), None);
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if repeated.is_none() && !seen.insert(key.clone()) {
                    repeated = Some(key);
                }
            }
            Ok(repeated)
        }
    }
    serde_json::Deserializer::from_slice(header)
        .deserialize_map(Keys)
        .ok()
        .flatten()
}

/// `s` quoted, cut to 200 bytes (at a character boundary) when longer.
fn quoted(s: &str) -> String {
    match s.char_indices().map(|(i, _)| i).find(|&i| i > 200) {
        Some(cut) => format!("{:?}… ({} bytes in all)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn duplicate_keys_are_found() {
        assert_eq!(
            super::duplicate_key(br#"{"a":{"x":1},"b":2,"a":[3]}"#),
            Some("a".to_string())
        );
        assert_eq!(super::duplicate_key(br#"{"a":1,"b":{"a":2}}"#), None);
        let h = br#"{"ln_f.weight":{"data_offsets":[1,2],"dtype":"F32","shape":[16]},"__metadata__":{"format":"pt"},"ln_f.weight":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}}"#;
        assert_eq!(super::duplicate_key(h), Some("ln_f.weight".to_string()));
    }
}
