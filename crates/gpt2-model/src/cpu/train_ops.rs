//! The layers' ops for training, forward and backward written by hand, as llm.c writes each
//! layer's: GELU, layer norm, the attention softmax, the whole attention core (split into
//! heads, softmax(q·kᵀ/√d + mask)·v, merge) and the tied head with the cross-entropy, as
//! candle custom ops.
//!
//! Their reference paths (`crate::nn::functional::reference` and the split/attend/merge of
//! `crate::nn::attention`) are chains of plain candle ops: a layer norm is about ten of them
//! forward and more backward, GELU's backward several (with two `powf` and a `tanh` per
//! value), attention over a dozen, and each
//! allocates a tensor of the activations' size, records its own backward op and passes over
//! memory once more. Here each op is one pass forward and one backward, in f32, with rows (or
//! sequences) in parallel on rayon's threads, and candle's autograd calls the backward pass
//! through [`CustomOp1::bwd`] and its siblings. Each is tested against the autograd of its
//! reference path (values and gradients, in `crate::nn`'s tests).
//!
//! They apply to contiguous f32 CPU tensors that are part of a gradient graph; inference
//! takes [`super::ops`] instead, and every other case the reference paths. Each is called
//! from one place in `crate::nn` (`functional`, and `attention` for [`attention`]).

use std::sync::{Arc, Mutex};

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape,
    Tensor,
};
use rayon::prelude::*;

use super::fast_exp::{self, exp_f32};
use super::ops::{gelu_f32, log_sum_exp, softmax_row};
use crate::error::Result;

/// Rows per parallel task, and per partial sum of the layer norm's weight gradients: fixed,
/// so the sums' order (and their rounding) does not depend on the number of threads.
const ROWS: usize = 32;

/// Values per parallel task of the elementwise GELU.
const CHUNK: usize = 1 << 14;

/// Whether `t` is a contiguous f32 CPU tensor: what these kernels take.
fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// The values of a contiguous f32 CPU storage.
fn values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => v
            .get(start..end)
            .ok_or_else(|| candle_core::Error::Msg(format!("{op}: layout past the storage"))),
        _ => Err(candle_core::Error::Msg(format!(
            "{op}: expected contiguous f32 values, got {:?}",
            s.dtype()
        ))),
    }
}

/// `Err` unless `a` and `b` have the same shape.
fn same_shape(a: &Layout, b: &Layout, op: &str) -> candle_core::Result<()> {
    if a.shape() == b.shape() {
        return Ok(());
    }
    Err(candle_core::Error::Msg(format!(
        "{op}: shapes {:?} and {:?} differ",
        a.shape(),
        b.shape()
    )))
}

/// GPT-2's GELU ([`super::ops::gelu_new`]'s numbers) with its backward pass, for a tensor in
/// a gradient graph. `None` when `x` is not a contiguous f32 CPU tensor.
pub fn gelu_new(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    Ok(Some(x.apply_op1(GeluNew)?))
}

/// `gelu_new`: `y = x·σ(2u)`, `u = √(2/π)·(x + 0.044715·x³)` (σ the logistic function).
struct GeluNew;

impl CustomOp1 for GeluNew {
    fn name(&self) -> &'static str {
        "gelu_new"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                fast_exp::vectorized(|| {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = gelu_f32(x);
                    }
                })
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &GeluNewBackward)?,
        ))
    }
}

/// `(x, dy) → dx = dy · d gelu/dx`.
struct GeluNewBackward;

/// The derivative of [`gelu_f32`] at `x`: with `s = σ(2u)`, `d(x·s)/dx = s + x·2s(1 − s)·u'`,
/// `u' = √(2/π)·(1 + 3·0.044715·x²)`. (The same as `½(1 + tanh u) + ½x(1 − tanh²u)·u'`,
/// since `tanh u = 2s − 1`.)
#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x);
    let du = SQRT_TWO_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
    // exp_f32 clamps its argument, so s is 0 or 1 (not NaN) far out.
    let s = 1.0 / (1.0 + exp_f32(-2.0 * u));
    s + x * 2.0 * s * (1.0 - s) * du
}

