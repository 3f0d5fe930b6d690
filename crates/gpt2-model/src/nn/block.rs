//! One transformer block (pre-LN): `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.

use candle_core::Tensor;

use super::attention::CausalSelfAttention;
use super::functional::Dropout;
use super::kv_cache::LayerKv;
use super::layer_norm::LayerNorm;
use super::mlp::Mlp;
use super::{push_params, Param};
use crate::error::Result;

/// `h.{i}`: layer norms before each sub-layer, residual additions after.
#[derive(Debug, Clone)]
pub struct Block {
    /// Before attention.
    ln_1: LayerNorm,
    /// Causal self-attention.
    attn: CausalSelfAttention,
    /// Before the MLP.
    ln_2: LayerNorm,
    /// Feed-forward network.
    mlp: Mlp,
}

impl Block {
    /// A block from its four parts.
    pub fn new(ln_1: LayerNorm, attn: CausalSelfAttention, ln_2: LayerNorm, mlp: Mlp) -> Self {
        Self {
            ln_1,
            attn,
            ln_2,
            mlp,
        }
    }

    /// `x`: `[b, s, n_embd]` → `[b, s, n_embd]` (see [`CausalSelfAttention::forward`] for
    /// `kv`, `past` and `mask`).
    pub fn forward(
        &self,
        x: &Tensor,
        kv: Option<&mut LayerKv>,
        past: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, kv, past, mask)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }

    /// [`Block::forward`] for training, without a cache, with dropout where Hugging Face's
    /// GPT-2 applies it: the attention weights and each sub-layer's output (sites `site` ..
    /// `site + 2`).
    pub(crate) fn forward_dropout(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        dropout: &Dropout,
        site: u64,
    ) -> Result<Tensor> {
        let a = self
            .attn
            .forward_dropout(&self.ln_1.forward(x)?, mask, dropout, site)?;
        let x = (x + a)?;
        let m = dropout.apply(&self.mlp.forward(&self.ln_2.forward(&x)?)?, site + 2)?;
        Ok((&x + m)?)
    }

    /// [`Block::forward`] for new tokens of several independent sequences, back to back in
    /// `x` `[1, total, n_embd]` (see [`CausalSelfAttention::forward_ragged`]).
    pub fn forward_ragged(
        &self,
        x: &Tensor,
        kvs: &mut [&mut LayerKv],
        pasts: &[usize],
        lens: &[usize],
    ) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward_ragged(&self.ln_1.forward(x)?, kvs, pasts, lens)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }

    /// Every parameter, named `{prefix}.ln_1.weight` … `{prefix}.mlp.c_proj.bias` in
    /// Hugging Face's order.
    pub(crate) fn params<'a>(&'a self, prefix: &str, out: &mut Vec<(String, Param<'a>)>) {
        for (p, v) in self.ln_1.params() {
            out.push((format!("{prefix}.ln_1.{p}"), v));
        }
        push_params(&format!("{prefix}.attn"), &self.attn.layers(), out);
        for (p, v) in self.ln_2.params() {
            out.push((format!("{prefix}.ln_2.{p}"), v));
        }
        push_params(&format!("{prefix}.mlp"), &self.mlp.layers(), out);
    }
}
