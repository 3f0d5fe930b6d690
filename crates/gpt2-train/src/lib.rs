//! Training GPT-2 on candle tensors — fine-tuning a released model on your own text, or
//! training one from scratch — with PyTorch's numbers step for step.
//!
//! The recipe is nanoGPT's (`train.py`): AdamW with β = (0.9, 0.95) and weight decay on the
//! ≥ 2-D weights only, the global gradient norm clipped to 1.0, a linear warm-up then cosine
//! decay to `min_lr`. Every step matches Hugging Face's `GPT2LMHeadModel` with
//! `torch.optim.AdamW` and `clip_grad_norm_` (checked against a PyTorch reference on the
//! committed test model, as llm.c's `test_gpt2.c` checks its trainer).
//!
//! - [`data`]: text files (GPT-2's BPE, in parallel) or `.bin` token ids → one stream of ids;
//! - [`batches`]: windows of `T + 1` tokens and the order micro-batches take them in;
//! - [`schedule`]: nanoGPT's `get_lr`;
//! - [`optim`]: AdamW and gradient clipping, as PyTorch computes them;
//! - [`trainer`]: one optimizer step (micro-batches, gradient accumulation, clip, update);
//! - [`checkpoint`]: model directories that also hold the optimizer state, for resuming;
//! - [`init`]: a new model's weights, initialized as GPT-2 was.
//!
//! ```
//! use gpt2_train::{init::gpt2_init, Settings, Trainer};
//! # fn main() -> Result<(), gpt2_train::TrainError> {
//! let config = gpt2_weights::Config { n_vocab: 64, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
//! let settings = Settings { batch_size: 4, seq_len: 8, steps: 20, warmup_steps: 2, lr: 1e-2, ..Settings::default() };
//! let ids: Vec<u32> = (0..400).map(|i| (i % 16) as u32).collect(); // a pattern to learn
//! let mut trainer = Trainer::new(&config, gpt2_init(&config, 0)?, settings, ids)?;
//! let first = trainer.step()?.loss;
//! let mut last = first;
//! while !trainer.is_done() {
//!     last = trainer.step()?.loss;
//! }
//! assert!(last < first);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod batches;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod init;
pub mod optim;
pub mod schedule;
pub mod settings;
pub mod trainer;

pub use error::{Result, TrainError};
pub use settings::Settings;
pub use trainer::{StepReport, Trainer};
