//! `convert` and `save_hf`.

mod common;

use gpt2_weights::{convert, save_hf, Dtype, Layout, TensorView, Weights};

fn assert_bit_identical(a: &Weights, b: &Weights) {
    assert_eq!(a.config(), b.config());
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    for name in a.names() {
        assert_eq!(a.tensor(name).unwrap(), b.tensor(name).unwrap(), "{name}");
    }
}

#[test]
fn openai_to_hf_f32_is_lossless() {
    for src in ["micro/openai", "micro/openai-sharded", "tiny/openai"] {
        let from = common::fixtures(src);
        let out = tempfile::tempdir().unwrap();
        let to = out.path().join("hf");
        convert(&from, &to, Dtype::F32).unwrap();
        assert_eq!(
            common::list_tree(out.path()),
            vec!["hf", "hf/config.json", "hf/model.safetensors"]
        );
        let a = Weights::open(&from).unwrap();
        let b = Weights::open(&to).unwrap();
        assert_eq!(b.layout(), Layout::HuggingFace);
        assert_eq!(b.dtype(), Dtype::F32);
        assert_bit_identical(&a, &b);
        // And the same as the HF fixture made by transformers.
        let hf_dir = from.parent().unwrap().join("hf");
        assert_bit_identical(&Weights::open(&hf_dir).unwrap(), &b);
    }
}

#[test]
fn config_json_round_trips_and_matches_transformers_keys() {
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("hf");
    convert(&common::fixtures("tiny/openai"), &to, Dtype::F32).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(to.join("config.json")).unwrap()).unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures("tiny/hf/config.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "vocab_size",
        "n_positions",
        "n_ctx",
        "n_embd",
        "n_head",
        "n_layer",
        "layer_norm_epsilon",
        "model_type",
        "activation_function",
        "tie_word_embeddings",
    ] {
        assert_eq!(written[key], reference[key], "config.json key {key}");
    }
}

#[test]
fn f16_conversion_rounds_each_value() {
    let from = common::fixtures("micro/openai");
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("hf16");
    convert(&from, &to, Dtype::F16).unwrap();
    let a = Weights::open(&from).unwrap();
    let b = Weights::open(&to).unwrap();
    assert_eq!(b.dtype(), Dtype::F16);
    // Same as TensorFlow's own f16 cast of the checkpoint.
    let tf16 = Weights::open(&common::fixtures("micro/openai-f16")).unwrap();
    for name in a.names() {
        let ta = a.tensor(name).unwrap();
        let tb = b.tensor(name).unwrap();
        assert_eq!(tb.dtype, Dtype::F16);
        assert_eq!(tb, ta.to_dtype(Dtype::F16), "{name}");
        assert_eq!(
            tb,
            tf16.tensor(name).unwrap(),
            "{name} differs from TF's f16 cast"
        );
        let (x, y) = (ta.to_f32_vec(), tb.to_f32_vec());
        for (u, v) in x.iter().zip(&y) {
            assert!((u - v).abs() <= u.abs() * 1e-3 + 1e-7, "{name}: {u} vs {v}");
        }
    }
    // f16 -> f32 back is exact on the f16 values.
    let to32 = out.path().join("hf32");
    convert(&to, &to32, Dtype::F32).unwrap();
    let c = Weights::open(&to32).unwrap();
    for name in b.names() {
        assert_eq!(
            c.tensor(name).unwrap().to_f32_vec(),
            b.tensor(name).unwrap().to_f32_vec()
        );
    }
}

#[test]
fn tokenizer_files_come_along() {
    // From the OpenAI layout: encoder.json -> vocab.json, vocab.bpe -> merges.txt.
    let (_tmp, from) = common::copy_dir(&common::fixtures("micro/openai"));
    std::fs::write(from.join("encoder.json"), "{\"a\": 0}").unwrap();
    std::fs::write(from.join("vocab.bpe"), "#version: 0.2\na b\n").unwrap();
    let mut ro = std::fs::metadata(from.join("encoder.json"))
        .unwrap()
        .permissions();
    ro.set_readonly(true);
    std::fs::set_permissions(from.join("encoder.json"), ro).unwrap();
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("hf");
    convert(&from, &to, Dtype::F32).unwrap();
    assert_eq!(
        std::fs::read_to_string(to.join("vocab.json")).unwrap(),
        "{\"a\": 0}"
    );
    assert_eq!(
        std::fs::read_to_string(to.join("merges.txt")).unwrap(),
        "#version: 0.2\na b\n"
    );
    // Permissions are not copied: a read-only source gives writable files.
    assert!(!std::fs::metadata(to.join("vocab.json"))
        .unwrap()
        .permissions()
        .readonly());

    // From the HF layout: the same names.
    let to2 = out.path().join("hf2");
    convert(&to, &to2, Dtype::F32).unwrap();
    assert_eq!(
        common::list_tree(&to2),
        vec![
            "config.json",
            "merges.txt",
            "model.safetensors",
            "vocab.json"
        ]
    );
}

