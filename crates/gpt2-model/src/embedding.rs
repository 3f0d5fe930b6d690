//! Token and position embeddings: `h₀[t] = wte[id_t] + wpe[pos_t]`.

use candle_core::Tensor;

use crate::error::Result;

/// `wte` (token embedding, also the tied output projection) and `wpe` (learned positions).
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// `[n_vocab, n_embd]`.
    pub wte: Tensor,
    /// `[n_ctx, n_embd]`.
    pub wpe: Tensor,
}

impl Embeddings {
    /// Embeddings from `wte` `[n_vocab, n_embd]` and `wpe` `[n_ctx, n_embd]`.
    pub fn new(wte: Tensor, wpe: Tensor) -> Self {
        Self { wte, wpe }
    }

    /// `ids`, `positions`: `[b, s]` u32 (already checked to be in range) → `[b, s, n_embd]`.
    pub fn forward(&self, ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let n_embd = self.wte.dim(1)?;
        let tok = self.wte.index_select(&ids.flatten_all()?, 0)?; // [b·s, n_embd]
        let pos = self.wpe.index_select(&positions.flatten_all()?, 0)?; // [b·s, n_embd]
        Ok((tok + pos)?.reshape((b, s, n_embd))?)
    }

    /// The tied LM head: `h` `[rows, n_embd]` → logits `[rows, n_vocab]` = `h · wteᵀ`.
    ///
    /// `wte` stays `[n_vocab, n_embd]` (one copy serves both lookups and this product).
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        crate::linear::matmul(h, &self.wte.t()?)
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
