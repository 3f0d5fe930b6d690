//! The whole model: embeddings → blocks → `ln_f` → tied LM head, with the cached and
//! batched entry points generation uses.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use gpt2_weights::{Config, TensorView, Weights};

use crate::attention::{causal_mask, CausalSelfAttention};
use crate::block::Block;
use crate::embedding::Embeddings;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::layer_norm::LayerNorm;
use crate::linear::Conv1D;
use crate::matrix::{Mapped, Matrix};
use crate::mlp::Mlp;

/// Where the model lives and in which dtype it computes.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The weight matrices' dtype: `F32` (the reference) or `F16` (half the memory traffic;
    /// see the crate README for its accuracy). On the CPU the activations, the KV cache and
    /// the small parameters (biases, layer norms, `wpe`) stay f32 whatever this is: the
    /// kernels widen f16 weights in registers, and f16 arithmetic on the CPU would be slower
    /// and less exact. On a GPU, `F16`/`BF16` is the dtype of everything (attention softmax
    /// and layer-norm statistics are always computed in f32).
    pub dtype: DType,
    /// `Device::Cpu` by default; CUDA/Metal with the crate's `cuda`/`metal` features.
    pub device: Device,
    /// Store the matrices (`wte`, `c_attn`, `c_proj`, `c_fc`) in 8-bit blocks at load time
    /// (`None`: as `dtype`). Needs `dtype` `F32` and the CPU (the Q8_0 kernels are CPU-only).
    pub quantize: Option<Quantization>,
}

/// Block quantization of the weight matrices (see `q8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// GGML's `Q8_0` scheme: blocks of 32 weights along the input dimension, each 32 int8
    /// values and one scale (kept as f32 here: 9 bits per weight). Fits every GPT-2 size (`n_embd` is a multiple of
    /// 32; k-quants would need multiples of 256, which GPT-2 XL's 1600 is not).
    Q8_0,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            quantize: None,
        }
    }
}

impl LoadOptions {
    /// Options with the given dtype on the CPU.
    pub fn cpu(dtype: DType) -> Self {
        Self {
            dtype,
            device: Device::Cpu,
            quantize: None,
        }
    }

    /// Q8_0 weight matrices, f32 activations, on the CPU.
    pub fn q8_0() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            quantize: Some(Quantization::Q8_0),
        }
    }
}

/// What to do when a sequence would need more than `n_ctx` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextOverflow {
    /// Fail with [`ModelError::ContextOverflow`], which says how many tokens fit.
    #[default]
    Error,
    /// Keep the most recent `n_ctx` tokens of each sequence and recompute the cache from
    /// them (a full prefill of `n_ctx` tokens on every overflowing step).
    Slide,
}

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
    embeddings: Embeddings,
    h: Vec<Block>,
    ln_f: LayerNorm,
    dtype: DType,
    activations: DType,
    device: Device,
    quantize: Option<Quantization>,
}

/// After quantizing a mapped matrix: unmap its file pages from the process (they stay in the
/// page cache), so that the f32 file does not count in the peak RSS next to the Q8_0 copy.
fn release(m: &Matrix) {
    if let Matrix::Mapped(m) = m {
        advise(m.bytes(), Advice::DropMapped);
    }
}

/// Whether `name` is one of the large matrices (`wte` and the `Conv1D` weights), kept in
/// [`LoadOptions::dtype`] (and mapped in place where possible).
fn is_matrix(name: &str) -> bool {
    name == "wte.weight"
        || (name.ends_with(".weight")
            && [".c_attn.", ".c_proj.", ".c_fc."]
                .iter()
                .any(|m| name.contains(m)))
}

/// The dtype of the activations and the KV cache: f32 on the CPU (see
/// [`LoadOptions::dtype`]), the weights' dtype elsewhere.
fn activation_dtype(opts: &LoadOptions) -> DType {
    if opts.device.is_cpu() {
        DType::F32
    } else {
        opts.dtype
    }
}

fn candle_dtype(d: gpt2_weights::Dtype) -> DType {
    match d {
        gpt2_weights::Dtype::F32 => DType::F32,
        gpt2_weights::Dtype::F16 => DType::F16,
        gpt2_weights::Dtype::BF16 => DType::BF16,
    }
}

