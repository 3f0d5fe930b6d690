//! `gpt2 convert`: turn a model directory (OpenAI's release, or a Hugging Face
//! directory) into a Hugging Face layout directory, optionally casting to f16, or into a
//! GGUF directory with 8-bit (Q8_0) weight matrices.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use gpt2_tokenizer::Tokenizer;
use gpt2_weights::gguf::{self, GgufOptions, TokenizerLists};
use gpt2_weights::{Dtype, Weights, WeightsError};

use super::UsageError;

/// What `gpt2 convert --dtype` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Hugging Face safetensors in this storage type.
    Safetensors(Dtype),
    /// GGUF with Q8_0 matrices (`model.gguf`).
    Q8_0,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "q8_0" | "q8" => Ok(Target::Q8_0),
            other => other
                .parse::<Dtype>()
                .map(Target::Safetensors)
                .map_err(|_| {
                    format!(
                        "expected f32, f16, bf16 (safetensors) or q8_0 (GGUF), found {}",
                        gpt2_tokenizer::excerpt(s)
                    )
                }),
        }
    }
}

/// Convert weights to the Hugging Face layout (`config.json` + `model.safetensors`), or to
/// GGUF with 8-bit weights (`--dtype q8_0`: `config.json` + `model.gguf`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory to read (OpenAI layout: `hparams.json`, `checkpoint`,
    /// `model.ckpt.*`; or Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Directory to create (must not exist; written atomically).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Storage type of the written weights: f32 (lossless from f32), f16 or bf16 in
    /// `model.safetensors`; or q8_0: `model.gguf` (GGUF v3, llama.cpp's GPT-2 tensor names)
    /// with the weight matrices in 8-bit Q8_0 blocks, loaded without re-quantizing
    /// (`n_embd` must be a multiple of 32).
    #[arg(long, default_value = "f32", value_name = "DTYPE")]
    pub dtype: Target,
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
    let dtype = match args.dtype {
        Target::Safetensors(dtype) => dtype,
        Target::Q8_0 => return run_gguf(&args, layout),
    };
    if let Err(e) = gpt2_weights::convert(&args.from, &args.to, dtype) {
        let exists = matches!(e, WeightsError::DestinationExists(_));
        return Err(conversion_failed(e, exists, &args));
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

/// A failed conversion as the command reports it: a usage error (exit 2) when the destination
/// exists, otherwise the cause, saying that nothing was written.
fn conversion_failed<E>(e: E, destination_exists: bool, args: &Args) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    if destination_exists {
        return anyhow::Error::new(UsageError(e.to_string()));
    }
    anyhow::Error::new(e).context(format!(
        "converting {} to {} (nothing was written)",
        args.from.display(),
        args.to.display()
    ))
}

/// `--dtype q8_0`: a GGUF directory.
fn run_gguf(args: &Args, layout: gpt2_weights::Layout) -> anyhow::Result<()> {
    let opts = gguf_options(&args.from)?;
    if let Err(e) = gguf::convert_to_gguf(&args.from, &args.to, &opts) {
        let exists = matches!(e, WeightsError::DestinationExists(_));
        return Err(conversion_failed(e, exists, args));
    }
    let written = Weights::open(&args.to)
        .with_context(|| format!("re-opening the converted model {}", args.to.display()))?;
    let bytes = written.gguf().map_or(0, |g| g.file_len());
    eprintln!(
        "converted {} ({layout}) -> {} (gguf, q8_0): {} tensors, {} parameters, {:.1} MiB",
        args.from.display(),
        args.to.display(),
        written.names().count(),
        written.num_parameters(),
        bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// What a GGUF file made from `from` stores besides the weights: the source directory's
/// name as `general.name`, and its tokenizer (any layout), or GPT-2's embedded one when it
/// has no tokenizer files and GPT-2's 50257 tokens. (A GGUF source without tokenizer files
/// passes its own stored tokenizer on.)
fn gguf_options(from: &std::path::Path) -> anyhow::Result<GgufOptions> {
    let config = *Weights::open(from)
        .with_context(|| format!("reading --from {}", from.display()))?
        .config();
    let tokenizer = match gpt2_tokenizer::Layout::detect(from) {
        Ok(layout) => Some(
            Tokenizer::from_dir_with_layout(from, layout)
                .with_context(|| format!("cannot load the tokenizer in {}", from.display()))?,
        ),
        Err(gpt2_tokenizer::Error::NoTokenizerFiles { .. }) => {
            (config.n_vocab == gpt2_tokenizer::GPT2_VOCAB_SIZE && gguf::find_gguf(from).is_none())
                .then(Tokenizer::gpt2)
        }
        Err(e) => return Err(e).context("cannot find the source's tokenizer files"),
    };
    let name = from
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "gpt2".into());
    Ok(GgufOptions {
        name,
        tokenizer: tokenizer.as_ref().map(tokenizer_lists),
    })
}

/// A tokenizer's tokens (in id order), merges and `<|endoftext|>` id, as GGUF stores them.
pub fn tokenizer_lists(tok: &Tokenizer) -> TokenizerLists {
    let (tokens, merges) = tok.tokens_and_merges();
    TokenizerLists {
        tokens,
        merges,
        eos: tok.end_of_text(),
    }
}
