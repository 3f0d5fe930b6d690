//! `gpt2 convert` and `gpt2 inspect`, run as the user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures(rel: &str) -> PathBuf {
    gpt2_tests::repo_fixture(rel)
}

fn gpt2(args: &[&str]) -> Output {
    Command::new(gpt2_tests::gpt2_bin())
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn convert_then_inspect_json() {
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("micro-hf");
    let from = fixtures("micro/openai");
    let o = gpt2(&["convert", "--from", s(&from), "--to", s(&to)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("(openai)") && err.contains("(huggingface, f32)"),
        "{err}"
    );

    let o = gpt2(&["inspect", "--model", s(&to), "--format", "json", "--verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layout"], "huggingface");
    assert_eq!(v["dtype"], "f32");
    assert_eq!(v["config"]["n_embd"], 16);
    assert_eq!(v["config"]["n_head"], 2);
    assert_eq!(v["config"]["n_vocab"], 96);
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 2 + 12 + 2);
    assert_eq!(tensors[0]["name"], "wte.weight");
    assert_eq!(tensors[0]["shape"], serde_json::json!([96, 16]));
    let total: u64 = tensors
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert_eq!(v["num_parameters"].as_u64().unwrap(), total);
}

#[test]
fn inspect_text_openai_f16() {
    let o = gpt2(&["inspect", "--model", s(&fixtures("micro/openai-f16"))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("layout:     openai"), "{text}");
    assert!(text.contains("dtype:      f16"), "{text}");
    assert!(text.contains("n_embd=16 n_head=2"), "{text}");
    // Canonical name, canonical shape, stored name.
    let line = text
        .lines()
        .find(|l| l.contains("h.0.attn.c_attn.weight"))
        .unwrap();
    assert!(
        line.contains("[16, 48]") && line.contains("model/h0/attn/c_attn/w"),
        "{line}"
    );
}

#[test]
fn convert_to_f16() {
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("f16");
    let o = gpt2(&[
        "convert",
        "--from",
        s(&fixtures("micro/hf")),
        "--to",
        s(&to),
        "--dtype",
        "f16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = gpt2(&["inspect", "--model", s(&to), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dtype"], "f16");
}

#[test]
fn convert_errors() {
    let out = tempfile::tempdir().unwrap();
    // Destination exists: a usage error (exit 2), nothing touched.
    let o = gpt2(&[
        "convert",
        "--from",
        s(&fixtures("micro/openai")),
        "--to",
        s(out.path()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));

    // Unknown dtype: clap's usage error.
    let to = out.path().join("x");
    let o = gpt2(&[
        "convert",
        "--from",
        s(&fixtures("micro/openai")),
        "--to",
        s(&to),
        "--dtype",
        "q4",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("f32, f16, bf16"));
    assert!(!to.exists());

    // Not a model directory: exit 1 with what was looked for.
    let o = gpt2(&["convert", "--from", s(out.path()), "--to", s(&to)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not a GPT-2 model directory") && err.contains("hparams.json"),
        "{err}"
    );
    assert!(!to.exists());
}

#[test]
fn inspect_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = gpt2(&["inspect", "--model", s(tmp.path())]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("opening --model") && err.contains("not a GPT-2 model directory"),
        "{err}"
    );
}
