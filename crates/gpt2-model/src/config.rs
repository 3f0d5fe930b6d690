//! The hyperparameters, shared with `gpt2-weights` (one `Config` whichever layout it came from).

pub use gpt2_weights::{Config, ModelSize};
