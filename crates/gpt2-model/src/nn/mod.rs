//! The layers of GPT-2, each a struct holding its weights with a `forward` method, in the
//! order a token meets them:
//!
//! - [`embedding`]: `wte` and `wpe` lookups, and the tied LM head (`h · wteᵀ`);
//! - [`block`]: one pre-LN transformer block, built from
//!   - [`layer_norm`] (`ln_1`, `ln_2`, and the final `ln_f`),
//!   - [`attention`] (causal multi-head self-attention, with the [`kv_cache`]),
//!   - [`mlp`] (`c_fc` → `gelu_new` → `c_proj`),
//!   - [`linear`] (`Conv1D`, GPT-2's affine map `x · W + b`);
//! - [`functional`]: the stateless ops (`gelu_new`, the masked softmax, layer
//!   normalisation), each with its reference path in plain, differentiable candle ops.
//!
//! The layers call the CPU kernels only through [`Matrix`](crate::cpu::matrix::Matrix) (the
//! weight products) and [`crate::cpu::ops`] (one labelled fast-path call per op).

pub mod attention;
pub mod block;
pub mod embedding;
pub mod functional;
pub mod kv_cache;
pub mod layer_norm;
pub mod linear;
pub mod mlp;

pub use attention::CausalSelfAttention;
pub use block::Block;
pub use embedding::Embedding;
pub use kv_cache::{ContextOverflow, KvCache};
pub use layer_norm::LayerNorm;
pub use linear::Conv1D;
pub use mlp::Mlp;

use candle_core::Tensor;

use crate::cpu::matrix::Matrix;

/// One parameter of a layer, as [`Gpt2::named_tensors`](crate::Gpt2::named_tensors) and
/// the loaders see it: a weight matrix (in whichever storage) or a small tensor.
pub(crate) enum Param<'a> {
    /// `wte`, `wpe` and the `Conv1D` weights.
    Matrix(&'a Matrix),
    /// Biases and layer-norm gains and shifts.
    Tensor(&'a Tensor),
}

/// Every parameter of `layers`, named `{prefix}.{layer}.{param}`.
pub(crate) fn push_params<'a>(
    prefix: &str,
    layers: &[(&'static str, &'a Conv1D)],
    out: &mut Vec<(String, Param<'a>)>,
) {
    for (name, layer) in layers {
        for (p, v) in layer.params() {
            out.push((format!("{prefix}.{name}.{p}"), v));
        }
    }
}

/// Helpers shared by the layers' tests.
#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::Tensor;

    use crate::error::Result;

    /// The largest difference between `a` and `b`, relative to `b`'s largest magnitude.
    pub(crate) fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        let (a, b) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
        Ok(a.iter()
            .zip(&b)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale)
    }
}
