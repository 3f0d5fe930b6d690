//! Causal multi-head self-attention.
//!
//! ```text
//! q, k, v = split(c_attn(x))                       x: [b, s, n_embd] → 3 × [b, s, n_embd]
//! q, k, v = split_heads(q), ...                    [b, n_head, s, head_dim]
//! k, v    = concat(cache.k, k), concat(cache.v, v) [b, n_head, L, head_dim]  (L = past + s)
//! a       = softmax(q · kᵀ / √head_dim + mask)     [b, n_head, s, L]
//! y       = c_proj(merge_heads(a · v))             [b, s, n_embd]
//! ```
//! The mask is 0 where query `i` may see key `j` (`j` not in the future, and not left
//! padding) and −∞ elsewhere.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::gemv::Weight;

use crate::error::Result;
use crate::kv_cache::LayerKv;
use crate::linear::Conv1D;

/// `[b, s, n_head·head_dim]` → `[b, n_head, s, head_dim]` (contiguous): head `h` takes
/// channels `h·head_dim .. (h+1)·head_dim` of every position.
pub fn split_heads(x: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, s, e) = x.dims3()?;
    Ok(x.reshape((b, s, n_head, e / n_head))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `[b, n_head, s, head_dim]` → `[b, s, n_head·head_dim]`, the inverse of [`split_heads`].
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, s, h * d))?)
}

