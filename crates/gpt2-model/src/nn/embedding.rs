//! Lookup tables: `wte` (token embedding, also the tied output projection) and `wpe`
//! (learned positions). `h₀[t] = wte[id_t] + wpe[pos_t]`.

use candle_core::Tensor;

use super::Param;
use crate::cpu::matrix::Matrix;
use crate::error::{ModelError, Result};

/// A table of `[n, n_embd]` vectors, looked up by index.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::nn::Embedding;
/// use gpt2_model::{Device, Tensor};
/// let wte = Embedding::new(Tensor::new(&[[1f32, 0.], [0., 1.], [2., 2.]], &Device::Cpu)?)?;
/// let rows = wte.forward(&Tensor::new(&[[2u32, 0]], &Device::Cpu)?)?; // [1, 2] → [1, 2, 2]
/// assert_eq!(rows.to_vec3::<f32>()?, vec![vec![vec![2., 2.], vec![1., 0.]]]);
/// // The tied head: h · wteᵀ.
/// let logits = wte.logits(&Tensor::new(&[[1f32, 2.]], &Device::Cpu)?)?;
/// assert_eq!(logits.to_vec2::<f32>()?, vec![vec![1., 2., 6.]]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `[n, n_embd]`.
    weight: Matrix,
}

impl Embedding {
    /// A table from its `[n, n_embd]` weight.
    ///
    /// # Errors
    /// When `weight` is not 2-D.
    pub fn new(weight: Tensor) -> Result<Self> {
        Self::from_matrix(Matrix::Tensor(weight))
    }

    /// A table from a weight in any storage.
    pub(crate) fn from_matrix(weight: Matrix) -> Result<Self> {
        if weight.dims().len() != 2 {
            return Err(ModelError::BadInput {
                expected: "an embedding table [n, n_embd]".into(),
                found: format!("shape {:?}", weight.dims()),
            });
        }
        Ok(Self { weight })
    }

    /// `ids` `[b, s]` u32 (each below the table's length, checked by the caller) →
    /// `[b, s, n_embd]`, in the table's dtype (f32 for Q8_0 tables).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let n_embd = self.weight.dims()[1];
        let rows = self.weight.rows(&ids.flatten_all()?)?; // [b·s, n_embd]
        Ok(rows.reshape((b, s, n_embd))?)
    }

    /// The tied LM head: `h` `[rows, n_embd]` → logits `[rows, n]` = `h · weightᵀ`. The
    /// table stays `[n, n_embd]`: one copy serves both lookups and this product.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        self.weight.matmul_t(h)
    }

    /// The table as a tensor, when it is one (not values used in place from a file, nor
    /// 8-bit blocks): what training differentiates.
    pub(crate) fn table(&self) -> Option<&Tensor> {
        match &self.weight {
            Matrix::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The table.
    pub(crate) fn param(&self) -> Param<'_> {
        Param::Matrix(&self.weight)
    }
}
