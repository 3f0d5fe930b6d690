//! `gpt2 logits` against the committed reference logits (fixtures/tiny, made with
//! Hugging Face transformers).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn gpt2() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpt2"))
}

/// (shape, values) of an f32 tensor in a safetensors file.
fn read_f32(path: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).expect("read safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse safetensors");
    let t = st.tensor(name).expect("tensor");
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let values = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), values)
}

fn reference() -> Value {
    let text =
        std::fs::read_to_string(fixtures().join("tiny/reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("json")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn all_positions_from_ids_match_the_reference_in_both_layouts() {
    let r = reference();
    let tmp = tempfile::tempdir().expect("tempdir");
    for layout in ["hf", "openai"] {
        for p in r["prompts"].as_array().expect("prompts") {
            let ids: Vec<String> = p["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.to_string())
                .collect();
            let out = tmp.path().join(format!(
                "{layout}-{}.safetensors",
                p["name"].as_str().unwrap_or("p")
            ));
            let status = gpt2()
                .args(["logits", "--model"])
                .arg(fixtures().join("tiny").join(layout))
                .args(["--ids", &ids.join(","), "--all-positions", "--out"])
                .arg(&out)
                .status()
                .expect("run gpt2");
            assert!(status.success());
            let (shape, got) = read_f32(&out, "logits");
            let (want_shape, want) = read_f32(
                &fixtures().join("tiny/reference.safetensors"),
                p["logits_tensor"].as_str().expect("name"),
            );
            assert_eq!(shape, want_shape);
            let d = max_diff(&got, &want);
            assert!(d <= 1e-4, "{layout} {}: max |diff| {d}", p["name"]);
        }
    }
}

#[test]
fn prompt_text_is_tokenized_and_last_position_is_the_default() {
    let r = reference();
    let p = &r["prompts"][0];
    let text = p["text"].as_str().expect("text");
    assert!(!text.is_empty());
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("last.safetensors");
    let status = gpt2()
        .args(["logits", "--model"])
        .arg(fixtures().join("tiny/hf"))
        .args(["--prompt", text, "--out"])
        .arg(&out)
        .status()
        .expect("run gpt2");
    assert!(status.success());
    let (shape, got) = read_f32(&out, "logits");
    let (want_shape, want) = read_f32(
        &fixtures().join("tiny/reference.safetensors"),
        p["logits_tensor"].as_str().expect("name"),
    );
    let (n, vocab) = (want_shape[0], want_shape[1]);
    assert_eq!(shape, vec![1, vocab]);
    assert!(max_diff(&got, &want[(n - 1) * vocab..]) <= 1e-4);
    // The ids are recorded in the metadata.
    let bytes = std::fs::read(&out).expect("read");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("metadata");
    let ids: Vec<String> = p["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(
        meta.metadata().as_ref().and_then(|m| m.get("ids")),
        Some(&ids.join(","))
    );
}

#[test]
fn bad_input_is_a_usage_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("x.safetensors");
    let model = fixtures().join("tiny/hf");
    let run = |extra: &[String]| {
        gpt2()
            .args(["logits", "--model"])
            .arg(&model)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run gpt2")
    };
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Out-of-vocabulary id, unparsable ids, too long for n_ctx (32), both inputs, neither.
    let long: Vec<String> = (0..33).map(|i| i.to_string()).collect();
    let long = long.join(",");
    for args in [
        strings(&["--ids", "1,50257"]),
        strings(&["--ids", "1,x"]),
        strings(&["--ids", &long]),
        strings(&["--ids", "1", "--prompt", "hi"]),
        vec![],
    ] {
        let o = run(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.exists());
    }
    let o = run(&strings(&["--ids", "1,50257"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("50257") && err.contains("vocabulary"), "{err}");
    let o = run(&strings(&["--ids", &long]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("32"), "{err}");
}
