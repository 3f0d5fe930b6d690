//! What continuous batching costs over one rectangular batch, at the 124M shape with random
//! weights: a decode step of 16 sequences as one batch-16 cache ([`Gpt2::step`]) and as 16
//! caches of their own ([`Gpt2::step_ragged`], the server's case), and a pass of 16 decode
//! tokens plus a 48-token prompt chunk ([`Gpt2::extend_ragged`]), interleaved, medians.
//!
//! `cargo run --release -p gpt2-model --example ragged_step [-- f32|f16|q8_0 [MODEL_DIR]]`
//! (with a model directory, its weights as `gpt2 serve` loads them, mapped, instead of
//! random ones in memory)
use std::time::Instant;

use gpt2_model::{Config, ContextOverflow, DType, Gpt2, KvCache, LoadOptions, Logits};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opts = match std::env::args().nth(1).as_deref() {
        Some("f16") => LoadOptions::cpu(DType::F16),
        Some("q8_0") => LoadOptions::q8_0(),
        _ => LoadOptions::cpu(DType::F32),
    };
    let model = match std::env::args().nth(2) {
        Some(dir) => Gpt2::load(dir, &opts)?,
        None => Gpt2::random(&Config::GPT2_124M, 0, &opts)?,
    };
    let n = 16;
    let prompts: Vec<Vec<u32>> = (0..n)
        .map(|b| (0..32).map(|i| (i * 7919 + b * 31 + 1) % 50257).collect())
        .collect();
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let (mut batch_t, mut ragged_t, mut mixed_t) = (Vec::new(), Vec::new(), Vec::new());
    for _round in 0..3 {
        let mut batch = model.new_cache(ContextOverflow::Error);
        model.prefill(&mut batch, &refs, Logits::Last)?;
        let mut own: Vec<KvCache> = Vec::new();
        for p in &refs {
            let mut c = model.new_cache(ContextOverflow::Error);
            model.prefill(&mut c, &[p], Logits::Last)?;
            own.push(c);
        }
        let next = vec![464u32; n as usize];
        for _ in 0..16 {
            let t = Instant::now();
            model.step(&mut batch, &next)?;
            batch_t.push(t.elapsed().as_secs_f64());
            let mut caches: Vec<&mut KvCache> = own.iter_mut().collect();
            let t = Instant::now();
            model.step_ragged(&mut caches, &next)?;
            ragged_t.push(t.elapsed().as_secs_f64());
        }
        // 16 decode tokens and a 48-token chunk of a new prompt, in one pass.
        for _ in 0..4 {
            let mut fresh = model.new_cache(ContextOverflow::Error);
            let chunk: Vec<u32> = (0..48).map(|i| (i * 13 + 7) % 50257).collect();
            let mut caches: Vec<&mut KvCache> = own.iter_mut().collect();
            caches.push(&mut fresh);
            let mut chunks: Vec<&[u32]> = next.iter().map(std::slice::from_ref).collect();
            chunks.push(&chunk);
            let t = Instant::now();
            model.extend_ragged(&mut caches, &chunks)?;
            mixed_t.push(t.elapsed().as_secs_f64());
        }
    }
    println!(
        "batch-16 step {:.1} ms, 16 ragged caches {:.1} ms, 16 tokens + 48-token chunk {:.1} ms",
        median(batch_t) * 1e3,
        median(ragged_t) * 1e3,
        median(mixed_t) * 1e3
    );
    Ok(())
}
