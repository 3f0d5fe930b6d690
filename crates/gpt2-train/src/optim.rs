//! AdamW exactly as `torch.optim.AdamW` computes it, and gradient clipping as
//! `torch.nn.utils.clip_grad_norm_`.
//!
//! For each parameter `p` with gradient `g`, at step `t` (1-based), in f32 with the scalars
//! rounded to f32 as PyTorch does:
//!
//! ```text
//! p  ← p · (1 − lr·wd)                    decoupled weight decay (wd = 0 for biases and norms)
//! m  ← m + (1 − β₁)·(g − m)               torch's lerp
//! v  ← v·β₂ + (1 − β₂)·g·g
//! p  ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```

use rayon::prelude::*;

/// Adam's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε, added outside the square root.
    pub eps: f64,
    /// Decoupled weight decay for the parameters that take it.
    pub weight_decay: f64,
}

/// One parameter's moments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moments {
    /// The first moment `m` (`exp_avg`).
    pub exp_avg: Vec<f32>,
    /// The second moment `v` (`exp_avg_sq`).
    pub exp_avg_sq: Vec<f32>,
}

impl Moments {
    /// Zeros for a parameter of `n` values.
    pub fn zeros(n: usize) -> Self {
        Self {
            exp_avg: vec![0.0; n],
            exp_avg_sq: vec![0.0; n],
        }
    }
}

/// One AdamW update of `param` in place, torch's single-tensor implementation.
/// `step` is the 1-based step count after this update; `decay` whether weight decay applies.
/// `clip` is [`clip_factor`]'s factor when the gradients are clipped: each gradient value is
/// multiplied by it (in f32) before use, the numbers `clip_grad_norm_`'s in-place scaling
/// gives, without a scaled copy of the gradient.
///
/// ```
/// use gpt2_train::optim::{adamw_update, AdamWConfig, Moments};
/// let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 };
/// let (mut p, mut m) = (vec![1.0f32], Moments::zeros(1));
/// adamw_update(&cfg, 0.1, 1, true, &mut p, &[0.5], None, &mut m);
/// // The first step moves by lr·sign(g) (bias correction makes m/√v = ±1).
/// assert!((p[0] - 0.9).abs() < 1e-6);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    cfg: &AdamWConfig,
    lr: f64,
    step: u64,
    decay: bool,
    param: &mut [f32],
    grad: &[f32],
    clip: Option<f32>,
    moments: &mut Moments,
) {
    // × 1 is exact: no clipping leaves every gradient value as it is.
    let clip = clip.unwrap_or(1.0);
    let decay_factor = if decay && cfg.weight_decay != 0.0 {
        Some((1.0 - lr * cfg.weight_decay) as f32)
    } else {
        None
    };
    let w1 = (1.0 - cfg.beta1) as f32;
    let b2 = cfg.beta2 as f32;
    let w2 = (1.0 - cfg.beta2) as f32;
    let bias_correction1 = 1.0 - cfg.beta1.powi(step as i32);
    let bias_correction2 = 1.0 - cfg.beta2.powi(step as i32);
    let neg_step_size = (-(lr / bias_correction1)) as f32;
    let bc2_sqrt = bias_correction2.sqrt() as f32;
    let eps = cfg.eps as f32;
    let update = |param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]| {
        for i in 0..param.len() {
            let g = grad[i] * clip;
            let mut p = param[i];
            if let Some(f) = decay_factor {
                p *= f;
            }
            // torch.lerp: weight < 0.5 → self + weight·(end − self).
            let mi = m[i] + w1 * (g - m[i]);
            let vi = v[i] * b2 + w2 * g * g;
            let denom = vi.sqrt() / bc2_sqrt + eps;
            p += neg_step_size * mi / denom;
            m[i] = mi;
            v[i] = vi;
            param[i] = p;
        }
    };
    // Element by element, so the chunks (on rayon's pool) change nothing in the numbers.
    const CHUNK: usize = 1 << 15;
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(moments.exp_avg.par_chunks_mut(CHUNK))
        .zip(moments.exp_avg_sq.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| update(p, g, m, v));
}

/// The global L2 norm of all gradients (the norm of the per-tensor norms, as
/// `clip_grad_norm_`), accumulated in f64.
///
/// ```
/// let n = gpt2_train::optim::global_norm(&[&[3.0f32][..], &[4.0][..]]);
/// assert_eq!(n, 5.0);
/// ```
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    grads
        .iter()
        .map(|g| {
            let s: f64 = g.iter().map(|&x| (x as f64) * (x as f64)).sum();
            s
        })
        .sum::<f64>()
        .sqrt()
}

/// The factor `clip_grad_norm_` scales the gradients by for a global norm `norm`:
/// `clip / (norm + 1e-6)` when that is below 1, else `None` (no scaling).
///
/// ```
/// use gpt2_train::optim::clip_factor;
/// assert_eq!(clip_factor(0.5, 1.0), None);
/// assert_eq!(clip_factor(4.0, 1.0), Some((1.0 / (4.0 + 1e-6)) as f32));
/// ```
pub fn clip_factor(norm: f64, clip: f64) -> Option<f32> {
    if clip <= 0.0 {
        return None;
    }
    let coef = clip / (norm + 1e-6);
    (coef < 1.0).then_some(coef as f32)
}
