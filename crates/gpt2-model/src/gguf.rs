//! GGUF files: GPT-2 with its weight matrices stored in Q8_0 blocks, written once and loaded
//! without re-quantizing.
//!
//! [`convert_to_gguf`] (`gpt2 convert --dtype q8_0`) writes a model directory holding
//! `model.gguf` (GGUF v3, via candle's `gguf_file` writer) plus `config.json` and the source's
//! tokenizer files; [`Gpt2::load`] loads such a directory (or a `.gguf` file) straight into
//! the Q8_0 kernels of [`crate::q8`].
//!
//! # The file
//!
//! Tensor names and layout follow llama.cpp's GPT-2 convention (`convert_hf_to_gguf.py`,
//! `GPT2Model`), so llama.cpp's tools recognise the file:
//!
//! | GGUF tensor | GPT-2 (HF) | stored as |
//! |---|---|---|
//! | `token_embd.weight` | `wte` `[n_vocab, n_embd]` | Q8_0 `[n_vocab, n_embd]` |
//! | `position_embd.weight` | `wpe` `[n_ctx, n_embd]` | F32 |
//! | `blk.N.attn_norm.{weight,bias}` | `h.N.ln_1` | F32 |
//! | `blk.N.attn_qkv.{weight,bias}` | `h.N.attn.c_attn` `[E, 3E]` | Q8_0 `[3E, E]`, bias F32 |
//! | `blk.N.attn_output.{weight,bias}` | `h.N.attn.c_proj` `[E, E]` | Q8_0 `[E, E]`ᵀ, bias F32 |
//! | `blk.N.ffn_norm.{weight,bias}` | `h.N.ln_2` | F32 |
//! | `blk.N.ffn_up.{weight,bias}` | `h.N.mlp.c_fc` `[E, 4E]` | Q8_0 `[4E, E]`, bias F32 |
//! | `blk.N.ffn_down.{weight,bias}` | `h.N.mlp.c_proj` `[4E, E]` | Q8_0 `[E, 4E]`, bias F32 |
//! | `output_norm.{weight,bias}` | `ln_f` | F32 |
//!
//! Shapes are written outermost first (`[rows, cols]`; GGML's `ne0` is `cols`). Matrices are
//! `[out, in]`, the transpose of Hugging Face's `Conv1D` `[in, out]`, so the Q8_0 blocks of 32
//! run along `in`, the dimension the dot products sum over (which is what [`Q8Matrix`] holds).
//!
//! `output.weight` is not written: GPT-2's LM head is tied to `token_embd`, and llama.cpp's
//! GPT-2 loader treats `output.weight` as optional and falls back to `token_embd.weight`, so a
//! copy would only add `n_vocab · n_embd · 1.0625` bytes (41 MB at 124M). A file that has one
//! (llama.cpp's converter writes the duplicate) loads when it is byte-for-byte the same as
//! `token_embd.weight`; an untied head is refused.
//!
//! Metadata: `general.architecture = "gpt2"`, `general.name`, `general.file_type = 7`
//! (`MOSTLY_Q8_0`), `general.quantization_version = 2`, `gpt2.context_length`,
//! `gpt2.embedding_length`, `gpt2.feed_forward_length`, `gpt2.block_count`,
//! `gpt2.attention.head_count`, `gpt2.attention.layer_norm_epsilon`, `gpt2.vocab_size`, and,
//! when the source has a tokenizer of the model's vocabulary size, `tokenizer.ggml.model =
//! "gpt2"`, `tokenizer.ggml.pre = "gpt-2"`, `tokenizer.ggml.tokens`,
//! `tokenizer.ggml.token_type`, `tokenizer.ggml.merges` and the bos/eos ids
//! (`<|endoftext|>`). The hyperparameters alone define the model: the file needs no
//! `config.json`.
//!
//! # Quantization
//!
//! The blocks are [`Q8Matrix::from_rows`] / [`Q8Matrix::from_transposed`] of the f32 weights,
//! exactly what [`LoadOptions::q8_0`] computes at load: GGML's `block_q8_0` (the scale as a
//! little-endian f16, then the 32 `i8`, computed with the f32 scale as in GGML's own
//! quantizer) is also the in-memory layout of [`Q8Matrix`]. A model loaded from GGUF
//! therefore equals the quantize-at-load model, bit for bit (`tests/gguf.rs`), and loading
//! uses the file's blocks in place, from the memory map.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use gpt2_tokenizer::Tokenizer;
use gpt2_weights::{Config, SharedBytes, Weights, WeightsError};

use crate::attention::CausalSelfAttention;
use crate::block::Block;
use crate::embedding::Embeddings;
use crate::error::{ModelError, Result};
use crate::layer_norm::LayerNorm;
use crate::linear::Conv1D;
use crate::mlp::Mlp;
use crate::model::{Gpt2, LoadOptions, Quantization};
use crate::q8::{Q8Matrix, BLOCK};

/// The weight file of a GGUF model directory.
pub const GGUF_FILE: &str = "model.gguf";

/// The GGUF version written (candle writes 2; for little-endian files 3 is the same layout,
/// it only added big-endian files).
pub const GGUF_VERSION: u32 = 3;

/// `general.file_type` of a file whose matrices are Q8_0 (llama.cpp's `LLAMA_FTYPE_MOSTLY_Q8_0`).
pub const FILE_TYPE_MOSTLY_Q8_0: u32 = 7;