impl CustomOp2 for GeluNewBackward {
    fn name(&self) -> &'static str {
        "gelu_new_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        same_shape(l1, l2, self.name())?;
        let (x, dy) = (values(s1, l1, self.name())?, values(s2, l2, self.name())?);
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(|(dx, (x, dy))| {
                fast_exp::vectorized(|| {
                    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                        *dx = dy * gelu_grad(x);
                    }
                })
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Layer normalisation over the last dimension with its backward pass (for `x`, `weight`
/// and `bias`), when all three are contiguous f32 CPU tensors, `weight` and `bias` of the
/// last dimension's size; `None` otherwise.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    let c = x.dims().last().copied().unwrap_or(0);
    let fits = weight.dims() == [c] && bias.dims() == [c] && c > 0;
    if !fits || ![x, weight, bias].into_iter().all(applies) {
        return Ok(None);
    }
    Ok(Some(x.apply_op3(
        weight,
        bias,
        LayerNorm { eps: eps as f32 },
    )?))
}

/// `(x, weight, bias) → (x − mean) · rstd · weight + bias` per row, `rstd = 1/√(var + eps)`.
struct LayerNorm {
    eps: f32,
}

/// The sum of `v`, in eight partial sums (so that it vectorizes).
#[inline(always)]
fn sum8(v: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0f32; 8];
    for (i, x) in v.enumerate() {
        acc[i % 8] += x;
    }
    acc.iter().sum()
}

/// A row's mean and `1/√(var + eps)` (the biased variance, from the centred values).
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum8(x.iter().copied()) / n;
    let var = sum8(x.iter().map(|&v| (v - mean) * (v - mean))) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The values of a vector of `c` values (a layer norm's gain or shift), checked.
fn vector_of<'a>(
    c: usize,
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let v = values(s, l, op)?;
    if v.len() != c || c == 0 {
        return Err(candle_core::Error::Msg(format!(
            "{op}: expected a gain and shift of {c} values, got {}",
            v.len()
        )));
    }
    Ok(v)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let c = l1.dims().last().copied().unwrap_or(0);
        let (w, b) = (
            vector_of(c, s2, l2, self.name())?,
            vector_of(c, s3, l3, self.name())?,
        );
        let x = values(s1, l1, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ROWS * c)
            .zip(x.par_chunks(ROWS * c))
            .for_each(|(y, x)| {
                fast_exp::vectorized(|| {
                    for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                        let (mean, rstd) = moments(x, self.eps);
                        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                            *y = (x - mean) * rstd * w + b;
                        }
                    }
                })
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = weight.elem_count();
        let rows = x.elem_count() / c;
        // [rows + 2, c]: dx, then d weight, then d bias.
        let all = x.apply_op3_no_bwd(
            weight,
            &dy.contiguous()?,
            &LayerNormBackward { eps: self.eps },
        )?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.narrow(0, rows, 1)?.reshape(weight.shape())?;
        let db = all.narrow(0, rows + 1, 1)?.reshape(bias.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(x, weight, dy) → [rows + 2, c]`: the rows of `dx`, then `d weight`, then `d bias`.
///
/// With `x̂ = (x − mean)·rstd` and `d = dy·weight` per row:
/// `dx = rstd·(d − mean(d) − x̂·mean(d·x̂))`, `d weight = Σ_rows dy·x̂`, `d bias = Σ_rows dy`
/// (the statistics recomputed from `x`, as cheap as storing them).
struct LayerNormBackward {
    eps: f32,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer_norm_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        same_shape(l1, l3, self.name())?;
        let c = l1.dims().last().copied().unwrap_or(0);
        let w = vector_of(c, s2, l2, self.name())?;
        let (x, dy) = (values(s1, l1, self.name())?, values(s3, l3, self.name())?);
        let rows = x.len() / c;
        let mut out = vec![0f32; (rows + 2) * c];
        let (dx, sums) = out.split_at_mut(rows * c);
        // Each task's rows add into their own partial sums of d weight | d bias.
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(ROWS * c)
            .zip(x.par_chunks(ROWS * c).zip(dy.par_chunks(ROWS * c)))
            .map(|(dx, (x, dy))| {
                let mut part = vec![0f32; 2 * c];
                fast_exp::vectorized(|| {
                    let (dw, db) = part.split_at_mut(c);
                    let rows = dx.chunks_exact_mut(c).zip(x.chunks_exact(c));
                    for ((dx, x), dy) in rows.zip(dy.chunks_exact(c)) {
                        layer_norm_backward_row(x, w, dy, self.eps, dx, dw, db);
                    }
                });
                part
            })
            .collect();
        for part in &partials {
            for (s, p) in sums.iter_mut().zip(part) {
                *s += p;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, c))))
    }
}

/// One row of [`LayerNormBackward`]: writes `dx`, adds into `dw` and `db`.
#[inline(always)]
fn layer_norm_backward_row(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let (mean, rstd) = moments(x, eps);
    let n = x.len() as f32;
    let d_mean = sum8(dy.iter().zip(w).map(|(&g, &w)| g * w)) / n;
    let d_xhat_mean = sum8(
        dy.iter()
            .zip(w)
            .zip(x)
            .map(|((&g, &w), &x)| g * w * ((x - mean) * rstd)),
    ) / n;
    for i in 0..x.len() {
        let xhat = (x[i] - mean) * rstd;
        dx[i] = (dy[i] * w[i] - d_mean - xhat * d_xhat_mean) * rstd;
        dw[i] += dy[i] * xhat;
        db[i] += dy[i];
    }
}

/// `softmax(scores + mask)` over the last dimension with its backward pass (for `scores`):
/// `scores` `[b, h, s, L]`, `mask` `[b, 1, s, L]` (0 or −∞) or `None`. `None` when the
/// tensors are not contiguous f32 CPU tensors of those shapes.
pub fn softmax(scores: &Tensor, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (b, h, s, l) = scores.dims4()?;
    if !applies(scores) {
        return Ok(None);
    }
    with_mask(scores, mask, [b, 1, s, l], Softmax { heads: h })
}

/// `op` on `x` alone, or on `x` and `mask` when the mask is a constant contiguous f32 CPU
/// tensor of shape `dims`; `None` for any other mask.
fn with_mask<O>(
    x: &Tensor,
    mask: Option<&Tensor>,
    dims: [usize; 4],
    op: O,
) -> Result<Option<Tensor>>
where
    O: CustomOp1 + CustomOp2 + Send + Sync + 'static,
{
    match mask {
        None => Ok(Some(x.apply_op1(op)?)),
        Some(m) if applies(m) && !m.track_op() && m.dims() == dims => Ok(Some(x.apply_op2(m, op)?)),
        Some(_) => Ok(None),
    }
}

/// `scores` (`[b, h, s, L]`, `heads` = h), with or without a mask `[b, 1, s, L]` → `a`.
struct Softmax {
    heads: usize,
}

impl Softmax {
    fn forward(
        &self,
        scores: &[f32],
        layout: &Layout,
        mask: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, _, s, l) = layout.shape().dims4()?;
        let mut a = scores.to_vec();
        // One task per sequence and head: `s` rows, masked by that sequence's rows.
        a.par_chunks_mut((s * l).max(1))
            .enumerate()
            .for_each(|(bh, rows)| {
                let seq = bh / self.heads;
                for (i, row) in rows.chunks_mut(l.max(1)).enumerate() {
                    let m = mask.map(|m| &m[(seq * s + i) * l..(seq * s + i + 1) * l]);
                    fast_exp::vectorized(|| softmax_row(row, m));
                }
            });
        Ok((CpuStorage::F32(a), layout.shape().clone()))
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward(values(s, l, "softmax")?, l, None)
    }

    fn bwd(&self, _: &Tensor, a: &Tensor, da: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            a.apply_op2_no_bwd(&da.contiguous()?, &SoftmaxBackward)?,
        ))
    }
}

impl CustomOp2 for Softmax {
    fn name(&self) -> &'static str {
        "masked_softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, _, s, l) = l1.shape().dims4()?;
        if l2.dims() != [b, 1, s, l] {
            return Err(candle_core::Error::Msg(format!(
                "masked_softmax: expected a mask [{b}, 1, {s}, {l}], got {:?}",
                l2.dims()
            )));
        }
        let mask = values(s2, l2, "masked_softmax")?;
        self.forward(values(s1, l1, "masked_softmax")?, l1, Some(mask))
    }

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        a: &Tensor,
        da: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // The mask is a constant: no gradient.
        Ok((
            Some(a.apply_op2_no_bwd(&da.contiguous()?, &SoftmaxBackward)?),
            None,
        ))
    }
}

/// `(a, da) → d scores = a·(da − Σ a·da)` per row (`a` the softmax's output).
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        same_shape(l1, l2, self.name())?;
        let l = l1.dims().last().copied().unwrap_or(0).max(1);
        let (a, da) = (values(s1, l1, self.name())?, values(s2, l2, self.name())?);
        let mut ds = vec![0f32; a.len()];
        ds.par_chunks_mut(ROWS * l)
            .zip(a.par_chunks(ROWS * l).zip(da.par_chunks(ROWS * l)))
            .for_each(|(ds, (a, da))| {
                fast_exp::vectorized(|| {
                    let rows = ds.chunks_exact_mut(l).zip(a.chunks_exact(l));
                    for ((ds, a), da) in rows.zip(da.chunks_exact(l)) {
                        let dot = sum8(a.iter().zip(da).map(|(&a, &g)| a * g));
                        for ((ds, &a), &g) in ds.iter_mut().zip(a).zip(da) {
                            *ds = a * (g - dot);
                        }
                    }
                })
            });
        Ok((CpuStorage::F32(ds), l1.shape().clone()))
    }
}

/// Causal self-attention's core for training, `qkv` `[b, s, 3·C]` (`c_attn`'s output: q, k,
/// v, each `n_head` heads of `C / n_head` channels) → `[b, s, C]` (heads merged):
/// `softmax(q·kᵀ/√d + mask) · v` per sequence and head, with its backward pass (for `qkv`),
/// as llm.c's `attention_forward`/`attention_backward` compute it. `mask` is
/// `[b, 1, s, s]` (0 or −∞, no row all −∞), or `None` when every key is visible.
///
/// One op in place of the reference path's split into heads (a narrow, a transpose and a
/// copy for each of q, k, v), scaling, two batched products, the softmax and the merge of the
/// heads, each a tensor and a recorded backward op (a narrow's backward pads its gradient
/// with zeros to the full size). The attention weights are not kept: the backward pass
/// recomputes them (one `s × s × d` product and a softmax per head: ~1% of a block's
/// arithmetic forward and backward at the 124M shape and s = 256), as flash attention does, which saves `b·n_head·s²` values per layer.
///
/// `None` unless `qkv` is a contiguous f32 CPU tensor of that shape and the mask (when given)
/// one too, recording no backward op of its own.
pub fn attention(qkv: &Tensor, n_head: usize, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (b, s, c3) = qkv.dims3()?;
    let fits = n_head > 0 && c3 % (3 * n_head) == 0 && c3 > 0;
    if !fits || !applies(qkv) {
        return Ok(None);
    }
    with_mask(qkv, mask, [b, 1, s, s], Attention { n_head })
}

/// [`attention`]'s op: `qkv` (and the mask) → `y`.
struct Attention {
    n_head: usize,
}

/// The shape of one attention: `b` sequences of `s` positions, `h` heads of `d` channels.
#[derive(Clone, Copy)]
struct Heads {
    b: usize,
    s: usize,
    h: usize,
    d: usize,
}

impl Heads {
    fn of(l: &Layout, n_head: usize, op: &str) -> candle_core::Result<Self> {
        let (b, s, c3) = l.shape().dims3()?;
        if n_head == 0 || c3 % (3 * n_head) != 0 {
            return Err(candle_core::Error::Msg(format!(
                "{op}: {c3} channels are not q, k, v of {n_head} heads"
            )));
        }
        Ok(Self {
            b,
            s,
            h: n_head,
            d: c3 / 3 / n_head,
        })
    }

    /// `C = h·d`.
    fn c(&self) -> usize {
        self.h * self.d
    }

    /// The mask's `[b, 1, s, s]` values, checked (`None` for no mask).
    fn mask<'a>(
        &self,
        m: Option<(&'a CpuStorage, &Layout)>,
        op: &str,
    ) -> candle_core::Result<Option<&'a [f32]>> {
        let Some((ms, ml)) = m else { return Ok(None) };
        if ml.dims() != [self.b, 1, self.s, self.s] {
            return Err(candle_core::Error::Msg(format!(
                "{op}: expected a mask [{}, 1, {}, {}], got {:?}",
                self.b,
                self.s,
                self.s,
                ml.dims()
            )));
        }
        values(ms, ml, op).map(Some)
    }
}

/// `dst[r·dst_rs + c] = alpha · Σ_i a[r·a_rs + i·a_cs] · b[i·b_rs + c·b_cs]` for `r < m`,
/// `c < n`, `i < k`, on the calling thread (the callers run one task per sequence).
///
/// # Safety
/// Every index addressed must lie within `dst`, `a` and `b`; the strides non-negative and
/// the sizes within `isize`.
unsafe fn product(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    alpha: f32,
) {
    // SAFETY: the caller's contract.
    unsafe { product_with(dims, (dst, dst_rs), a, b, alpha, gemm::Parallelism::None) }
}

/// [`product`] with `alpha` 1 into a row-major `[m, n]` `dst`, on rayon's threads.
///
/// # Safety
/// As [`product`].
unsafe fn product_parallel(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
) {
    let parallel = gemm::Parallelism::Rayon(rayon::current_num_threads().max(1));
    // SAFETY: the caller's contract.
    unsafe { product_with(dims, (dst, dims.1), a, b, 1.0, parallel) }
}

/// [`product`] and [`product_parallel`]: the `gemm` crate's call.
///
/// # Safety
/// As [`product`].
unsafe fn product_with(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (&mut [f32], usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    alpha: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract; `dst` is written through its own exclusive borrow.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The attention weights `a` `[s, s]` of head `head` of one sequence: `softmax(q·kᵀ/√d +
/// mask)`, from the sequence's `qkv` `[s, 3C]` and mask rows `[s, s]`.
fn weights(shape: Heads, qkv: &[f32], mask: Option<&[f32]>, head: usize, a: &mut [f32]) {
    let Heads { s, d, .. } = shape;
    let c = shape.c();
    let scale = 1.0 / (d as f32).sqrt();
    let (q, k) = (&qkv[head * d..], &qkv[c + head * d..]);
    // SAFETY: `a` is s·s; q and k are read at rows < s (stride 3C) and columns < d, within
    // the sequence's s·3C values from their offsets (< 3C − d + 1).
    unsafe { product((s, s, d), a, s, (q, 3 * c, 1), (k, 1, 3 * c), scale) };
    for (i, row) in a.chunks_exact_mut(s).enumerate() {
        let m = mask.map(|m| &m[i * s..(i + 1) * s]);
        fast_exp::vectorized(|| softmax_row(row, m));
    }
}

impl Attention {
    fn forward(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        mask: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = Heads::of(l1, self.n_head, "attention")?;
        let mask = shape.mask(mask, "attention")?;
        let qkv = values(s1, l1, "attention")?;
        let Heads { b, s, h, d } = shape;
        let c = shape.c();
        let mut y = vec![0f32; b * s * c];
        // One task per sequence: its heads write their columns of its rows.
        y.par_chunks_mut((s * c).max(1))
            .enumerate()
            .for_each(|(seq, y)| {
                let qkv = &qkv[seq * s * 3 * c..(seq + 1) * s * 3 * c];
                let mask = mask.map(|m| &m[seq * s * s..(seq + 1) * s * s]);
                let mut a = vec![0f32; s * s];
                for head in 0..h {
                    weights(shape, qkv, mask, head, &mut a);
                    let v = &qkv[2 * c + head * d..];
                    // SAFETY: y's rows < s (stride C) from column head·d take d values,
                    // within its s·C; `a` is s·s; v is read at rows < s (stride 3C), columns
                    // < d.
                    unsafe {
                        product(
                            (s, d, s),
                            &mut y[head * d..],
                            c,
                            (&a, s, 1),
                            (v, 3 * c, 1),
                            1.0,
                        )
                    };
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((b, s, c))))
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s, l), None)
    }

    fn bwd(&self, qkv: &Tensor, _: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = AttentionBackward {
            n_head: self.n_head,
            masked: false,
        };
        // The mask slot is unused: dy stands in.
        let dy = dy.contiguous()?;
        Ok(Some(qkv.apply_op3_no_bwd(&dy, &dy, &op)?))
    }
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "masked_attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), Some((s2, l2)))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        mask: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let op = AttentionBackward {
            n_head: self.n_head,
            masked: true,
        };
        // The mask is a constant: no gradient.
        Ok((
            Some(qkv.apply_op3_no_bwd(&dy.contiguous()?, mask, &op)?),
            None,
        ))
    }
}

/// `(qkv, dy, mask) → d qkv` `[b, s, 3C]`, per sequence and head (`a` recomputed):
///
/// ```text
/// da = dy·vᵀ        dv = aᵀ·dy
/// dz = a ⊙ (da − Σ_row da ⊙ a)            (the softmax's backward; z = q·kᵀ/√d + mask)
/// dq = dz·k/√d      dk = dzᵀ·q/√d
/// ```
struct AttentionBackward {
    n_head: usize,
    /// Whether the third input is a mask (else it is ignored).
    masked: bool,
}

impl CustomOp3 for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = self.name();
        let shape = Heads::of(l1, self.n_head, op)?;
        let Heads { b, s, h, d } = shape;
        let c = shape.c();
        if l2.dims() != [b, s, c] {
            return Err(candle_core::Error::Msg(format!(
                "{op}: expected dy [{b}, {s}, {c}], got {:?}",
                l2.dims()
            )));
        }
        let mask = shape.mask(self.masked.then_some((s3, l3)), op)?;
        let (qkv, dy) = (values(s1, l1, op)?, values(s2, l2, op)?);
        let scale = 1.0 / (d as f32).sqrt();
        let mut dqkv = vec![0f32; b * s * 3 * c];
        dqkv.par_chunks_mut((s * 3 * c).max(1))
            .enumerate()
            .for_each(|(seq, dqkv)| {
                let qkv = &qkv[seq * s * 3 * c..(seq + 1) * s * 3 * c];
                let dy = &dy[seq * s * c..(seq + 1) * s * c];
                let mask = mask.map(|m| &m[seq * s * s..(seq + 1) * s * s]);
                let (mut a, mut dz) = (vec![0f32; s * s], vec![0f32; s * s]);
                for head in 0..h {
                    let (hq, hk, hv) = (head * d, c + head * d, 2 * c + head * d);
                    weights(shape, qkv, mask, head, &mut a);
                    let dyh = &dy[head * d..];
                    // SAFETY: every matrix is addressed at rows < s and
                    // columns < s (a, dz: s·s) or < d (a head's columns of the sequence's qkv,
                    // dy or dqkv, at offsets ≤ 3C − d with row strides 3C or C, s rows).
                    unsafe {
                        // da = dy·vᵀ, dv = aᵀ·dy
                        product(
                            (s, s, d),
                            &mut dz,
                            s,
                            (dyh, c, 1),
                            (&qkv[hv..], 1, 3 * c),
                            1.0,
                        );
                        product(
                            (s, d, s),
                            &mut dqkv[hv..],
                            3 * c,
                            (&a, 1, s),
                            (dyh, c, 1),
                            1.0,
                        );
                    }
                    // dz = a ⊙ (da − Σ_row da ⊙ a), in place.
                    fast_exp::vectorized(|| {
                        for (dz, a) in dz.chunks_exact_mut(s).zip(a.chunks_exact(s)) {
                            let dot = sum8(dz.iter().zip(a).map(|(&g, &a)| g * a));
                            for (g, &a) in dz.iter_mut().zip(a) {
                                *g = a * (*g - dot);
                            }
                        }
                    });
                    // SAFETY: as above.
                    unsafe {
                        // dq = dz·k/√d, dk = dzᵀ·q/√d
                        let k = (&qkv[hk..], 3 * c, 1);
                        product((s, d, s), &mut dqkv[hq..], 3 * c, (&dz, s, 1), k, scale);
                        let q = (&qkv[hq..], 3 * c, 1);
                        product((s, d, s), &mut dqkv[hk..], 3 * c, (&dz, 1, s), q, scale);
                    }
                }
            });
        Ok((CpuStorage::F32(dqkv), l1.shape().clone()))
    }
}

