//! `gpt2 convert`: turn a model directory (OpenAI's release, or a Hugging Face
//! directory) into a Hugging Face layout directory, optionally casting to f16.

use std::path::PathBuf;

use anyhow::Context;
use gpt2_weights::{Dtype, Weights, WeightsError};

use super::UsageError;

/// Convert weights to the Hugging Face layout (`config.json` + `model.safetensors`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory to read (OpenAI layout: `hparams.json`, `checkpoint`,
    /// `model.ckpt.*`; or Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Directory to create (must not exist; written atomically).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Storage type of the written weights: f32 (lossless from f32), f16 or bf16.
    #[arg(long, default_value = "f32", value_name = "DTYPE")]
    pub dtype: Dtype,
}

/// Runs `gpt2 convert`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.to.symlink_metadata().is_ok() {
        return Err(anyhow::Error::new(UsageError(format!(
            "--to {}: already exists; remove it or choose another destination",
            args.to.display()
        ))));
    }
    let layout = Weights::detect_layout(&args.from)
        .with_context(|| format!("reading --from {}", args.from.display()))?;
    match gpt2_weights::convert(&args.from, &args.to, args.dtype) {
        Ok(()) => {}
        Err(e @ WeightsError::DestinationExists(_)) => {
            return Err(anyhow::Error::new(UsageError(e.to_string())))
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "converting {} to {} (nothing was written)",
                    args.from.display(),
                    args.to.display()
                )
            })
        }
    }
    let written = Weights::open(&args.to)
        .with_context(|| format!("re-opening the converted model {}", args.to.display()))?;
    eprintln!(
        "converted {} ({layout}) -> {} (huggingface, {}): {} tensors, {} parameters",
        args.from.display(),
        args.to.display(),
        written.dtype(),
        written.names().count(),
        written.num_parameters()
    );
    Ok(())
}
