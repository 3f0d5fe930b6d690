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

    /// Output file (safetensors): a new file, or a regular file that is replaced atomically; a
    /// symbolic link, directory, fifo or device is refused before anything runs.
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

/// Checks, before any work, that `--out` can be replaced by a new regular file: it is absent
/// or a regular file (not a symbolic link, directory, fifo, device or socket), it names a file,
/// and its directory exists. Returns that directory.
fn check_out(path: &Path) -> anyhow::Result<PathBuf> {
    let refuse = |what: &str| {
        anyhow::anyhow!(
            "--out {} is {what}; give the path of a regular file (it is replaced) or of a new one",
            path.display()
        )
    };
    if path.file_name().is_none() {
        return Err(refuse("not a file name"));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let kind = meta.file_type();
            if kind.is_symlink() {
                return Err(refuse("a symbolic link (it is not followed)"));
            }
            if kind.is_dir() {
                return Err(refuse("a directory"));
            }
            if !kind.is_file() {
                return Err(refuse("not a regular file (a device, fifo or socket)"));
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot check --out {}", path.display()))
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(anyhow::anyhow!(
            "--out {}: the directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    Ok(dir)
}

/// Writes `bytes` to `path` (checked by [`check_out`]; `dir` is its directory) atomically: into
/// a new temporary file of `dir` (created exclusively, with a random name, so nothing planted
/// there is followed), synced, then renamed over `path`. On any error the temporary is removed
/// and `path` is untouched.
fn write_atomically(path: &Path, dir: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.partial-");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    // The permissions of a file created the usual way (0666 less the umask), not tempfile's 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    // What is at `path` may have changed while the logits were computed.
    check_out(path)?;
    tmp.persist(path)
        .map_err(|err| err.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Runs `gpt2 logits`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let out_dir = check_out(&args.out)?;
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
    write_atomically(&args.out, &out_dir, &file)
}
