//! Layer normalisation: `y = (x - mean(x)) / sqrt(var(x) + eps) * g + b` over the last axis.

use candle_core::Tensor;

use super::functional;
use super::Param;
use crate::error::{ModelError, Result};

/// `ln_1`, `ln_2`, `ln_f`: normalise each position's `n_embd` vector, then scale by
/// `weight` (OpenAI's `g`) and shift by `bias` (`b`).
///
/// The variance is the biased one (divide by `n_embd`), as in GPT-2 and PyTorch.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::nn::LayerNorm;
/// use gpt2_model::{Device, Tensor};
/// let ln = LayerNorm::new(Tensor::new(&[1f32, 1.], &Device::Cpu)?, Tensor::new(&[0f32, 0.], &Device::Cpu)?, 1e-5)?;
/// let y = ln.forward(&Tensor::new(&[[1f32, 3.]], &Device::Cpu)?)?.to_vec2::<f32>()?;
/// assert!((y[0][0] + 1.0).abs() < 1e-4 && (y[0][1] - 1.0).abs() < 1e-4);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Gain `g`, `[n_embd]`.
    weight: Tensor,
    /// Shift `b`, `[n_embd]`.
    bias: Tensor,
    /// Added to the variance (1e-5 in GPT-2).
    eps: f64,
}

impl LayerNorm {
    /// A layer norm from its gain, shift and epsilon.
    ///
    /// # Errors
    /// When the gain and shift are not vectors of one length, or `eps` is not a finite
    /// non-negative number.
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        let ok =
            weight.rank() == 1 && weight.dims() == bias.dims() && eps.is_finite() && eps >= 0.0;
        if !ok {
            return Err(ModelError::BadInput {
                expected: "a layer norm gain and shift of shape [n_embd] and a finite eps ≥ 0"
                    .into(),
                found: format!(
                    "gain {:?}, shift {:?}, eps {eps}",
                    weight.dims(),
                    bias.dims()
                ),
            });
        }
        Ok(Self { weight, bias, eps })
    }

    /// `x`: `[.., n_embd]` → same shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        functional::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// `weight` and `bias`.
    pub(crate) fn params(&self) -> [(&'static str, Param<'_>); 2] {
        [
            ("weight", Param::Tensor(&self.weight)),
            ("bias", Param::Tensor(&self.bias)),
        ]
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn normalises_then_scales_and_shifts() -> Result<()> {
        let dev = Device::Cpu;
        // Row [1, 2, 3, 4]: mean 2.5, biased variance 1.25.
        // Row [2, 2, 2, 2]: variance 0, so the output is just the shift.
        let x = Tensor::new(&[[1f32, 2., 3., 4.], [2., 2., 2., 2.]], &dev)?;
        let g = Tensor::new(&[1f32, 2., 0.5, -1.], &dev)?;
        let b = Tensor::new(&[0f32, 1., 0., 0.25], &dev)?;
        let ln = LayerNorm::new(g, b, 1e-5)?;
        let y = ln.forward(&x)?.to_vec2::<f32>()?;
        let inv = 1.0 / (1.25f64 + 1e-5).sqrt();
        let expect0 = [
            -1.5 * inv,
            -0.5 * inv * 2.0 + 1.0,
            0.5 * inv * 0.5,
            -(1.5 * inv) + 0.25,
        ];
        for (got, want) in y[0].iter().zip(expect0) {
            assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        }
        assert_eq!(y[1], vec![0.0, 1.0, 0.0, 0.25]);
        Ok(())
    }

    #[test]
    fn works_on_3d_and_non_contiguous_input() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 24., &dev)?.reshape((2, 4, 3))?;
        let xt = x.transpose(1, 2)?; // [2, 3, 4], not contiguous
        let ln = LayerNorm::new(
            Tensor::ones(4, candle_core::DType::F32, &dev)?,
            Tensor::zeros(4, candle_core::DType::F32, &dev)?,
            1e-5,
        )?;
        let y = ln.forward(&xt)?;
        assert_eq!(y.dims(), &[2, 3, 4]);
        // Each row is an arithmetic progression with step 3: normalised values are
        // (-1.5, -0.5, 0.5, 1.5) / sqrt(1.25) whatever the offset.
        let inv = 1.0 / (1.25f32 * 9.0 + 1e-5).sqrt() * 3.0;
        for row in y.flatten_to(1)?.to_vec2::<f32>()? {
            for (got, k) in row.iter().zip([-1.5f32, -0.5, 0.5, 1.5]) {
                assert!((got - k * inv).abs() < 1e-5);
            }
        }
        Ok(())
    }
}
