//! Bad input: every broken directory gives a clear error — never a panic, never a
//! half-written output. Broken inputs are built in temporary directories from the
//! committed `fixtures/micro` models.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use gpt2_weights::{tf, Dtype, TensorView, Weights, WeightsError};

fn micro(layout: &str) -> PathBuf {
    common::fixtures("micro").join(layout)
}

fn open_err(dir: &Path) -> String {
    match Weights::open(dir) {
        Ok(_) => panic!("{} opened, expected an error", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message lacks {p:?}: {msg}");
    }
}

/// The micro HF model's tensors, owned, with their stored (HF) names.
fn hf_tensors() -> Vec<(String, TensorView<'static>)> {
    let w = Weights::open(&micro("hf")).unwrap();
    w.names()
        .map(|n| {
            let t = w.tensor(n).unwrap();
            let owned = TensorView {
                dtype: t.dtype,
                shape: t.shape.clone(),
                transposed: false,
                data: Cow::Owned(t.data.into_owned()),
            };
            (n.to_string(), owned)
        })
        .collect()
}

/// A copy of micro/hf whose model.safetensors holds `tensors`.
fn hf_with(tensors: &[(String, TensorView<'_>)]) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = common::copy_dir(&micro("hf"));
    let path = dir.join("model.safetensors");
    std::fs::remove_file(&path).unwrap();
    safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), None, &path)
        .unwrap();
    (tmp, dir)
}

fn entry(dir: &Path, name: &str) -> tf::BundleEntry {
    let index = tf::parse_index(&std::fs::read(dir.join("model.ckpt.index")).unwrap()).unwrap();
    index
        .entries
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, e)| e)
        .unwrap()
}

#[test]
fn truncated_data_shard() {
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    let data = dir.join("model.ckpt.data-00000-of-00001");
    let len = std::fs::metadata(&data).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(len - 10).unwrap();
    let msg = open_err(&dir);
    assert_contains(
        &msg,
        &[
            "model.ckpt.data-00000-of-00001",
            "truncated",
            "tensor `model/",
        ],
    );
}

#[test]
fn missing_data_shard() {
    let (_tmp, dir) = common::copy_dir(&micro("openai-sharded"));
    std::fs::remove_file(dir.join("model.ckpt.data-00001-of-00002")).unwrap();
    let msg = open_err(&dir);
    assert_contains(
        &msg,
        &["model.ckpt.data-00001-of-00002", "missing", "shard 1"],
    );
}

#[test]
fn flipped_byte_is_a_checksum_error_naming_the_tensor() {
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    let e = entry(&dir, "model/h0/mlp/c_fc/w");
    let data = dir.join("model.ckpt.data-00000-of-00001");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[(e.offset + e.size / 2) as usize] ^= 0x10;
    std::fs::write(&data, bytes).unwrap();

    // Opening is lazy about data; reading the tensor checks it.
    let w = Weights::open(&dir).unwrap();
    w.tensor("h.0.attn.c_attn.weight").unwrap();
    let err = w.tensor("h.0.mlp.c_fc.weight").unwrap_err();
    assert!(matches!(err, WeightsError::Checksum { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &["checksum mismatch", "`model/h0/mlp/c_fc/w`"],
    );
    let err = w.verify().unwrap_err().to_string();
    assert_contains(&err, &["checksum mismatch", "`model/h0/mlp/c_fc/w`"]);
    // Still an error the second time (a failed check is not cached as success).
    assert!(w.tensor("h.0.mlp.c_fc.weight").is_err());

    // Converting it fails and leaves nothing behind.
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("converted");
    let err = gpt2_weights::convert(&dir, &to, Dtype::F32)
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["`model/h0/mlp/c_fc/w`"]);
    assert!(
        common::list_tree(out.path()).is_empty(),
        "{:?}",
        common::list_tree(out.path())
    );
}

#[test]
fn garbage_index() {
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(dir.join("model.ckpt.index"), garbage).unwrap();
    let msg = open_err(&dir);
    assert_contains(
        &msg,
        &["model.ckpt.index", "not a TensorFlow checkpoint index"],
    );
}

#[test]
fn every_truncation_of_the_index_is_an_error() {
    let good = std::fs::read(micro("openai").join("model.ckpt.index")).unwrap();
    for len in 0..good.len() {
        let err = tf::parse_index(&good[..len]).unwrap_err().to_string();
        assert!(!err.is_empty());
    }
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    std::fs::write(dir.join("model.ckpt.index"), &good[..good.len() / 2]).unwrap();
    assert_contains(&open_err(&dir), &["model.ckpt.index"]);
    std::fs::write(dir.join("model.ckpt.index"), b"").unwrap();
    assert_contains(&open_err(&dir), &["model.ckpt.index", "too short"]);
}

/// Any single flipped bit in the index either is caught, or lands in bytes TensorFlow
/// also ignores (footer padding, the empty metaindex block) and changes nothing.
#[test]
fn every_bit_flip_in_the_index_is_caught_or_harmless() {
    let good = std::fs::read(micro("openai").join("model.ckpt.index")).unwrap();
    let reference = tf::parse_index(&good).unwrap();
    let mut caught = 0;
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            // The fuzzing entry point (no block checksums) must not panic either.
            let _ = tf::parse_index_unchecked(&bad);
            match tf::parse_index(&bad) {
                Err(_) => caught += 1,
                Ok(parsed) => assert_eq!(parsed, reference, "flip at byte {i} bit {bit}"),
            }
        }
    }
    assert!(
        caught > good.len() * 8 * 9 / 10,
        "only {caught} flips caught"
    );
}