/// The additive attention mask `[b, 1, s, past + s]` (f32: 0 = visible, −∞ = hidden).
///
/// Column `c` of the cache holds the token at column `c` of the (left-padded) batch.
/// Query `i` sits at column `past + i`; it sees key column `j` when `j ≤ past + i` (causal)
/// and `j ≥ padding[b]` (not padding). A padding query always sees itself, so no row is
/// fully masked (that would make NaNs that leak into later layers through `a · v`).
pub fn causal_mask(padding: &[usize], past: usize, s: usize, device: &Device) -> Result<Tensor> {
    let b = padding.len();
    let l = past + s;
    let mut data = vec![0f32; b * s * l];
    for (seq, &pad) in padding.iter().enumerate() {
        for i in 0..s {
            let q = past + i;
            let row = &mut data[(seq * s + i) * l..(seq * s + i + 1) * l];
            for (j, m) in row.iter_mut().enumerate() {
                let visible = j <= q && (j >= pad || j == q);
                if !visible {
                    *m = f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(Tensor::from_vec(data, (b, 1, s, l), device)?)
}

/// `attn`: `c_attn` (`n_embd → 3·n_embd`, q|k|v), then `c_proj` (`n_embd → n_embd`).
#[derive(Debug, Clone)]
pub struct CausalSelfAttention {
    /// `[n_embd, 3·n_embd]`.
    pub c_attn: Conv1D,
    /// `[n_embd, n_embd]`.
    pub c_proj: Conv1D,
    /// Number of heads.
    pub n_head: usize,
}

impl CausalSelfAttention {
    /// `x`: `[b, s, n_embd]` → `[b, s, n_embd]`.
    ///
    /// With `kv`, this step's keys and values are written into the cache at columns
    /// `past .. past + s` (in place, no reallocation) and attention runs over columns
    /// `0 .. past + s`; without it, over this step's `s` positions only (`past` must be 0).
    /// `mask` is [`causal_mask`]'s tensor, or `None` when every key is visible (one new
    /// token, no padding).
    pub fn forward(
        &self,
        x: &Tensor,
        kv: Option<&mut LayerKv>,
        past: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, s, e) = x.dims3()?;
        let head_dim = e / self.n_head;
        let qkv = self.c_attn.forward(x)?; // [b, s, 3·n_embd]
                                           // [b, s, 3, n_head, head_dim]: q, k, v in that order, each split into heads.
        let qkv = qkv.reshape((b, s, 3, self.n_head, head_dim))?;
        let part = |i: usize| -> Result<Tensor> {
            // [b, s, n_head, head_dim] → [b, n_head, s, head_dim]
            Ok(qkv
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?)
        };
        // Scale q rather than the scores: s·head_dim multiplications instead of s·L.
        let q = (part(0)? * (1.0 / (head_dim as f64).sqrt()))?;
        let (k, v) = (part(1)?, part(2)?);
        let (k, v) = match kv {
            Some(cache) => cache.append(&k, &v, past)?, // [b, n_head, past + s, head_dim]
            None => (k, v),
        };
        // One new unmasked query per sequence (a decode step): a direct loop over the
        // cached columns instead of candle's per-head gemms.
        if s == 1 && mask.is_none() {
            if let Some(y) = attend_one_query(&q, &k, &v)? {
                return self.c_proj.forward(&y.reshape((b, 1, e))?);
            }
        }
        let scores = q.matmul(&k.t()?)?; // [b, n_head, s, L]
                                         // Softmax in f32 whatever the compute dtype (f16 exp/sum lose too much).
        let scores = scores.to_dtype(DType::F32)?;
        let a = match masked_softmax(&scores, mask)? {
            Some(a) => a,
            None => {
                let scores = match mask {
                    Some(mask) => scores.broadcast_add(mask)?,
                    None => scores,
                };
                candle_nn::ops::softmax_last_dim(&scores)?
            }
        };
        let a = a.to_dtype(v.dtype())?;
        let y = a.matmul(&v)?; // [b, n_head, s, head_dim]
        let y = merge_heads(&y)?; // [b, s, n_embd]
        self.c_proj.forward(&y)
    }
}

/// `softmax(scores + mask)` over the last dimension on the CPU (f32): `scores` `[b, h, s, L]`,
/// `mask` [`causal_mask`]'s `[b, 1, s, L]`. Rows in parallel, with the vectorized
/// [`exp`](crate::fast_exp) (candle's softmax calls libm's `expf` per score: 4% of a
/// 512-token prefill). `None` when the tensors are not contiguous CPU f32 of those shapes
/// (the caller uses candle's ops).
fn masked_softmax(scores: &Tensor, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (b, h, s, l) = scores.dims4()?;
    if !scores.device().is_cpu() || scores.dtype() != DType::F32 || !scores.is_contiguous() {
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
    crate::team::for_each_chunk_mut(&mut x, s * l, |bh, rows| {
        let bi = bh / h;
        for (i, row) in rows.chunks_mut(l).enumerate() {
            let m = mask.map(|m| &m[(bi * s + i) * l..(bi * s + i + 1) * l]);
            crate::fast_exp::vectorized(|| softmax_row(row, m));
        }
    });
    Ok(Some(Tensor::from_vec(x, (b, h, s, l), scores.device())?))
}

/// One row of [`masked_softmax`], in place: `x += mask`, then `e^(x − max) / Σ`.
#[inline(always)]
fn softmax_row(x: &mut [f32], mask: Option<&[f32]>) {
    if let Some(m) = mask {
        for (x, m) in x.iter_mut().zip(m) {
            *x += m;
        }
    }
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for v in x.iter_mut() {
        *v = crate::fast_exp::exp_or_zero(*v - max);
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
/// e.g. views of the cache) → `[b, h·d]`, heads concatenated. Every key is visible. `None`
/// when the tensors are not CPU f32 with contiguous rows (the caller falls back to candle).
///
/// A decode step runs `b·h` tiny products; as candle gemms each costs more in set-up than in
/// arithmetic (~10% of a q8_0 decode step at 124M). Here each is a loop of dot products,
/// a softmax and a weighted sum of the value rows, in f32 as the general path computes them.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::{attention::attend_one_query, Device, Tensor};
/// // One sequence, one head of 2 channels, two cached keys: q·k = [0, 0], so the two values
/// // are averaged.
/// let q = Tensor::new(&[[[[1f32, 0.]]]], &Device::Cpu)?; // [1, 1, 1, 2]
/// let k = Tensor::new(&[[[[0f32, 1.], [0., 2.]]]], &Device::Cpu)?; // [1, 1, 2, 2]
/// let v = Tensor::new(&[[[[2f32, 0.], [0., 4.]]]], &Device::Cpu)?;
/// let y = attend_one_query(&q, &k, &v)?.expect("CPU f32");
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![1.0, 2.0]]);
/// # Ok(()) }
/// ```
pub fn attend_one_query(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    let (b, h, one, d) = q.dims4()?;
    let (_, _, l, _) = k.dims4()?;
    if one != 1 || !q.device().is_cpu() || [q, k, v].iter().any(|t| t.dtype() != DType::F32) {
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
    if kst[3] != 1 || vst[3] != 1 || v.dims() != k.dims() {
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
        crate::team::for_each_chunk_mut(&mut out, d, |i, y| head((i, y)));
    }
    drop((ks, vs));
    Ok(Some(Tensor::from_vec(out, (b, h * d), q.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_softmax_matches_candles_ops() -> Result<()> {
        let dev = Device::Cpu;
        // Two sequences (the second with 2 padding columns), 3 heads, 5 new positions after
        // 2 cached ones.
        let scores = (Tensor::randn(0f32, 3.0, (2, 3, 5, 7), &dev)?).contiguous()?;
        let mask = causal_mask(&[0, 2], 2, 5, &dev)?;
        for m in [Some(&mask), None] {
            let ours = masked_softmax(&scores, m)?.expect("CPU f32");
            let added = match m {
                Some(m) => scores.broadcast_add(m)?,
                None => scores.clone(),
            };
            let want = candle_nn::ops::softmax_last_dim(&added)?;
            let d = (ours - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-6, "{d}");
        }
        // Hidden columns get exactly 0.
        let a = masked_softmax(&scores, Some(&mask))?.expect("CPU f32");
        let row = a.get(1)?.get(0)?.get(0)?.to_vec1::<f32>()?; // sequence 1, head 0, query 0
        assert_eq!(&row[..2], &[0.0, 0.0]);
        assert_eq!(&row[5..], &[0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn split_then_merge_heads_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        // One sequence of 2 positions, n_embd 4, 2 heads of 2 channels.
        let x = Tensor::new(&[[[0f32, 1., 2., 3.], [4., 5., 6., 7.]]], &dev)?;
        let h = split_heads(&x, 2)?;
        assert_eq!(h.dims(), &[1, 2, 2, 2]);
        // Head 0 takes channels 0..2 of every position, head 1 channels 2..4.
        let h = h.squeeze(0)?.to_vec3::<f32>()?;
        assert_eq!(h[0], vec![vec![0., 1.], vec![4., 5.]]);
        assert_eq!(h[1], vec![vec![2., 3.], vec![6., 7.]]);
        let back = merge_heads(&split_heads(&x, 2)?)?;
        assert_eq!(back.to_vec3::<f32>()?, x.to_vec3::<f32>()?);
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
        let want = merge_heads(&a.matmul(&v.contiguous()?)?)?.reshape((b, h * d))?;
        let got = attend_one_query(&q, &k, &v)?.expect("CPU f32");
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        // Not the fast path's case: f16.
        let q16 = q.to_dtype(DType::F16)?;
        assert!(attend_one_query(&q16, &k, &v)?.is_none());
        Ok(())
    }

    #[test]
    fn causal_mask_hides_the_future() -> Result<()> {
        let m = causal_mask(&[0], 0, 3, &Device::Cpu)?;
        assert_eq!(m.dims(), &[1, 1, 3, 3]);
        let inf = f32::NEG_INFINITY;
        assert_eq!(
            m.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?,
            vec![vec![0., inf, inf], vec![0., 0., inf], vec![0., 0., 0.]]
        );
        Ok(())
    }

    #[test]
    fn causal_mask_with_past_and_left_padding() -> Result<()> {
        // Two sequences, 2 columns already cached, 2 new queries (columns 2 and 3);
        // sequence 1 has 3 columns of left padding.
        let m = causal_mask(&[0, 3], 2, 2, &Device::Cpu)?;
        let inf = f32::NEG_INFINITY;
        let m = m.squeeze(1)?.to_vec3::<f32>()?;
        assert_eq!(m[0], vec![vec![0., 0., 0., inf], vec![0., 0., 0., 0.]]);
        // Column 2 is padding: it only sees itself; column 3 sees itself only (0..3 are padding).
        assert_eq!(m[1], vec![vec![inf, inf, 0., inf], vec![inf, inf, inf, 0.]]);
        Ok(())
    }

    #[test]
    fn attention_by_hand() -> Result<()> {
        // n_embd 2, one head, identity c_attn for q, k and v: q = k = v = x.
        let dev = Device::Cpu;
        let eye3 = Tensor::new(
            &[[1f32, 0., 1., 0., 1., 0.], [0., 1., 0., 1., 0., 1.]],
            &dev,
        )?;
        let attn = CausalSelfAttention {
            c_attn: Conv1D::new(eye3, Tensor::zeros(6, DType::F32, &dev)?),
            c_proj: Conv1D::new(
                Tensor::new(&[[1f32, 0.], [0., 1.]], &dev)?,
                Tensor::zeros(2, DType::F32, &dev)?,
            ),
            n_head: 1,
        };
        let x = Tensor::new(&[[[1f32, 0.], [0., 2.]]], &dev)?;
        let mask = causal_mask(&[0], 0, 2, &dev)?;
        let y = attn.forward(&x, None, 0, Some(&mask))?.to_vec3::<f32>()?;
        // Position 0 sees only itself: y0 = x0.
        assert_eq!(y[0][0], vec![1., 0.]);
        // Position 1: scores = q1·[k0, k1] / √2 = [0, 4] / √2; weights softmax of that.
        let (s0, s1) = (0f64, 4.0 / 2f64.sqrt());
        let w1 = s1.exp() / (s0.exp() + s1.exp());
        let want = [(1.0 - w1), 2.0 * w1];
        for (g, w) in y[0][1].iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        Ok(())
    }
}
