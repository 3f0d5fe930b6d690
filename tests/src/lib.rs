//! Helpers shared by the workspace's end-to-end suites (`tests/tests/*.rs`): where the
//! fixtures are, the `gpt2` binary, and the reference checks (a fixture set's logits and
//! hidden states, greedy decoding, a quantized model against f32).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use gpt2_model::{DType, Device, Gpt2, LoadOptions, Tensor};
use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The committed fixtures of this repository (`fixtures/<name>`).
pub fn repo_fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// The committed fixture model in Hugging Face's layout (fixtures/tiny: random weights, n_ctx 32).
pub fn tiny() -> PathBuf {
    repo_fixture("tiny/hf")
}

/// fixtures/tiny/reference.json: what transformers computes for the tiny model.
pub fn reference() -> Value {
    let path = repo_fixture("tiny/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read reference.json"))
        .expect("parse reference.json")
}

/// The shared cross-check fixtures beside the checkout (`../shared/fixtures/<name>`), if present.
pub fn shared_fixture(name: &str) -> Option<PathBuf> {
    let p = root().join("../shared/fixtures").join(name);
    if p.join("reference.json").is_file() {
        Some(p)
    } else {
        eprintln!(
            "note: {} is absent; skipping the shared cross-check (the committed fixtures are still tested)",
            p.display()
        );
        None
    }
}

/// The `gpt2` binary of this checkout: `<target-dir>/<profile>/gpt2`, next to the `deps/`
/// folder of this test executable. `cargo test` (of the workspace, or with `-p gpt2-cli`)
/// builds it before any test runs, since gpt2-cli has integration tests of its own; cargo
/// gives `CARGO_BIN_EXE_gpt2` only to the binary's own package. (A nested `cargo build` from
/// a test would wait forever on the build lock the running `cargo test` holds.)
///
/// # Panics
/// When the binary is not there (run `cargo test --workspace`, or `cargo build -p gpt2-cli`
/// first when testing this package alone).
pub fn gpt2_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // This test executable is <target-dir>[/<triple>]/<profile>/deps/<name>.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable is in <profile>/deps");
        let bin = profile_dir.join(format!("gpt2{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} is missing: run the suites with `cargo test --workspace` (which builds the gpt2 \
             binary first), or `cargo build -p gpt2-cli` before `cargo test -p gpt2-tests`",
            bin.display()
        );
        bin
    })
}

/// Runs `gpt2 ARGS` with no stdin and returns what it did.
pub fn gpt2(args: &[&str]) -> Output {
    Command::new(gpt2_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run gpt2")
}

/// A fixture set: a directory with `reference.json`, `reference.safetensors` and model dirs.
pub struct Reference {
    pub dir: PathBuf,
    pub json: Value,
    pub tensors: HashMap<String, Tensor>,
}

/// One prompt of a fixture set, with what the reference computed for it.
pub struct Prompt {
    pub name: String,
    pub ids: Vec<u32>,
    pub logits: Tensor,        // [n, vocab]
    pub hidden_states: Tensor, // [n_layer + 1, n, n_embd]
    pub json: Value,
}

impl Reference {
    pub fn load(dir: PathBuf) -> Reference {
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        let json: Value = serde_json::from_str(&text).expect("reference.json parses");
        let tensors =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .expect("reference.safetensors");
        Reference { dir, json, tensors }
    }

    pub fn n_layer(&self) -> usize {
        self.json["model"]["hparams"]["n_layer"]
            .as_u64()
            .expect("n_layer") as usize
    }

    pub fn prompts(&self) -> Vec<Prompt> {
        self.json["prompts"]
            .as_array()
            .expect("prompts")
            .iter()
            .map(|p| Prompt {
                name: p["name"].as_str().unwrap_or("?").to_string(),
                ids: ids(&p["ids"]),
                logits: self.tensors[p["logits_tensor"].as_str().expect("logits_tensor")].clone(),
                hidden_states: self.tensors[p["hidden_states_tensor"]
                    .as_str()
                    .expect("hidden_states_tensor")]
                .clone(),
                json: p.clone(),
            })
            .collect()
    }

    pub fn model(&self, layout: &str, dtype: DType) -> Gpt2 {
        let dir = self.dir.join(layout);
        Gpt2::load(&dir, &LoadOptions::cpu(dtype))
            .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
    }
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// max |a - b| over all elements (shapes must match).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff")
}

/// `[1, n]` u32 tensor.
pub fn row(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("ids tensor")
}

/// The logits at every position of one prompt, `[n, vocab]` (no cache).
pub fn logits(model: &Gpt2, ids: &[u32]) -> Tensor {
    model
        .forward(&row(ids))
        .expect("forward")
        .squeeze(0)
        .expect("squeeze")
}

/// Sum over t of log_softmax(logits[t])[ids[t+1]] in f64.
pub fn logprob_sum(logits: &Tensor, ids: &[u32]) -> f64 {
    let rows = logits.to_vec2::<f32>().expect("logits");
    let mut sum = 0f64;
    for t in 0..ids.len().saturating_sub(1) {
        let r = &rows[t];
        let max = r.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lse = max + r.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        sum += r[ids[t + 1] as usize] as f64 - lse;
    }
    sum
}

/// Greedy argmax loop with the KV cache (prefill, then one token at a time).
pub fn greedy(model: &Gpt2, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(Default::default());
    let mut out = Vec::new();
    let mut logits = model
        .prefill(&mut cache, &[prompt], gpt2_model::Logits::Last)
        .expect("prefill");
    for _ in 0..n {
        let next = logits
            .argmax(1)
            .and_then(|t| t.to_vec1::<u32>())
            .expect("argmax")[0];
        out.push(next);
        if out.len() == n {
            break;
        }
        logits = model.step(&mut cache, &[next]).expect("step");
    }
    out
}

/// A quantized model against f32: max |logit diff| at every position of `prompt`, greedy
/// agreement over `n` new tokens (tokens equal before the first divergence, out of `n`), and
/// the f32 top-1 margin at the divergence (0 when there is none).
pub fn compare(f32m: &Gpt2, q8: &Gpt2, prompt: &[u32], n: usize) -> (f32, usize, usize, f64) {
    let d = max_abs_diff(&logits(f32m, prompt), &logits(q8, prompt));
    let want = greedy(f32m, prompt, n);
    let got = greedy(q8, prompt, n);
    let mut agree = 0;
    let mut worst_margin = 0f64;
    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
        if g != w {
            // The f32 margin between its pick and the runner-up at this step.
            let mut ctx = prompt.to_vec();
            ctx.extend_from_slice(&want[..j]);
            let last = f32m
                .forward_last(&row(&ctx))
                .expect("forward")
                .squeeze(0)
                .expect("squeeze");
            let mut v: Vec<f32> = last.to_vec1().expect("logits");
            v.sort_by(|x, y| y.total_cmp(x));
            let margin = (v[0] - v[1]) as f64;
            eprintln!(
                "  diverged at step {j}: quantized {g}, f32 {w}, f32 top-1 margin {margin:.4}"
            );
            worst_margin = worst_margin.max(margin);
            break;
        }
        agree += 1;
    }
    (d, agree, want.len(), worst_margin)
}