#[test]
fn shared_tiny_converts_with_tokenizer_files() {
    let Some(from) = common::shared("gpt2-tiny/openai") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("hf");
    convert(&from, &to, Dtype::F32).unwrap();
    let hf = common::shared("gpt2-tiny/hf").unwrap();
    assert_bit_identical(&Weights::open(&hf).unwrap(), &Weights::open(&to).unwrap());
    for f in ["vocab.json", "merges.txt"] {
        assert_eq!(
            std::fs::read(to.join(f)).unwrap(),
            std::fs::read(hf.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn save_hf_checks_tensors_before_writing() {
    let w = Weights::open(&common::fixtures("micro/hf")).unwrap();
    let mut tensors: Vec<(String, TensorView)> = w
        .names()
        .map(|n| (n.to_string(), w.tensor(n).unwrap()))
        .collect();
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("x");

    tensors.pop();
    let err = save_hf(&to, w.config(), &tensors).unwrap_err().to_string();
    assert!(err.contains("missing 1 tensor(s): `ln_f.bias`"), "{err}");
    assert!(!to.exists());

    let mut short = tensors[1].1.clone();
    short.data = std::borrow::Cow::Owned(short.data[1..].to_vec());
    tensors[1].1 = short;
    let err = save_hf(&to, w.config(), &tensors).unwrap_err().to_string();
    assert!(err.contains("data length"), "{err}");
    assert!(common::list_tree(out.path()).is_empty());
}

#[test]
fn save_hf_into_relative_path_and_reopen() {
    let w = Weights::open(&common::fixtures("micro/openai")).unwrap();
    let tensors: Vec<(String, TensorView)> = w
        .names()
        .map(|n| (n.to_string(), w.tensor(n).unwrap()))
        .collect();
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("nested/deeper/model");
    save_hf(&to, w.config(), &tensors).unwrap();
    assert_bit_identical(&w, &Weights::open(&to).unwrap());
    // Written with the `transformers` metadata so `from_pretrained` accepts it.
    let bytes = std::fs::read(to.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(
        header.contains("\"__metadata__\":{\"format\":\"pt\"}"),
        "{header}"
    );
}

/// A temporary directory left by a writer that died (its `.lock` not locked, or no `.lock` and
/// old) is removed by the next write to the same destination; one in use (locked), or young
/// without a lock file, is kept.
#[test]
fn partial_directories_of_dead_writers_are_removed() {
    let out = tempfile::tempdir().unwrap();
    let partial = |suffix: &str, lock: bool| {
        let dir = out.path().join(format!(".hf.partial-{suffix}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("model.safetensors"), b"half").unwrap();
        if lock {
            std::fs::write(dir.join(".lock"), b"").unwrap();
        }
        dir
    };
    let dead = partial("dead01", true);
    let alive = partial("alive1", true);
    let unlocked = partial("nolock", false);
    // Without a lock file and two minutes old: a writer that died before locking.
    let old_unlocked = partial("oldnol", false);
    let two_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::open(&old_unlocked)
        .unwrap()
        .set_modified(two_minutes_ago)
        .unwrap();
    let other = out.path().join(".other.partial-dead02");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join(".lock"), b"").unwrap();
    // Another writer holds this one (a second open file description conflicts, even here).
    let held = std::fs::File::open(alive.join(".lock")).unwrap();
    held.lock().unwrap();

    convert(
        &common::fixtures("micro/hf"),
        &out.path().join("hf"),
        Dtype::F32,
    )
    .unwrap();
    assert!(!dead.exists(), "the dead writer's directory is still there");
    assert!(alive.join("model.safetensors").is_file());
    assert!(unlocked.join("model.safetensors").is_file());
    assert!(
        !old_unlocked.exists(),
        "the old lock-less directory is still there"
    );
    assert!(
        other.is_dir(),
        "another destination's directory was touched"
    );
    assert!(!out.path().join("hf/.lock").exists());
    drop(held);
}
