//! The key/value cache: what attention needs from earlier positions, kept per layer so
//! each new token costs one pass over the weights instead of a pass over the whole prompt.
//!
//! Layout per layer: `k`, `v` `[batch, n_head, capacity, head_dim]`, written in place with
//! `slice_set` at the next free column. The capacity grows in large steps (doubling, at
//! least 64 columns, never past `n_ctx`) so a generation reallocates a handful of times at
//! most, never per token; [`KvCache::reserve`] allocates everything up front.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// What to do when a sequence would need more than `n_ctx` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextOverflow {
    /// Fail with [`ModelError::ContextOverflow`](crate::ModelError::ContextOverflow), which
    /// says how many tokens fit.
    #[default]
    Error,
    /// Keep the most recent `n_ctx` tokens of each sequence and recompute the cache from
    /// them (a full prefill of `n_ctx` tokens on every overflowing step).
    Slide,
}

/// One layer's keys and values, `[batch, n_head, capacity, head_dim]`.
#[derive(Debug)]
pub struct LayerKv {
    k: Tensor,
    v: Tensor,
}

impl LayerKv {
    fn zeros(shape: (usize, usize, usize, usize), dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            k: Tensor::zeros(shape, dtype, device)?,
            v: Tensor::zeros(shape, dtype, device)?,
        })
    }

    /// Writes `k`, `v` (`[b, n_head, s, head_dim]`, contiguous) at columns `past .. past + s`
    /// and returns views of columns `0 .. past + s` (no copy).
    pub fn append(&mut self, k: &Tensor, v: &Tensor, past: usize) -> Result<(Tensor, Tensor)> {
        self.k.slice_set(k, 2, past)?;
        self.v.slice_set(v, 2, past)?;
        let l = past + k.dim(2)?;
        Ok((self.k.narrow(2, 0, l)?, self.v.narrow(2, 0, l)?))
    }

    /// A copy with capacity `cap` keeping the first `len` columns.
    fn regrow(&self, cap: usize, len: usize) -> Result<Self> {
        let (b, h, _, d) = self.k.dims4()?;
        let new = Self::zeros((b, h, cap, d), self.k.dtype(), self.k.device())?;
        if len > 0 {
            new.k
                .slice_set(&self.k.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            new.v
                .slice_set(&self.v.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
        }
        Ok(new)
    }
}

/// Keys and values of every layer for a batch of sequences, plus what is needed to
/// continue them: the tokens seen so far and each sequence's left padding.
///
/// Make one with [`Gpt2::new_cache`](crate::Gpt2::new_cache), fill it with
/// [`Gpt2::prefill`](crate::Gpt2::prefill), continue with
/// [`Gpt2::step`](crate::Gpt2::step) / [`Gpt2::extend`](crate::Gpt2::extend). The buffers
/// survive [`reset`](Self::reset) and a new `prefill`, so one cache serves many
/// generations without reallocating.
///
/// Columns: a batch is left-padded to its longest prompt, so sequence `i`'s tokens sit at
/// columns `padding(i) .. len()`; its token at column `c` has position `c - padding(i)`.
///
/// The cache is not `Clone`: its buffers are written in place, so a shallow copy would see
/// the other's writes. [`try_clone`](Self::try_clone) makes an independent copy (to fork a
/// generation).
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// Columns in use (the same for every sequence; includes left padding).
    len: usize,
    capacity: usize,
    padding: Vec<usize>,
    tokens: Vec<Vec<u32>>,
    overflow: ContextOverflow,
    shape: CacheShape,
}

/// What a cache's buffers look like: one `[batch, n_head, capacity ≤ n_ctx, head_dim]` pair
/// per layer, in `dtype` on `device`.
#[derive(Debug, Clone)]
pub(crate) struct CacheShape {
    pub n_ctx: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub head_dim: usize,
    pub dtype: DType,
    pub device: Device,
}