/// Everything that can be wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Not a GGUF file candle can parse (bad magic, unknown version, a header cut short...).
    #[error("{}: not a readable GGUF file: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A metadata entry is missing or has the wrong type or value.
    #[error("{}: metadata `{key}`: expected {expected}, found {found}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("{}: tensor `{name}` is missing (a GPT-2 GGUF needs {count} tensors for these hyperparameters)", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The GGUF tensor name.
        name: String,
        /// How many tensors the model needs.
        count: usize,
    },
    /// A tensor has the wrong shape for the hyperparameters.
    #[error("{}: tensor `{name}` has shape {found:?} (outermost first); expected {expected:?}", path.display())]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The GGUF tensor name.
        name: String,
        /// The expected shape, outermost dimension first.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a type this reader does not load.
    #[error("{}: tensor `{name}` is stored as {found}; expected {expected} (this reader loads the files `gpt2 convert --dtype q8_0` writes: Q8_0 matrices, F32 vectors and position embeddings)", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The GGUF tensor name.
        name: String,
        /// The expected GGML type.
        expected: String,
        /// The type in the file.
        found: String,
    },
    /// A tensor's data runs past the end of the file.
    #[error("{}: truncated: tensor `{name}` needs bytes {start}..{end}, but the file has {len} bytes", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The GGUF tensor name.
        name: String,
        /// First byte of the tensor's data.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// Tensors that are not part of GPT-2.
    #[error("{}: unexpected tensors {names:?} (not part of GPT-2)", path.display())]
    UnexpectedTensors {
        /// The file.
        path: PathBuf,
        /// Their names.
        names: Vec<String>,
    },
    /// `output.weight` differs from `token_embd.weight`: GPT-2's head is tied to the embedding.
    #[error("{}: `output.weight` differs from `token_embd.weight`; GPT-2's LM head must be tied to the token embedding (an untied head is not supported)", path.display())]
    UntiedOutput {
        /// The file.
        path: PathBuf,
    },
    /// The tokenizer stored in the file (or the source directory's) is unusable.
    #[error("{}: tokenizer: {source}", path.display())]
    Tokenizer {
        /// The file or directory.
        path: PathBuf,
        /// The tokenizer's error.
        source: gpt2_tokenizer::Error,
    },
    /// A weight too large for an f16 block scale (`max |w| / 127` above 65504).
    #[error("tensor `{name}`: a block of weights reaches {amax:e}, too large for Q8_0's f16 scale (at most 65504 · 127)")]
    ScaleOverflow {
        /// The canonical tensor name.
        name: String,
        /// The block's `max |w|`.
        amax: f32,
    },
}

/// How a GPT-2 tensor is stored in the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// `wte` `[n_vocab, n_embd]`: Q8_0, the same `[rows, k]`.
    Embedding,
    /// A `Conv1D` weight `[in, out]`: Q8_0 `[out, in]`.
    Conv1D,
    /// F32, the same shape.
    F32,
}

/// The GGUF name of a canonical GPT-2 tensor name and how it is stored.
fn gguf_name(canonical: &str) -> Option<(String, Stored)> {
    let (base, suffix) = canonical.rsplit_once('.')?;
    let stored = |conv: bool| {
        if suffix == "bias" || !conv {
            Stored::F32
        } else {
            Stored::Conv1D
        }
    };
    let (name, how) = match base {
        "wte" => ("token_embd".to_string(), Stored::Embedding),
        "wpe" => ("position_embd".to_string(), Stored::F32),
        "ln_f" => ("output_norm".to_string(), Stored::F32),
        _ => {
            let rest = base.strip_prefix("h.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let (part, conv) = match part {
                "ln_1" => ("attn_norm", false),
                "attn.c_attn" => ("attn_qkv", true),
                "attn.c_proj" => ("attn_output", true),
                "ln_2" => ("ffn_norm", false),
                "mlp.c_fc" => ("ffn_up", true),
                "mlp.c_proj" => ("ffn_down", true),
                _ => return None,
            };
            (format!("blk.{layer}.{part}"), stored(conv))
        }
    };
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    Some((format!("{name}.{suffix}"), how))
}

/// The tensors of `config` as the file stores them: `(canonical name, GGUF name, how, shape
/// in the file)`.
fn layout(config: &Config) -> Vec<(String, String, Stored, Vec<usize>)> {
    gpt2_weights::expected_tensors(config)
        .into_iter()
        .filter_map(|(canonical, shape)| {
            let (name, how) = gguf_name(&canonical)?;
            let stored_shape = match how {
                Stored::Conv1D => shape.iter().rev().copied().collect(),
                _ => shape,
            };
            Some((canonical, name, how, stored_shape))
        })
        .collect()
}

/// What to write besides the weights.
#[derive(Debug, Clone, Default)]
pub struct GgufOptions<'a> {
    /// `general.name` (e.g. the source directory's name).
    pub name: String,
    /// The tokenizer to store (`tokenizer.ggml.*`); left out when `None` or when its
    /// vocabulary size differs from the model's.
    pub tokenizer: Option<&'a Tokenizer>,
}

fn n_embd_check(config: &Config) -> Result<()> {
    if !config.n_embd.is_multiple_of(BLOCK) {
        return Err(ModelError::BadInput {
            expected: format!("n_embd a multiple of {BLOCK} for Q8_0 weights"),
            found: format!("n_embd {}", config.n_embd),
        });
    }
    Ok(())
}

fn u32_value(v: usize) -> Value {
    Value::U32(u32::try_from(v).unwrap_or(u32::MAX))
}