/// A candle tensor from borrowed little-endian bytes: one copy (straight from the mmap onto
/// the device), then a cast if the stored dtype differs from the compute dtype.
pub(crate) fn tensor_from_view(
    view: &TensorView<'_>,
    dtype: DType,
    opts: &LoadOptions,
) -> Result<Tensor> {
    let mapped = matches!(view.data, std::borrow::Cow::Borrowed(_));
    if mapped {
        advise(&view.data, Advice::Populate);
    }
    let t = Tensor::from_raw_buffer(
        &view.data,
        candle_dtype(view.dtype),
        &view.shape,
        &opts.device,
    )?;
    if mapped {
        // The bytes now live in `t`: unmap these file pages from the process (they stay in
        // the page cache) so that the peak RSS is about one copy of the weights, not two.
        advise(&view.data, Advice::DropMapped);
    }
    Ok(if t.dtype() == dtype {
        t
    } else {
        t.to_dtype(dtype)?
    })
}

/// What [`advise`] tells the kernel about a mapped range.
#[derive(Clone, Copy)]
pub(crate) enum Advice {
    /// Map every page now, in one call (`MADV_POPULATE_READ`, Linux ≥ 5.14), instead of one
    /// page fault per 4 KiB during the copy.
    Populate,
    /// Unmap the pages from this process (`MADV_DONTNEED`); the file's contents are
    /// unchanged and a later read maps them again.
    DropMapped,
    /// Back the range with transparent huge pages on its next page faults
    /// (`MADV_HUGEPAGE`).
    HugePage,
}

