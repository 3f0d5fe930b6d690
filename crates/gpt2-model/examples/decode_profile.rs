//! Where a decode step's time goes, at the 124M shape with random weights: the whole step
//! (`Gpt2::step`, one sequence), against the same step's weight products alone, run back to
//! back through the same kernels on matrices of the same shapes and dtype. The difference is
//! what the step spends outside the weight streams (layer norms, biases, residuals,
//! attention, GELU, candle's per-op overhead). f32 and f16, interleaved so that machine noise
//! hits both alike.
//!
//! `cargo run --release -p gpt2-model --features unstable-kernels --example decode_profile`
use std::time::Instant;

use gpt2_model::cpu::gemv::{self, Weight};
use gpt2_model::{Config, ContextOverflow, DType, Gpt2, LoadOptions, Logits};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A step's weight products: per layer `c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj`
/// (`x · W`), then the tied head (`x · wteᵀ`).
struct Products<W> {
    layers: Vec<[Vec<W>; 4]>,
    wte: Vec<W>,
}

impl<W: Weight> Products<W> {
    fn new(c: &Config, cast: impl Fn(f32) -> W) -> Self {
        let e = c.n_embd;
        let mk = |n: usize, s: usize| -> Vec<W> {
            (0..n)
                .map(|i| cast(((i + s) % 97) as f32 * 1e-3 - 0.048))
                .collect()
        };
        let layers = (0..c.n_layer)
            .map(|l| {
                [
                    mk(e * 3 * e, l),
                    mk(e * e, l + 1),
                    mk(e * 4 * e, l + 2),
                    mk(4 * e * e, l + 3),
                ]
            })
            .collect();
        Self {
            layers,
            wte: mk(c.n_vocab * e, 7),
        }
    }

    fn run(&self, e: usize, vocab: usize) {
        let x = vec![0.01f32; 4 * e];
        for [a, p, f, m] in &self.layers {
            std::hint::black_box(gemv::x_w(&x[..e], 1, e, a, 3 * e));
            std::hint::black_box(gemv::x_w(&x[..e], 1, e, p, e));
            std::hint::black_box(gemv::x_w(&x[..e], 1, e, f, 4 * e));
            std::hint::black_box(gemv::x_w(&x, 1, 4 * e, m, e));
        }
        std::hint::black_box(gemv::x_et(&x[..e], 1, e, &self.wte, vocab));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let c = Config::GPT2_124M;
    let models: Vec<(DType, Gpt2)> = [DType::F32, DType::F16]
        .into_iter()
        .map(|d| Ok((d, Gpt2::random(&c, 0, &LoadOptions::cpu(d))?)))
        .collect::<Result<_, gpt2_model::ModelError>>()?;
    let p32 = Products::new(&c, |v| v);
    let p16 = Products::new(&c, half::f16::from_f32);
    let prompt: Vec<u32> = (0..32).map(|i| (i * 7919 + 1) % 50257).collect();
    for round in 0..5 {
        for (dtype, model) in &models {
            let mut cache = model.new_cache(ContextOverflow::Error);
            model.prefill(&mut cache, &[&prompt], Logits::Last)?;
            let (mut step, mut mm) = (Vec::new(), Vec::new());
            for _ in 0..32 {
                let t = Instant::now();
                model.step(&mut cache, &[464])?;
                step.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                match dtype {
                    DType::F16 => p16.run(c.n_embd, c.n_vocab),
                    _ => p32.run(c.n_embd, c.n_vocab),
                }
                mm.push(t.elapsed().as_secs_f64());
            }
            let (step, mm) = (median(step), median(mm));
            println!(
                "round {round} {dtype:?}: step {:.2} ms ({:.1} tok/s); weight products alone {:.2} ms; rest {:.2} ms ({:.0}%)",
                step * 1e3,
                1.0 / step,
                mm * 1e3,
                (step - mm) * 1e3,
                100.0 * (step - mm) / step
            );
        }
    }
    Ok(())
}