#[test]
fn missing_checkpoint_file() {
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    std::fs::remove_file(dir.join("checkpoint")).unwrap();
    let msg = open_err(&dir);
    assert_contains(&msg, &["checkpoint", "missing", "model_checkpoint_path"]);
}

#[test]
fn checkpoint_file_without_a_path() {
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    std::fs::write(
        dir.join("checkpoint"),
        "all_model_checkpoint_paths: \"x\"\n",
    )
    .unwrap();
    assert_contains(&open_err(&dir), &["checkpoint", "model_checkpoint_path"]);
    std::fs::write(
        dir.join("checkpoint"),
        "model_checkpoint_path: \"other.ckpt\"\n",
    )
    .unwrap();
    assert_contains(&open_err(&dir), &["other.ckpt.index", "missing"]);
}

#[test]
fn absolute_checkpoint_path_from_another_machine_falls_back_to_the_directory() {
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    std::fs::write(
        dir.join("checkpoint"),
        "model_checkpoint_path: \"/nonexistent/train/model.ckpt\"\n",
    )
    .unwrap();
    Weights::open(&dir).unwrap().verify().unwrap();
}

#[test]
fn shape_mismatch_names_tensor_expected_and_found() {
    // hparams say n_ctx 32, the checkpoint has 16 positions.
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    let hp = std::fs::read_to_string(dir.join("hparams.json")).unwrap();
    let hp = hp.replace("\"n_ctx\": 16", "\"n_ctx\": 32");
    std::fs::write(dir.join("hparams.json"), hp).unwrap();
    let msg = open_err(&dir);
    assert_contains(
        &msg,
        &["`wpe.weight` expected shape [32, 16], found [16, 16]"],
    );

    // A safetensors tensor of the wrong shape.
    let mut t = hf_tensors();
    let (_, v) = t
        .iter_mut()
        .find(|(n, _)| n == "h.0.attn.c_proj.weight")
        .unwrap();
    v.shape = vec![32, 8];
    let (_tmp2, dir) = hf_with(&t);
    let msg = open_err(&dir);
    assert_contains(
        &msg,
        &["`h.0.attn.c_proj.weight` expected shape [16, 16], found [32, 8]"],
    );
}