/// The metadata entries of a file for `config`.
fn metadata(config: &Config, opts: &GgufOptions<'_>) -> Result<Vec<(String, Value)>> {
    let mut md = vec![
        ("general.architecture".into(), Value::String("gpt2".into())),
        ("general.name".into(), Value::String(opts.name.clone())),
        (
            "general.file_type".into(),
            Value::U32(FILE_TYPE_MOSTLY_Q8_0),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
        ("gpt2.context_length".into(), u32_value(config.n_ctx)),
        ("gpt2.embedding_length".into(), u32_value(config.n_embd)),
        (
            "gpt2.feed_forward_length".into(),
            u32_value(4 * config.n_embd),
        ),
        ("gpt2.block_count".into(), u32_value(config.n_layer)),
        ("gpt2.attention.head_count".into(), u32_value(config.n_head)),
        (
            "gpt2.attention.layer_norm_epsilon".into(),
            Value::F32(config.layer_norm_epsilon as f32),
        ),
        ("gpt2.vocab_size".into(), u32_value(config.n_vocab)),
    ];
    if let Some(tok) = opts.tokenizer.filter(|t| t.vocab_size() == config.n_vocab) {
        let eot = tok.end_of_text();
        let mut tokens = Vec::with_capacity(tok.vocab_size());
        let mut types = Vec::with_capacity(tok.vocab_size());
        for id in 0..tok.vocab_size() as u32 {
            let spelling = tok
                .token_spelling(id)
                .map_err(|source| GgufError::Tokenizer {
                    path: PathBuf::from("tokenizer"),
                    source,
                })?;
            tokens.push(Value::String(spelling.to_string()));
            // llama_token_type: 1 normal, 3 control.
            types.push(Value::I32(if Some(id) == eot { 3 } else { 1 }));
        }
        let merges = tok
            .merges()
            .map(|(a, b)| Value::String(format!("{a} {b}")))
            .collect();
        md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
        md.push(("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())));
        md.push(("tokenizer.ggml.tokens".into(), Value::Array(tokens)));
        md.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
        md.push(("tokenizer.ggml.merges".into(), Value::Array(merges)));
        if let Some(eot) = eot {
            md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(eot)));
            md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(eot)));
        }
    }
    Ok(md)
}

/// `q`'s GGML `block_q8_0`s as a candle tensor to write; `values` are the weights `q` was
/// quantized from (for the error when one is too large for an f16 scale).
fn q8_0_qtensor(q: &Q8Matrix, name: &str, values: &[f32]) -> Result<QTensor> {
    if q.scales().iter().any(|d| !d.is_finite()) {
        // The block holding the largest weight overflows, so that is the one to name.
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        return Err(GgufError::ScaleOverflow {
            name: name.to_string(),
            amax,
        }
        .into());
    }
    let blocks = q.blocks();
    // Copied into u16s: candle reads the bytes as `BlockQ8_0`s, which are 2-byte aligned.
    let mut buf = vec![0u16; blocks.len() / 2];
    bytemuck::cast_slice_mut::<u16, u8>(&mut buf).copy_from_slice(blocks);
    let bytes: &[u8] = bytemuck::cast_slice(&buf);
    let storage = QStorage::Cpu(GgmlDType::Q8_0.from_data(Cow::Borrowed(bytes)));
    Ok(QTensor::new(storage, (q.rows(), q.k()))?)
}

/// Writes `weights` as a Q8_0 GGUF file to `w` (`path` names it in errors).
fn write_gguf<W: Write + Seek>(
    weights: &Weights,
    opts: &GgufOptions<'_>,
    w: &mut W,
    path: &Path,
) -> Result<()> {
    let config = weights.config();
    config.validate()?;
    n_embd_check(config)?;
    let md = metadata(config, opts)?;
    let mut tensors = Vec::new();
    for (canonical, name, how, shape) in layout(config) {
        let view = weights.tensor(&canonical)?;
        let values = view.to_f32_vec();
        let t = match how {
            Stored::Embedding => {
                let q = Q8Matrix::from_rows(&values, shape[0], shape[1]);
                q8_0_qtensor(&q, &canonical, &values)?
            }
            Stored::Conv1D => {
                // [in, out] → [out, in] = shape.
                let q = Q8Matrix::from_transposed(&values, shape[1], shape[0]);
                q8_0_qtensor(&q, &canonical, &values)?
            }
            Stored::F32 => QTensor::quantize(
                &Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?,
                GgmlDType::F32,
            )?,
        };
        tensors.push((name, t));
    }
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(w, &md_refs, &t_refs)?;
    // candle writes version 2; the little-endian layout of version 3 is the same.
    let io = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    w.seek(SeekFrom::Start(4)).map_err(io)?;
    w.write_all(&GGUF_VERSION.to_le_bytes()).map_err(io)?;
    w.seek(SeekFrom::End(0)).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(())
}

/// Writes `weights` (any layout and storage type, read as f32) as a Q8_0 GGUF file at `path`,
/// atomically: into a temporary file beside it, renamed into place when complete. `path` must
/// not exist, and `n_embd` must be a multiple of 32.
///
/// ```
/// use gpt2_model::gguf::{save_gguf, GgufFile, GgufOptions};
/// use gpt2_model::{Gpt2, LoadOptions, Quantization};
/// use gpt2_weights::{Config, Weights};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config { n_vocab: 64, n_ctx: 8, n_embd: 32, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let dir = tempfile::tempdir()?;
/// Gpt2::random(&config, 0, &LoadOptions::default())?.save_hf(dir.path().join("f32"))?;
///
/// let weights = Weights::open(&dir.path().join("f32"))?;
/// let path = dir.path().join("tiny.gguf");
/// save_gguf(&weights, &path, &GgufOptions { name: "tiny".into(), tokenizer: None })?;
/// assert_eq!(GgufFile::open(&path)?.config(), &config);
/// let model = Gpt2::load(&path, &LoadOptions::q8_0())?;
/// assert_eq!(model.quantization(), Some(Quantization::Q8_0));
/// # Ok(()) }
/// ```
pub fn save_gguf(weights: &Weights, path: &Path, opts: &GgufOptions<'_>) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(WeightsError::DestinationExists(path.to_path_buf()).into());
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GgufError::Io { path, source }
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".gguf.partial-")
        .tempfile_in(&parent)
        .map_err(io(&parent))?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        write_gguf(weights, opts, &mut w, path)?;
    }
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            ModelError::from(WeightsError::DestinationExists(path.to_path_buf()))
        } else {
            io(path)(e.error).into()
        }
    })?;
    Ok(())
}

