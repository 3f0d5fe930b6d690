//! The position-wise feed-forward network: `mlp(x) = c_proj(gelu_new(c_fc(x)))`.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::linear::Conv1D;

/// GPT-2's activation, the tanh approximation of GELU (`gelu_new` in Hugging Face, not the
/// exact erf form): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// On the CPU in f32 it runs in parallel on the decode team (`crate::team`): `tanh` is a
/// libm call per element, and for one decode row (3072 values per layer at 124M) that was
/// ~8% of a step spent on one thread while the others waited. The numbers are candle's own
/// `gelu` (the same formula, the same `f32::tanh`), which every other case uses.
pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        // candle's `gelu` is exactly this tanh approximation (`gelu_erf` is the other one).
        return Ok(x.gelu()?);
    }
    let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    crate::team::for_each_chunk_mut(&mut v, 1024, |_, v| {
        for v in v {
            *v = gelu_f32(*v);
        }
    });
    Ok(Tensor::from_vec(v, x.shape(), x.device())?)
}

/// [`gelu_new`] of one f32, written exactly as candle's CPU `gelu` computes it.
fn gelu_f32(v: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    0.5 * v * (1.0 + f32::tanh(SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v)))
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
    use candle_core::Device;

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
    fn gelu_new_is_candles_gelu_bit_for_bit() -> Result<()> {
        let x = Tensor::randn(0f32, 3.0, (3, 5000), &Device::Cpu)?;
        let ours = gelu_new(&x)?.to_vec2::<f32>()?;
        let candle = x.gelu()?.to_vec2::<f32>()?;
        assert_eq!(ours, candle);
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
