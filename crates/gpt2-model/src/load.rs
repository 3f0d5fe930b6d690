//! Building a [`Gpt2`]: one builder for every source of weights.
//!
//! A source hands the builder one [`Matrix`] per canonical tensor name (`wte.weight`,
//! `h.0.attn.c_attn.weight`, ... with Hugging Face's shapes): [`Gpt2::from_weights`] for a
//! model directory of any layout (read by `gpt2-weights`: OpenAI's checkpoints, Hugging
//! Face safetensors, GGUF), [`Gpt2::random`] for random
//! weights. The builder checks every shape, puts each matrix into the
//! storage the [`LoadOptions`] ask for (in place from the mapped file, a tensor, or Q8_0
//! blocks), and assembles the same tree of layers whatever the source.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use gpt2_weights::{Config, SharedBytes, TensorView, Weights};

use crate::cpu::matrix::{Mapped, Matrix, NonFinite};
use crate::cpu::mmap::{advise, drop_mapped, Advice};
use crate::cpu::q8;
use crate::error::{ModelError, Result};
use crate::model::Gpt2;
use crate::nn::{Block, CausalSelfAttention, Conv1D, Embedding, LayerNorm, Mlp};

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
    /// Store the matrices (`wte`, `c_attn`, `c_proj`, `c_fc`) in 8-bit blocks
    /// (`None`: as `dtype`). Needs `dtype` `F32` and the CPU (the Q8_0 kernels are CPU-only).
    pub quantize: Option<Quantization>,
}

/// Block quantization of the weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// GGML's `Q8_0` scheme: blocks of 32 weights along the input dimension, each 32 int8
    /// values and one f16 scale (1.0625 bytes per weight). Fits every GPT-2 size (`n_embd`
    /// is a multiple of 32; k-quants would need multiples of 256, which GPT-2 XL's 1600 is
    /// not).
    Q8_0,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::cpu(DType::F32)
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
            quantize: Some(Quantization::Q8_0),
            ..Self::cpu(DType::F32)
        }
    }

    /// The dtype of the activations and the KV cache: f32 on the CPU (see
    /// [`LoadOptions::dtype`]), the weights' dtype elsewhere.
    pub(crate) fn activations(&self) -> DType {
        if self.device.is_cpu() {
            DType::F32
        } else {
            self.dtype
        }
    }

    /// Checks that the model can compute with these options.
    fn check(&self, config: &Config) -> Result<()> {
        // candle's CPU matmul has no bf16 kernel: refuse it up front rather than at the first
        // forward pass.
        let supported = match self.dtype {
            DType::F32 | DType::F16 => true,
            DType::BF16 => !self.device.is_cpu(),
            _ => false,
        };
        if !supported {
            return Err(ModelError::UnsupportedDtype(self.dtype));
        }
        if let Some(q) = self.quantize {
            if !self.device.is_cpu() {
                return Err(ModelError::BadInput {
                    expected: format!("the CPU for {q:?} weights (its kernels are CPU-only)"),
                    found: format!("{:?}", self.device.location()),
                });
            }
            if self.dtype != DType::F32 {
                return Err(ModelError::BadInput {
                    expected: format!("f32 activations with {q:?} weights"),
                    found: format!("{:?}", self.dtype),
                });
            }
            if !config.n_embd.is_multiple_of(q8::BLOCK) {
                return Err(ModelError::BadInput {
                    expected: format!("n_embd a multiple of {} for {q:?} weights", q8::BLOCK),
                    found: format!("n_embd {}", config.n_embd),
                });
            }
        }
        Ok(())
    }
}

/// The role a tensor plays, which decides how it is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `wte`: looked up by rows, and the head's `x · wteᵀ` (Q8_0 blocks along its rows).
    TokenEmbedding,
    /// A `Conv1D` weight `[in, out]` for `x · W` (Q8_0 blocks of `Wᵀ`, along `in`).
    Conv1DWeight,
    /// Everything else: `wpe`, biases, layer norms (kept in the activations' dtype).
    Small,
}

fn role(name: &str) -> Role {
    if name == "wte.weight" {
        Role::TokenEmbedding
    } else if name.ends_with(".weight")
        && [".c_attn.", ".c_proj.", ".c_fc."]
            .iter()
            .any(|m| name.contains(m))
    {
        Role::Conv1DWeight
    } else {
        Role::Small
    }
}

