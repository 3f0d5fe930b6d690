//! Token and position embeddings: `h₀[t] = wte[id_t] + wpe[pos_t]`.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::matrix::Matrix;
use crate::q8::Q8Matrix;

/// `wte` (token embedding, also the tied output projection) and `wpe` (learned positions).
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// `[n_vocab, n_embd]` (an empty `[0]` tensor when `wte_quantized` is set).
    pub wte: Matrix,
    /// `[n_ctx, n_embd]`.
    pub wpe: Tensor,
    /// `wte` in Q8_0 blocks (quantized models): rows are dequantized on lookup, and the
    /// LM head multiplies by it directly.
    pub wte_quantized: Option<Arc<Q8Matrix>>,
}

impl Embeddings {
    /// Embeddings from `wte` `[n_vocab, n_embd]` and `wpe` `[n_ctx, n_embd]`.
    pub fn new(wte: impl Into<Matrix>, wpe: Tensor) -> Self {
        Self {
            wte: wte.into(),
            wpe,
            wte_quantized: None,
        }
    }

    /// Quantized embeddings: `wte` stored in Q8_0 blocks (`n_embd` must be a multiple of
    /// 32), `wpe` kept as given.
    pub fn quantize(wte: &Matrix, wpe: Tensor) -> Result<Self> {
        // f16-rounded scales, as in GGUF files.
        let q = Arc::new(wte.to_q8(false)?);
        Ok(Self {
            wte: Tensor::zeros(0, DType::F32, wpe.device())?.into(),
            wpe,
            wte_quantized: Some(q),
        })
    }

    /// `ids`, `positions`: `[b, s]` u32 (already checked to be in range) → `[b, s, n_embd]`.
    pub fn forward(&self, ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let n_embd = self.wpe.dim(1)?;
        let ids = ids.flatten_all()?;
        // [b·s, n_embd], in the activations' dtype (wpe's).
        let tok = match (&self.wte_quantized, &self.wte) {
            (Some(q), _) => self.gather(&ids, n_embd, |id, row| q.row_f32(id, row))?,
            (None, Matrix::Mapped(wte)) => {
                self.gather(&ids, n_embd, |id, row| wte.row_f32(id, row))?
            }
            (None, Matrix::Tensor(wte)) => wte.index_select(&ids, 0)?.to_dtype(self.wpe.dtype())?,
        };
        let pos = self.wpe.index_select(&positions.flatten_all()?, 0)?; // [b·s, n_embd]
        Ok((tok + pos)?.reshape((b, s, n_embd))?)
    }

    /// Rows `ids` (`[n]` u32) of a `wte` that is not a tensor, each written by `row(id, out)`
    /// as f32 → `[n, n_embd]` in the activations' dtype.
    fn gather(
        &self,
        ids: &Tensor,
        n_embd: usize,
        row: impl Fn(usize, &mut [f32]),
    ) -> Result<Tensor> {
        let ids: Vec<u32> = ids.to_vec1()?;
        let mut rows = vec![0f32; ids.len() * n_embd];
        for (out, &id) in rows.chunks_mut(n_embd).zip(&ids) {
            row(id as usize, out);
        }
        Ok(
            Tensor::from_vec(rows, (ids.len(), n_embd), self.wpe.device())?
                .to_dtype(self.wpe.dtype())?,
        )
    }

    /// The tied LM head: `h` `[rows, n_embd]` → logits `[rows, n_vocab]` = `h · wteᵀ`.
    ///
    /// `wte` stays `[n_vocab, n_embd]` (one copy serves both lookups and this product).
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        match (&self.wte_quantized, &self.wte) {
            (Some(q), _) => crate::linear::q8_matmul(h, q),
            (None, Matrix::Tensor(wte)) => crate::linear::matmul(h, &wte.t()?),
            (None, Matrix::Mapped(wte)) => {
                crate::linear::mapped_matmul(h, wte, crate::gemv::Layout::Transposed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adds_token_and_position_rows() -> Result<()> {
        let dev = Device::Cpu;
        let wte = Tensor::new(&[[1f32, 0.], [0., 1.], [2., 2.]], &dev)?;
        let wpe = Tensor::new(&[[10f32, 10.], [20., 30.]], &dev)?;
        let e = Embeddings::new(wte, wpe);
        let ids = Tensor::new(&[[2u32, 0]], &dev)?;
        let pos = Tensor::new(&[[0u32, 1]], &dev)?;
        let h = e.forward(&ids, &pos)?;
        assert_eq!(
            h.to_vec3::<f32>()?,
            vec![vec![vec![12., 12.], vec![21., 30.]]]
        );
        let logits = e.logits(&Tensor::new(&[[1f32, 2.]], &dev)?)?;
        assert_eq!(logits.to_vec2::<f32>()?, vec![vec![1., 2., 6.]]);
        Ok(())
    }
}