/// Converts a model directory of either layout (f32/f16/bf16) into a GGUF model directory at
/// `to`: `model.gguf` (Q8_0 matrices, see the module docs), `config.json`, and the tokenizer
/// files [`gpt2_weights::convert`] copies. Written atomically like
/// [`gpt2_weights::save_hf`] (nothing at `to` on any error); `to` must not exist and `n_embd`
/// must be a multiple of 32 (checked before anything is written).
///
/// The tokenizer stored in the file is the source directory's (any layout), or GPT-2's
/// embedded one when the directory has none and the model has GPT-2's 50257 tokens.
///
/// ```no_run
/// gpt2_model::gguf::convert_to_gguf("models/124M".as_ref(), "models/124M-q8_0".as_ref())?;
/// # Ok::<(), gpt2_model::ModelError>(())
/// ```
pub fn convert_to_gguf(from: &Path, to: &Path) -> Result<()> {
    if to.symlink_metadata().is_ok() {
        return Err(WeightsError::DestinationExists(to.to_path_buf()).into());
    }
    let weights = Weights::open(from)?;
    let config = *weights.config();
    config.validate()?;
    n_embd_check(&config)?;
    let tokenizer =
        match gpt2_tokenizer::Layout::detect(from) {
            Ok(layout) => Some(Tokenizer::from_dir_with_layout(from, layout).map_err(
                |source| GgufError::Tokenizer {
                    path: from.to_path_buf(),
                    source,
                },
            )?),
            Err(gpt2_tokenizer::Error::NoTokenizerFiles { .. })
                if config.n_vocab == gpt2_tokenizer::GPT2_VOCAB_SIZE =>
            {
                Some(Tokenizer::gpt2())
            }
            Err(gpt2_tokenizer::Error::NoTokenizerFiles { .. }) => None,
            Err(source) => {
                return Err(GgufError::Tokenizer {
                    path: from.to_path_buf(),
                    source,
                }
                .into())
            }
        };
    let name = from
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "gpt2".into());
    let opts = GgufOptions {
        name,
        tokenizer: tokenizer.as_ref(),
    };
    let files = gpt2_weights::tokenizer_files(from, weights.layout());
    gpt2_weights::save_dir_with(to, &config, &files, &[GGUF_FILE], |tmp| {
        let path = tmp.join(GGUF_FILE);
        let file = File::create(&path).map_err(|source| GgufError::Io {
            path: path.clone(),
            source,
        })?;
        write_gguf(&weights, &opts, &mut BufWriter::new(file), &path)?;
        Ok::<_, ModelError>(vec![path])
    })
}

/// The GGUF file to load for `path`: `path` itself when it is a file named `*.gguf`, or
/// `path/model.gguf` when `path` is a directory that has one. [`Gpt2::load`] loads that
/// instead of the directory's other weights.
///
/// ```
/// use gpt2_model::gguf::find_gguf;
/// let dir = tempfile::tempdir()?;
/// assert_eq!(find_gguf(dir.path()), None);
/// std::fs::write(dir.path().join("model.gguf"), b"")?;
/// assert_eq!(find_gguf(dir.path()), Some(dir.path().join("model.gguf")));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn find_gguf(path: &Path) -> Option<PathBuf> {
    let is_gguf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if path.is_file() && is_gguf {
        return Some(path.to_path_buf());
    }
    let inside = path.join(GGUF_FILE);
    (path.is_dir() && inside.is_file()).then_some(inside)
}

/// One tensor of a GGUF file, as [`GgufFile::tensors`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    /// The GGUF name (`blk.0.attn_qkv.weight`).
    pub name: String,
    /// The GPT-2 name (`h.0.attn.c_attn.weight`).
    pub canonical: String,
    /// The GGML type (`Q8_0`, `F32`).
    pub dtype: String,
    /// The stored shape, outermost dimension first (`[out, in]` for matrices).
    pub shape: Vec<usize>,
}

/// An opened, checked GGUF model: its metadata and tensor table have been read and every
/// tensor the model needs is there with the right type, shape and extent. Tensor data is read
/// by [`GgufFile::load`].
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    content: gguf_file::Content,
    config: Config,
    file_len: u64,
    tensors: Vec<(String, String, Stored, Vec<usize>)>,
    output: bool,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stored::Embedding | Stored::Conv1D => "Q8_0",
            Stored::F32 => "F32",
        })
    }
}

fn dtype_name(d: GgmlDType) -> String {
    format!("{d:?}")
}

