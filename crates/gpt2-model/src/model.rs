//! The whole model: embeddings → blocks → `ln_f` → tied LM head, with the cached and
//! batched entry points generation uses.

use candle_core::{DType, Device, Tensor};
use gpt2_weights::Config;

use crate::error::{ModelError, Result};
use crate::load::{LoadOptions, Quantization};
use crate::nn::attention::causal_mask;
use crate::nn::functional::{self, Dropout};
use crate::nn::kv_cache::{CacheShape, LayerKv};
use crate::nn::{Block, ContextOverflow, Embedding, KvCache, LayerNorm, Param};

/// Which positions to compute logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position of each sequence: `[batch, n_vocab]`. The vocabulary
    /// projection (the largest matmul) runs once per sequence. This is what generation needs.
    Last,
    /// Every new position: `[batch, s, n_vocab]`.
    All,
}

/// GPT-2: token ids in, next-token logits out.
///
/// ```text
/// h₀      = wte[ids] + wpe[positions]                    [b, s, n_embd]
/// hₗ₊₁    = block_l(hₗ)              for l < n_layer
/// logits  = ln_f(h_{n_layer}) · wteᵀ                     [b, s, n_vocab]
/// ```
///
/// ```
/// use gpt2_model::{Gpt2, LoadOptions, Logits};
/// use gpt2_weights::Config;
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// let config = Config { n_vocab: 100, n_ctx: 16, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let model = Gpt2::random(&config, 42, &LoadOptions::default())?;
///
/// // Cached generation: prefill the prompt, then one token at a time.
/// let mut cache = model.new_cache(Default::default());
/// let logits = model.prefill(&mut cache, &[&[1, 2, 3]], Logits::Last)?; // [1, 100]
/// let next = logits.argmax(1)?.to_vec1::<u32>()?;
/// let logits = model.step(&mut cache, &next)?;                          // [1, 100]
/// assert_eq!(logits.dims(), &[1, 100]);
/// assert_eq!(cache.len(), 4);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Gpt2 {
    config: Config,
    /// Token embedding `[n_vocab, n_embd]`, also the LM head.
    wte: Embedding,
    /// Position embedding `[n_ctx, n_embd]`.
    wpe: Embedding,
    /// The blocks `h.0 … h.{n_layer-1}`.
    h: Vec<Block>,
    ln_f: LayerNorm,
    dtype: DType,
    activations: DType,
    device: Device,
    quantize: Option<Quantization>,
}

