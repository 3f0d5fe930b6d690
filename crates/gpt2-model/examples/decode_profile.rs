//! Where a decode step's time goes, at the 124M shape with random weights: the whole step,
//! and the matmuls alone, for f32 and f16, interleaved so that machine noise hits both alike.
//!
//! `cargo run --release -p gpt2-model --example decode_profile`
use std::time::Instant;

use gpt2_model::{Config, ContextOverflow, DType, Gpt2, LoadOptions, Logits, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::GPT2_124M;
    let models: Vec<(DType, Gpt2)> = [DType::F32, DType::F16]
        .into_iter()
        .map(|d| Ok((d, Gpt2::random(&config, 0, &LoadOptions::cpu(d))?)))
        .collect::<Result<_, gpt2_model::ModelError>>()?;
    let prompt: Vec<u32> = (0..32).map(|i| (i * 7919 + 1) % 50257).collect();
    for round in 0..3 {
        for (dtype, model) in &models {
            let mut cache = model.new_cache(ContextOverflow::Error);
            model.prefill(&mut cache, &[&prompt], Logits::Last)?;
            let mut times = Vec::new();
            for _ in 0..32 {
                let t = Instant::now();
                model.step(&mut cache, &[464])?;
                times.push(t.elapsed().as_secs_f64());
            }
            // The weight matmuls alone (what the memory bandwidth bounds).
            let mut mm = Vec::new();
            let tensors = model.named_tensors()?;
            let x768 = Tensor::ones((1, 768), *dtype, model.device())?;
            let x3072 = Tensor::ones((1, 3072), *dtype, model.device())?;
            for _ in 0..8 {
                let t = Instant::now();
                for (name, w) in &tensors {
                    if name.ends_with("c_attn.weight")
                        || name.ends_with("c_fc.weight")
                        || name.ends_with("attn.c_proj.weight")
                    {
                        x768.matmul(w)?;
                    } else if name.ends_with("mlp.c_proj.weight") {
                        x3072.matmul(w)?;
                    } else if name == "wte.weight" {
                        x768.matmul(&w.t()?)?;
                    }
                }
                mm.push(t.elapsed().as_secs_f64());
            }
            let step = median(times);
            let mm = median(mm);
            println!(
                "round {round} {dtype:?}: step {:.1} ms ({:.1} tok/s); weight matmuls alone {:.1} ms; rest {:.1} ms",
                step * 1e3,
                1.0 / step,
                mm * 1e3,
                (step - mm) * 1e3
            );
        }
    }
    Ok(())
}
