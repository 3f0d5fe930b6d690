//! The stateless ops of the layers. Each takes its fast path where one exists (one labelled
//! call into [`crate::cpu::ops`], or candle's fused kernel; in training, one into
//! `crate::cpu::train_ops`, whose backward passes are written by hand) and otherwise computes
//! its reference path: plain candle ops, which run on every device and record their backward
//! ops for training. [`reference`] holds the reference paths on their own, so that tests can
//! compare them.

use candle_core::{DType, Tensor, D};

use crate::cpu;
use crate::error::Result;

/// GPT-2's activation, the tanh approximation of GELU (`gelu_new` in Hugging Face, not the
/// exact erf form): `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::nn::functional::gelu_new;
/// use gpt2_model::{Device, Tensor};
/// let y = gelu_new(&Tensor::new(&[-3f32, 0., 1.], &Device::Cpu)?)?.to_vec1::<f32>()?;
/// assert!((y[0] + 0.003_637).abs() < 1e-6 && y[1] == 0.0 && (y[2] - 0.841_192).abs() < 1e-6);
/// # Ok(()) }
/// ```
pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
    // Fast path: CPU f32, a vectorized exp on the decode team.
    if let Some(y) = cpu::ops::gelu_new(x)? {
        return Ok(y);
    }
    // Training on the CPU in f32: one op forward and one backward.
    if x.track_op() {
        if let Some(y) = cpu::train_ops::gelu_new(x)? {
            return Ok(y);
        }
    }
    reference::gelu_new(x)
}

/// `softmax(scores + mask)` over the last dimension, in f32: `scores` `[b, h, s, L]`,
/// `mask` `[b, 1, s, L]` (0 where a query sees a key, −∞ where it does not), or `None`
/// when every key is visible.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::nn::functional::softmax;
/// use gpt2_model::{Device, Tensor};
/// let scores = Tensor::new(&[[[[0f32, 0., 5.]]]], &Device::Cpu)?; // [1, 1, 1, 3]
/// let mask = Tensor::new(&[[[[0f32, 0., f32::NEG_INFINITY]]]], &Device::Cpu)?;
/// let a = softmax(&scores, Some(&mask))?.flatten_all()?.to_vec1::<f32>()?;
/// assert_eq!(a, vec![0.5, 0.5, 0.0]);
/// # Ok(()) }
/// ```
pub fn softmax(scores: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let scores = scores.to_dtype(DType::F32)?;
    // Fast path: CPU f32, masked in place, rows in parallel.
    if let Some(a) = cpu::ops::softmax(&scores, mask)? {
        return Ok(a);
    }
    // Training on the CPU in f32: one op forward and one backward.
    if scores.track_op() {
        if let Some(a) = cpu::train_ops::softmax(&scores, mask)? {
            return Ok(a);
        }
    }
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    if scores.track_op() {
        return reference::softmax(&scores);
    }
    // candle's fused kernel (every device; it records no backward op).
    Ok(candle_nn::ops::softmax_last_dim(&scores)?)
}

/// Layer normalisation over the last dimension: `(x − mean) / √(var + eps) · weight + bias`,
/// the biased variance, statistics in f32 whatever the dtype.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::nn::functional::layer_norm;
/// use gpt2_model::{Device, Tensor};
/// let x = Tensor::new(&[[2f32, 2., 2., 2.]], &Device::Cpu)?;
/// let (w, b) = (Tensor::new(&[1f32; 4], &Device::Cpu)?, Tensor::new(&[0f32, 1., 0., 0.25], &Device::Cpu)?);
/// // No variance: the output is the shift.
/// assert_eq!(layer_norm(&x, &w, &b, 1e-5)?.to_vec2::<f32>()?, vec![vec![0., 1., 0., 0.25]]);
/// # Ok(()) }
/// ```
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if x.track_op() || weight.track_op() || bias.track_op() {
        // Training on the CPU in f32: one op forward and one backward.
        if let Some(y) = cpu::train_ops::layer_norm(x, weight, bias, eps)? {
            return Ok(y);
        }
        return reference::layer_norm(x, weight, bias, eps);
    }
    // candle's fused kernel (every device; it records no backward op).
    Ok(candle_nn::ops::layer_norm(
        &x.contiguous()?,
        weight,
        bias,
        eps as f32,
    )?)
}