impl Gpt2 {
    /// Logits at every position, no cache: `ids` `[batch, seq]` (u32 or i64) →
    /// `[batch, seq, n_vocab]` f32. Sequences are not padded (all have `seq` tokens).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let rows = self.ids_from_tensor(ids)?;
        let h = self.run(&rows, &vec![0; rows.len()], 0, None, None)?;
        self.head(&h, Logits::All)
    }

    /// [`Gpt2::forward`] for training with dropout (see [`Dropout`]): on the embeddings
    /// (site 0), and in block `l` on the attention weights and the outputs of attention and
    /// the MLP (sites `1 + 3·l` … `3 + 3·l`). With `p` 0 this is [`Gpt2::forward`].
    ///
    /// ```
    /// use gpt2_model::{nn::functional::Dropout, Gpt2, LoadOptions};
    /// # fn main() -> Result<(), gpt2_model::ModelError> {
    /// let config = gpt2_weights::Config { n_vocab: 50, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
    /// let model = Gpt2::random(&config, 1, &LoadOptions::default())?;
    /// let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], model.device())?;
    /// let a = model.forward_dropout(&ids, &Dropout { p: 0.1, seed: 3 })?;
    /// let b = model.forward_dropout(&ids, &Dropout { p: 0.1, seed: 3 })?;
    /// assert_eq!(a.to_vec3::<f32>()?, b.to_vec3::<f32>()?);
    /// # Ok(()) }
    /// ```
    pub fn forward_dropout(&self, ids: &Tensor, dropout: &Dropout) -> Result<Tensor> {
        let rows = self.ids_from_tensor(ids)?;
        let h = self.run_dropout(&rows, dropout)?;
        self.head(&h, Logits::All)
    }

    /// Training's loss: the mean cross-entropy of `targets` (`batch·seq` ids, row-major: the
    /// token that follows each position of `ids` `[batch, seq]`), differentiable for the
    /// weights when they are candle `Var`s ([`Gpt2::from_tensors`]). With `dropout` (`p` >
    /// 0), the pass of [`Gpt2::forward_dropout`]. The tied head and the loss are one op on the
    /// CPU ([`functional::lm_head_cross_entropy`]).
    ///
    /// ```
    /// use gpt2_model::{Gpt2, LoadOptions};
    /// # fn main() -> Result<(), gpt2_model::ModelError> {
    /// let config = gpt2_weights::Config { n_vocab: 50, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
    /// let model = Gpt2::random(&config, 1, &LoadOptions::default())?;
    /// let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], model.device())?;
    /// let loss = model.loss(&ids, &[2, 3, 4], None)?.to_scalar::<f32>()?;
    /// assert!(loss > 0.0 && loss.is_finite());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Bad ids, or `targets` not `batch·seq` ids below the vocabulary size.
    pub fn loss(&self, ids: &Tensor, targets: &[u32], dropout: Option<&Dropout>) -> Result<Tensor> {
        let rows = self.ids_from_tensor(ids)?;
        let h = match dropout {
            Some(d) if d.p > 0.0 => self.run_dropout(&rows, d)?,
            _ => self.run(&rows, &vec![0; rows.len()], 0, None, None)?,
        };
        let (b, s, e) = h.dims3()?;
        let x = self.ln_f.forward(&h.reshape((b * s, e))?)?; // [b·s, n_embd]
        match self.wte.table() {
            Some(wte) => functional::lm_head_cross_entropy(&x, wte, targets),
            None => functional::reference::cross_entropy(&self.wte.logits(&x)?, targets),
        }
    }

    /// The residual stream after the last block with dropout (see
    /// [`Gpt2::forward_dropout`]), `[b, s, n_embd]`.
    fn run_dropout(&self, rows: &[Vec<u32>], dropout: &Dropout) -> Result<Tensor> {
        let s = rows.first().map_or(0, Vec::len);
        let padding = vec![0; rows.len()];
        self.in_pool(|| {
            let mut x = dropout.apply(&self.embed(rows, &padding, 0)?, 0)?; // [b, s, n_embd]
            let mask = causal_mask(&padding, 0, s, &self.device)?;
            for (l, block) in self.h.iter().enumerate() {
                x = block.forward_dropout(&x, Some(&mask), dropout, 1 + 3 * l as u64)?;
            }
            Ok(x)
        })
    }

    /// Runs `f` on one of rayon's worker threads on the CPU (see [`Gpt2::run`]).
    fn in_pool<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        if self.device.is_cpu() && rayon::current_thread_index().is_none() {
            rayon::scope(|_| f())
        } else {
            f()
        }
    }

    /// Logits at the last position only, no cache: `[batch, seq]` → `[batch, n_vocab]` f32.
    pub fn forward_last(&self, ids: &Tensor) -> Result<Tensor> {
        let rows = self.ids_from_tensor(ids)?;
        let h = self.run(&rows, &vec![0; rows.len()], 0, None, None)?;
        self.head(&h, Logits::Last)
    }

    /// The residual stream, as Hugging Face's `output_hidden_states` reports it:
    /// `n_layer + 1` tensors `[batch, seq, n_embd]` f32 where `[0]` = `wte[ids] + wpe[pos]`,
    /// `[k]` (`1 ≤ k < n_layer`) = output of block `h.{k-1}`, and `[n_layer]` =
    /// `ln_f(output of the last block)` (so logits = `[n_layer] · wteᵀ`).
    pub fn hidden_states(&self, ids: &Tensor) -> Result<Vec<Tensor>> {
        let rows = self.ids_from_tensor(ids)?;
        let mut hs = Vec::with_capacity(self.config.n_layer + 1);
        let h = self.run(&rows, &vec![0; rows.len()], 0, None, Some(&mut hs))?;
        if let Some(last) = hs.last_mut() {
            *last = self.ln_f.forward(&h)?;
        }
        hs.into_iter()
            .map(|t| Ok(t.to_dtype(DType::F32)?))
            .collect()
    }

    /// An empty cache for this model (buffers are allocated by the first prefill).
    pub fn new_cache(&self, overflow: ContextOverflow) -> KvCache {
        let c = &self.config;
        let shape = CacheShape {
            n_ctx: c.n_ctx,
            n_layer: c.n_layer,
            n_head: c.n_head,
            head_dim: c.head_dim(),
            dtype: self.activations,
            device: self.device.clone(),
        };
        KvCache::new(shape, overflow)
    }

    /// Starts (or restarts) `cache` with a batch of prompts and returns their logits.
    ///
    /// Prompts may have different lengths: they are left-padded to the longest, with an
    /// attention mask that hides the padding and positions counted from each prompt's first
    /// real token, so each sequence gets the logits it would get alone. `Logits::Last` gives
    /// `[batch, n_vocab]` (each prompt's last token); `Logits::All` gives
    /// `[batch, max_len, n_vocab]`, where sequence `i`'s tokens are at columns
    /// `cache.padding(i)..` (the padded columns hold meaningless values).
    ///
    /// A prompt longer than `n_ctx` is an error, or under [`ContextOverflow::Slide`] keeps
    /// its last `n_ctx` tokens.
    pub fn prefill(
        &self,
        cache: &mut KvCache,
        prompts: &[&[u32]],
        which: Logits,
    ) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(ModelError::BatchSize {
                expected: 1,
                found: 0,
            });
        }
        if let Some(sequence) = prompts.iter().position(|p| p.is_empty()) {
            return Err(ModelError::EmptySequence { sequence });
        }
        self.check_ids(prompts)?;
        let n_ctx = self.config.n_ctx;
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        if longest > n_ctx && cache.overflow() == ContextOverflow::Error {
            return Err(ModelError::ContextOverflow {
                n_ctx,
                cached: 0,
                requested: longest,
                fits: n_ctx,
            });
        }
        // Under Slide: the most recent n_ctx tokens of each prompt.
        let prompts: Vec<&[u32]> = prompts
            .iter()
            .map(|p| &p[p.len().saturating_sub(n_ctx)..])
            .collect();
        let s = longest.min(n_ctx);
        let padding: Vec<usize> = prompts.iter().map(|p| s - p.len()).collect();
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .zip(&padding)
            .map(|(p, &pad)| {
                std::iter::repeat_n(0, pad)
                    .chain(p.iter().copied())
                    .collect()
            })
            .collect();
        cache.start(prompts.len(), s)?;
        let h = self.run(&ids, &padding, 0, Some(cache), None)?;
        cache.commit_prefill(padding, prompts.iter().map(|p| p.to_vec()).collect());
        self.head(&h, which)
    }

    /// Appends `tokens` (the same number, at least one, for every sequence of the cache's
    /// batch) and returns their logits: `[batch, n_vocab]` for `Logits::Last`,
    /// `[batch, s, n_vocab]` for `Logits::All`. On an empty cache this is [`Gpt2::prefill`].
    ///
    /// When the cache would outgrow `n_ctx`: [`ContextOverflow::Error`] fails (nothing is
    /// changed); [`ContextOverflow::Slide`] keeps the most recent `n_ctx` tokens of every
    /// sequence and recomputes the cache (with `Logits::All`, the logits of the last
    /// `min(s, n_ctx)` new tokens are returned).
    pub fn extend(&self, cache: &mut KvCache, tokens: &[&[u32]], which: Logits) -> Result<Tensor> {
        if cache.is_empty() {
            return self.prefill(cache, tokens, which);
        }
        if tokens.len() != cache.batch_size() {
            return Err(ModelError::BatchSize {
                expected: cache.batch_size(),
                found: tokens.len(),
            });
        }
        let s = tokens.first().map_or(0, |t| t.len());
        if s == 0 {
            return Err(ModelError::EmptySequence { sequence: 0 });
        }
        if let Some(sequence) = tokens.iter().position(|t| t.len() != s) {
            return Err(ModelError::RaggedExtend {
                expected: s,
                sequence,
                found: tokens[sequence].len(),
            });
        }
        self.check_ids(tokens)?;
        let n_ctx = self.config.n_ctx;
        let past = cache.len();
        if past + s > n_ctx {
            return match cache.overflow() {
                ContextOverflow::Error => Err(ModelError::ContextOverflow {
                    n_ctx,
                    cached: past,
                    requested: s,
                    fits: n_ctx - past,
                }),
                ContextOverflow::Slide => {
                    let histories: Vec<Vec<u32>> = (0..tokens.len())
                        .zip(tokens)
                        .map(|(i, new)| {
                            let old = cache.tokens(i).unwrap_or_default();
                            let all: Vec<u32> = old.iter().chain(new.iter()).copied().collect();
                            all[all.len().saturating_sub(n_ctx)..].to_vec()
                        })
                        .collect();
                    let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
                    let logits = self.prefill(cache, &refs, which)?;
                    match which {
                        Logits::Last => Ok(logits),
                        Logits::All => {
                            let keep = s.min(cache.len());
                            Ok(logits.narrow(1, cache.len() - keep, keep)?)
                        }
                    }
                }
            };
        }
        cache.grow(s)?;
        let ids: Vec<Vec<u32>> = tokens.iter().map(|t| t.to_vec()).collect();
        let padding = cache.paddings().to_vec();
        let h = self.run(&ids, &padding, past, Some(cache), None)?;
        cache.commit(tokens);
        self.head(&h, which)
    }

    /// One decoding step: one new token per sequence → `[batch, n_vocab]` f32 logits.
    pub fn step(&self, cache: &mut KvCache, next: &[u32]) -> Result<Tensor> {
        let tokens: Vec<&[u32]> = next.iter().map(std::slice::from_ref).collect();
        self.extend(cache, &tokens, Logits::Last)
    }

    /// One decoding step for several independent sequences at once, each in a cache of its
    /// own (continuous batching: sequences of different lengths join and leave between
    /// steps): [`Gpt2::extend_ragged`] with one token per sequence. `caches[i]` holds one
    /// prefilled sequence, and `next[i]` is appended to it. Returns `[n, n_vocab]` f32
    /// logits, row `i` what [`Gpt2::step`] on `caches[i]` alone returns.
    ///
    /// # Errors
    /// As [`Gpt2::extend_ragged`], and an empty cache.
    pub fn step_ragged(&self, caches: &mut [&mut KvCache], next: &[u32]) -> Result<Tensor> {
        if let Some(i) = caches.iter().position(|c| c.is_empty()) {
            return Err(ModelError::BadInput {
                expected: "caches of one prefilled sequence each".into(),
                found: format!("cache {i} is empty"),
            });
        }
        let tokens: Vec<&[u32]> = next.iter().map(std::slice::from_ref).collect();
        self.extend_ragged(caches, &tokens)
    }

    /// Appends `tokens[i]` (at least one token) to the sequence in `caches[i]`, for several
    /// independent sequences at once, each in a cache of its own (continuous batching). A
    /// cache holds one sequence, or is empty (then its tokens are its prompt: a prefill).
    /// Decode steps and prompt chunks mix freely. The new tokens of all sequences go through
    /// the matmuls together, so each weight is read once per call for all of them;
    /// attention runs per sequence over its own columns.
    ///
    /// Returns `[n, n_vocab]` f32 logits of each sequence's last new token: row `i` is what
    /// [`Gpt2::extend`] (or [`Gpt2::prefill`]) on `caches[i]` alone returns, up to float
    /// rounding. (Up to 64 new tokens in all, the products take the decode kernels, which
    /// compute each row on its own; a lone row is summed in per-thread bands instead, and
    /// more rows take a gemm, so the last bits can differ.)
    ///
    /// ```
    /// use gpt2_model::{ContextOverflow, Gpt2, LoadOptions, Logits};
    /// use gpt2_weights::Config;
    /// # fn main() -> Result<(), gpt2_model::ModelError> {
    /// let config = Config { n_vocab: 64, n_ctx: 16, n_embd: 16, n_head: 4, n_layer: 2, layer_norm_epsilon: 1e-5 };
    /// let model = Gpt2::random(&config, 0, &LoadOptions::default())?;
    /// let (mut a, mut b) = (model.new_cache(ContextOverflow::Error), model.new_cache(ContextOverflow::Error));
    /// model.prefill(&mut a, &[&[1, 2, 3]], Logits::Last)?;
    /// // One decode step for `a` and a whole prompt for `b`, in one pass.
    /// let logits = model.extend_ragged(&mut [&mut a, &mut b], &[&[4], &[5, 6]])?; // [2, 64]
    /// assert_eq!(logits.dims(), &[2, 64]);
    /// assert_eq!((a.len(), b.len()), (4, 2));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// No caches, `tokens.len() != caches.len()`, an empty chunk, a cache holding more than
    /// one sequence, a token id out of range, or a chunk that does not fit in `n_ctx`
    /// (nothing is changed then).
    pub fn extend_ragged(&self, caches: &mut [&mut KvCache], tokens: &[&[u32]]) -> Result<Tensor> {
        if caches.is_empty() || tokens.len() != caches.len() {
            return Err(ModelError::BatchSize {
                expected: caches.len().max(1),
                found: tokens.len(),
            });
        }
        if let Some(sequence) = tokens.iter().position(|t| t.is_empty()) {
            return Err(ModelError::EmptySequence { sequence });
        }
        self.check_ids(tokens)?;
        let n_ctx = self.config.n_ctx;
        for (i, (c, t)) in caches.iter().zip(tokens).enumerate() {
            if !c.is_empty() && (c.batch_size() != 1 || c.padding(0) != Some(0)) {
                return Err(ModelError::BadInput {
                    expected: "caches of one sequence each".into(),
                    found: format!(
                        "cache {i} holds {} sequences (left padding {:?})",
                        c.batch_size(),
                        c.padding(0)
                    ),
                });
            }
            if c.len() + t.len() > n_ctx {
                return Err(ModelError::ContextOverflow {
                    n_ctx,
                    cached: c.len(),
                    requested: t.len(),
                    fits: n_ctx - c.len(),
                });
            }
        }
        for (c, t) in caches.iter_mut().zip(tokens) {
            match c.is_empty() {
                true => c.start(1, t.len())?,
                false => c.grow(t.len())?,
            }
        }
        let pasts: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let h = if self.device.is_cpu() && rayon::current_thread_index().is_none() {
            rayon::scope(|_| self.run_ragged(caches, tokens, &pasts))
        } else {
            self.run_ragged(caches, tokens, &pasts)
        }?; // [1, total, n_embd]
        for (c, t) in caches.iter_mut().zip(tokens) {
            match c.is_empty() {
                true => c.commit_prefill(vec![0], vec![t.to_vec()]),
                false => c.commit(&[t]),
            }
        }
        // Each sequence's last new row → [n, 1, n_embd] → logits.
        let mut last = Vec::with_capacity(tokens.len());
        let mut row = 0u32;
        for t in tokens {
            row += t.len() as u32;
            last.push(row - 1);
        }
        let n = last.len();
        let last = Tensor::from_vec(last, n, &self.device)?;
        let h = h.squeeze(0)?.index_select(&last, 0)?.unsqueeze(1)?;
        self.head(&h, Logits::Last)
    }

    /// [`Gpt2::extend_ragged`]'s pass through the blocks: `[1, total, n_embd]` out.
    fn run_ragged(
        &self,
        caches: &mut [&mut KvCache],
        tokens: &[&[u32]],
        pasts: &[usize],
    ) -> Result<Tensor> {
        let lens: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
        let ids: Vec<u32> = tokens.iter().flat_map(|t| t.iter().copied()).collect();
        let positions: Vec<u32> = pasts
            .iter()
            .zip(&lens)
            .flat_map(|(&p, &s)| (p..p + s).map(|c| c as u32))
            .collect();
        let total = ids.len();
        let mut x = self.embed_at(ids, positions, (1, total))?; // [1, total, n_embd]
        for (l, block) in self.h.iter().enumerate() {
            let mut kvs: Vec<&mut LayerKv> =
                caches.iter_mut().filter_map(|c| c.layer_mut(l)).collect();
            x = block.forward_ragged(&x, &mut kvs, pasts, &lens)?;
        }
        Ok(x)
    }

    /// The core: runs `ids` (`[b, s]`, left-padded by `padding`, starting at column `past`)
    /// through the blocks, writing keys/values into `cache` when given. Returns the residual
    /// stream after the last block, `[b, s, n_embd]`; pushes every intermediate one into
    /// `hidden` when given.
    ///
    /// On the CPU the whole pass runs on one of rayon's worker threads, so that each of its
    /// parallel kernels forks from inside the pool instead of waking the pool and putting the
    /// calling thread to sleep (a futex round trip per matmul, ~10% of a decode step).
    fn run(
        &self,
        ids: &[Vec<u32>],
        padding: &[usize],
        past: usize,
        cache: Option<&mut KvCache>,
        hidden: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        if self.device.is_cpu() && rayon::current_thread_index().is_none() {
            rayon::scope(|_| self.run_here(ids, padding, past, cache, hidden))
        } else {
            self.run_here(ids, padding, past, cache, hidden)
        }
    }

    /// [`Gpt2::run`] on the calling thread.
    fn run_here(
        &self,
        ids: &[Vec<u32>],
        padding: &[usize],
        past: usize,
        mut cache: Option<&mut KvCache>,
        mut hidden: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let b = ids.len();
        let s = ids.first().map_or(0, Vec::len);
        let mut x = self.embed(ids, padding, past)?; // [b, s, n_embd]

        // One new token and no padding: every cached key is visible, no mask needed.
        let mask = if s == 1 && padding.iter().all(|&p| p == 0) {
            None
        } else {
            Some(causal_mask(padding, past, s, &self.device)?)
        };
        debug_assert_eq!(padding.len(), b);
        if let Some(hs) = hidden.as_deref_mut() {
            hs.push(x.clone());
        }
        for (l, block) in self.h.iter().enumerate() {
            let kv = cache.as_deref_mut().and_then(|c| c.layer_mut(l));
            x = block.forward(&x, kv, past, mask.as_ref())?;
            if let Some(hs) = hidden.as_deref_mut() {
                hs.push(x.clone());
            }
        }
        Ok(x)
    }

    /// `h₀ = wte[ids] + wpe[positions]` `[b, s, n_embd]`, in the activations' dtype: `ids`
    /// left-padded by `padding`, starting at column `past` (a token at column `c` has position
    /// `c − padding`).
    fn embed(&self, ids: &[Vec<u32>], padding: &[usize], past: usize) -> Result<Tensor> {
        let (b, s) = (ids.len(), ids.first().map_or(0, Vec::len));
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let positions: Vec<u32> = padding
            .iter()
            .flat_map(|&pad| (past..past + s).map(move |c| c.saturating_sub(pad) as u32))
            .collect();
        self.embed_at(flat, positions, (b, s))
    }

    /// `wte[ids] + wpe[positions]` for `[b, s]` row-major `ids` and `positions`.
    fn embed_at(
        &self,
        ids: Vec<u32>,
        positions: Vec<u32>,
        (b, s): (usize, usize),
    ) -> Result<Tensor> {
        let ids = Tensor::from_vec(ids, (b, s), &self.device)?;
        let positions = Tensor::from_vec(positions, (b, s), &self.device)?;
        let tok = self.wte.forward(&ids)?.to_dtype(self.activations)?;
        Ok((tok + self.wpe.forward(&positions)?)?)
    }

    /// `ln_f` then the tied head, f32 out: `h` `[b, s, n_embd]` → `[b, n_vocab]` (last
    /// position) or `[b, s, n_vocab]`.
    fn head(&self, h: &Tensor, which: Logits) -> Result<Tensor> {
        let (b, s, e) = h.dims3()?;
        let out = match which {
            Logits::Last => {
                let last = h.narrow(1, s - 1, 1)?.reshape((b, e))?;
                self.wte.logits(&self.ln_f.forward(&last)?)?
            }
            Logits::All => {
                let x = self.ln_f.forward(&h.reshape((b * s, e))?)?;
                self.wte.logits(&x)?.reshape((b, s, self.config.n_vocab))?
            }
        };
        Ok(out.to_dtype(DType::F32)?)
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The weight matrices' dtype (`LoadOptions::dtype`).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dtype of the activations and the KV cache: f32 on the CPU, the weights' dtype on
    /// a GPU.
    pub fn activation_dtype(&self) -> DType {
        self.activations
    }

    /// Whether the large matrices (`wte` and the `Conv1D` weights) are used in place from
    /// the memory-mapped weight file, with no copy: true for f32/f16 safetensors loaded on
    /// the CPU in their stored dtype (the data must be aligned, as Hugging Face's and this
    /// project's files are) and for GGUF Q8_0 models loaded with [`LoadOptions::q8_0`];
    /// false for random, quantized-at-load, cast or GPU models.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use gpt2_model::{Gpt2, LoadOptions};
    /// let config = gpt2_weights::Config { n_vocab: 64, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
    /// let random = Gpt2::random(&config, 1, &LoadOptions::default())?;
    /// assert!(!random.weights_in_place());
    /// let dir = tempfile::tempdir()?;
    /// random.save_hf(dir.path().join("m"))?;
    /// assert!(Gpt2::load(dir.path().join("m"), &LoadOptions::default())?.weights_in_place());
    /// # Ok(()) }
    /// ```
    pub fn weights_in_place(&self) -> bool {
        self.params().iter().all(|(name, p)| match p {
            Param::Matrix(m) => name == "wpe.weight" || m.is_mapped(),
            Param::Tensor(_) => true,
        })
    }

    /// The block quantization of the weight matrices, if any.
    pub fn quantization(&self) -> Option<Quantization> {
        self.quantize
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every weight with its canonical name (`wte.weight`, `h.0.attn.c_attn.weight`, ...),
    /// in model order, with Hugging Face's shapes: matrices used in place from the mapped
    /// file are copied into tensors, and Q8_0 matrices dequantized (f32).
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.params()
            .into_iter()
            .map(|(name, p)| {
                let t = match p {
                    Param::Matrix(m) => m.to_tensor(&self.device)?,
                    Param::Tensor(t) => t.clone(),
                };
                Ok((name, t))
            })
            .collect()
    }

    /// Every parameter with its canonical name, in model order.
    fn params(&self) -> Vec<(String, Param<'_>)> {
        let mut out = vec![
            ("wte.weight".to_string(), self.wte.param()),
            ("wpe.weight".to_string(), self.wpe.param()),
        ];
        for (i, block) in self.h.iter().enumerate() {
            block.params(&format!("h.{i}"), &mut out);
        }
        for (p, v) in self.ln_f.params() {
            out.push((format!("ln_f.{p}"), v));
        }
        out
    }

    /// Checks ids against the vocabulary.
    fn check_ids(&self, seqs: &[&[u32]]) -> Result<()> {
        for (sequence, seq) in seqs.iter().enumerate() {
            if let Some((position, &id)) = seq
                .iter()
                .enumerate()
                .find(|(_, &id)| id as usize >= self.config.n_vocab)
            {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    sequence,
                    position,
                    n_vocab: self.config.n_vocab,
                });
            }
        }
        Ok(())
    }

    /// `[b, s]` ids from a tensor (u32 or i64), checked.
    fn ids_from_tensor(&self, ids: &Tensor) -> Result<Vec<Vec<u32>>> {
        if ids.rank() != 2 {
            return Err(ModelError::BadInput {
                expected: "token ids of shape [batch, seq]".into(),
                found: format!("shape {:?}", ids.dims()),
            });
        }
        let rows = match ids.dtype() {
            DType::U32 => ids.to_vec2::<u32>()?,
            DType::I64 | DType::U8 => ids.to_dtype(DType::U32)?.to_vec2::<u32>()?,
            other => {
                return Err(ModelError::BadInput {
                    expected: "u32 or i64 token ids".into(),
                    found: format!("{other:?}"),
                })
            }
        };
        let (b, s) = ids.dims2()?;
        if b == 0 || s == 0 {
            return Err(ModelError::BadInput {
                expected: "at least one sequence of at least one token".into(),
                found: format!("shape [{b}, {s}]"),
            });
        }
        if s > self.config.n_ctx {
            return Err(ModelError::ContextOverflow {
                n_ctx: self.config.n_ctx,
                cached: 0,
                requested: s,
                fits: self.config.n_ctx,
            });
        }
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        self.check_ids(&refs)?;
        Ok(rows)
    }

    /// A model from its layers (the builder's constructor, see `crate::load`).
    pub(crate) fn from_parts(
        config: Config,
        wte: Embedding,
        wpe: Embedding,
        h: Vec<Block>,
        ln_f: LayerNorm,
        opts: &LoadOptions,
    ) -> Self {
        Self {
            config,
            wte,
            wpe,
            h,
            ln_f,
            dtype: opts.dtype,
            activations: opts.activations(),
            device: opts.device.clone(),
            quantize: opts.quantize,
        }
    }
}