/// The mean cross-entropy of the tied head's logits `h·wteᵀ` against `targets`, the head and
/// the loss as one op (llm.c's fused classifier): `h` `[N, C]` (after `ln_f`), `wte`
/// `[V, C]`, `targets` `N` ids below `V` (checked by the caller) → a scalar.
///
/// The logits `[N, V]` (the largest tensor of a step: 412 MB for 2048 positions of GPT-2's
/// vocabulary) are computed once and kept by the op; the backward pass turns them into their
/// own gradient in place, `(softmax − onehot)·g/N`, and takes the two products `dh = dz·wte`
/// and `dwte = dzᵀ·h` from it. The separate head and loss ops instead record a product and a
/// transpose, and candle's autograd adds the logits' gradient into a zeroed tensor of the
/// same size. `None` unless `h` and `wte` are contiguous f32 CPU tensors of matching widths.
pub fn lm_head_cross_entropy(h: &Tensor, wte: &Tensor, targets: &[u32]) -> Result<Option<Tensor>> {
    let ((n, c), (_, c2)) = (h.dims2()?, wte.dims2()?);
    if c != c2 || targets.len() != n || !applies(h) || !applies(wte) {
        return Ok(None);
    }
    let op = HeadLoss {
        targets: Arc::new(targets.to_vec()),
        logits: Arc::new(Mutex::new(None)),
    };
    Ok(Some(h.apply_op2(wte, op)?))
}