impl GgufFile {
    /// Reads and checks the header of a GGUF file: `general.architecture` must be `gpt2`, the
    /// hyperparameters present and valid, and every tensor there with the type, shape and
    /// extent the hyperparameters give (see the module docs).
    ///
    /// # Errors
    /// [`GgufError`] (inside [`ModelError::Gguf`]) naming the file and what is wrong;
    /// [`ModelError::Weights`] for impossible hyperparameters.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| GgufError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let md = |key: &str| content.metadata.get(key);
        let bad = |key: &str, expected: &str, found: String| GgufError::Metadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            expected: expected.to_string(),
            found,
        };
        match md("general.architecture") {
            Some(Value::String(a)) if a == "gpt2" => {}
            Some(Value::String(a)) => {
                return Err(bad("general.architecture", "\"gpt2\"", format!("{a:?}")).into())
            }
            Some(v) => return Err(bad("general.architecture", "\"gpt2\"", format!("{v:?}")).into()),
            None => return Err(bad("general.architecture", "\"gpt2\"", "nothing".into()).into()),
        }
        let uint = |key: &str| -> Result<usize> {
            let v = match md(key) {
                Some(Value::U8(v)) => Some(u64::from(*v)),
                Some(Value::U16(v)) => Some(u64::from(*v)),
                Some(Value::U32(v)) => Some(u64::from(*v)),
                Some(Value::U64(v)) => Some(*v),
                Some(Value::I32(v)) => u64::try_from(*v).ok(),
                Some(Value::I64(v)) => u64::try_from(*v).ok(),
                _ => None,
            };
            v.and_then(|v| usize::try_from(v).ok()).ok_or_else(|| {
                let found = md(key).map_or("nothing".to_string(), |v| format!("{v:?}"));
                bad(key, "a non-negative integer", found).into()
            })
        };
        let eps = match md("gpt2.attention.layer_norm_epsilon") {
            // The shortest decimal that reads back as this f32 (1e-5, not 9.99999974e-6).
            Some(Value::F32(v)) => v.to_string().parse().unwrap_or(f64::from(*v)),
            Some(Value::F64(v)) => *v,
            other => {
                let found = other.map_or("nothing".to_string(), |v| format!("{v:?}"));
                return Err(bad("gpt2.attention.layer_norm_epsilon", "a float", found).into());
            }
        };
        let n_vocab = match content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims().first().copied().unwrap_or(0),
            None => {
                return Err(GgufError::MissingTensor {
                    path: path.to_path_buf(),
                    name: "token_embd.weight".into(),
                    count: 0,
                }
                .into())
            }
        };
        let config = Config {
            n_vocab,
            n_ctx: uint("gpt2.context_length")?,
            n_embd: uint("gpt2.embedding_length")?,
            n_head: uint("gpt2.attention.head_count")?,
            n_layer: uint("gpt2.block_count")?,
            layer_norm_epsilon: eps,
        };
        config.validate()?;
        let ff = uint("gpt2.feed_forward_length")?;
        if ff != 4 * config.n_embd {
            return Err(bad(
                "gpt2.feed_forward_length",
                &format!("4 · n_embd = {} (GPT-2's MLP)", 4 * config.n_embd),
                ff.to_string(),
            )
            .into());
        }
        let tensors = layout(&config);
        let mut unexpected: HashSet<&str> =
            content.tensor_infos.keys().map(String::as_str).collect();
        let extent = |name: &str, info: &gguf_file::TensorInfo| -> Result<()> {
            let elems = info.shape.elem_count() as u64;
            let d = info.ggml_dtype;
            let size = elems / d.block_size() as u64 * d.type_size() as u64;
            let start = content.tensor_data_offset.checked_add(info.offset);
            let end = start.and_then(|s| s.checked_add(size));
            match (start, end) {
                (Some(_), Some(end)) if end <= file_len => Ok(()),
                _ => Err(GgufError::Truncated {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len: file_len,
                }
                .into()),
            }
        };
        for (_, name, how, shape) in &tensors {
            unexpected.remove(name.as_str());
            let info = content
                .tensor_infos
                .get(name)
                .ok_or_else(|| GgufError::MissingTensor {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    count: tensors.len(),
                })?;
            let want = match how {
                Stored::F32 => GgmlDType::F32,
                _ => GgmlDType::Q8_0,
            };
            if info.ggml_dtype != want {
                return Err(GgufError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    expected: dtype_name(want),
                    found: dtype_name(info.ggml_dtype),
                }
                .into());
            }
            if info.shape.dims() != shape.as_slice() {
                return Err(GgufError::WrongShape {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    expected: shape.clone(),
                    found: info.shape.dims().to_vec(),
                }
                .into());
            }
            extent(name, info)?;
        }
        // llama.cpp's converter writes the tied head as `output.weight`: allowed when it is the
        // embedding (its bytes are compared when loading).
        let output = match content.tensor_infos.get("output.weight") {
            Some(info) => {
                unexpected.remove("output.weight");
                let embd = &content.tensor_infos["token_embd.weight"];
                if info.ggml_dtype != embd.ggml_dtype || info.shape != embd.shape {
                    return Err(GgufError::UntiedOutput {
                        path: path.to_path_buf(),
                    }
                    .into());
                }
                extent("output.weight", info)?;
                true
            }
            None => false,
        };
        if !unexpected.is_empty() {
            let mut names: Vec<String> = unexpected.into_iter().map(str::to_string).collect();
            names.sort();
            return Err(GgufError::UnexpectedTensors {
                path: path.to_path_buf(),
                names,
            }
            .into());
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            config,
            file_len,
            tensors,
            output,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hyperparameters (from the metadata; `n_vocab` from `token_embd.weight`).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// `general.name`, if the file has one.
    pub fn name(&self) -> Option<&str> {
        match self.content.metadata.get("general.name") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The GGUF version (1, 2 or 3).
    pub fn version(&self) -> u32 {
        match self.content.magic {
            gguf_file::VersionedMagic::GgufV1 => 1,
            gguf_file::VersionedMagic::GgufV2 => 2,
            gguf_file::VersionedMagic::GgufV3 => 3,
        }
    }

    /// The model's tensors in model order (the same order as [`Gpt2::named_tensors`]).
    pub fn tensors(&self) -> Vec<GgufTensor> {
        self.tensors
            .iter()
            .map(|(canonical, name, how, shape)| GgufTensor {
                name: name.clone(),
                canonical: canonical.clone(),
                dtype: format!("{how:?}"),
                shape: shape.clone(),
            })
            .collect()
    }

    /// The number of parameters (every element of every tensor).
    pub fn num_parameters(&self) -> usize {
        self.tensors
            .iter()
            .map(|(_, _, _, s)| s.iter().product::<usize>())
            .sum()
    }

    /// The tokenizer stored in the file (`tokenizer.ggml.tokens` and `tokenizer.ggml.merges`
    /// of a `gpt2` tokenizer), or `None` when it has none.
    ///
    /// # Errors
    /// When the stored lists are malformed or do not make a GPT-2 byte-level BPE tokenizer.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        let md = &self.content.metadata;
        let bad = |key: &str, expected: &str, found: String| GgufError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
            found,
        };
        let (Some(tokens), Some(merges)) = (
            md.get("tokenizer.ggml.tokens"),
            md.get("tokenizer.ggml.merges"),
        ) else {
            return Ok(None);
        };
        match md.get("tokenizer.ggml.model") {
            Some(Value::String(m)) if m == "gpt2" => {}
            other => {
                let found = other.map_or("nothing".to_string(), |v| format!("{v:?}"));
                return Err(bad("tokenizer.ggml.model", "\"gpt2\"", found).into());
            }
        }
        let strings = |key: &str, v: &Value| -> Result<Vec<String>> {
            let Value::Array(items) = v else {
                return Err(bad(key, "an array of strings", "another type".into()).into());
            };
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(bad(key, "an array of strings", "another type".into()).into()),
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens", tokens)?;
        let merges = strings("tokenizer.ggml.merges", merges)?
            .into_iter()
            .map(|m| match m.split_once(' ') {
                Some((a, b)) => Ok((a.to_string(), b.to_string())),
                None => Err(bad(
                    "tokenizer.ggml.merges",
                    "merges of two tokens separated by a space",
                    format!("{m:?}"),
                )
                .into()),
            })
            .collect::<Result<Vec<_>>>()?;
        let source = format!("{} (tokenizer.ggml.*)", self.path.display());
        Tokenizer::from_tokens_and_merges(tokens, merges, &source)
            .map(Some)
            .map_err(|source| {
                GgufError::Tokenizer {
                    path: self.path.clone(),
                    source,
                }
                .into()
            })
    }

    /// The bytes of tensor `name` in the mapped file (checked at [`open`](Self::open) to lie
    /// inside it; checked again here against the map, in case the file has shrunk since).
    fn tensor_bytes(&self, file: &SharedBytes, name: &str) -> Result<SharedBytes> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(GgufError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                count: self.tensors.len(),
            }
            .into());
        };
        let d = info.ggml_dtype;
        let size = info.shape.elem_count() / d.block_size() * d.type_size();
        let start = self.content.tensor_data_offset + info.offset;
        usize::try_from(start)
            .ok()
            .and_then(|start| file.slice(start, size))
            .ok_or_else(|| {
                GgufError::Truncated {
                    path: self.path.clone(),
                    name: name.to_string(),
                    start,
                    end: start.saturating_add(size as u64),
                    len: file.len() as u64,
                }
                .into()
            })
    }

    /// Builds the model. With [`LoadOptions::q8_0`] (`quantize: Some(Q8_0)`, f32, CPU) the
    /// Q8_0 matrices are used in place in the mapped file (GGML's `block_q8_0` is the
    /// layout [`Q8Matrix`] computes with): nothing is copied or re-quantized, so loading takes
    /// milliseconds and the weights cost no memory beyond the page cache. Any other options
    /// dequantize the matrices (to `opts.dtype` on `opts.device`): the model then computes
    /// with the Q8_0-rounded weights in f32/f16, on any device, at f32/f16 speed.
    ///
    /// As with every mapped model, the file must not be truncated or rewritten in place
    /// while the model lives (replacing it by a rename is fine).
    ///
    /// # Errors
    /// I/O errors, an `output.weight` that differs from `token_embd.weight`, or options the
    /// model does not support (e.g. Q8_0 on a GPU).
    pub fn load(&self, opts: &LoadOptions) -> Result<Gpt2> {
        let file = SharedBytes::map_file(&self.path).map_err(|e| match e {
            WeightsError::Io { source, .. } => GgufError::Io {
                path: self.path.clone(),
                source,
            }
            .into(),
            other => ModelError::from(other),
        })?;
        if self.output {
            let a = self.tensor_bytes(&file, "token_embd.weight")?;
            let b = self.tensor_bytes(&file, "output.weight")?;
            if *a != *b {
                return Err(GgufError::UntiedOutput {
                    path: self.path.clone(),
                }
                .into());
            }
        }
        let by_canonical: HashMap<&str, (&str, Stored, &[usize])> = self
            .tensors
            .iter()
            .map(|(c, n, h, s)| (c.as_str(), (n.as_str(), *h, s.as_slice())))
            .collect();
        let read = |canonical: &str| -> Result<(Stored, Vec<usize>, SharedBytes)> {
            let Some(&(name, how, shape)) = by_canonical.get(canonical) else {
                return Err(ModelError::BadInput {
                    expected: "a GPT-2 tensor name".into(),
                    found: canonical.to_string(),
                });
            };
            Ok((how, shape.to_vec(), self.tensor_bytes(&file, name)?))
        };
        if opts.quantize == Some(Quantization::Q8_0) {
            return self.load_q8_0(opts, read);
        }
        // Dequantized: the tensors in HF's shapes, through the model's usual builder.
        Gpt2::build(&self.config, opts, |canonical, dtype| {
            let (how, shape, bytes) = read(canonical)?;
            let t = match how {
                Stored::F32 => Tensor::from_vec(f32s(&bytes), shape.as_slice(), &Device::Cpu)?,
                Stored::Embedding | Stored::Conv1D => {
                    let q = self.q8_matrix(canonical, &shape, bytes)?;
                    let t = Tensor::from_vec(q.dequantize(), shape.as_slice(), &Device::Cpu)?;
                    if how == Stored::Conv1D {
                        t.t()?.contiguous()? // [out, in] → [in, out]
                    } else {
                        t
                    }
                }
            };
            Ok(t.to_device(&opts.device)?.to_dtype(dtype)?.into())
        })
    }

    fn q8_matrix(&self, canonical: &str, shape: &[usize], bytes: SharedBytes) -> Result<Q8Matrix> {
        Q8Matrix::from_mapped(shape[0], shape[1], bytes).ok_or_else(|| ModelError::BadInput {
            expected: format!("Q8_0 blocks of {canonical} {shape:?}"),
            found: "a different number of blocks".into(),
        })
    }

    fn load_q8_0(
        &self,
        opts: &LoadOptions,
        read: impl Fn(&str) -> Result<(Stored, Vec<usize>, SharedBytes)>,
    ) -> Result<Gpt2> {
        if !opts.device.is_cpu() {
            return Err(ModelError::BadInput {
                expected: "the CPU for Q8_0 weights (its kernels are CPU-only)".into(),
                found: format!("{:?}", opts.device.location()),
            });
        }
        if opts.dtype != DType::F32 {
            return Err(ModelError::BadInput {
                expected: "f32 activations with Q8_0 weights".into(),
                found: format!("{:?}", opts.dtype),
            });
        }
        let dev = Device::Cpu;
        let mut vectors: HashMap<String, Tensor> = HashMap::new();
        let mut matrices: HashMap<String, Arc<Q8Matrix>> = HashMap::new();
        for (canonical, _, how, _) in &self.tensors {
            let (_, shape, bytes) = read(canonical)?;
            if *how == Stored::F32 {
                let t = Tensor::from_vec(f32s(&bytes), shape.as_slice(), &dev)?;
                vectors.insert(canonical.clone(), t);
            } else {
                let q = self.q8_matrix(canonical, &shape, bytes)?;
                matrices.insert(canonical.clone(), Arc::new(q));
            }
        }
        let missing = |name: &str| ModelError::BadInput {
            expected: format!("tensor {name}"),
            found: "nothing".into(),
        };
        let mut vector = |name: String| vectors.remove(&name).ok_or_else(|| missing(&name));
        let mut matrix = |name: String| matrices.remove(&name).ok_or_else(|| missing(&name));
        let eps = self.config.layer_norm_epsilon;
        let empty = || Tensor::zeros(0, DType::F32, &dev);
        let mut h = Vec::with_capacity(self.config.n_layer);
        for i in 0..self.config.n_layer {
            let mut ln = |p: &str| -> Result<LayerNorm> {
                Ok(LayerNorm::new(
                    vector(format!("h.{i}.{p}.weight"))?,
                    vector(format!("h.{i}.{p}.bias"))?,
                    eps,
                ))
            };
            let (ln_1, ln_2) = (ln("ln_1")?, ln("ln_2")?);
            let mut conv = |p: &str| -> Result<Conv1D> {
                Ok(Conv1D {
                    weight: empty()?.into(),
                    bias: vector(format!("h.{i}.{p}.bias"))?,
                    quantized: Some(matrix(format!("h.{i}.{p}.weight"))?),
                })
            };
            h.push(Block {
                ln_1,
                attn: CausalSelfAttention {
                    c_attn: conv("attn.c_attn")?,
                    c_proj: conv("attn.c_proj")?,
                    n_head: self.config.n_head,
                },
                ln_2,
                mlp: Mlp {
                    c_fc: conv("mlp.c_fc")?,
                    c_proj: conv("mlp.c_proj")?,
                },
            });
        }
        let ln_f = LayerNorm::new(
            vector("ln_f.weight".into())?,
            vector("ln_f.bias".into())?,
            eps,
        );
        let embeddings = Embeddings {
            wte: empty()?.into(),
            wpe: vector("wpe.weight".into())?,
            wte_quantized: Some(matrix("wte.weight".into())?),
        };
        Ok(Gpt2::from_layers(self.config, embeddings, h, ln_f, opts))
    }
}