#[test]
fn missing_and_unexpected_tensors_are_reported_together() {
    let mut t = hf_tensors();
    t.retain(|(n, _)| n != "ln_f.bias" && n != "h.0.mlp.c_fc.bias");
    let extra = t[2].1.clone();
    t.push(("h.0.mlp.c_gate.weight".into(), extra));
    let (_tmp, dir) = hf_with(&t);
    let err = Weights::open(&dir).unwrap_err();
    let WeightsError::Mismatch { mismatch, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(mismatch.missing, vec!["h.0.mlp.c_fc.bias", "ln_f.bias"]);
    assert_eq!(mismatch.unexpected, vec!["h.0.mlp.c_gate.weight"]);
    assert_contains(
        &err.to_string(),
        &[
            "missing 2 tensor(s): `h.0.mlp.c_fc.bias`, `ln_f.bias`",
            "unexpected 1 tensor(s): `h.0.mlp.c_gate.weight`",
        ],
    );
}

#[test]
fn missing_tensor_in_a_checkpoint() {
    // hparams claim 2 layers; the checkpoint has 1.
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    let hp = std::fs::read_to_string(dir.join("hparams.json")).unwrap();
    std::fs::write(
        dir.join("hparams.json"),
        hp.replace("\"n_layer\": 1", "\"n_layer\": 2"),
    )
    .unwrap();
    assert_contains(
        &open_err(&dir),
        &["missing 12 tensor(s)", "`h.1.ln_1.weight`"],
    );
}

#[test]
fn extra_unknown_tensor_in_a_checkpoint() {
    let good = std::fs::read(micro("openai").join("model.ckpt.index")).unwrap();
    let mut parsed = tf::parse_index(&good).unwrap();
    parsed.entries.retain(|(n, _)| n.starts_with("model/"));
    assert!(parsed.entries.len() > 10);
    // Build a checkpoint in memory with one extra (unknown) tensor sharing bytes.
    let data = std::fs::read(micro("openai").join("model.ckpt.data-00000-of-00001")).unwrap();
    let config = *Weights::open(&micro("openai")).unwrap().config();
    let (_, ln) = parsed
        .entries
        .iter()
        .find(|(n, _)| n == "model/ln_f/b")
        .unwrap()
        .clone();
    parsed.entries.push(("model/zz_extra/b".into(), ln));
    parsed.entries.sort_by(|a, b| a.0.cmp(&b.0));
    let index = common::index_bytes(&parsed);
    let err = tf::open_from_bytes(config, &index, vec![data])
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["unexpected 1 tensor(s): `model/zz_extra/b`"]);
}

