//! A tokenizer must have exactly the model's n_vocab tokens: checked when the model loads.

use std::path::Path;

use gpt2_tests::gpt2;

/// A copy of the tiny model (n_vocab 50257) with a cut-down vocabulary of its own: the 256
/// byte tokens and GPT-2's first 44 merges (300 tokens), in the Hugging Face layout.
fn tiny_with_small_vocab(dir: &Path) {
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(gpt2_tests::tiny().join(file), dir.join(file)).expect("copy the model");
    }
    let data = gpt2_tests::root().join("crates/gpt2-tokenizer/data");
    let encoder: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(data.join("encoder.json")).expect("encoder"))
            .expect("parse encoder.json");
    let small: serde_json::Map<String, serde_json::Value> = encoder
        .into_iter()
        .filter(|(_, id)| id.as_u64().is_some_and(|id| id < 300))
        .collect();
    assert_eq!(small.len(), 300);
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::to_vec(&small).expect("json"),
    )
    .expect("write vocab.json");
    let merges = std::fs::read_to_string(data.join("vocab.bpe")).expect("vocab.bpe");
    let first: Vec<&str> = merges.lines().take(1 + 44).collect();
    std::fs::write(dir.join("merges.txt"), first.join("\n") + "\n").expect("write merges.txt");
}

#[test]
fn a_tokenizer_smaller_than_the_model_is_refused_at_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny_with_small_vocab(tmp.path());
    let model = tmp.path().to_str().expect("utf-8 path");
    let out_file = tmp.path().join("l.safetensors");
    let out_file = out_file.to_str().expect("utf-8 path");
    for args in [
        &["generate", "-m", model, "-n", "3", "hello"][..],
        &["score", "-m", model, "hello"],
        &[
            "logits", "-m", model, "--prompt", "hello", "--out", out_file,
        ],
    ] {
        let out = gpt2(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("300 tokens") && err.contains("(n_vocab) has 50257"),
            "{args:?}: {err}"
        );
        assert!(err.contains("vocab.json + merges.txt"), "{err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!Path::new(out_file).exists());
}

#[test]
fn a_tokenizer_larger_than_the_model_is_refused_at_load() {
    // fixtures/micro: n_vocab 96 and no tokenizer files, so GPT-2's 50257-token vocabulary.
    let micro = gpt2_tests::root().join("fixtures/micro/hf");
    let out = gpt2(&[
        "generate",
        "-m",
        micro.to_str().expect("utf-8"),
        "-n",
        "2",
        "x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("built-in tokenizer") && err.contains("50257 tokens"),
        "{err}"
    );
    assert!(err.contains("(n_vocab) has 96"), "{err}");
}