/// The candle dtype of a float dtype (`None` for Q8_0 blocks).
fn candle_dtype(d: gpt2_weights::Dtype) -> Option<DType> {
    match d {
        gpt2_weights::Dtype::F32 => Some(DType::F32),
        gpt2_weights::Dtype::F16 => Some(DType::F16),
        gpt2_weights::Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// A Q8_0 tensor's blocks, used where they lie (in the mapped GGUF file): blocks of the
/// canonical `[rows, cols]` matrix, or of its transpose when stored transposed (`Conv1D`
/// weights, stored `[out, in]`).
fn q8_matrix(name: &str, view: &TensorView<'_>, bytes: SharedBytes) -> Result<Matrix> {
    let len = bytes.len();
    let bad = || ModelError::BadInput {
        expected: format!("Q8_0 blocks of a 2-D tensor {name}"),
        found: format!("shape {:?}, {len} bytes", view.shape),
    };
    let (rows, cols) = match view.shape[..] {
        [r, c] if view.transposed => (c, r),
        [r, c] => (r, c),
        _ => return Err(bad()),
    };
    let blocks = q8::Q8Matrix::from_mapped(rows, cols, bytes).ok_or_else(bad)?;
    Ok(Matrix::Q8 {
        blocks: std::sync::Arc::new(blocks),
        transposed: view.transposed,
    })
}

/// A candle tensor from a tensor's little-endian bytes: one copy (straight from the map onto
/// the device), then a cast if the stored dtype differs from `dtype`. `bytes` is the same
/// data as a handle that tells whether it is a file mapping; `release`: unmap its pages
/// afterwards (for the large matrices only: unmapping part of a huge page that neighbouring
/// weights use in place would split their mapping into 4 KiB pages, slowing decode).
fn tensor_from_view(
    view: &TensorView<'_>,
    bytes: &SharedBytes,
    dtype: DType,
    device: &Device,
    release: bool,
) -> Result<Tensor> {
    if bytes.is_mapped() {
        advise(&view.data, Advice::Populate);
    }
    let stored = candle_dtype(view.dtype).ok_or_else(|| ModelError::BadInput {
        expected: "f32, f16 or bf16 values".into(),
        found: format!("{}", view.dtype),
    })?;
    let t = Tensor::from_raw_buffer(&view.data, stored, &view.shape, device)?;
    // The values now live in `t`: unmap these file pages from the process (they stay in the
    // page cache), so that the peak RSS is about one copy of the weights, not two.
    if release {
        drop_mapped(bytes);
    }
    Ok(if t.dtype() == dtype {
        t
    } else {
        t.to_dtype(dtype)?
    })
}

impl Gpt2 {
    /// Loads a model: a directory in any layout `gpt2-weights` reads (Hugging Face
    /// `model.safetensors` + `config.json`, OpenAI's TensorFlow checkpoint + `hparams.json`,
    /// or a `model.gguf` with 8-bit weights, as `gpt2 convert --dtype q8_0` writes it), or a
    /// `*.gguf` file. With [`LoadOptions::q8_0`] a GGUF file's Q8_0 blocks are used as they
    /// lie in the mapped file (no re-quantization); other options dequantize them.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use gpt2_model::{Gpt2, LoadOptions, Quantization};
    /// use gpt2_weights::gguf::{convert_to_gguf, GgufOptions};
    /// let config = gpt2_weights::Config { n_vocab: 64, n_ctx: 8, n_embd: 32, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
    /// let dir = tempfile::tempdir()?;
    /// Gpt2::random(&config, 1, &LoadOptions::default())?.save_hf(dir.path().join("m"))?;
    /// let model = Gpt2::load(dir.path().join("m"), &LoadOptions::default())?;
    /// assert_eq!(model.config(), &config);
    ///
    /// convert_to_gguf(&dir.path().join("m"), &dir.path().join("q8"), &GgufOptions::default())?;
    /// let q8 = Gpt2::load(dir.path().join("q8"), &LoadOptions::q8_0())?;
    /// assert_eq!(q8.quantization(), Some(Quantization::Q8_0));
    /// assert!(q8.weights_in_place());
    /// # Ok(()) }
    /// ```
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let weights = Weights::open(path.as_ref())?;
        Self::from_weights(&weights, opts)
    }

    /// Builds the model from opened weights. On the CPU the large f32/f16 matrices stored in
    /// the wanted dtype are used in place from the mapped file (which then stays mapped as
    /// long as the model lives, see [`Gpt2::weights_in_place`]); every other tensor is copied
    /// once into its final layout.
    pub fn from_weights(weights: &Weights, opts: &LoadOptions) -> Result<Self> {
        // A GGUF file's Q8_0 blocks are used in place: its small tensors' pages stay mapped
        // (they share huge pages with the blocks). Elsewhere every copied tensor's pages are
        // released.
        let blocks_in_place =
            weights.layout() == gpt2_weights::Layout::Gguf && opts.quantize.is_some();
        Self::build(weights.config(), opts, |name, dtype| {
            let view = weights.tensor(name)?;
            let bytes = weights.shared_bytes(name)?;
            if view.dtype == gpt2_weights::Dtype::Q8_0 {
                return q8_matrix(name, &view, bytes);
            }
            // The large matrices of a mapped file on the CPU, already in the wanted dtype
            // and layout: used in place.
            if let (&[rows, cols], true, true, true) = (
                view.shape.as_slice(),
                opts.device.is_cpu() && role(name) != Role::Small,
                candle_dtype(view.dtype) == Some(dtype) && !view.transposed,
                bytes.is_mapped(),
            ) {
                if let Some(m) = Mapped::new(bytes.clone(), dtype, rows, cols) {
                    return Ok(Matrix::Mapped(m));
                }
            }
            let canonical = view.to_dtype(view.dtype); // a copy only when stored transposed
            Ok(Matrix::Tensor(tensor_from_view(
                &canonical,
                &bytes,
                dtype,
                &opts.device,
                role(name) != Role::Small || !blocks_in_place,
            )?))
        })
    }

    /// A model whose weights are the given tensors themselves, not copies: `tensors` holds
    /// every name of `gpt2_weights::expected_tensors(config)` with its shape, all f32 on one
    /// device (the device of the model).
    ///
    /// This is how training builds its model: when the tensors are candle
    /// [`Var`](candle_core::Var)s, every forward pass takes the layers' reference paths
    /// (plain candle ops, see [`crate::nn::functional`]) and records its backward ops, so
    /// `loss.backward()` gives the gradient of every weight; and since a `Var` is updated in
    /// place, the model sees each optimizer step without being rebuilt.
    ///
    /// ```
    /// use candle_core::{DType, Device, Var};
    /// use gpt2_model::{Gpt2, LoadOptions};
    /// use gpt2_weights::Config;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = Config { n_vocab: 50, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
    /// let vars: Vec<(String, Var)> = Gpt2::random(&config, 3, &LoadOptions::default())?
    ///     .named_tensors()?
    ///     .into_iter()
    ///     .map(|(name, t)| Ok((name, Var::from_tensor(&t)?)))
    ///     .collect::<candle_core::Result<_>>()?;
    /// let tensors: Vec<(String, candle_core::Tensor)> =
    ///     vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    /// let model = Gpt2::from_tensors(&config, &tensors)?;
    /// let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
    /// let grads = model.forward(&ids)?.sum_all()?.backward()?;
    /// assert!(grads.get(&vars[0].1).is_some()); // wte's gradient
    /// # Ok(()) }
    /// ```
    pub fn from_tensors(config: &Config, tensors: &[(String, Tensor)]) -> Result<Self> {
        let device = match tensors.first() {
            Some((_, t)) => t.device().clone(),
            None => Device::Cpu,
        };
        let opts = LoadOptions {
            dtype: DType::F32,
            device,
            quantize: None,
        };
        let by_name: std::collections::HashMap<&str, &Tensor> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Self::build(config, &opts, |name, _| {
            let t = by_name.get(name).ok_or_else(|| ModelError::BadInput {
                expected: format!("a tensor named {name}"),
                found: "none among the given tensors".into(),
            })?;
            if t.dtype() != DType::F32 || !t.device().same_device(&opts.device) {
                return Err(ModelError::BadInput {
                    expected: format!("{name} in f32 on the model's device"),
                    found: format!("{:?} on {:?}", t.dtype(), t.device().location()),
                });
            }
            Ok(Matrix::Tensor((*t).clone()))
        })
    }

    /// The one builder: the model from a source of named tensors (canonical names, HF
    /// shapes; see `gpt2_weights::expected_tensors`), each asked for in the dtype it is kept
    /// in (`get(name, dtype)`; a source may answer in another storage, e.g. Q8_0 blocks,
    /// which are then converted as `opts` say). Every shape is checked.
    pub(crate) fn build(
        config: &Config,
        opts: &LoadOptions,
        get: impl FnMut(&str, DType) -> Result<Matrix>,
    ) -> Result<Self> {
        config.validate()?;
        opts.check(config)?;
        let mut src = Source {
            get,
            opts,
            expected: gpt2_weights::expected_tensors(config).into_iter().collect(),
            eps: config.layer_norm_epsilon,
        };
        let wte = Embedding::from_matrix(src.matrix("wte.weight")?)?;
        let wpe = Embedding::new(src.tensor("wpe.weight")?)?;
        let mut h = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("h.{i}");
            h.push(Block::new(
                src.layer_norm(&format!("{p}.ln_1"))?,
                CausalSelfAttention::new(
                    src.conv1d(&format!("{p}.attn.c_attn"))?,
                    src.conv1d(&format!("{p}.attn.c_proj"))?,
                    config.n_head,
                )?,
                src.layer_norm(&format!("{p}.ln_2"))?,
                Mlp::new(
                    src.conv1d(&format!("{p}.mlp.c_fc"))?,
                    src.conv1d(&format!("{p}.mlp.c_proj"))?,
                )?,
            ));
        }
        let ln_f = src.layer_norm("ln_f")?;
        Ok(Gpt2::from_parts(*config, wte, wpe, h, ln_f, opts))
    }
}

