//! The fast paths of the layers' ops on the CPU, each called from one place in `crate::nn`
//! (which falls back to plain candle ops, its reference path, whenever these answer `None`).
//!
//! Each applies to contiguous f32 CPU tensors that record no backward op (no training):
//!
//! - [`gelu_new`]: GPT-2's GELU with a vectorized polynomial `exp`, on the decode team;
//! - [`softmax`]: the attention softmax with its additive mask, rows in parallel;
//! - [`attend_one_query`]: a decode step's attention, one query per sequence and head, as
//!   direct loops over the cached keys and values;
//! - [`log_sum_exp`] and [`max`]: the sampler's softmax normalizer and largest logit over a
//!   vocabulary (called from `crate::generate`'s `log_sum_exp` and `argmax`, the callers
//!   that are not layers).

use candle_core::{CpuStorage, DType, Storage, Tensor};

use super::fast_exp::{self, exp_f32};
use super::gemv::Weight;
use super::team;
use crate::error::Result;

/// `ln Σ exp(x)` over `x`, in f64, computed stably: the normalizer of a softmax over GPT-2's
/// 50257 logits, behind every log-probability the sampler reports. The largest value (`+∞`
/// or `−∞` when it is one: returned as it is) is found in 16 lanes; then blocks of 256
/// values of `exp(x − max)` are summed in 16 f32 lanes with the vectorized polynomial `exp`
/// ([`exp_or_zero`](fast_exp::exp_or_zero), within 2 ulp; −∞ adds 0), and the blocks' sums
/// in f64: within ~1e-7 relative of an all-f64 sum (tested). A plain loop (a sequential
/// `max`, then libm's `expf` per value into an f64 sum) took ~0.3 ms per row of logits,
/// this ~0.05: a server decoding 16 streams pays it 16 times per step. NaN values are the
/// caller's to reject first.
pub fn log_sum_exp(x: &[f32]) -> f64 {
    // Its own AVX2 copy rather than `fast_exp::vectorized`: a closure this long is not
    // inlined into that function's AVX2 body, and stayed scalar.
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn wide(x: &[f32]) -> f64 {
            log_sum_exp_loops(x)
        }
        // SAFETY: AVX2 was just detected.
        return unsafe { wide(x) };
    }
    log_sum_exp_loops(x)
}

/// The largest of `x` (−∞ for none; NaN values are the caller's to reject first), in 16
/// independent lanes, which the compiler vectorizes: one running maximum is a chain of
/// dependent compares (~1 ns per value). For [`log_sum_exp`] and the sampler's `argmax`.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut top = [f32::NEG_INFINITY; 16];
    let mut groups = x.chunks_exact(16);
    for g in &mut groups {
        for (t, &v) in top.iter_mut().zip(g) {
            *t = if v > *t { v } else { *t };
        }
    }
    groups
        .remainder()
        .iter()
        .chain(&top)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// [`log_sum_exp`]'s loops, inlined into each copy.
#[inline(always)]
fn log_sum_exp_loops(x: &[f32]) -> f64 {
    let max = max(x);
    if !max.is_finite() {
        return max as f64;
    }
    // Plain loops: an iterator's `fold` here was left out of line, and so scalar.
    let mut sum = 0f64;
    for block in x.chunks(256) {
        let mut lanes = [0f32; 16];
        let mut groups = block.chunks_exact(16);
        for g in &mut groups {
            for (l, &v) in lanes.iter_mut().zip(g) {
                *l += fast_exp::exp_or_zero(v - max);
            }
        }
        for &v in groups.remainder() {
            sum += fast_exp::exp_or_zero(v - max) as f64;
        }
        for l in lanes {
            sum += l as f64;
        }
    }
    max as f64 + sum.ln()
}

/// Whether `t` is a CPU f32 tensor outside any gradient graph: what these kernels take.
fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op()
}

