//! `gpt2 logits`: write a model's next-token logits for a prompt to a safetensors file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gpt2_model::ModelError;
use gpt2_tokenizer::END_OF_TEXT;

use super::load::{load, parse_ids, ModelArgs, TokenIds};
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
    #[command(flatten)]
    pub model: ModelArgs,

    /// Input token ids, separated by commas or spaces (e.g. 464,3290).
    #[arg(long, value_name = "IDS", value_parser = parse_ids)]
    pub ids: Option<TokenIds>,

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
    let loaded = load(&args.model)?;
    let model = &loaded.model;
    let ids = match (&args.ids, &args.prompt) {
        (Some(TokenIds(ids)), _) => {
            if ids.is_empty() {
                return Err(UsageError("--ids: no token ids given".into()).into());
            }
            ids.clone()
        }
        (None, Some(text)) => {
            let ids = loaded
                .tokenizer
                .encode(text)
                .context("cannot encode the prompt")?;
            if ids.is_empty() {
                vec![END_OF_TEXT]
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
        ("model".to_string(), loaded.dir.display().to_string()),
        (
            "positions".to_string(),
            if args.all_positions { "all" } else { "last" }.to_string(),
        ),
        (
            "dtype".to_string(),
            format!("{:?}", args.model.dtype_for(&loaded.dir)).to_lowercase(),
        ),
    ]);
    let file = safetensors::tensor::serialize([("logits", view)], Some(metadata))
        .context("cannot serialize the logits")?;
    write_atomically(&args.out, &file)
}
