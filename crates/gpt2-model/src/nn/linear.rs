//! `Conv1D`: GPT-2's name for an affine map `y = x · W + b` (it is not a convolution).

use candle_core::Tensor;

use super::Param;
use crate::cpu::matrix::Matrix;
use crate::error::{ModelError, Result};

/// The affine layers `c_attn`, `c_proj` and `c_fc`: `y = x · W + b`.
///
/// `W` is `[in, out]`, exactly as Hugging Face's `Conv1D` (and OpenAI's checkpoint, minus its
/// leading 1) store it, so loading needs no transposition. Whatever its storage (a tensor,
/// values used in place from the mapped file, or 8-bit blocks), the product is one call.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::nn::Conv1D;
/// use gpt2_model::{Device, Tensor};
/// // W = [[1, 2, 3], [4, 5, 6]] ([in 2, out 3]), b = [0.5, 0, -1]
/// let w = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu)?;
/// let layer = Conv1D::new(w, Tensor::new(&[0.5f32, 0., -1.], &Device::Cpu)?)?;
/// let y = layer.forward(&Tensor::new(&[[[1f32, 1.]]], &Device::Cpu)?)?; // [1, 1, 2] → [1, 1, 3]
/// assert_eq!(y.to_vec3::<f32>()?, vec![vec![vec![5.5, 7., 8.]]]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Conv1D {
    /// `W`, `[in, out]`.
    weight: Matrix,
    /// `b`, `[out]`.
    bias: Tensor,
}

impl Conv1D {
    /// A layer from `W` `[in, out]` and `b` `[out]`.
    ///
    /// # Errors
    /// When `W` is not 2-D or `b` is not `[out]`.
    pub fn new(weight: Tensor, bias: Tensor) -> Result<Self> {
        Self::from_matrix(Matrix::Tensor(weight), bias)
    }

    /// A layer from a weight in any storage.
    pub(crate) fn from_matrix(weight: Matrix, bias: Tensor) -> Result<Self> {
        match weight.dims()[..] {
            [_, out] if bias.dims() == [out] => Ok(Self { weight, bias }),
            _ => Err(ModelError::BadInput {
                expected: "a Conv1D weight [in, out] and a bias [out]".into(),
                found: format!("weight {:?}, bias {:?}", weight.dims(), bias.dims()),
            }),
        }
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[0], d[1])
    }

    /// `x`: `[.., in]` → `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n_in, n_out) = self.dims();
        let mut dims = x.dims().to_vec();
        let rows = x.elem_count() / n_in.max(1);
        // [rows, in] · [in, out] + [out] → [rows, out]: one product whatever the leading dims.
        let y = self
            .weight
            .affine(&x.reshape((rows, n_in))?, Some(&self.bias))?;
        if let Some(last) = dims.last_mut() {
            *last = n_out;
        }
        Ok(y.reshape(dims)?)
    }

    /// `weight` and `bias`.
    pub(crate) fn params(&self) -> [(&'static str, Param<'_>); 2] {
        [
            ("weight", Param::Matrix(&self.weight)),
            ("bias", Param::Tensor(&self.bias)),
        ]
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
        let layer = Conv1D::new(w, b)?;
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

    #[test]
    fn refuses_a_bias_of_the_wrong_size() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::zeros((2, 3), candle_core::DType::F32, &dev)?;
        assert!(Conv1D::new(w.clone(), Tensor::zeros(2, candle_core::DType::F32, &dev)?).is_err());
        assert!(Conv1D::new(
            w.flatten_all()?,
            Tensor::zeros(6, candle_core::DType::F32, &dev)?
        )
        .is_err());
        Ok(())
    }
}