/// GPT-2's activation, the tanh approximation of GELU (`gelu_new` in Hugging Face, not the
/// exact erf form): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// On the CPU in f32 it is computed as `x / (1 + exp(−2u))` for `u = √(2/π)·(x + 0.044715·x³)`
/// (the same function: `0.5·(1 + tanh(u))` is the logistic function of `2u`), with an `exp`
/// written as a short polynomial that the compiler vectorizes, on the decode team
/// (`super::team`). candle's `gelu` calls libm's `tanh` once per value; this agrees with it
/// within 1e-6 relative (tested). `None` for other devices, dtypes and tensors in a gradient
/// graph.
pub fn gelu_new(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    team::for_each_chunk_mut(&mut v, 4096, |_, v| gelu_in_place(v));
    Ok(Some(Tensor::from_vec(v, x.shape(), x.device())?))
}

/// [`gelu_new`] of every value of `v`, with 256-bit vectors where the CPU has AVX2 (the same
/// numbers either way).
fn gelu_in_place(v: &mut [f32]) {
    fast_exp::vectorized(|| {
        for v in v {
            *v = gelu_f32(*v);
        }
    });
}

/// `x / (1 + exp(−2u))`, `u = √(2/π)·(x + 0.044715·x³)`: branch-free, so that it vectorizes.
#[inline(always)]
pub(super) fn gelu_f32(x: f32) -> f32 {
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

/// `softmax(scores + mask)` over the last dimension on the CPU (f32): `scores` `[b, h, s, L]`,
/// `mask` `[b, 1, s, L]` (0 or −∞, the same for every head). Rows in parallel, with the vectorized
/// `exp` of `fast_exp` (candle's softmax calls libm's `expf` per score: 4% of a
/// 512-token prefill). `None` when the tensors are not contiguous CPU f32 of those shapes
/// (the caller uses candle's ops).
pub fn softmax(scores: &Tensor, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (b, h, s, l) = scores.dims4()?;
    if !applies(scores) || !scores.is_contiguous() || mask.is_some_and(Tensor::track_op) {
        return Ok(None);
    }
    // The mask is the same for every layer of a pass: read in place, not copied.
    let mask_storage = match mask {
        None => None,
        Some(m) if m.dims() == [b, 1, s, l] && m.is_contiguous() => Some(m.storage_and_layout()),
        Some(_) => return Ok(None),
    };
    let mask: Option<&[f32]> = match &mask_storage {
        None => None,
        Some((st, layout)) => match &**st {
            Storage::Cpu(CpuStorage::F32(d)) => {
                d.get(layout.start_offset()..layout.start_offset() + b * s * l)
            }
            _ => None,
        },
    };
    if mask_storage.is_some() && mask.is_none() {
        return Ok(None);
    }
    let mut x: Vec<f32> = scores.flatten_all()?.to_vec1()?;
    // One task per sequence and head: `s` rows.
    team::for_each_chunk_mut(&mut x, s * l, |bh, rows| {
        let bi = bh / h;
        for (i, row) in rows.chunks_mut(l).enumerate() {
            let m = mask.map(|m| &m[(bi * s + i) * l..(bi * s + i + 1) * l]);
            fast_exp::vectorized(|| softmax_row(row, m));
        }
    });
    // Several queries (a prefill): candle's product with the values follows, on rayon.
    team::rest();
    Ok(Some(Tensor::from_vec(x, (b, h, s, l), scores.device())?))
}

/// One row of [`softmax`], in place: `x += mask`, then `e^(x − max) / Σ`.
#[inline(always)]
pub(super) fn softmax_row(x: &mut [f32], mask: Option<&[f32]>) {
    if let Some(m) = mask {
        for (x, m) in x.iter_mut().zip(m) {
            *x += m;
        }
    }
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for v in x.iter_mut() {
        *v = fast_exp::exp_or_zero(*v - max);
    }
    // Eight partial sums, so that the sum vectorizes too.
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let sum: f32 = acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Attention for one query per sequence and head on the CPU (f32): `q` `[b, h, 1, d]`
/// (already scaled by `1/√d`), `k`, `v` `[b, h, L, d]` (any strides with contiguous rows,
/// e.g. views of the cache) → `[b, h·d]`, heads concatenated. Every key is visible (`mask`
/// must be `None`). `None` when the tensors are not CPU f32 with contiguous rows, or a mask
/// is given (the caller falls back to candle's ops).
///
/// A decode step runs `b·h` tiny products; as candle gemms each costs more in set-up than in
/// arithmetic (~10% of a q8_0 decode step at 124M). Here each is a loop of dot products,
/// a softmax and a weighted sum of the value rows, in f32 as the general path computes them.
pub fn attend_one_query(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let (b, h, one, d) = q.dims4()?;
    let (_, _, l, _) = k.dims4()?;
    if one != 1 || mask.is_some() || ![q, k, v].iter().all(|t| applies(t)) {
        return Ok(None);
    }
    let qs: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(kd)), Storage::Cpu(CpuStorage::F32(vd))) = (&*ks, &*vs)
    else {
        return Ok(None);
    };
    let (kst, vst) = (kl.stride(), vl.stride());
    if kst[3] != 1 || vst[3] != 1 || v.dims() != k.dims() || k.dims() != [b, h, l, d] {
        return Ok(None);
    }
    let (k0, v0) = (kl.start_offset(), vl.start_offset());
    // Every row read below lies inside the storage.
    let last = |start: usize, st: &[usize]| {
        start + (b - 1) * st[0] + (h - 1) * st[1] + l.saturating_sub(1) * st[2] + d
    };
    if b == 0 || h == 0 || l == 0 || last(k0, kst) > kd.len() || last(v0, vst) > vd.len() {
        return Ok(None);
    }
    /// Row `j` of head `(bi, hi)`.
    fn row<'a>(data: &'a [f32], start: usize, st: &[usize], ix: [usize; 3], d: usize) -> &'a [f32] {
        let o = start + ix[0] * st[0] + ix[1] * st[1] + ix[2] * st[2];
        &data[o..o + d]
    }
    let head = |(bh, y): (usize, &mut [f32])| {
        let (bi, hi) = (bh / h, bh % h);
        let qh = &qs[bh * d..(bh + 1) * d];
        // scores, then softmax in place.
        let mut a: Vec<f32> = (0..l)
            .map(|j| f32::dot(qh, row(kd, k0, kst, [bi, hi, j], d)))
            .collect();
        let max = a.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in &mut a {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        // y = Σ_j a_j · v_j, four rows at a time.
        for j0 in (0..l).step_by(4) {
            let n = (l - j0).min(4);
            let w: [&[f32]; 4] =
                std::array::from_fn(|t| row(vd, v0, vst, [bi, hi, j0 + t.min(n - 1)], d));
            let c: [f32; 4] = std::array::from_fn(|t| a[j0 + t.min(n - 1)] * inv);
            f32::axpy(y, &c[..n], &w[..n]);
        }
    };
    let mut out = vec![0f32; b * h * d];
    // Heads in parallel on the decode team (see `crate::team`), except tiny problems, for
    // which a fork costs more than it saves.
    if b * h * l * d < 1 << 14 {
        out.chunks_mut(d).enumerate().for_each(head);
    } else {
        team::for_each_chunk_mut(&mut out, d, |i, y| head((i, y)));
    }
    drop((ks, vs));
    Ok(Some(Tensor::from_vec(out, (b, h * d), q.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn log_sum_exp_is_within_1e_7_of_an_f64_sum() {
        // A vocabulary of logits (with a −∞, as a logit bias makes), and short rows.
        let mut x: Vec<f32> = crate::test_values::values(50257, 9)
            .iter()
            .map(|v| v * 20.0)
            .collect();
        x[7] = f32::NEG_INFINITY;
        x[40_000] = 31.0; // the largest, deep in the row
        for len in [50257, 300, 17, 1] {
            let x = &x[..len];
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let want = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            let got = log_sum_exp(x);
            assert!(
                (got - want).abs() <= 1e-7 * want.abs().max(1.0),
                "{len}: {got} vs {want}"
            );
        }
        assert_eq!(log_sum_exp(&[1.0, f32::INFINITY]), f64::INFINITY);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
    }

    #[test]
    fn masked_softmax_matches_candles_ops() -> Result<()> {
        let dev = Device::Cpu;
        // Two sequences (the second with 2 padding columns), 3 heads, 5 new positions after
        // 2 cached ones.
        let scores = (Tensor::randn(0f32, 3.0, (2, 3, 5, 7), &dev)?).contiguous()?;
        // Sequence 1 has 2 columns of padding; 2 cached columns, then 5 queries (causal).
        let inf = f32::NEG_INFINITY;
        let mask: Vec<f32> = (0..2)
            .flat_map(|seq| {
                (0..5).flat_map(move |i| {
                    (0..7).map(move |j| {
                        let visible = j <= 2 + i && (seq == 0 || j >= 2 || j == 2 + i);
                        if visible {
                            0.0
                        } else {
                            inf
                        }
                    })
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (2, 1, 5, 7), &dev)?;
        for m in [Some(&mask), None] {
            let ours = softmax(&scores, m)?.expect("CPU f32");
            let added = match m {
                Some(m) => scores.broadcast_add(m)?,
                None => scores.clone(),
            };
            let want = candle_nn::ops::softmax_last_dim(&added)?;
            let d = (ours - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-6, "{d}");
        }
        // Hidden columns get exactly 0.
        let a = softmax(&scores, Some(&mask))?.expect("CPU f32");
        let row = a.get(1)?.get(0)?.get(0)?.to_vec1::<f32>()?; // sequence 1, head 0, query 0
        assert_eq!(&row[..2], &[0.0, 0.0]);
        assert_eq!(&row[5..], &[0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn one_query_attention_matches_softmax_of_products() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, l, d) = (2, 3, 37, 8);
        let q = Tensor::randn(0f32, 1.0, (b, h, 1, d), &dev)?;
        // Views of the first l columns of a larger buffer, as the cache hands them out.
        let k = Tensor::randn(0f32, 1.0, (b, h, 64, d), &dev)?.narrow(2, 0, l)?;
        let v = Tensor::randn(0f32, 1.0, (b, h, 64, d), &dev)?.narrow(2, 0, l)?;
        let a = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let want = a
            .matmul(&v.contiguous()?)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, h * d))?;
        let got = attend_one_query(&q, &k, &v, None)?.expect("CPU f32");
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        // Not the fast path's case: f16.
        let q16 = q.to_dtype(DType::F16)?;
        assert!(attend_one_query(&q16, &k, &v, None)?.is_none());
        Ok(())
    }

    #[test]
    fn gelu_new_matches_hand_computed_values() -> Result<()> {
        let xs = [-3f32, -1., -0.5, 0., 0.5, 1., 2., 3.];
        let x = Tensor::new(&xs, &Device::Cpu)?;
        let y = gelu_new(&x)?.expect("CPU f32").to_vec1::<f32>()?;
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
        let ours = gelu_new(&x)?.expect("CPU f32").to_vec1::<f32>()?;
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
    fn decode_attention_refuses_mismatched_operands() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 2, 1, 8), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, 2, 5, 8), &dev)?;
        // Values with fewer positions, or another head size, than the keys: no fast path
        // (and no read past their storage).
        for v in [
            Tensor::randn(0f32, 1.0, (1, 2, 4, 8), &dev)?,
            Tensor::randn(0f32, 1.0, (1, 2, 5, 4), &dev)?,
        ] {
            assert!(attend_one_query(&q, &k, &v, None)?.is_none());
        }
        // A mask, or several queries: not a decode step.
        let mask = Tensor::zeros((1, 1, 1, 5), DType::F32, &dev)?;
        assert!(attend_one_query(&q, &k, &k, Some(&mask))?.is_none());
        let q2 = Tensor::randn(0f32, 1.0, (1, 2, 2, 8), &dev)?;
        assert!(attend_one_query(&q2, &k, &k, None)?.is_none());
        // Keys of another head size than the query.
        let k4 = Tensor::randn(0f32, 1.0, (1, 2, 5, 4), &dev)?;
        assert!(attend_one_query(&q, &k4, &k4, None)?.is_none());
        Ok(())
    }
}
