//! Read GPT-2 weights — OpenAI's original TensorFlow checkpoints (natively, no
//! TensorFlow), Hugging Face safetensors and GGUF files — validate them against the
//! hyperparameters, and convert between layouts.
//!
//! This crate needs no tensor library: it hands out raw little-endian bytes
//! ([`TensorView`]), borrowed straight from memory-mapped files, so a model crate can
//! build its tensors with one copy (or none) and loading the 1558M model never needs
//! twice its size in RAM.
//!
//! # Layouts
//!
//! - [`Layout::OpenAi`]: OpenAI's release (`models/124M/`): `checkpoint`,
//!   `hparams.json`, `model.ckpt.index`, `model.ckpt.data-00000-of-00001`,
//!   `encoder.json`, `vocab.bpe`. The TensorFlow v1 checkpoint is read by a small
//!   hand-written parser (see the [`tf`] module for the format notes); every tensor's
//!   masked crc32c is verified, as TensorFlow does on restore.
//! - [`Layout::HuggingFace`]: the hub layout (`openai-community/gpt2`): `config.json`
//!   and `model.safetensors`, or shards listed in `model.safetensors.index.json`.
//! - [`Layout::Gguf`]: a GGUF file (llama.cpp's format and tensor names): `model.gguf` in a
//!   directory (preferred over the other layouts' files beside it), or any `*.gguf` path.
//!   Matrices are usually [`Dtype::Q8_0`] blocks ([`q8_0`]). The [`gguf`] module is this
//!   crate's own reader and writer: candle's is part of a tensor crate (which this crate does
//!   not depend on) and panics or allocates without bound on crafted files (a zero
//!   `general.alignment` divides by zero; counts and lengths are trusted), while ours checks
//!   every count, length, dimension and offset against the file before allocating anything.
//!
//! Whichever layout is read, [`Weights`] presents one canonical view: the names and
//! shapes of [`expected_tensors`] (Hugging Face names without the `transformer.`
//! prefix, `Conv1D` weights as `[in, out]`). GGUF stores `Conv1D` weights `[out, in]`:
//! those views have [`TensorView::transposed`] set, and [`TensorView::to_f32_vec`] /
//! [`TensorView::to_dtype`] always give canonical row-major values (dequantized).
//!
//! # Writing
//!
//! [`save_hf`] / [`convert`] write Hugging Face directories (f32, f16, bf16; a GGUF source is
//! dequantized); [`gguf::save_gguf`] / [`gguf::convert_to_gguf`] write Q8_0 GGUF models;
//! [`save_dir_with`] is the all-or-nothing directory writer behind both.
//!
//! # Example
//!
//! ```no_run
//! use gpt2_weights::{Dtype, Weights};
//! let w = Weights::open("models/124M".as_ref())?;
//! for info in w.infos() {
//!     println!("{} {:?} {}", info.name, info.shape, info.dtype);
//! }
//! let ln_f = w.tensor("ln_f.weight")?.to_f32_vec();
//! gpt2_weights::convert("models/124M".as_ref(), "models/124M-hf".as_ref(), Dtype::F32)?;
//! let opts = gpt2_weights::gguf::GgufOptions { name: "124M".into(), tokenizer: None };
//! gpt2_weights::gguf::convert_to_gguf("models/124M".as_ref(), "models/124M-q8_0".as_ref(), &opts)?;
//! let q = Weights::open("models/124M-q8_0".as_ref())?;
//! assert_eq!(q.tensor("h.0.attn.c_attn.weight")?.dtype, Dtype::Q8_0);
//! # Ok::<(), gpt2_weights::WeightsError>(())
//! ```
//!
//! # Behaviour worth knowing
//!
//! - `FromStr` for [`Dtype`] and [`ModelSize`] returns [`WeightsError::Parse`];
//!   [`WeightsError`] is `#[non_exhaustive]`.
//! - [`Weights::dtype`] is the dtype of `wte.weight` (every tensor's own is in its
//!   [`TensorView`]).
//! - A directory holding both the OpenAI and Hugging Face layouts opens as Hugging Face, and
//!   one holding `model.gguf` as GGUF (see [`Weights::detect_layout`]).
//! - [`Config::from_config_json`] also rejects settings that change the math without
//!   changing a shape (another activation, `scale_attn_by_inverse_layer_idx`, ...).
//! - [`Config::to_config_json`] sets `bos_token_id`/`eos_token_id` to `n_vocab - 1`
//!   (50256 for the released models).

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod config;
mod convert;
mod error;
pub mod gguf;
mod hf;
mod names;
pub mod q8_0;
mod tensor;
pub mod tf;
mod weights;

pub use config::{Config, ModelSize, MAX_DIM, MAX_LAYERS};
pub use convert::{convert, save_dir_with, save_hf, save_hf_with_files, tokenizer_files};
pub use error::{Mismatch, WeightsError};
pub use names::expected_tensors;
pub use tensor::{Dtype, Layout, TensorView};
pub use weights::{SharedBytes, TensorInfo, Weights};
