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
//!
//! In training on the CPU (f32, no cache, no attention dropout), the lines from `split` to
//! the merge of `a · v` run as one op whose backward pass is written by hand
//! (`crate::cpu::train_ops::attention`), tested against the autograd of these ones.

use candle_core::{Device, Tensor};

use super::functional::{softmax, Dropout};
use super::kv_cache::LayerKv;
use super::linear::Conv1D;
use crate::cpu;
use crate::error::{ModelError, Result};

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
    c_attn: Conv1D,
    /// `[n_embd, n_embd]`.
    c_proj: Conv1D,
    /// Number of heads.
    n_head: usize,
}

impl CausalSelfAttention {
    /// Attention from its two layers and the number of heads.
    ///
    /// # Errors
    /// When the shapes are not `c_attn` `[n_embd, 3·n_embd]` and `c_proj` `[n_embd, n_embd]`
    /// with `n_embd` a multiple of `n_head`.
    pub fn new(c_attn: Conv1D, c_proj: Conv1D, n_head: usize) -> Result<Self> {
        let ((e, e3), (e1, e2)) = (c_attn.dims(), c_proj.dims());
        if n_head == 0 || !e.is_multiple_of(n_head) || e3 != 3 * e || (e1, e2) != (e, e) {
            return Err(ModelError::BadInput {
                expected: "c_attn [n_embd, 3·n_embd], c_proj [n_embd, n_embd], n_embd a multiple of n_head".into(),
                found: format!("c_attn [{e}, {e3}], c_proj [{e1}, {e2}], n_head {n_head}"),
            });
        }
        Ok(Self {
            c_attn,
            c_proj,
            n_head,
        })
    }

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
        let qkv = self.c_attn.forward(x)?; // [b, s, 3·n_embd]
                                           // Training on the CPU in f32: split, attention and merge as one op, forward and
                                           // backward written by hand.
        if kv.is_none() && qkv.track_op() {
            if let Some(y) = cpu::train_ops::attention(&qkv, self.n_head, mask)? {
                return self.c_proj.forward(&y);
            }
        }
        let (q, k, v) = self.split_qkv(&qkv)?; // 3 × [b, n_head, s, head_dim]
        let (k, v) = match kv {
            Some(cache) => cache.append(&k, &v, past)?, // [b, n_head, past + s, head_dim]
            None => (k, v),
        };
        self.c_proj.forward(&attend(&q, &k, &v, mask)?)
    }

    /// [`CausalSelfAttention::forward`] for training, without a cache, with dropout on the
    /// attention weights (site `site`) and on the output (site `site + 1`).
    pub(crate) fn forward_dropout(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        dropout: &Dropout,
        site: u64,
    ) -> Result<Tensor> {
        let (q, k, v) = self.split_qkv(&self.c_attn.forward(x)?)?; // 3 × [b, n_head, s, head_dim]
        let y = attend_with(&q, &k, &v, mask, Some((dropout, site)))?;
        dropout.apply(&self.c_proj.forward(&y)?, site + 1)
    }

    /// Several independent sequences at once (continuous batching): `x` `[1, total,
    /// n_embd]` holds their new tokens back to back, sequence `i` taking `lens[i]` rows and
    /// continuing the one whose keys and values for this layer are `kvs[i]` (a cache of one
    /// sequence, no padding) with `pasts[i]` columns filled. `c_attn` and `c_proj` run once
    /// on all `total` rows; attention runs per sequence over its own columns (causal within
    /// its new rows), so the lengths may differ.
    pub fn forward_ragged(
        &self,
        x: &Tensor,
        kvs: &mut [&mut LayerKv],
        pasts: &[usize],
        lens: &[usize],
    ) -> Result<Tensor> {
        let qkv = self.c_attn.forward(x)?; // [1, total, 3·n_embd]
        let mut ys = Vec::with_capacity(kvs.len());
        let mut row = 0;
        for ((kv, &past), &s) in kvs.iter_mut().zip(pasts).zip(lens) {
            let (q, k, v) = self.split_qkv(&qkv.narrow(1, row, s)?)?; // 3 × [1, n_head, s, head_dim]
            let (k, v) = kv.append(&k, &v, past)?; // [1, n_head, past + s, head_dim]
            let mask = match s {
                1 => None,
                _ => Some(causal_mask(&[0], past, s, x.device())?),
            };
            ys.push(attend(&q, &k, &v, mask.as_ref())?); // [1, s, n_embd]
            row += s;
        }
        self.c_proj.forward(&Tensor::cat(&ys, 1)?)
    }

    /// `c_attn`'s output `[b, s, 3·n_embd]` → `q / √head_dim`, `k`, `v`, each
    /// `[b, n_head, s, head_dim]` (contiguous). q is scaled rather than the scores:
    /// `s·head_dim` multiplications instead of `s·L`.
    fn split_qkv(&self, qkv: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, s, e3) = qkv.dims3()?;
        let head_dim = e3 / 3 / self.n_head;
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
        let q = (part(0)? * (1.0 / (head_dim as f64).sqrt()))?;
        Ok((q, part(1)?, part(2)?))
    }

    /// `c_attn` and `c_proj`.
    pub(crate) fn layers(&self) -> [(&'static str, &Conv1D); 2] {
        [("c_attn", &self.c_attn), ("c_proj", &self.c_proj)]
    }
}

