//! `gpt2 logits`: write a model's next-token logits for a prompt to a safetensors file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gpt2_model::{DType, Gpt2, LoadOptions, ModelError};
use gpt2_tokenizer::Tokenizer;

use super::UsageError;

const AFTER_HELP: &str = "\
The output holds one f32 tensor named `logits`: shape [1, n_vocab] (the last position, what
the next token is drawn from) or, with --all-positions, [n_tokens, n_vocab] (row t scores the
token after position t). The metadata records the input ids and the model directory.

An empty --prompt is the single token <|endoftext|> (50256), as GPT-2 starts from nothing.

Examples:
  gpt2 logits --model models/124M --prompt 'Hello, my dog' --out hello.safetensors
  gpt2 logits --model fixtures/tiny/hf --ids 464,3290 --all-positions --out l.safetensors";

/// Write the model's logits for a prompt (f32, safetensors), e.g. to check parity with
/// another implementation.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["ids", "prompt"])))]
pub struct Args {
    /// Model directory, in either layout (OpenAI's release or Hugging Face's).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,

    /// Input token ids, separated by commas or spaces (e.g. 464,3290).
    #[arg(long, value_name = "IDS")]
    pub ids: Option<String>,

    /// Input text, encoded with the model directory's tokenizer files when it has them,
    /// else with GPT-2's built-in vocabulary.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,

    /// Output file (safetensors); written atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Logits at every position ([n_tokens, n_vocab]) instead of the last only ([1, n_vocab]).
    #[arg(long)]
    pub all_positions: bool,

    /// Compute dtype (the output is f32 either way).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
}

/// Compute dtype.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats (the reference numbers).
    F32,
    /// 16-bit floats.
    F16,
    /// 8-bit blocks (GGML Q8_0) for the weight matrices, quantized at load; f32 activations.
    #[value(name = "q8_0")]
    Q8_0,
}

fn parse_ids(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>().map_err(|_| {
                UsageError(format!(
                    "--ids: expected token ids like 464,3290 (non-negative integers), found {p:?}"
                ))
                .into()
            })
        })
        .collect()
}

fn tokenizer_for(dir: &Path) -> anyhow::Result<Tokenizer> {
    let has_files = ["encoder.json", "vocab.json", "tokenizer.json"]
        .iter()
        .any(|f| dir.join(f).is_file());
    if has_files {
        Tokenizer::from_dir(dir)
            .with_context(|| format!("cannot load the tokenizer files in {}", dir.display()))
    } else {
        Ok(Tokenizer::gpt2())
    }
}

/// Model errors caused by the input (too long, unknown ids) are usage errors (exit 2).
fn input_error(err: ModelError) -> anyhow::Error {
    match err {
        ModelError::ContextOverflow { .. } | ModelError::TokenOutOfRange { .. } => {
            UsageError(err.to_string()).into()
        }
        other => anyhow::Error::new(other).context("the forward pass failed"),
    }
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("--out {} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Runs `gpt2 logits`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.model.is_dir() {
        return Err(UsageError(format!(
            "--model {}: not a directory (expected a model directory in OpenAI's or Hugging Face's layout)",
            args.model.display()
        ))
        .into());
    }
    let opts = match args.dtype {
        Dtype::F32 => LoadOptions::cpu(DType::F32),
        Dtype::F16 => LoadOptions::cpu(DType::F16),
        Dtype::Q8_0 => LoadOptions::q8_0(),
    };
    let model = Gpt2::load(&args.model, &opts)
        .with_context(|| format!("cannot load the model in {}", args.model.display()))?;
    let ids = match (&args.ids, &args.prompt) {
        (Some(ids), _) => {
            let ids = parse_ids(ids)?;
            if ids.is_empty() {
                return Err(UsageError("--ids: no token ids given".into()).into());
            }
            ids
        }
        (None, Some(text)) => {
            let ids = tokenizer_for(&args.model)?
                .encode(text)
                .context("cannot encode the prompt")?;
            if ids.is_empty() {
                vec![50256]
            } else {
                ids
            }
        }
        (None, None) => return Err(UsageError("give --ids or --prompt".into()).into()),
    };
    let input = gpt2_model::Tensor::new(ids.as_slice(), model.device())
        .and_then(|t| t.unsqueeze(0))
        .context("cannot build the input tensor")?;
    let logits = if args.all_positions {
        model.forward(&input).map_err(input_error)?.squeeze(0)?
    } else {
        model.forward_last(&input).map_err(input_error)?
    };
    let shape = logits.dims().to_vec();
    let values = logits.flatten_all()?.to_vec1::<f32>()?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)
        .context("cannot describe the logits tensor")?;
    let ids_text: Vec<String> = ids.iter().map(u32::to_string).collect();
    let metadata = HashMap::from([
        ("ids".to_string(), ids_text.join(",")),
        ("model".to_string(), args.model.display().to_string()),
        (
            "positions".to_string(),
            if args.all_positions { "all" } else { "last" }.to_string(),
        ),
        (
            "dtype".to_string(),
            format!("{:?}", args.dtype).to_lowercase(),
        ),
    ]);
    let file = safetensors::tensor::serialize([("logits", view)], Some(metadata))
        .context("cannot serialize the logits")?;
    write_atomically(&args.out, &file)
}
