//! The position-wise feed-forward network: `mlp(x) = c_proj(gelu_new(c_fc(x)))`.

use candle_core::Tensor;

use crate::error::Result;
use crate::linear::Conv1D;

/// GPT-2's activation, the tanh approximation of GELU (`gelu_new` in Hugging Face, not the
/// exact erf form): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
    // candle's `gelu` is exactly this tanh approximation (`gelu_erf` is the other one).
    Ok(x.gelu()?)
}

/// `c_fc` (`n_embd → 4·n_embd`), [`gelu_new`], `c_proj` (`4·n_embd → n_embd`).
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[n_embd, 4·n_embd]`.
    pub c_fc: Conv1D,
    /// `[4·n_embd, n_embd]`.
    pub c_proj: Conv1D,
}

impl Mlp {
    /// `x`: `[b, s, n_embd]` → `[b, s, n_embd]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward(x)?; // [b, s, 4·n_embd]
        let h = gelu_new(&h)?;
        self.c_proj.forward(&h) // [b, s, n_embd]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn gelu_new_matches_hand_computed_values() -> Result<()> {
        let xs = [-3f32, -1., -0.5, 0., 0.5, 1., 2., 3.];
        let x = Tensor::new(&xs, &Device::Cpu)?;
        let y = gelu_new(&x)?.to_vec1::<f32>()?;
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in f64.
        let want = |x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        };
        for (&x, &got) in xs.iter().zip(&y) {
            assert!(
                (got as f64 - want(x as f64)).abs() < 1e-6,
                "gelu_new({x}) = {got}"
            );
        }
        // Known values; the erf GELU would give 0.8413447 at 1 and -0.0040497 at -3.
        assert!((y[5] - 0.841_192).abs() < 1e-6);
        assert!((y[0] - -0.003_637_4).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn gelu_new_in_f16_is_close() -> Result<()> {
        let x = Tensor::new(&[-2f32, -0.25, 0.75, 4.], &Device::Cpu)?;
        let a = gelu_new(&x)?.to_vec1::<f32>()?;
        let b = gelu_new(&x.to_dtype(DType::F16)?)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 4e-3, "{a} vs {b}");
        }
        Ok(())
    }
}
