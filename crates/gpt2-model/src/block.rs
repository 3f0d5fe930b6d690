//! One transformer block (pre-LN): `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.

use candle_core::Tensor;

use crate::attention::CausalSelfAttention;
use crate::error::Result;
use crate::kv_cache::LayerKv;
use crate::layer_norm::LayerNorm;
use crate::mlp::Mlp;

/// `h.{i}`: layer norms before each sub-layer, residual additions after.
#[derive(Debug, Clone)]
pub struct Block {
    /// Before attention.
    pub ln_1: LayerNorm,
    /// Causal self-attention.
    pub attn: CausalSelfAttention,
    /// Before the MLP.
    pub ln_2: LayerNorm,
    /// Feed-forward network.
    pub mlp: Mlp,
}

impl Block {
    /// `x`: `[b, s, n_embd]` → `[b, s, n_embd]` (see [`CausalSelfAttention::forward`] for
    /// `kv`, `past` and `mask`).
    pub fn forward(
        &self,
        x: &Tensor,
        kv: Option<&mut LayerKv>,
        past: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let a = self.attn.forward(&self.ln_1.forward(x)?, kv, past, mask)?;
        let x = (x + a)?;
        let m = self.mlp.forward(&self.ln_2.forward(&x)?)?;
        Ok((x + m)?)
    }
}