/// The mean cross-entropy of the tied head's logits `h · wteᵀ` against `targets`: training's
/// loss. `h` `[N, C]` (after `ln_f`), `wte` `[V, C]`, `targets` `N` ids below `V` (the token
/// after each position) → a scalar, differentiable for both `h` and `wte`.
///
/// Fast path (the CPU in f32): the head and the loss as one op whose backward pass writes the
/// logits' gradient over the logits and takes both products from it, as llm.c's fused
/// classifier does. Otherwise the logits, then candle's `log_softmax` and `nll`.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::nn::functional::lm_head_cross_entropy;
/// use gpt2_model::{Device, Tensor};
/// let h = Tensor::new(&[[1f32, 0.], [0., 0.]], &Device::Cpu)?; // [N 2, C 2]
/// let wte = Tensor::new(&[[0f32, 0.], [0., 0.], [0., 0.]], &Device::Cpu)?; // [V 3, C 2]
/// // All logits 0: each of the 3 tokens has probability 1/3.
/// let loss = lm_head_cross_entropy(&h, &wte, &[2, 0])?.to_scalar::<f32>()?;
/// assert!((loss - 3f32.ln()).abs() < 1e-6);
/// # Ok(()) }
/// ```
///
/// # Errors
/// `h` and `wte` not 2-D of one width, `targets` not `N` long or an id not below `V`.
pub fn lm_head_cross_entropy(h: &Tensor, wte: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let ((n, c), (v, c2)) = (h.dims2()?, wte.dims2()?);
    if c != c2 || targets.len() != n || targets.iter().any(|&t| t as usize >= v) {
        return Err(crate::ModelError::BadInput {
            expected: "h [N, C], wte [V, C] and N target ids below V".into(),
            found: format!(
                "h [{n}, {c}], wte [{v}, {c2}], {} targets (largest {:?})",
                targets.len(),
                targets.iter().max()
            ),
        });
    }
    // Training on the CPU in f32: the head and the loss as one op.
    if let Some(loss) = cpu::train_ops::lm_head_cross_entropy(h, wte, targets)? {
        return Ok(loss);
    }
    reference::cross_entropy(&h.matmul(&wte.t()?)?, targets)
}

/// Dropout for training, where Hugging Face's GPT-2 applies it (the embeddings, the attention
/// weights, and each sub-layer's output before its residual addition): every value is zeroed
/// with probability `p` and the others scaled by `1/(1 − p)`. The masks are drawn from ChaCha8
/// generators seeded from `seed` and the site, so a forward pass with the same seed drops the
/// same values (a resumed training run repeats its masks).
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::nn::functional::Dropout;
/// use gpt2_model::{Device, Tensor};
/// let x = Tensor::ones(1000, candle_core::DType::F32, &Device::Cpu)?;
/// let y = Dropout { p: 0.5, seed: 7 }.apply(&x, 0)?.to_vec1::<f32>()?;
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// let kept = y.iter().filter(|&&v| v == 2.0).count();
/// assert!((400..600).contains(&kept));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// The probability that a value is dropped, in `[0, 1)`.
    pub p: f64,
    /// The seed of this forward pass's masks.
    pub seed: u64,
}

impl Dropout {
    /// `x` with dropout applied at site number `site` (each site of a forward pass has its
    /// own mask); `x` itself when `p` is 0.
    pub fn apply(&self, x: &Tensor, site: u64) -> Result<Tensor> {
        use rand::{Rng, SeedableRng};
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ (site + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let p = self.p as f32;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }
}

/// The reference paths: plain candle ops that run on every device and are differentiable.
pub mod reference {
    use super::*;

    /// [`gelu_new`](super::gelu_new) as candle's `gelu` (exactly this tanh approximation;
    /// `gelu_erf` is the other one).
    ///
    /// ```
    /// # fn main() -> Result<(), gpt2_model::ModelError> {
    /// use gpt2_model::{Device, Tensor};
    /// let x = Tensor::new(&[1f32], &Device::Cpu)?;
    /// let y = gpt2_model::nn::functional::reference::gelu_new(&x)?.to_vec1::<f32>()?;
    /// assert!((y[0] - 0.841_192).abs() < 1e-6);
    /// # Ok(()) }
    /// ```
    pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
        Ok(x.gelu()?)
    }

    /// `eˣ⁻ᵐᵃˣ / Σ eˣ⁻ᵐᵃˣ` over the last dimension (f32 in, f32 out).
    ///
    /// ```
    /// # fn main() -> Result<(), gpt2_model::ModelError> {
    /// use gpt2_model::{Device, Tensor};
    /// let x = Tensor::new(&[[0f32, 0.]], &Device::Cpu)?;
    /// let a = gpt2_model::nn::functional::reference::softmax(&x)?.to_vec2::<f32>()?;
    /// assert_eq!(a, vec![vec![0.5, 0.5]]);
    /// # Ok(()) }
    /// ```
    pub fn softmax(x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    }