/// A NaN or an infinity in any weight is an error naming the tensor: it would turn every
/// activation into NaN, and 8-bit kernels would silently round it to zeros. Every tensor is
/// scanned once, in its final storage: copies and values used in place from the map (f32 or
/// f16), and the scales of Q8_0 blocks (a freshly quantized matrix was already refused by
/// the quantizer). The scan reads the weights once at memory bandwidth, in parallel over the
/// rayon pool. Measured on the 124M model in f32 (475 MB, 2-core AMD EPYC Zen 5 guest, page
/// cache warm): `Gpt2::load` 0.01 → 0.09 s, start → first token 0.50 → 0.54 s (the scan
/// faults in pages the first forward pass would otherwise fault in); ~1 s for 1558M in f32.
fn check_finite(name: &str, m: &Matrix) -> Result<()> {
    match m.first_non_finite()? {
        None => Ok(()),
        Some(NonFinite::Value { index, value }) => Err(ModelError::NonFinite {
            name: name.to_string(),
            index,
            value,
        }),
        Some(NonFinite::Scale { index, scale }) => Err(ModelError::NonFiniteScale {
            name: name.to_string(),
            index,
            scale,
        }),
    }
}

/// The builder's view of a source: each tensor fetched, checked against its expected shape,
/// and put into the storage the options ask for.
struct Source<'a, F> {
    get: F,
    opts: &'a LoadOptions,
    expected: std::collections::HashMap<String, Vec<usize>>,
    eps: f64,
}

