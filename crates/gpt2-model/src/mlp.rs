//! The position-wise feed-forward network: `mlp(x) = c_proj(gelu_new(c_fc(x)))`.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::fast_exp::exp_f32;
use crate::linear::Conv1D;

/// GPT-2's activation, the tanh approximation of GELU (`gelu_new` in Hugging Face, not the
/// exact erf form): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// On the CPU in f32 it is computed as `x / (1 + exp(−2u))` for `u = √(2/π)·(x + 0.044715·x³)`
/// (the same function: `0.5·(1 + tanh(u))` is the logistic function of `2u`), with an `exp`
/// written as a short polynomial that the compiler vectorizes, on the decode team
/// (`crate::team`). candle's `gelu` calls libm's `tanh` once per value, which was 15% of a
/// 512-token prefill and ~3% of a decode step; this agrees with it within 1e-6 relative
/// (tested). Other devices and dtypes use candle's `gelu`.
pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        // candle's `gelu` is exactly this tanh approximation (`gelu_erf` is the other one).
        return Ok(x.gelu()?);
    }
    let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    crate::team::for_each_chunk_mut(&mut v, 4096, |_, v| gelu_in_place(v));
    Ok(Tensor::from_vec(v, x.shape(), x.device())?)
}

/// [`gelu_new`] of every value of `v`, with 256-bit vectors where the CPU has AVX2 (the same
/// numbers either way).
fn gelu_in_place(v: &mut [f32]) {
    crate::fast_exp::vectorized(|| {
        for v in v {
            *v = gelu_f32(*v);
        }
    });
}

/// `x / (1 + exp(−2u))`, `u = √(2/π)·(x + 0.044715·x³)`: branch-free, so that it vectorizes.
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x);
    let y = -2.0 * u;
    let g = x / (1.0 + exp_f32(y));
    // Past exp's range the logistic factor is 0 in f32 (a select, not a branch).
    if y > 88.0 {
        0.0 * x
    } else {
        g
    }
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
    fn gelu_new_agrees_with_candles_gelu_and_the_exact_function() -> Result<()> {
        // Every 1/64 from −20 to 20, random values, and the extremes.
        let mut xs: Vec<f32> = (-1280..=1280).map(|i| i as f32 / 64.0).collect();
        xs.extend(Tensor::randn(0f32, 3.0, 5000, &Device::Cpu)?.to_vec1::<f32>()?);
        xs.extend([
            1e-30,
            -1e-30,
            0.0,
            80.0,
            -80.0,
            1e6,
            -1e6,
            f32::MAX,
            f32::MIN,
        ]);
        let x = Tensor::new(xs.as_slice(), &Device::Cpu)?;
        let ours = gelu_new(&x)?.to_vec1::<f32>()?;
        let candle = x.gelu()?.to_vec1::<f32>()?;
        for ((&x, &a), &c) in xs.iter().zip(&ours).zip(&candle) {
            let x64 = x as f64;
            // 0.5·x·(1 + tanh u) = x / (1 + e^(−2u)), the latter without cancellation.
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let exact = x64 / (1.0 + (-2.0 * u).exp());
            // Relative: exp's 2 ulp, and the f32 rounding of u, which e^(−2u) amplifies by |2u|.
            let tol = (2e-6 + 2e-7 * (2.0 * u).abs()) * exact.abs() + 1e-37;
            assert!(
                (a as f64 - exact).abs() <= tol,
                "gelu({x}) = {a}, exact {exact}"
            );
            // candle's 1 + tanh(u) loses the small values to cancellation (for x < −3):
            // compare with it relative to x.
            if c.is_finite() {
                let tol = 1e-6 * x64.abs().max(1e-3);
                assert!((a - c).abs() as f64 <= tol, "gelu({x}) = {a}, candle {c}");
            }
        }
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