    /// The mean cross-entropy of `logits` `[N, V]` against `targets` (`N` ids below `V`,
    /// checked by the caller), f32, as candle's `log_softmax` and `nll`.
    ///
    /// ```
    /// # fn main() -> Result<(), gpt2_model::ModelError> {
    /// use gpt2_model::{Device, Tensor};
    /// let logits = Tensor::new(&[[0f32, 0.]], &Device::Cpu)?;
    /// let loss = gpt2_model::nn::functional::reference::cross_entropy(&logits, &[1])?;
    /// assert!((loss.to_scalar::<f32>()? - 2f32.ln()).abs() < 1e-6);
    /// # Ok(()) }
    /// ```
    pub fn cross_entropy(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
        let t = Tensor::new(targets, logits.device())?;
        Ok(candle_nn::loss::cross_entropy(
            &logits.to_dtype(DType::F32)?,
            &t,
        )?)
    }

    /// [`layer_norm`](super::layer_norm) from means, squares and divisions, in f32.
    ///
    /// ```
    /// # fn main() -> Result<(), gpt2_model::ModelError> {
    /// use gpt2_model::{Device, Tensor};
    /// let x = Tensor::new(&[[1f32, 3.]], &Device::Cpu)?;
    /// let one = Tensor::new(&[1f32, 1.], &Device::Cpu)?;
    /// let zero = Tensor::new(&[0f32, 0.], &Device::Cpu)?;
    /// let y = gpt2_model::nn::functional::reference::layer_norm(&x, &one, &zero, 0.0)?;
    /// assert_eq!(y.to_vec2::<f32>()?, vec![vec![-1., 1.]]);
    /// # Ok(()) }
    /// ```
    pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        let y = normed
            .broadcast_mul(&weight.to_dtype(DType::F32)?)?
            .broadcast_add(&bias.to_dtype(DType::F32)?)?;
        Ok(y.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::rel_diff;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    }

