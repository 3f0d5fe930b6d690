//! `Conv1D`: GPT-2's name for an affine map `y = x · W + b` (it is not a convolution).

use candle_core::Tensor;

use crate::error::Result;

/// The affine layers `c_attn`, `c_proj` and `c_fc`: `y = x · W + b`.
///
/// `weight` is kept `[in, out]` and contiguous, exactly as Hugging Face's `Conv1D` (and
/// OpenAI's checkpoint, minus its leading 1) store it, so loading needs no transposition.
/// This is also the faster layout for candle's CPU gemm here (measured with
/// `examples/matmul_layout.rs`: for one decode row `[1, n]`, `[in, out]` is as fast or faster
/// than `[out, in]ᵀ` in f32, and 5× faster for small batches in f16).
#[derive(Debug, Clone)]
pub struct Conv1D {
    /// `W`, `[in, out]`.
    pub weight: Tensor,
    /// `b`, `[out]`.
    pub bias: Tensor,
}

impl Conv1D {
    /// A layer from `W` `[in, out]` and `b` `[out]`.
    pub fn new(weight: Tensor, bias: Tensor) -> Self {
        Self { weight, bias }
    }

    /// `x`: `[.., in]` → `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let n_in = dims[dims.len() - 1];
        let rows = x.elem_count() / n_in.max(1);
        // [rows, in] · [in, out] → [rows, out]: one gemm whatever the leading dims.
        let y = x.reshape((rows, n_in))?.matmul(&self.weight)?;
        let y = y.broadcast_add(&self.bias)?;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.weight.dim(1)?;
        }
        Ok(y.reshape(out_dims)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn computes_x_w_plus_b() -> Result<()> {
        let dev = Device::Cpu;
        // W = [[1, 2, 3], [4, 5, 6]] ([in 2, out 3]), b = [0.5, 0, -1]
        let w = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev)?;
        let b = Tensor::new(&[0.5f32, 0., -1.], &dev)?;
        let layer = Conv1D::new(w, b);
        // x = [[[1, 1], [2, -1]]] ([1, 2, 2])
        let x = Tensor::new(&[[[1f32, 1.], [2., -1.]]], &dev)?;
        let y = layer.forward(&x)?;
        assert_eq!(y.dims(), &[1, 2, 3]);
        assert_eq!(
            y.to_vec3::<f32>()?,
            vec![vec![vec![5.5, 7., 8.], vec![-1.5, -1., -1.]]]
        );
        Ok(())
    }
}
