//! Shared helpers for the reference tests: locating fixtures, loading reference files.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use gpt2_model::{DType, Device, Gpt2, LoadOptions, Tensor};
use serde_json::Value;

/// The committed fixtures of this repository (`fixtures/<name>`).
pub fn repo_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// The shared cross-check fixtures beside the checkout (`../shared/fixtures/<name>`), if present.
pub fn shared_fixture(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures")
        .join(name);
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

/// A fixture set: a directory with `reference.json`, `reference.safetensors` and model dirs.
pub struct Reference {
    pub dir: PathBuf,
    pub json: Value,
    pub tensors: HashMap<String, Tensor>,
}

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
    let a = f32m
        .forward(&row(prompt))
        .expect("forward")
        .squeeze(0)
        .expect("squeeze");
    let b = q8
        .forward(&row(prompt))
        .expect("forward")
        .squeeze(0)
        .expect("squeeze");
    let d = max_abs_diff(&a, &b);
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
