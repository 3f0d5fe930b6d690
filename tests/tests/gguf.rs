//! `gpt2 convert --dtype q8_0` (GGUF) and running the result, as the user runs them.

use std::path::Path;
use std::process::Output;

use gpt2_model::{Config, Gpt2, LoadOptions, Logits};

use gpt2_tests::gpt2;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `gpt2 generate --greedy` ids for `model`, with extra args.
fn greedy_ids(model: &Path, extra: &[&str]) -> Vec<u64> {
    let mut args = vec![
        "generate",
        "-m",
        s(model),
        "--greedy",
        "-n",
        "8",
        "--ignore-eos",
        "--format",
        "json",
        "--prompt-ids",
        "464,3290,318",
    ];
    args.extend_from_slice(extra);
    let out = ok(&gpt2(&args));
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn convert_q8_0_then_generate_and_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f32");
    let config = Config {
        n_vocab: 50257,
        n_ctx: 32,
        n_embd: 64,
        n_head: 4,
        n_layer: 2,
        layer_norm_epsilon: 1e-5,
    };
    Gpt2::random(&config, 7, &LoadOptions::default())
        .unwrap()
        .save_hf(&src)
        .unwrap();
    let out = tmp.path().join("q8");
    let o = gpt2(&[
        "convert",
        "--from",
        s(&src),
        "--to",
        s(&out),
        "--dtype",
        "q8_0",
    ]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("(huggingface)") && err.contains("(gguf, q8_0)"),
        "{err}"
    );
    assert!(out.join("model.gguf").is_file() && out.join("config.json").is_file());

    // The library's greedy continuation of the GGUF model.
    let model = Gpt2::load(&out, &LoadOptions::q8_0()).unwrap();
    let mut cache = model.new_cache(Default::default());
    let mut logits = model
        .prefill(&mut cache, &[&[464, 3290, 318]], Logits::Last)
        .unwrap();
    let mut want = Vec::new();
    for _ in 0..8 {
        let next = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap()[0];
        want.push(u64::from(next));
        logits = model.step(&mut cache, &[next]).unwrap();
    }
    // A GGUF model runs as q8_0 by default; the file itself loads too.
    assert_eq!(greedy_ids(&out, &[]), want);
    assert_eq!(greedy_ids(&out, &["--dtype", "q8_0"]), want);
    assert_eq!(greedy_ids(&out.join("model.gguf"), &[]), want);
    // --dtype f32 computes with the dequantized weights.
    assert_eq!(greedy_ids(&out, &["--dtype", "f32"]).len(), 8);
    // The tokenizer stored in the file (no tokenizer files beside it): GPT-2's.
    let out_json = ok(&gpt2(&[
        "generate",
        "-m",
        s(&out),
        "--greedy",
        "-n",
        "2",
        "--format",
        "json",
        "Hello world",
    ]));
    let v: serde_json::Value = serde_json::from_str(out_json.lines().next().unwrap()).unwrap();
    assert_eq!(v["prompt_ids"], serde_json::json!([15496, 995]));

    let v: serde_json::Value = serde_json::from_str(&ok(&gpt2(&[
        "inspect",
        "--model",
        s(&out),
        "--format",
        "json",
        "--verify",
    ])))
    .unwrap();
    assert_eq!(v["layout"], "gguf");
    assert_eq!(v["gguf_version"], 3);
    assert_eq!(v["dtype"], "q8_0");
    assert_eq!(v["config"]["n_embd"], 64);
    assert_eq!(v["tensors"][0]["stored_name"], "token_embd.weight");
    assert_eq!(v["tensors"][0]["dtype"], "q8_0");
    let text = ok(&gpt2(&["inspect", "--model", s(&out)]));
    assert!(text.contains("blk.1.ffn_down.weight"), "{text}");

    // Destination exists: a usage error (exit 2), nothing touched.
    let o = gpt2(&[
        "convert",
        "--from",
        s(&src),
        "--to",
        s(&out),
        "--dtype",
        "q8_0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}

#[test]
fn convert_q8_0_refuses_n_embd_not_a_multiple_of_32() {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("tiny-q8");
    let o = gpt2(&[
        "convert",
        "--from",
        s(&gpt2_tests::tiny()),
        "--to",
        s(&to),
        "--dtype",
        "q8_0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("multiple of 32") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!to.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "left-overs"
    );

    let o = gpt2(&[
        "convert",
        "--from",
        s(&gpt2_tests::tiny()),
        "--to",
        s(&to),
        "--dtype",
        "q4_0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("q8_0 (GGUF)"));
}