/// [`lm_head_cross_entropy`]'s op: `(h, wte)` → the mean loss.
struct HeadLoss {
    targets: Arc<Vec<u32>>,
    /// The forward pass's logits and each row's log-sum-exp, for the backward pass.
    logits: Arc<Mutex<Option<Logits>>>,
}

/// Logits `[N, V]` and each row's log-sum-exp `[N]`.
type Logits = (Vec<f32>, Vec<f32>);

impl HeadLoss {
    /// `(n, v, c)` of `h` `[n, c]` and `wte` `[v, c]`, checked with the targets.
    fn dims(&self, l1: &Layout, l2: &Layout) -> candle_core::Result<(usize, usize, usize)> {
        let ((n, c), (v, c2)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        let bad_target = self.targets.iter().find(|&&t| t as usize >= v);
        if c != c2 || self.targets.len() != n || bad_target.is_some() {
            return Err(candle_core::Error::Msg(format!(
                "lm_head_cross_entropy: expected h [N, C], wte [V, C] and N targets below V, \
                 got h [{n}, {c}], wte [{v}, {c2}], {} targets (largest {:?})",
                self.targets.len(),
                self.targets.iter().max()
            )));
        }
        Ok((n, v, c))
    }

    /// The logits `h·wteᵀ` `[n, v]` and each row's log-sum-exp.
    fn logits(
        &self,
        h: &[f32],
        w: &[f32],
        (n, v, c): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let mut z = vec![0f32; n * v];
        // SAFETY: z is n·v; h is n·c read at rows < n (stride c), columns < c; w is v·c read
        // as its transpose [c, v] (row stride 1, column stride c).
        unsafe { product_parallel((n, v, c), &mut z, (h, c, 1), (w, 1, c)) };
        // The sampler's normalizer: 16 f32 lanes per block, the blocks summed in f64.
        let lse = z
            .par_chunks(v.max(1))
            .map(|row| log_sum_exp(row) as f32)
            .collect();
        (z, lse)
    }
}

impl CustomOp2 for HeadLoss {
    fn name(&self) -> &'static str {
        "lm_head_cross_entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims @ (n, v, _) = self.dims(l1, l2)?;
        let (h, w) = (values(s1, l1, self.name())?, values(s2, l2, self.name())?);
        let (z, lse) = self.logits(h, w, dims);
        let sum: f64 = z
            .chunks(v.max(1))
            .zip(self.targets.iter().zip(&lse))
            .map(|(row, (&t, &l))| (l - row[t as usize]) as f64)
            .sum();
        if let Ok(mut slot) = self.logits.lock() {
            *slot = Some((z, lse));
        }
        let mean = (sum / n.max(1) as f64) as f32;
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(
        &self,
        h: &Tensor,
        wte: &Tensor,
        _: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let (h_storage, l1) = h.storage_and_layout();
        let (w_storage, l2) = wte.storage_and_layout();
        let (candle_core::Storage::Cpu(hs), candle_core::Storage::Cpu(ws)) =
            (&*h_storage, &*w_storage)
        else {
            candle_core::bail!("lm_head_cross_entropy: CPU tensors expected");
        };
        let dims @ (n, v, c) = self.dims(l1, l2)?;
        let (h_v, w_v) = (values(hs, l1, self.name())?, values(ws, l2, self.name())?);
        let saved = self.logits.lock().ok().and_then(|mut slot| slot.take());
        let (mut dz, lse) = match saved {
            Some((z, lse)) if z.len() == n * v && lse.len() == n => (z, lse),
            _ => self.logits(h_v, w_v, dims),
        };
        // dz = (softmax − onehot)·g/N, over the logits in place.
        let k = g / n.max(1) as f32;
        dz.par_chunks_mut(v.max(1))
            .zip(self.targets.par_iter().zip(lse.par_iter()))
            .for_each(|(row, (&t, &lse))| {
                fast_exp::vectorized(|| {
                    for x in row.iter_mut() {
                        *x = fast_exp::exp_or_zero(*x - lse) * k;
                    }
                });
                row[t as usize] -= k;
            });
        let (mut dh, mut dw) = (vec![0f32; n * c], vec![0f32; v * c]);
        // SAFETY: dh is n·c and dw v·c; dz (n·v) is read as [n, v] and as its transpose
        // [v, n] (row stride 1, column stride v); w is v·c and h n·c, read row-major.
        unsafe {
            product_parallel((n, c, v), &mut dh, (&dz, v, 1), (w_v, c, 1));
            product_parallel((v, c, n), &mut dw, (&dz, 1, v), (h_v, c, 1));
        }
        drop((h_storage, w_storage));
        let dh = Tensor::from_vec(dh, (n, c), h.device())?;
        let dw = Tensor::from_vec(dw, (v, c), wte.device())?;
        Ok((Some(dh), Some(dw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_tensors_are_left_to_the_reference_paths() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (4, 6), &dev)?;
        assert!(gelu_new(&x.t()?)?.is_none());
        assert!(gelu_new(&x.to_dtype(DType::F64)?)?.is_none());
        let (w, b) = (
            Tensor::ones(6, DType::F32, &dev)?,
            Tensor::zeros(6, DType::F32, &dev)?,
        );
        assert!(layer_norm(&x, &w.narrow(0, 0, 5)?, &b, 1e-5)?.is_none());
        assert!(layer_norm(&x, &w, &b.to_dtype(DType::F64)?, 1e-5)?.is_none());
        let s = x.reshape((1, 1, 4, 6))?;
        let wrong_mask = Tensor::zeros((1, 1, 4, 5), DType::F32, &dev)?;
        assert!(softmax(&s, Some(&wrong_mask))?.is_none());
        Ok(())
    }

    #[test]
    fn backward_kernels_refuse_mismatched_shapes() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let a = Tensor::ones((2, 3), DType::F32, &dev)?;
        let b = Tensor::ones((3, 2), DType::F32, &dev)?;
        assert!(a.apply_op2_no_bwd(&b, &SoftmaxBackward).is_err());
        assert!(a.apply_op2_no_bwd(&b, &GeluNewBackward).is_err());
        let w = Tensor::ones(2, DType::F32, &dev)?;
        assert!(a
            .apply_op3_no_bwd(&w, &a, &LayerNormBackward { eps: 1e-5 })
            .is_err());
        Ok(())
    }
}