#[test]
fn hparams_missing_a_key_or_impossible() {
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    let good = std::fs::read_to_string(dir.join("hparams.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let mut missing = v.clone();
    missing.as_object_mut().unwrap().remove("n_head");
    std::fs::write(dir.join("hparams.json"), missing.to_string()).unwrap();
    assert_contains(&open_err(&dir), &["hparams.json", "missing key `n_head`"]);

    let mut odd = v.clone();
    odd["n_head"] = 3.into();
    std::fs::write(dir.join("hparams.json"), odd.to_string()).unwrap();
    assert_contains(
        &open_err(&dir),
        &[
            "hparams.json",
            "n_embd (16) must be divisible by n_head (3)",
        ],
    );

    let mut zero = v.clone();
    zero["n_layer"] = 0.into();
    std::fs::write(dir.join("hparams.json"), zero.to_string()).unwrap();
    assert_contains(&open_err(&dir), &["n_layer must be at least 1"]);

    let mut neg = v;
    neg["n_embd"] = (-16).into();
    std::fs::write(dir.join("hparams.json"), neg.to_string()).unwrap();
    assert_contains(
        &open_err(&dir),
        &["`n_embd` must be a non-negative integer, found -16"],
    );

    std::fs::write(dir.join("hparams.json"), "{\"n_vocab\": 96,").unwrap();
    assert_contains(&open_err(&dir), &["hparams.json", "not valid JSON"]);
}

#[test]
fn config_json_missing_a_key_or_unsupported() {
    let (_tmp, dir) = common::copy_dir(&micro("hf"));
    let good = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let mut missing = v.clone();
    missing.as_object_mut().unwrap().remove("vocab_size");
    std::fs::write(dir.join("config.json"), missing.to_string()).unwrap();
    assert_contains(
        &open_err(&dir),
        &["config.json", "missing key `vocab_size` or `n_vocab`"],
    );

    let mut act = v.clone();
    act["activation_function"] = "relu".into();
    std::fs::write(dir.join("config.json"), act.to_string()).unwrap();
    assert_contains(
        &open_err(&dir),
        &["config.json", "activation_function", "\"relu\""],
    );

    // n_inner is checked before n_embd is validated: 4 * n_embd must not overflow.
    for n_embd in [1u64 << 62, u64::MAX] {
        let mut huge = v.clone();
        huge["n_embd"] = n_embd.into();
        huge["n_inner"] = 0.into();
        std::fs::write(dir.join("config.json"), huge.to_string()).unwrap();
        assert_contains(
            &open_err(&dir),
            &["config.json", "n_inner must be null or 4 * n_embd"],
        );
    }
}

#[test]
fn safetensors_with_a_corrupt_header() {
    let (_tmp, dir) = common::copy_dir(&micro("hf"));
    let path = dir.join("model.safetensors");
    let good = std::fs::read(&path).unwrap();

    let mut bad = good.clone();
    bad[8..20].copy_from_slice(b"NOT JSON AT ");
    std::fs::write(&path, &bad).unwrap();
    assert_contains(
        &open_err(&dir),
        &["model.safetensors", "not a valid safetensors file"],
    );

    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    assert_contains(
        &open_err(&dir),
        &["model.safetensors", "not a valid safetensors file"],
    );

    std::fs::write(&path, &good[..good.len() - 4]).unwrap();
    assert_contains(
        &open_err(&dir),
        &["model.safetensors", "not a valid safetensors file"],
    );

    std::fs::write(&path, &good[..5]).unwrap();
    assert_contains(
        &open_err(&dir),
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn a_directory_that_is_neither_layout() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("README.md"), "hello").unwrap();
    let msg = open_err(tmp.path());
    assert_contains(
        &msg,
        &[
            "not a GPT-2 model directory",
            "config.json",
            "model.safetensors",
            "hparams.json",
            "checkpoint",
        ],
    );
    let msg = open_err(&tmp.path().join("README.md"));
    assert_contains(&msg, &["a directory (found a file)"]);
    let msg = open_err(&tmp.path().join("nope"));
    assert_contains(&msg, &["nope"]);
}

#[test]
fn hf_layout_missing_weights_file() {
    let (_tmp, dir) = common::copy_dir(&micro("hf"));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_contains(&open_err(&dir), &["model.safetensors", "missing"]);
    std::fs::write(dir.join("pytorch_model.bin"), b"PK").unwrap();
    assert_contains(&open_err(&dir), &["pytorch_model.bin", "not read"]);
}

#[test]
fn lm_head_must_equal_wte() {
    let mut t = hf_tensors();
    let wte = t[0].1.clone();
    assert_eq!(t[0].0, "wte.weight");
    t.push(("lm_head.weight".into(), wte.clone()));
    let (_tmp, dir) = hf_with(&t);
    Weights::open(&dir).unwrap();

    let mut different = wte;
    different.data.to_mut()[0] ^= 1;
    t.pop();
    t.push(("lm_head.weight".into(), different));
    let (_tmp2, dir) = hf_with(&t);
    assert_contains(
        &open_err(&dir),
        &["`lm_head.weight` differs from `wte.weight`", "tied"],
    );
}

#[test]
fn convert_into_an_existing_directory_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("exists");
    std::fs::create_dir(&to).unwrap();
    std::fs::write(to.join("keep.txt"), "mine").unwrap();
    let err = gpt2_weights::convert(&micro("openai"), &to, Dtype::F32).unwrap_err();
    assert!(matches!(err, WeightsError::DestinationExists(_)), "{err:?}");
    assert_contains(&err.to_string(), &["already exists"]);
    assert_eq!(
        common::list_tree(out.path()),
        vec!["exists", "exists/keep.txt"]
    );
}

/// A conversion that fails part-way (here: the last tensor is corrupt, found after the
/// others were read) leaves neither the destination nor a temporary directory.
#[test]
fn failed_conversion_leaves_nothing() {
    let (_tmp, dir) = common::copy_dir(&micro("openai"));
    let e = entry(&dir, "model/ln_f/b");
    let data = dir.join("model.ckpt.data-00000-of-00001");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[e.offset as usize] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let out = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F32, Dtype::F16] {
        let err = gpt2_weights::convert(&dir, &out.path().join("m"), dtype).unwrap_err();
        assert_contains(&err.to_string(), &["`model/ln_f/b`"]);
        assert!(common::list_tree(out.path()).is_empty());
    }
}

#[test]
fn tensors_that_share_bytes_are_refused() {
    // Every entry of the index pointing at offset 0 of the shard: each passes its own checks
    // (and the crc of the shared bytes may match), but the tensors would alias each other.
    let good = std::fs::read(micro("openai").join("model.ckpt.index")).unwrap();
    let mut parsed = tf::parse_index(&good).unwrap();
    let data = std::fs::read(micro("openai").join("model.ckpt.data-00000-of-00001")).unwrap();
    let config = *Weights::open(&micro("openai")).unwrap().config();
    // Two tensors of one size at the same offset (ln_f's gain and shift).
    let gain = parsed
        .entries
        .iter()
        .find(|(n, _)| n == "model/ln_f/g")
        .map(|(_, e)| e.clone())
        .unwrap();
    for (n, e) in parsed.entries.iter_mut() {
        if n == "model/ln_f/b" {
            *e = gain.clone();
        }
    }
    let err = tf::open_from_parsed(config, parsed, vec![data]).unwrap_err();
    assert_contains(&err.to_string(), &["overlap", "model/ln_f/"]);
}
