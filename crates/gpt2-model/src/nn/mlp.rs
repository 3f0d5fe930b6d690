//! The position-wise feed-forward network: `mlp(x) = c_proj(gelu_new(c_fc(x)))`.

use candle_core::Tensor;

use super::functional::gelu_new;
use super::linear::Conv1D;
use crate::error::{ModelError, Result};

/// `c_fc` (`n_embd → 4·n_embd`), [`gelu_new`], `c_proj` (`4·n_embd → n_embd`).
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[n_embd, 4·n_embd]`.
    c_fc: Conv1D,
    /// `[4·n_embd, n_embd]`.
    c_proj: Conv1D,
}

impl Mlp {
    /// The network from its two layers.
    ///
    /// # Errors
    /// When `c_proj` does not map `c_fc`'s outputs back to its inputs' width.
    pub fn new(c_fc: Conv1D, c_proj: Conv1D) -> Result<Self> {
        let ((e, h), (h2, e2)) = (c_fc.dims(), c_proj.dims());
        if h != h2 || e != e2 {
            return Err(ModelError::BadInput {
                expected: "c_fc [n_embd, hidden] and c_proj [hidden, n_embd]".into(),
                found: format!("c_fc [{e}, {h}], c_proj [{h2}, {e2}]"),
            });
        }
        Ok(Self { c_fc, c_proj })
    }

    /// `x`: `[b, s, n_embd]` → `[b, s, n_embd]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj.forward(&gelu_new(&self.c_fc.forward(x)?)?) // [b, s, 4·n_embd] inside
    }

    /// `c_fc` and `c_proj`.
    pub(crate) fn layers(&self) -> [(&'static str, &Conv1D); 2] {
        [("c_fc", &self.c_fc), ("c_proj", &self.c_proj)]
    }
}
