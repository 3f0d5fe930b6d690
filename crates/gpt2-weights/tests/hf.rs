//! Reading the Hugging Face layout.

mod common;

use std::borrow::Cow;
use std::path::Path;

use gpt2_weights::{expected_tensors, Dtype, Layout, Weights};

fn check_hf(dir: &Path) -> Weights {
    let w = Weights::open(dir).unwrap();
    assert_eq!(w.layout(), Layout::HuggingFace);
    assert_eq!(w.dtype(), Dtype::F32);
    let c = *w.config();
    let expected = expected_tensors(&c);
    let names: Vec<&str> = w.names().collect();
    assert_eq!(
        names,
        expected.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    for (name, shape) in &expected {
        let t = w.tensor(name).unwrap();
        assert_eq!(&t.shape, shape);
        assert!(matches!(t.data, Cow::Borrowed(_)), "{name} was copied");
        assert_eq!(t.data.len(), t.num_elements() * 4);
    }
    assert_eq!(w.num_parameters(), c.num_parameters());
    w.verify().unwrap();
    w
}

#[test]
fn micro_hf_loads() {
    let w = check_hf(&common::fixtures("micro/hf"));
    let c = w.config();
    assert_eq!(
        (c.n_vocab, c.n_ctx, c.n_embd, c.n_head, c.n_layer),
        (96, 16, 16, 2, 1)
    );
    assert_eq!(c.layer_norm_epsilon, 1e-5);
}

#[test]
fn tiny_hf_loads() {
    let w = check_hf(&common::fixtures("tiny/hf"));
    let c = w.config();
    assert_eq!(
        (c.n_vocab, c.n_embd, c.n_head, c.n_layer),
        (50257, 40, 5, 2)
    );
}

#[test]
fn shared_tiny_hf_loads() {
    let Some(dir) = common::shared("gpt2-tiny/hf") else {
        return;
    };
    let w = check_hf(&dir);
    let c = w.config();
    assert_eq!(
        (c.n_vocab, c.n_ctx, c.n_embd, c.n_head, c.n_layer),
        (50257, 128, 64, 4, 2)
    );
}

/// Real hub files: `transformer.` prefixes, attention-mask buffers, a tied lm_head.
#[test]
fn transformers_style_names_and_buffers() {
    let w = Weights::open(&common::fixtures("micro/hf")).unwrap();
    let mut tensors: Vec<(String, gpt2_weights::TensorView)> = w
        .names()
        .map(|n| (format!("transformer.{n}"), w.tensor(n).unwrap()))
        .collect();
    let mask = gpt2_weights::TensorView {
        dtype: Dtype::F32,
        shape: vec![1, 1, 16, 16],
        transposed: false,
        data: Cow::Owned(vec![0u8; 16 * 16 * 4]),
    };
    tensors.push(("transformer.h.0.attn.bias".into(), mask.clone()));
    tensors.push(("h.0.attn.masked_bias".into(), mask.clone()));
    tensors.push(("lm_head.weight".into(), w.tensor("wte.weight").unwrap()));
    let (_tmp, dir) = common::copy_dir(&common::fixtures("micro/hf"));
    let path = dir.join("model.safetensors");
    std::fs::remove_file(&path).unwrap();
    safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), None, &path)
        .unwrap();
    let v = Weights::open(&dir).unwrap();
    for name in w.names() {
        assert_eq!(v.tensor(name).unwrap(), w.tensor(name).unwrap());
    }
    assert_eq!(
        v.infos().next().unwrap().stored_name,
        "transformer.wte.weight"
    );
}

/// Sharded safetensors: `model.safetensors.index.json` + several files.
#[test]
fn sharded_safetensors() {
    let w = Weights::open(&common::fixtures("micro/hf")).unwrap();
    let names: Vec<&str> = w.names().collect();
    let (first, second) = names.split_at(names.len() / 2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(
        common::fixtures("micro/hf/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let tensors: Vec<(&str, gpt2_weights::TensorView)> =
            part.iter().map(|&n| (n, w.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (*n, t)), None, &dir.join(file))
            .unwrap();
        for n in part {
            weight_map.insert(n.to_string(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let v = Weights::open(dir).unwrap();
    assert_eq!(v.layout(), Layout::HuggingFace);
    for name in w.names() {
        assert_eq!(v.tensor(name).unwrap(), w.tensor(name).unwrap());
    }

    // A shard listed but absent, and a path escaping the directory.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = Weights::open(dir).unwrap_err().to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
    let bad = serde_json::json!({"weight_map": {"wte.weight": "../model.safetensors"}});
    std::fs::write(dir.join("model.safetensors.index.json"), bad.to_string()).unwrap();
    let err = Weights::open(dir).unwrap_err().to_string();
    assert!(err.contains("not a plain file name"), "{err}");
}

#[test]
fn weights_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Weights>();
    let w = Weights::open(&common::fixtures("micro/openai")).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    w.names()
                        .map(|n| w.tensor(n).unwrap().data.len())
                        .sum::<usize>()
                })
            })
            .collect();
        let sums: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(sums.windows(2).all(|p| p[0] == p[1]));
    });
}

#[test]
fn a_header_naming_a_tensor_twice_is_refused() {
    let (_tmp, dir) = common::copy_dir(&common::fixtures("micro/hf"));
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(header).unwrap();
    // `ln_f.weight` a second time, pointing at `ln_f.bias`'s bytes (same shape): the
    // safetensors crate keeps the last one without a word.
    let dup = format!("{{\"ln_f.weight\":{},{}", parsed["ln_f.bias"], &header[1..]);
    let mut out = (dup.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(dup.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    let err = Weights::open(&dir).unwrap_err().to_string();
    assert!(err.contains("\"ln_f.weight\" twice"), "{err}");
}