    #[test]
    fn fast_paths_agree_with_the_reference_paths() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 3, 5, 7), &dev)?).contiguous()?;
        assert!(max_diff(&gelu_new(&x)?, &reference::gelu_new(&x)?)? < 1e-5);
        let mask = crate::nn::attention::causal_mask(&[0, 2], 2, 5, &dev)?;
        for m in [Some(&mask), None] {
            let added = match m {
                Some(m) => x.broadcast_add(m)?,
                None => x.clone(),
            };
            assert!(max_diff(&softmax(&x, m)?, &reference::softmax(&added)?)? < 1e-6);
        }
        let (w, b) = (
            Tensor::randn(1f32, 0.1, 7, &dev)?,
            Tensor::randn(0f32, 0.1, 7, &dev)?,
        );
        let fused = layer_norm(&x, &w, &b, 1e-5)?;
        assert!(max_diff(&fused, &reference::layer_norm(&x, &w, &b, 1e-5)?)? < 1e-5);
        Ok(())
    }

    /// The values of `f(vars)` and the gradients of `Σ f(vars)·r` w.r.t. `vars`, for a fixed
    /// random `r` (so that every output carries its own upstream gradient).
    fn value_and_grads(
        vars: &[&Var],
        r: &Tensor,
        f: &dyn Fn(&[&Tensor]) -> Result<Tensor>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let ts: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let y = f(&ts)?;
        let grads = (&y * r)?.sum_all()?.backward()?;
        let g = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned().expect("a gradient"))
            .collect();
        Ok((y.detach(), g))
    }

    #[test]
    fn training_paths_match_the_autograd_of_the_reference_paths() -> Result<()> {
        let dev = Device::Cpu;
        // GELU, past both ends of exp's range too.
        let mut v = Tensor::randn(0f32, 3.0, 1050, &dev)?.to_vec1::<f32>()?;
        v[..4].copy_from_slice(&[-60.0, 60.0, 0.0, -0.0]);
        let x = Var::from_tensor(&Tensor::new(v, &dev)?.reshape((3, 7, 50))?)?;
        let r = Tensor::randn(0f32, 1.0, (3, 7, 50), &dev)?;
        let ours = value_and_grads(&[&x], &r, &|t| gelu_new(t[0]))?;
        let refs = value_and_grads(&[&x], &r, &|t| reference::gelu_new(t[0]))?;
        assert!(rel_diff(&ours.0, &refs.0)? < 1e-6);
        assert!(rel_diff(&ours.1[0], &refs.1[0])? < 1e-5);

        // Layer norm: 70 rows make three tasks of partial sums, the last one short.
        for (rows, c) in [(70, 24), (1, 5), (33, 768)] {
            let x = Var::from_tensor(&Tensor::randn(0.5f32, 2.0, (rows, c), &dev)?)?;
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, c, &dev)?)?;
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, c, &dev)?)?;
            let r = Tensor::randn(0f32, 1.0, (rows, c), &dev)?;
            let vars = [&x, &w, &b];
            let ours = value_and_grads(&vars, &r, &|t| layer_norm(t[0], t[1], t[2], 1e-5))?;
            let refs = value_and_grads(&vars, &r, &|t| {
                reference::layer_norm(t[0], t[1], t[2], 1e-5)
            })?;
            assert!(rel_diff(&ours.0, &refs.0)? < 1e-5, "y, {rows}×{c}");
            for (i, (a, b)) in ours.1.iter().zip(&refs.1).enumerate() {
                let d = rel_diff(a, b)?;
                assert!(d < 1e-5, "gradient {i}, {rows}×{c}: {d}");
            }
        }

        // The tied head and the cross-entropy, against the logits and candle's nll.
        let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (7, 24), &dev)?)?;
        let wte = Var::from_tensor(&Tensor::randn(0f32, 0.5, (50, 24), &dev)?)?;
        let targets = [0u32, 49, 7, 7, 13, 21, 30];
        let fused = lm_head_cross_entropy(h.as_tensor(), wte.as_tensor(), &targets)?;
        let logits = h.as_tensor().matmul(&wte.as_tensor().t()?)?;
        let plain = reference::cross_entropy(&logits, &targets)?;
        assert!(rel_diff(&fused, &plain)? < 1e-6);
        let (ga, gb) = ((fused * 0.5)?.backward()?, (plain * 0.5)?.backward()?);
        for v in [&h, &wte] {
            let (a, b) = (
                ga.get(v).expect("a gradient"),
                gb.get(v).expect("a gradient"),
            );
            assert!(rel_diff(a, b)? < 1e-5);
        }
        assert!(lm_head_cross_entropy(h.as_tensor(), wte.as_tensor(), &[50; 7]).is_err());
        assert!(lm_head_cross_entropy(h.as_tensor(), wte.as_tensor(), &targets[..6]).is_err());

        // The attention softmax, with and without its mask.
        let mask = crate::nn::attention::causal_mask(&[0, 2], 0, 5, &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (2, 3, 5, 5), &dev)?)?;
        let r = Tensor::randn(0f32, 1.0, (2, 3, 5, 5), &dev)?;
        for m in [Some(&mask), None] {
            let ours = value_and_grads(&[&x], &r, &|t| softmax(t[0], m))?;
            let refs = value_and_grads(&[&x], &r, &|t| match m {
                Some(m) => reference::softmax(&t[0].broadcast_add(m)?),
                None => reference::softmax(t[0]),
            })?;
            assert!(rel_diff(&ours.0, &refs.0)? < 1e-6);
            assert!(rel_diff(&ours.1[0], &refs.1[0])? < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn inputs_in_a_gradient_graph_take_the_differentiable_paths() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::new(&[[-1f32, 0.5, 2.0, 0.0]], &dev)?;
        let (w, b) = (
            Tensor::ones(4, DType::F32, &dev)?,
            Tensor::zeros(4, DType::F32, &dev)?,
        );
        let y = (gelu_new(x.as_tensor())?.sum_all()?
            + softmax(&x.as_tensor().unsqueeze(0)?.unsqueeze(0)?, None)?
                .flatten_all()?
                .get(0)?
            + layer_norm(x.as_tensor(), &w, &b, 1e-5)?
                .flatten_all()?
                .get(1)?)?;
        let grads = y.backward()?;
        let g = grads.get(&x).expect("x has a gradient").to_vec2::<f32>()?;
        assert!(g[0].iter().all(|v| v.is_finite()) && g[0].iter().any(|v| *v != 0.0));
        Ok(())
    }

    #[test]
    fn dropout_is_seeded_scaled_and_differentiable() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::new(&[1f32; 64], &dev)?;
        let d = Dropout { p: 0.25, seed: 11 };
        assert_eq!(
            Dropout { p: 0.0, seed: 11 }
                .apply(x.as_tensor(), 0)?
                .to_vec1::<f32>()?,
            vec![1f32; 64]
        );
        let y = d.apply(x.as_tensor(), 3)?;
        let v = y.to_vec1::<f32>()?;
        assert!(v.iter().all(|&a| a == 0.0 || (a - 4.0 / 3.0).abs() < 1e-6));
        assert_eq!(v, d.apply(x.as_tensor(), 3)?.to_vec1::<f32>()?);
        assert_ne!(v, d.apply(x.as_tensor(), 4)?.to_vec1::<f32>()?);
        // The gradient of sum(dropout(x)) is the mask itself.
        let g = y.sum_all()?.backward()?;
        assert_eq!(g.get(&x).expect("gradient").to_vec1::<f32>()?, v);
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