impl<F: FnMut(&str, DType) -> Result<Matrix>> Source<'_, F> {
    /// Tensor `name` in its final storage.
    fn matrix(&mut self, name: &str) -> Result<Matrix> {
        let opts = self.opts;
        let role = role(name);
        let dtype = match role {
            Role::Small => opts.activations(),
            _ => opts.dtype,
        };
        let m = (self.get)(name, dtype)?;
        if let Some(shape) = self.expected.get(name) {
            if m.dims() != *shape {
                return Err(ModelError::BadInput {
                    expected: format!("tensor {name} of shape {shape:?}"),
                    found: format!("shape {:?}", m.dims()),
                });
            }
        }
        let device = &opts.device;
        let m = match (role, opts.quantize, m) {
            (Role::Small, _, m) => Matrix::Tensor(m.to_tensor(device)?.to_dtype(dtype)?),
            (_, Some(Quantization::Q8_0), m) => {
                let q = m.to_q8(role == Role::Conv1DWeight, name)?;
                m.release();
                q
            }
            (_, None, m @ Matrix::Q8 { .. }) => {
                Matrix::Tensor(m.to_tensor(device)?.to_dtype(dtype)?)
            }
            (_, None, Matrix::Tensor(t)) => Matrix::Tensor(t.contiguous()?),
            (_, None, m) => m,
        };
        check_finite(name, &m)?;
        Ok(m)
    }

    /// A small tensor (`wpe`, a bias, a layer-norm parameter).
    fn tensor(&mut self, name: &str) -> Result<Tensor> {
        self.matrix(name)?.to_tensor(&self.opts.device)
    }

    fn layer_norm(&mut self, p: &str) -> Result<LayerNorm> {
        let (w, b) = (
            self.tensor(&format!("{p}.weight"))?,
            self.tensor(&format!("{p}.bias"))?,
        );
        LayerNorm::new(w, b, self.eps)
    }

    fn conv1d(&mut self, p: &str) -> Result<Conv1D> {
        let w = self.matrix(&format!("{p}.weight"))?;
        Conv1D::from_matrix(w, self.tensor(&format!("{p}.bias"))?)
    }
}
