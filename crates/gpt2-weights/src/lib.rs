//! Read GPT-2 weights — OpenAI's original TensorFlow checkpoints (natively, no
//! TensorFlow) and Hugging Face safetensors — validate them against the
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
//!
//! Whichever layout is read, [`Weights`] presents one canonical view: the names and
//! shapes of [`expected_tensors`] (Hugging Face names without the `transformer.`
//! prefix, `Conv1D` weights as `[in, out]`).
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
//! # Ok::<(), gpt2_weights::WeightsError>(())
//! ```
//!
//! # Deviations from the API contract (`notes/weights-api.md`)
//!
//! The contract's names and signatures are all here. Additions: [`Weights::open_layout`],
//! [`Weights::detect_layout`], [`Weights::dir`], [`Weights::infos`] ([`TensorInfo`]),
//! [`Weights::num_parameters`], [`TensorView::to_dtype`], [`save_hf_with_files`] (the
//! contract's `save_hf` takes no source directory, so tokenizer files are copied by
//! [`convert`] or passed explicitly), the [`tf`] module (the checkpoint parser, public so it
//! can be fuzzed), [`Mismatch`] (the structured list in [`WeightsError::Mismatch`]),
//! [`MAX_DIM`]/[`MAX_LAYERS`], and `Display` for [`Layout`] (`openai`/`huggingface`) and
//! [`ModelSize`]. Behaviour worth knowing:
//!
//! - `FromStr` for [`Dtype`] and [`ModelSize`] returns [`WeightsError::Parse`];
//!   [`WeightsError`] is `#[non_exhaustive]`.
//! - [`Weights::dtype`] is the dtype of `wte.weight` (every tensor's own is in its
//!   [`TensorView`]).
//! - A directory holding both layouts opens as Hugging Face (see [`Weights::detect_layout`]).
//! - [`Config::from_config_json`] also rejects settings that change the math without
//!   changing a shape (another activation, `scale_attn_by_inverse_layer_idx`, ...).
//! - [`Config::to_config_json`] sets `bos_token_id`/`eos_token_id` to `n_vocab - 1`
//!   (50256 for the released models).

#![warn(missing_docs)]

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