/// `merge_heads(softmax(q · kᵀ + mask) · v)`: `q` `[b, h, s, d]` (already scaled), `k`, `v`
/// `[b, h, L, d]` → `[b, s, h·d]`.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    attend_with(q, k, v, mask, None)
}

/// [`attend`], with dropout on the attention weights when given (`(dropout, site)`).
fn attend_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    dropout: Option<(&Dropout, u64)>,
) -> Result<Tensor> {
    let (b, h, s, d) = q.dims4()?;
    // Fast path: one unmasked query per sequence (a decode step), direct loops over the
    // cached columns instead of b·h tiny gemms.
    if dropout.is_none() {
        if let Some(y) = cpu::ops::attend_one_query(q, k, v, mask)? {
            return Ok(y.reshape((b, s, h * d))?);
        }
    }
    let scores = q.matmul(&k.t()?)?; // [b, h, s, L]

    // Softmax in f32 whatever the compute dtype (f16 exp/sum lose too much).
    let a = softmax(&scores, mask)?.to_dtype(v.dtype())?;
    let a = match dropout {
        Some((dropout, site)) => dropout.apply(&a, site)?,
        None => a,
    };
    merge_heads(&a.matmul(v)?) // [b, h, s, d] → [b, s, h·d]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::rel_diff;
    use candle_core::DType;

    /// softmax(q·kᵀ/√d + mask)·v from `qkv` `[b, s, 3C]` with plain candle ops (the
    /// reference softmax), heads merged.
    fn reference_attention(qkv: &Tensor, n_head: usize, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s, c3) = qkv.dims3()?;
        let (c, d) = (c3 / 3, c3 / 3 / n_head);
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * c, c)?
                .reshape((b, s, n_head, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let z = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
        let z = match mask {
            Some(m) => z.broadcast_add(m)?,
            None => z,
        };
        let a = crate::nn::functional::reference::softmax(&z)?;
        merge_heads(&a.matmul(&v)?)
    }

    #[test]
    fn training_attention_matches_the_autograd_of_the_reference() -> Result<()> {
        let dev = Device::Cpu;
        // (b, s, heads, head_dim, left padding): a tiny case, and one of real-sized products.
        for (b, s, h, d, pad) in [(2, 5, 2, 4, vec![0, 2]), (3, 70, 3, 16, vec![0, 0, 9])] {
            let c = h * d;
            let qkv =
                candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, s, 3 * c), &dev)?)?;
            let r = Tensor::randn(0f32, 1.0, (b, s, c), &dev)?;
            let mask = causal_mask(&pad, 0, s, &dev)?;
            for m in [Some(&mask), None] {
                let run = |fused: bool| -> Result<(Tensor, Tensor)> {
                    let y = match fused {
                        true => cpu::train_ops::attention(qkv.as_tensor(), h, m)?.expect("applies"),
                        false => reference_attention(qkv.as_tensor(), h, m)?,
                    };
                    let g = (&y * &r)?.sum_all()?.backward()?;
                    Ok((
                        y.detach(),
                        g.get(qkv.as_tensor()).expect("a gradient").clone(),
                    ))
                };
                let ((y, g), (y_ref, g_ref)) = (run(true)?, run(false)?);
                assert!(rel_diff(&y, &y_ref)? < 1e-5, "y, b {b} s {s}");
                assert!(rel_diff(&g, &g_ref)? < 1e-5, "d qkv, b {b} s {s}");
            }
        }
        // Shapes it does not take are left to the reference path.
        let qkv = Tensor::zeros((1, 4, 12), DType::F32, &dev)?;
        assert!(cpu::train_ops::attention(&qkv, 5, None)?.is_none());
        let short = causal_mask(&[0], 0, 3, &dev)?;
        assert!(cpu::train_ops::attention(&qkv, 2, Some(&short))?.is_none());
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
        let attn = CausalSelfAttention::new(
            Conv1D::new(eye3, Tensor::zeros(6, DType::F32, &dev)?)?,
            Conv1D::new(
                Tensor::new(&[[1f32, 0.], [0., 1.]], &dev)?,
                Tensor::zeros(2, DType::F32, &dev)?,
            )?,
            1,
        )?;
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
