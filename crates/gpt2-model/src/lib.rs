//! GPT-2 on [candle](https://github.com/huggingface/candle) tensors, written from the
//! paper and OpenAI's code: exact logits (checked against Hugging Face `transformers` and
//! OpenAI's TensorFlow code), a key/value cache, and batches of prompts of different lengths.
//!
//! # The architecture
//!
//! For token ids `t₀ … t_{s-1}` (positions `0 … s-1`), with `E = n_embd`, `H = n_head`,
//! `D = E / H`:
//!
//! ```text
//! x        = wte[t] + wpe[pos]                                   [s, E]
//! for each block h.{l}, l = 0 … n_layer-1 (pre-LN):
//!   a      = ln_1(x)
//!   q|k|v  = a · c_attn.W + c_attn.b                             [s, 3E] → 3 × [H, s, D]
//!   A_h    = softmax(q_h k_hᵀ / √D + M)    M[i][j] = 0 if j ≤ i else −∞   [H, s, s]
//!   x      = x + merge(A_h v_h) · attn.c_proj.W + attn.c_proj.b  [s, E]
//!   m      = ln_2(x) · c_fc.W + c_fc.b                           [s, 4E]
//!   x      = x + gelu_new(m) · mlp.c_proj.W + mlp.c_proj.b       [s, E]
//! logits   = ln_f(x) · wteᵀ                                      [s, n_vocab]
//!
//! ln(x)       = (x − mean(x)) / √(var(x) + 1e-5) · g + b          (over the E channels)
//! gelu_new(x) = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))
//! ```
//!
//! Weights are `[in, out]` as Hugging Face's `Conv1D` stores them (`y = x · W + b`); the LM
//! head is tied to `wte`.
//!
//! # Reading it
//!
//! [`model`] is the whole network; [`nn`] holds its layers (`embedding`, `block`,
//! `attention`, `mlp`, `layer_norm`, `linear`, `kv_cache`) and the stateless ops they share
//! (`functional`). `load` is the one builder every source of weights goes through. The CPU
//! kernels sit behind one boundary in `cpu` (private; the `unstable-kernels` feature makes it
//! public for the kernel benchmarks): the layers reach them only through its `Matrix` type
//! and its `ops`.
//!
//! # Using it
//!
//! [`Gpt2::load`] reads a model directory (any layout `gpt2-weights` reads: OpenAI's, Hugging
//! Face's, or GGUF with 8-bit weights);
//! [`Gpt2::forward`] gives logits at every position; [`Gpt2::prefill`] /
//! [`Gpt2::step`] / [`Gpt2::extend`] run with a [`KvCache`] for generation, on batches of
//! prompts of different lengths; [`Gpt2::random`] builds a random model of any shape.
//!
//! ```
//! use gpt2_model::{ContextOverflow, Gpt2, LoadOptions, Logits};
//! use gpt2_weights::Config;
//! # fn main() -> Result<(), gpt2_model::ModelError> {
//! let config = Config { n_vocab: 64, n_ctx: 16, n_embd: 16, n_head: 4, n_layer: 2, layer_norm_epsilon: 1e-5 };
//! let model = Gpt2::random(&config, 0, &LoadOptions::default())?;
//!
//! // Two prompts of different lengths, then greedy decoding of both at once.
//! let mut cache = model.new_cache(ContextOverflow::Error);
//! let mut logits = model.prefill(&mut cache, &[&[1, 2, 3], &[4]], Logits::Last)?; // [2, 64]
//! for _ in 0..5 {
//!     let next: Vec<u32> = logits.argmax(1)?.to_vec1()?;
//!     logits = model.step(&mut cache, &next)?;
//! }
//! assert_eq!(cache.tokens(1).map(|t| t.len()), Some(6));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod config;
#[cfg(feature = "unstable-kernels")]
pub mod cpu;
#[cfg(not(feature = "unstable-kernels"))]
#[allow(unreachable_pub)]
pub(crate) mod cpu;
pub mod error;
pub mod generate;
mod init;
mod load;
pub mod model;
pub mod nn;

pub use config::{Config, ModelSize};
pub use error::{ModelError, Result};
pub use load::{LoadOptions, Quantization};
pub use model::{Gpt2, Logits};
pub use nn::{ContextOverflow, KvCache};

/// Re-exported so users need not depend on candle directly for the basics.
pub use candle_core::{DType, Device, Tensor};

/// Deterministic pseudo-random test data and the reference product shared by the kernels'
/// unit tests.
#[cfg(test)]
mod test_values {
    /// `x` `[m, k]` · `w` `[k, n]` (row-major) by the definition, summed in f64.
    pub fn naive(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for i in 0..k {
                for j in 0..n {
                    y[r * n + j] += x[r * k + i] as f64 * w[i * n + j] as f64;
                }
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    /// `len` values in [-1, 1], a cheap hash of the index and `seed`.
    pub fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                ((h >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }
}
