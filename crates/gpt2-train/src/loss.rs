//! The training loss: mean cross-entropy of logits against target ids, as one fused op.
//!
//! ```text
//! loss      = (1/N) Σᵢ (lseᵢ − x[i, tᵢ])         lseᵢ = log Σⱼ exp(x[i, j])
//! ∂loss/∂x  = (softmax(xᵢ) − onehot(tᵢ)) / N
//! ```
//!
//! The logits are `[N, n_vocab]`: for `B·T` positions of GPT-2's 50257-token vocabulary,
//! the largest tensors of a step. candle's `log_softmax` + `nll` make about a dozen
//! temporaries of that size (forward and backward); this op reads the logits once forward
//! and once backward, writing only the gradient. Rows run in parallel; each row's sums
//! are sequential, so the numbers do not depend on the thread count.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// The mean cross-entropy of `logits` `[N, V]` (f32) against `targets` (`N` ids `< V`), a
/// scalar tensor that records its backward op.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let x = Var::new(&[[0f32, 0.], [1., 1.]], &Device::Cpu)?;
/// let loss = gpt2_train::loss::cross_entropy(x.as_tensor(), &[0, 1])?;
/// assert!((loss.to_scalar::<f32>()? - 2f32.ln()).abs() < 1e-6);
/// let g = loss.backward()?.get(&x).unwrap().to_vec2::<f32>()?;
/// assert_eq!(g, vec![vec![-0.25, 0.25], vec![0.25, -0.25]]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// Logits that are not `[N, V]` f32 on the CPU, `targets` not `N` long, an id `≥ V`.
pub fn cross_entropy(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let op = CrossEntropy {
        targets: Arc::new(targets.to_vec()),
        lse: Arc::new(Mutex::new(None)),
    };
    Ok(logits.contiguous()?.apply_op1(op)?)
}

/// The forward op (its backward is [`CrossEntropyGrad`]).
struct CrossEntropy {
    targets: Arc<Vec<u32>>,
    /// Each row's log-sum-exp, kept by the forward pass for the backward pass.
    lse: Arc<Mutex<Option<Vec<f32>>>>,
}

/// `scale · (softmax(x) − onehot(t)) / N`, no backward of its own.
struct CrossEntropyGrad {
    targets: Arc<Vec<u32>>,
    /// Each row's log-sum-exp (from the forward pass), or `None` to compute it.
    lse: Option<Vec<f32>>,
    scale: f32,
}

/// The f32 values of a contiguous `[N, V]` tensor, checked against `targets`.
fn rows<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    targets: &[u32],
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("cross_entropy: f32 logits expected");
    };
    let (n, v) = layout.shape().dims2()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("cross_entropy: contiguous logits expected");
    };
    if targets.len() != n {
        candle_core::bail!("cross_entropy: {} targets for {n} rows", targets.len());
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("cross_entropy: target {t} out of range for {v} classes");
    }
    Ok((&all[start..end], n, v))
}

/// `(max, log Σ exp(x − max) + max)` of one row.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    max + sum.ln()
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, n, v) = rows(storage, layout, &self.targets)?;
        let lse: Vec<f32> = x.par_chunks(v).map(log_sum_exp).collect();
        let losses: Vec<f32> = x
            .chunks(v)
            .zip(self.targets.iter())
            .zip(&lse)
            .map(|((row, &t), &l)| l - row[t as usize])
            .collect();
        if let Ok(mut slot) = self.lse.lock() {
            *slot = Some(lse);
        }
        let mean = (losses.iter().map(|&l| l as f64).sum::<f64>() / n.max(1) as f64) as f32;
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let scale = grad_res
            .to_dtype(candle_core::DType::F32)?
            .to_scalar::<f32>()?;
        let lse = self.lse.lock().ok().and_then(|mut slot| slot.take());
        let grad = arg.apply_op1_no_bwd(&CrossEntropyGrad {
            targets: self.targets.clone(),
            lse,
            scale,
        })?;
        Ok(Some(grad))
    }
}

impl CustomOp1 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, n, v) = rows(storage, layout, &self.targets)?;
        let k = self.scale / n.max(1) as f32;
        let lse = match &self.lse {
            Some(l) if l.len() == n => l.clone(),
            _ => x.par_chunks(v).map(log_sum_exp).collect(),
        };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .zip(self.targets.par_iter().zip(lse.par_iter()))
            .for_each(|((o, row), (&t, &lse))| {
                for (o, &x) in o.iter_mut().zip(row) {
                    *o = (x - lse).exp() * k;
                }
                o[t as usize] -= k;
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn agrees_with_candles_log_softmax_and_nll() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (6, 50), &dev)?)?;
        let t: Vec<u32> = vec![0, 49, 7, 7, 13, 21];
        let fused = cross_entropy(x.as_tensor(), &t)?;
        let tt = Tensor::new(t.as_slice(), &dev)?;
        let plain = candle_nn::loss::cross_entropy(x.as_tensor(), &tt)?;
        let (a, b) = (fused.to_scalar::<f32>()?, plain.to_scalar::<f32>()?);
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        let ga = (fused * 0.5)?.backward()?;
        let gb = (plain * 0.5)?.backward()?;
        let d = (ga.get(&x).expect("g") - gb.get(&x).expect("g"))?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        Ok(())
    }
}