impl KvCache {
    pub(crate) fn new(shape: CacheShape, overflow: ContextOverflow) -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
            padding: Vec::new(),
            tokens: Vec::new(),
            overflow,
            shape,
        }
    }

    /// An independent copy (the filled columns are copied; the copy can be continued
    /// differently from the original).
    pub fn try_clone(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| l.regrow(self.capacity, self.len))
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            len: self.len,
            capacity: self.capacity,
            padding: self.padding.clone(),
            tokens: self.tokens.clone(),
            overflow: self.overflow,
            shape: self.shape.clone(),
        })
    }

    /// Columns in use: the longest sequence's token count (sequences are left-padded).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first prefill and after [`reset`](Self::reset).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of sequences (0 before the first prefill).
    pub fn batch_size(&self) -> usize {
        self.padding.len()
    }

    /// Columns allocated per layer (grows in large steps up to `n_ctx`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The model's context length: the most columns the cache can hold.
    pub fn n_ctx(&self) -> usize {
        self.shape.n_ctx
    }

    /// Columns of left padding before sequence `i`'s first token (`None` if out of range).
    pub fn padding(&self, i: usize) -> Option<usize> {
        self.padding.get(i).copied()
    }

    /// The tokens of sequence `i` the cache holds keys and values for (`None` if out of range).
    pub fn tokens(&self, i: usize) -> Option<&[u32]> {
        self.tokens.get(i).map(Vec::as_slice)
    }

    /// What happens when a sequence would outgrow `n_ctx`.
    pub fn overflow(&self) -> ContextOverflow {
        self.overflow
    }

    /// Changes the overflow policy.
    pub fn set_overflow(&mut self, overflow: ContextOverflow) {
        self.overflow = overflow;
    }

    /// Forgets every sequence; keeps the allocated buffers for the next prefill.
    pub fn reset(&mut self) {
        self.len = 0;
        self.padding.clear();
        self.tokens.clear();
    }

    /// Keeps only the first `len` columns (e.g. to reuse a shared prompt prefix and try
    /// another continuation). Does nothing when `len >= self.len()`.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for (pad, toks) in self.padding.iter_mut().zip(self.tokens.iter_mut()) {
            *pad = (*pad).min(len);
            toks.truncate(len - *pad);
        }
        self.len = len;
    }

    /// Allocates room for `columns` columns (at most `n_ctx`) for the current batch now,
    /// so no later step reallocates.
    pub fn reserve(&mut self, columns: usize) -> Result<()> {
        let b = self.batch_size().max(1);
        self.ensure(b, columns.min(self.shape.n_ctx), true)
    }

    /// Empties the cache and makes room for a new batch of `batch` sequences of `columns`
    /// columns (the buffers are reused when they fit).
    pub(crate) fn start(&mut self, batch: usize, columns: usize) -> Result<()> {
        self.reset();
        self.ensure(batch, columns, false)
    }

    /// Makes room for `s` more columns for the current batch, keeping what it holds.
    pub(crate) fn grow(&mut self, s: usize) -> Result<()> {
        self.ensure(self.batch_size(), self.len + s, true)
    }

    /// Records what a prefill wrote: `tokens.len()` sequences, left-padded by `padding` to
    /// the longest (whose length becomes [`len`](Self::len)).
    pub(crate) fn commit_prefill(&mut self, padding: Vec<usize>, tokens: Vec<Vec<u32>>) {
        self.len = padding
            .iter()
            .zip(&tokens)
            .map(|(p, t)| p + t.len())
            .max()
            .unwrap_or(0);
        self.padding = padding;
        self.tokens = tokens;
    }

    /// Records that `tokens` (the same number for every sequence) were appended.
    pub(crate) fn commit(&mut self, tokens: &[&[u32]]) {
        self.len += tokens.first().map_or(0, |t| t.len());
        for (hist, new) in self.tokens.iter_mut().zip(tokens) {
            hist.extend_from_slice(new);
        }
    }

    /// Every sequence's left padding.
    pub(crate) fn paddings(&self) -> &[usize] {
        &self.padding
    }

    /// Layer `l`'s keys and values.
    pub(crate) fn layer_mut(&mut self, l: usize) -> Option<&mut LayerKv> {
        self.layers.get_mut(l)
    }

    /// Makes room for `needed` columns for `batch` sequences. `keep`: keep the current
    /// contents (else the cache is being refilled from scratch).
    fn ensure(&mut self, batch: usize, needed: usize, keep: bool) -> Result<()> {
        let same_batch = self.layers.first().map(|l| l.k.dim(0)).transpose()? == Some(batch);
        if same_batch && needed <= self.capacity {
            return Ok(());
        }
        // Grow geometrically, in multiples of 64 columns, capped at n_ctx.
        let cap = needed
            .max(2 * self.capacity)
            .max(64)
            .div_ceil(64)
            .saturating_mul(64)
            .min(self.shape.n_ctx)
            .max(needed);
        if same_batch && keep && self.len > 0 {
            self.layers = self
                .layers
                .iter()
                .map(|l| l.regrow(cap, self.len))
                .collect::<Result<_>>()?;
        } else {
            let shape = (batch, self.shape.n_head, cap, self.shape.head_dim);
            self.layers = (0..self.shape.n_layer)
                .map(|_| LayerKv::zeros(shape, self.shape.dtype, &self.shape.device))
                .collect::<Result<_>>()?;
        }
        self.capacity = cap;
        Ok(())
    }
}