/// Little-endian f32s.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quantize-at-load model with its scales rounded to f16, built layer by layer.
    fn f16_scale_reference(weights: &Weights) -> Gpt2 {
        let config = *weights.config();
        let dev = Device::Cpu;
        let vals = |n: &str| weights.tensor(n).expect("tensor").to_f32_vec();
        let vector = |n: &str| {
            let shape = weights.tensor(n).expect("tensor").shape.clone();
            Tensor::from_vec(vals(n), shape, &dev).expect("tensor")
        };
        let conv = |p: &str| {
            let w = weights.tensor(&format!("{p}.weight")).expect("tensor");
            let q =
                Q8Matrix::from_transposed(&vals(&format!("{p}.weight")), w.shape[0], w.shape[1]);
            Conv1D {
                weight: Tensor::zeros(0, DType::F32, &dev).expect("zeros").into(),
                bias: vector(&format!("{p}.bias")),
                quantized: Some(Arc::new(q)),
            }
        };
        let ln = |p: &str| {
            LayerNorm::new(
                vector(&format!("{p}.weight")),
                vector(&format!("{p}.bias")),
                config.layer_norm_epsilon,
            )
        };
        let h = (0..config.n_layer)
            .map(|i| Block {
                ln_1: ln(&format!("h.{i}.ln_1")),
                attn: CausalSelfAttention {
                    c_attn: conv(&format!("h.{i}.attn.c_attn")),
                    c_proj: conv(&format!("h.{i}.attn.c_proj")),
                    n_head: config.n_head,
                },
                ln_2: ln(&format!("h.{i}.ln_2")),
                mlp: Mlp {
                    c_fc: conv(&format!("h.{i}.mlp.c_fc")),
                    c_proj: conv(&format!("h.{i}.mlp.c_proj")),
                },
            })
            .collect();
        let wte = Q8Matrix::from_rows(&vals("wte.weight"), config.n_vocab, config.n_embd);
        let embeddings = Embeddings {
            wte: Tensor::zeros(0, DType::F32, &dev).expect("zeros").into(),
            wpe: vector("wpe.weight"),
            wte_quantized: Some(Arc::new(wte)),
        };
        Gpt2::from_layers(config, embeddings, h, ln("ln_f"), &LoadOptions::q8_0())
    }

    #[test]
    fn a_weight_too_large_for_an_f16_scale_is_an_error_naming_it() {
        let mut values = vec![0.5f32; 64];
        values[40] = -1e8; // d = 1e8 / 127 > 65504
        let q = Q8Matrix::from_rows(&values, 1, 64);
        match q8_0_qtensor(&q, "h.0.mlp.c_fc.weight", &values) {
            Err(ModelError::Gguf(GgufError::ScaleOverflow { name, amax })) => {
                assert_eq!(name, "h.0.mlp.c_fc.weight");
                assert_eq!(amax, 1e8);
            }
            other => panic!("expected ScaleOverflow, got {:?}", other.map(|_| ())),
        }
        values[40] = 1000.0;
        let q = Q8Matrix::from_rows(&values, 1, 64);
        assert!(q8_0_qtensor(&q, "x", &values).is_ok());
    }

    #[test]
    fn names_follow_llama_cpp() {
        for (canonical, name) in [
            ("wte.weight", "token_embd.weight"),
            ("wpe.weight", "position_embd.weight"),
            ("h.3.ln_1.bias", "blk.3.attn_norm.bias"),
            ("h.0.attn.c_attn.weight", "blk.0.attn_qkv.weight"),
            ("h.0.attn.c_proj.bias", "blk.0.attn_output.bias"),
            ("h.11.ln_2.weight", "blk.11.ffn_norm.weight"),
            ("h.1.mlp.c_fc.weight", "blk.1.ffn_up.weight"),
            ("h.1.mlp.c_proj.weight", "blk.1.ffn_down.weight"),
            ("ln_f.bias", "output_norm.bias"),
        ] {
            assert_eq!(gguf_name(canonical).map(|n| n.0).as_deref(), Some(name));
        }
        assert!(gguf_name("h.0.attn.bias").is_none());
        assert!(gguf_name("lm_head.weight").is_none());
    }

    #[test]
    fn gguf_model_is_quantize_at_load_with_f16_scales_bit_for_bit() {
        let config = Config {
            n_vocab: 300,
            n_ctx: 24,
            n_embd: 64,
            n_head: 4,
            n_layer: 2,
            layer_norm_epsilon: 1e-5,
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("f32");
        Gpt2::random(&config, 5, &LoadOptions::default())
            .and_then(|m| m.save_hf(&src))
            .expect("save");
        let weights = Weights::open(&src).expect("open");
        let path = tmp.path().join("m.gguf");
        save_gguf(&weights, &path, &GgufOptions::default()).expect("save_gguf");
        let file = GgufFile::open(&path).expect("open gguf");
        assert_eq!(file.config(), &config);
        assert_eq!(file.version(), GGUF_VERSION);
        let loaded = file.load(&LoadOptions::q8_0()).expect("load");
        let want = f16_scale_reference(&weights);
        let ids = Tensor::new(&[[1u32, 7, 99, 3, 250, 0, 42]], &Device::Cpu).expect("ids");
        let a: Vec<f32> = loaded
            .forward(&ids)
            .and_then(|t| Ok(t.flatten_all()?.to_vec1()?))
            .expect("forward");
        let b: Vec<f32> = want
            .forward(&ids)
            .and_then(|t| Ok(t.flatten_all()?.to_vec1()?))
            .expect("forward");
        assert_eq!(a, b);
        // Decode-sized products (the int8 kernel) too.
        let mut c1 = loaded.new_cache(Default::default());
        let mut c2 = want.new_cache(Default::default());
        let a = loaded
            .prefill(&mut c1, &[&[5, 6]], crate::Logits::Last)
            .and_then(|_| loaded.step(&mut c1, &[9]))
            .expect("step");
        let b = want
            .prefill(&mut c2, &[&[5, 6]], crate::Logits::Last)
            .and_then(|_| want.step(&mut c2, &[9]))
            .expect("step");
        assert_eq!(
            a.to_vec2::<f32>().expect("v"),
            b.to_vec2::<f32>().expect("v")
        );
        // Writing again over it is refused.
        assert!(matches!(
            save_gguf(&weights, &path, &GgufOptions::default()),
            Err(ModelError::Weights(WeightsError::DestinationExists(_)))
        ));
    }
}