/// `madvise` on the whole pages inside `bytes` (`DropMapped`: only ever a read-only file
/// mapping of the weights). Only a hint: errors (an old kernel, another OS) are ignored.
#[cfg(target_os = "linux")]
pub(crate) fn advise(bytes: &[u8], advice: Advice) {
    const PAGE: usize = 4096;
    let start = (bytes.as_ptr() as usize).div_ceil(PAGE) * PAGE;
    let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
    if end <= start {
        return;
    }
    let flag = match advice {
        Advice::Populate => 22, // MADV_POPULATE_READ
        Advice::DropMapped => libc::MADV_DONTNEED,
        Advice::HugePage => libc::MADV_HUGEPAGE,
    };
    // SAFETY: the range lies inside `bytes`, live memory of this process. No advice changes
    // what reading it returns: DropMapped is only given read-only file mappings (there it
    // drops the page-table entries, and the next access maps the same file pages), and
    // HugePage only changes the size of the pages that later faults allocate.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, flag);
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise(_: &[u8], _: Advice) {}

impl Gpt2 {
    /// Loads a model directory in either layout (Hugging Face `model.safetensors` +
    /// `config.json`, or OpenAI's TensorFlow checkpoint + `hparams.json`).
    ///
    /// A directory with a `model.gguf` (what `gpt2 convert --dtype q8_0` writes), or a
    /// `*.gguf` file, loads that file with [`Gpt2::load_gguf`].
    pub fn load(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        if let Some(file) = crate::gguf::find_gguf(dir.as_ref()) {
            return Self::load_gguf(file, opts);
        }
        let weights = Weights::open(dir.as_ref())?;
        Self::from_weights(&weights, opts)
    }

    /// Loads a GGUF file written by [`gguf::save_gguf`](crate::gguf::save_gguf) /
    /// [`gguf::convert_to_gguf`](crate::gguf::convert_to_gguf) (Q8_0 matrices; see
    /// [`crate::gguf`]). With [`LoadOptions::q8_0`] the stored blocks are used as they are
    /// (no re-quantization); other options dequantize them to `opts.dtype`.
    ///
    /// ```
    /// use gpt2_model::{gguf, Gpt2, LoadOptions, Quantization};
    /// use gpt2_weights::Config;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = Config { n_vocab: 64, n_ctx: 8, n_embd: 32, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
    /// let dir = tempfile::tempdir()?;
    /// Gpt2::random(&config, 0, &LoadOptions::default())?.save_hf(dir.path().join("f32"))?;
    /// gguf::convert_to_gguf(&dir.path().join("f32"), &dir.path().join("q8"))?;
    /// let model = Gpt2::load_gguf(dir.path().join("q8/model.gguf"), &LoadOptions::q8_0())?;
    /// assert_eq!(model.quantization(), Some(Quantization::Q8_0));
    /// # Ok(()) }
    /// ```
    pub fn load_gguf(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        crate::gguf::GgufFile::open(path.as_ref())?.load(opts)
    }

    /// A Q8_0 model from its layers (the GGUF loader's constructor).
    pub(crate) fn from_layers(
        config: Config,
        embeddings: Embeddings,
        h: Vec<Block>,
        ln_f: LayerNorm,
        opts: &LoadOptions,
    ) -> Self {
        Self {
            config,
            embeddings,
            h,
            ln_f,
            dtype: opts.dtype,
            activations: activation_dtype(opts),
            device: opts.device.clone(),
            quantize: Some(Quantization::Q8_0),
        }
    }

    /// Builds the model from opened weights. On the CPU the large f32/f16 matrices stored in
    /// the wanted dtype are used in place from the mapped file (which then stays mapped as
    /// long as the model lives, see [`Gpt2::weights_in_place`]); every other tensor is copied
    /// once into its final layout.
    pub fn from_weights(weights: &Weights, opts: &LoadOptions) -> Result<Self> {
        Self::build(weights.config(), opts, |name, dtype| {
            let view = weights.tensor(name)?;
            // The large matrices of a mapped file on the CPU, already in the wanted dtype:
            // used in place (see `matrix`).
            if let (&[rows, cols], true, true) = (
                view.shape.as_slice(),
                opts.device.is_cpu() && is_matrix(name),
                candle_dtype(view.dtype) == dtype,
            ) {
                let bytes = weights.shared_bytes(name)?;
                if bytes.is_mapped() {
                    if let Some(m) = Mapped::new(bytes, dtype, rows, cols) {
                        return Ok(Matrix::Mapped(m));
                    }
                }
            }
            Ok(Matrix::Tensor(tensor_from_view(&view, dtype, opts)?))
        })
    }

    /// Builds the model from a source of named tensors (canonical names, HF shapes; see
    /// `gpt2_weights::expected_tensors`), each asked for in the dtype it is kept in, checking
    /// every shape.
    pub(crate) fn build(
        config: &Config,
        opts: &LoadOptions,
        mut get: impl FnMut(&str, DType) -> Result<Matrix>,
    ) -> Result<Self> {
        config.validate()?;
        // candle's CPU matmul has no bf16 kernel: refuse it up front rather than at the first
        // forward pass.
        let supported = match opts.dtype {
            DType::F32 | DType::F16 => true,
            DType::BF16 => !opts.device.is_cpu(),
            _ => false,
        };
        if !supported {
            return Err(ModelError::UnsupportedDtype(opts.dtype));
        }
        if let Some(q) = opts.quantize {
            let block = crate::q8::BLOCK;
            if !opts.device.is_cpu() {
                return Err(ModelError::BadInput {
                    expected: format!("the CPU for {q:?} weights (its kernels are CPU-only)"),
                    found: format!("{:?}", opts.device.location()),
                });
            }
            if opts.dtype != DType::F32 {
                return Err(ModelError::BadInput {
                    expected: format!("f32 activations with {q:?} weights"),
                    found: format!("{:?}", opts.dtype),
                });
            }
            if !config.n_embd.is_multiple_of(block) {
                return Err(ModelError::BadInput {
                    expected: format!("n_embd a multiple of {block} for {q:?} weights"),
                    found: format!("n_embd {}", config.n_embd),
                });
            }
        }
        let quantize = opts.quantize;
        let activations = activation_dtype(opts);
        let expected: std::collections::HashMap<String, Vec<usize>> =
            gpt2_weights::expected_tensors(config).into_iter().collect();
        let mut get_matrix = |name: &str| -> Result<Matrix> {
            // The matrices in the requested dtype, the rest in the activations' dtype.
            let dtype = if is_matrix(name) {
                opts.dtype
            } else {
                activations
            };
            let t = get(name, dtype)?;
            if let Some(shape) = expected.get(name) {
                if t.dims() != shape.as_slice() {
                    return Err(ModelError::BadInput {
                        expected: format!("tensor {name} of shape {shape:?}"),
                        found: format!("shape {:?}", t.dims()),
                    });
                }
            }
            Ok(match t {
                Matrix::Tensor(t) => Matrix::Tensor(t.contiguous()?),
                mapped => mapped,
            })
        };
        let eps = config.layer_norm_epsilon;
        let device = opts.device.clone();
        let get = &mut get_matrix;
        let tensor = |get: &mut dyn FnMut(&str) -> Result<Matrix>, name: &str| -> Result<Tensor> {
            get(name)?.to_tensor(&device)
        };
        let ln = |get: &mut dyn FnMut(&str) -> Result<Matrix>, p: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(
                tensor(get, &format!("{p}.weight"))?,
                tensor(get, &format!("{p}.bias"))?,
                eps,
            ))
        };
        let conv = |get: &mut dyn FnMut(&str) -> Result<Matrix>, p: &str| -> Result<Conv1D> {
            let w = get(&format!("{p}.weight"))?;
            let b = tensor(get, &format!("{p}.bias"))?;
            match quantize {
                Some(Quantization::Q8_0) => {
                    let layer = Conv1D::quantize(&w, b)?;
                    release(&w);
                    Ok(layer)
                }
                None => Ok(Conv1D::new(w, b)),
            }
        };
        let wte = get("wte.weight")?;
        let wpe = tensor(get, "wpe.weight")?;
        let embeddings = match quantize {
            Some(Quantization::Q8_0) => {
                let e = Embeddings::quantize(&wte, wpe)?;
                release(&wte);
                e
            }
            None => Embeddings::new(wte, wpe),
        };
        let mut h = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            h.push(Block {
                ln_1: ln(get, &format!("h.{i}.ln_1"))?,
                attn: CausalSelfAttention {
                    c_attn: conv(get, &format!("h.{i}.attn.c_attn"))?,
                    c_proj: conv(get, &format!("h.{i}.attn.c_proj"))?,
                    n_head: config.n_head,
                },
                ln_2: ln(get, &format!("h.{i}.ln_2"))?,
                mlp: Mlp {
                    c_fc: conv(get, &format!("h.{i}.mlp.c_fc"))?,
                    c_proj: conv(get, &format!("h.{i}.mlp.c_proj"))?,
                },
            });
        }
        let ln_f = ln(get, "ln_f")?;
        Ok(Self {
            config: *config,
            embeddings,
            h,
            ln_f,
            dtype: opts.dtype,
            activations,
            device: opts.device.clone(),
            quantize: opts.quantize,
        })
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
        use crate::matrix::Matrix::Mapped;
        let wte = match &self.embeddings.wte_quantized {
            Some(q) => q.is_mapped(),
            None => matches!(self.embeddings.wte, Mapped(_)),
        };
        wte && self.h.iter().all(|b| {
            [&b.attn.c_attn, &b.attn.c_proj, &b.mlp.c_fc, &b.mlp.c_proj]
                .iter()
                .all(|c| match &c.quantized {
                    Some(q) => q.is_mapped(),
                    None => matches!(c.weight, Mapped(_)),
                })
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
    /// in model order, with HF shapes. Matrices used in place from the mapped file are
    /// copied into tensors here. In a quantized model the quantized matrices (`wte` and the
    /// `Conv1D` weights) are empty `[0]` tensors: their values live in the layers'
    /// `Q8Matrix`es.
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let dev = &self.device;
        let mut out = vec![
            (
                "wte.weight".to_string(),
                self.embeddings.wte.to_tensor(dev)?,
            ),
            ("wpe.weight".to_string(), self.embeddings.wpe.clone()),
        ];
        fn ln(p: String, l: &LayerNorm, out: &mut Vec<(String, Tensor)>) {
            out.push((format!("{p}.weight"), l.weight.clone()));
            out.push((format!("{p}.bias"), l.bias.clone()));
        }
        for (i, b) in self.h.iter().enumerate() {
            ln(format!("h.{i}.ln_1"), &b.ln_1, &mut out);
            for (p, c) in [
                (format!("h.{i}.attn.c_attn"), &b.attn.c_attn),
                (format!("h.{i}.attn.c_proj"), &b.attn.c_proj),
            ] {
                out.push((format!("{p}.weight"), c.weight.to_tensor(dev)?));
                out.push((format!("{p}.bias"), c.bias.clone()));
            }
            ln(format!("h.{i}.ln_2"), &b.ln_2, &mut out);
            for (p, c) in [
                (format!("h.{i}.mlp.c_fc"), &b.mlp.c_fc),
                (format!("h.{i}.mlp.c_proj"), &b.mlp.c_proj),
            ] {
                out.push((format!("{p}.weight"), c.weight.to_tensor(dev)?));
                out.push((format!("{p}.bias"), c.bias.clone()));
            }
        }
        ln("ln_f".to_string(), &self.ln_f, &mut out);
        Ok(out)
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
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let positions: Vec<u32> = padding
            .iter()
            .flat_map(|&pad| (past..past + s).map(move |c| c.saturating_sub(pad) as u32))
            .collect();
        let ids_t = Tensor::from_vec(flat, (b, s), &self.device)?;
        let pos_t = Tensor::from_vec(positions, (b, s), &self.device)?;
        let mut x = self.embeddings.forward(&ids_t, &pos_t)?; // [b, s, n_embd]
                                                              // One new token and no padding: every cached key is visible, no mask needed.
        let mask = if s == 1 && padding.iter().all(|&p| p == 0) {
            None
        } else {
            Some(causal_mask(padding, past, s, &self.device)?)
        };
        if let Some(hs) = hidden.as_deref_mut() {
            hs.push(x.clone());
        }
        for (l, block) in self.h.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            x = block.forward(&x, kv, past, mask.as_ref())?;
            if let Some(hs) = hidden.as_deref_mut() {
                hs.push(x.clone());
            }
        }
        Ok(x)
    }

    /// `ln_f` then the tied head, f32 out: `h` `[b, s, n_embd]` → `[b, n_vocab]` (last
    /// position) or `[b, s, n_vocab]`.
    fn head(&self, h: &Tensor, which: Logits) -> Result<Tensor> {
        let (b, s, e) = h.dims3()?;
        let out = match which {
            Logits::Last => {
                let last = h.narrow(1, s - 1, 1)?.reshape((b, e))?;
                self.embeddings.logits(&self.ln_f.forward(&last)?)?
            }
            Logits::All => {
                let x = self.ln_f.forward(&h.reshape((b * s, e))?)?;
                self.embeddings
                    .logits(&x)?
                    .reshape((b, s, self.config.n_vocab))?
            }
        };
        Ok(out.to_dtype(DType::F32)?)
    }

    /// Logits at every position, no cache: `ids` `[batch, seq]` (u32 or i64) →
    /// `[batch, seq, n_vocab]` f32. Sequences are not padded (all have `seq` tokens).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let rows = self.ids_from_tensor(ids)?;
        let h = self.run(&rows, &vec![0; rows.len()], 0, None, None)?;
        self.head(&h, Logits::All)
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
        KvCache::new(
            c.n_ctx,
            c.n_layer,
            c.n_head,
            c.head_dim(),
            self.activations,
            self.device.clone(),
            overflow,
        )
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
        if longest > n_ctx && cache.overflow == ContextOverflow::Error {
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
        cache.reset();
        cache.ensure(prompts.len(), s, false)?;
        let h = self.run(&ids, &padding, 0, Some(cache), None)?;
        cache.len = s;
        cache.padding = padding;
        cache.tokens = prompts.iter().map(|p| p.to_vec()).collect();
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
        let past = cache.len;
        if past + s > n_ctx {
            return match cache.overflow {
                ContextOverflow::Error => Err(ModelError::ContextOverflow {
                    n_ctx,
                    cached: past,
                    requested: s,
                    fits: n_ctx - past,
                }),
                ContextOverflow::Slide => {
                    let histories: Vec<Vec<u32>> = cache
                        .tokens
                        .iter()
                        .zip(tokens)
                        .map(|(old, new)| {
                            let all: Vec<u32> = old.iter().chain(new.iter()).copied().collect();
                            all[all.len().saturating_sub(n_ctx)..].to_vec()
                        })
                        .collect();
                    let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
                    let logits = self.prefill(cache, &refs, which)?;
                    match which {
                        Logits::Last => Ok(logits),
                        Logits::All => {
                            let keep = s.min(cache.len);
                            Ok(logits.narrow(1, cache.len - keep, keep)?)
                        }
                    }
                }
            };
        }
        cache.ensure(tokens.len(), past + s, true)?;
        let ids: Vec<Vec<u32>> = tokens.iter().map(|t| t.to_vec()).collect();
        let padding = cache.padding.clone();
        let h = self.run(&ids, &padding, past, Some(cache), None)?;
        cache.len = past + s;
        for (hist, new) in cache.tokens.iter_mut().zip(tokens) {
            hist.extend_from_slice(new);
        }
        self.head(&h, which)
    }

    /// One decoding step: one new token per sequence → `[batch, n_vocab]` f32 logits.
    pub fn step(&self, cache: &mut KvCache, next: &[u32]) -> Result<Tensor> {
        let tokens: Vec<&[u32]> = next.iter().map(std::slice::from_ref).collect();
        self.extend(cache, &tokens, Logits::Last)
    }
}
