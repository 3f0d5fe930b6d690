//! Helpers for this crate's own integration tests (the cross-crate reference suites, with
//! their fixture helpers, are in the workspace's `tests/` crate).

use std::path::PathBuf;

use gpt2_model::{Device, Gpt2, Tensor};

/// The committed fixtures of this repository (`fixtures/<name>`).
pub fn repo_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
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
