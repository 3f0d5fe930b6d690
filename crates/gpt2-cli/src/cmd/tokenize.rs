//! `gpt2 tokenize`: encode text into GPT-2 token ids.

use std::ffi::OsString;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use gpt2_tokenizer::Tokenizer;

use super::UsageError;

const AFTER_HELP: &str = "\
Input is taken byte for byte: nothing is trimmed, a trailing newline is a token too.
The literal text <|endoftext|> is ordinary text (as in OpenAI's encoder) unless
--special is given.

Exit status: 0 on success, 2 for bad usage (including input that is not UTF-8),
1 for other errors (e.g. unreadable tokenizer files).

Examples:
  gpt2 tokenize 'Hello, world!'              # 15496 11 995 0
  echo 'Hello' | gpt2 tokenize               # 15496 198   (198 is the newline)
  gpt2 tokenize --format tokens ' the cat'   # one \"id<TAB>token\" line per token
  gpt2 tokenize --format json < story.txt    # [1212,318,...]
  gpt2 tokenize --special 'a<|endoftext|>b'  # 64 50256 65
  gpt2 tokenize --vocab models/124M 'Hi'     # use encoder.json + vocab.bpe from a directory";

/// Encode text into GPT-2 token ids.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Directory with tokenizer files: encoder.json + vocab.bpe (OpenAI), or vocab.json +
    /// merges.txt or tokenizer.json (Hugging Face). Default: GPT-2's built-in vocabulary.
    #[arg(long, value_name = "DIR")]
    pub vocab: Option<PathBuf>,

    /// Output format: `ids` (space-separated on one line), `json` (an array), or
    /// `tokens` (one `id<TAB>token` line per token, the token's bytes escaped:
    /// \n, \t, \\, \u{..} for invisible characters, \xNN for bytes that are not UTF-8).
    #[arg(long, value_enum, default_value_t = Format::Ids)]
    pub format: Format,

    /// Encode the literal text <|endoftext|> as the special token 50256.
    #[arg(long)]
    pub special: bool,

    /// The text to encode. Without it, all of standard input is read.
    #[arg(value_name = "TEXT")]
    pub text: Option<OsString>,
}

/// How `gpt2 tokenize` prints the ids.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Ids separated by spaces, on one line.
    Ids,
    /// A JSON array of ids.
    Json,
    /// One `id<TAB>escaped token` line per token.
    Tokens,
}

/// Loads the tokenizer of `--vocab DIR`, or GPT-2's built-in one.
pub fn load_tokenizer(vocab: Option<&std::path::Path>) -> anyhow::Result<Tokenizer> {
    match vocab {
        Some(dir) => Tokenizer::from_dir(dir)
            .with_context(|| format!("cannot load the tokenizer from --vocab {}", dir.display())),
        None => Ok(Tokenizer::gpt2()),
    }
}

/// Runs `gpt2 tokenize`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let text = match args.text {
        Some(text) => text.into_string().map_err(|text| {
            UsageError(format!(
                "TEXT is not valid UTF-8 ({}); GPT-2 tokenizes Unicode text",
                gpt2_tokenizer::excerpt(&text.to_string_lossy())
            ))
        })?,
        None => read_stdin_text()?,
    };
    let tokenizer = load_tokenizer(args.vocab.as_deref())?;
    let ids = if args.special {
        tokenizer.encode_with_special_tokens(&text)
    } else {
        tokenizer.encode(&text)
    }
    .context("cannot encode the text")?;

    let mut out = BufWriter::new(io::stdout().lock());
    match args.format {
        Format::Ids => {
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    out.write_all(b" ")?;
                }
                write!(out, "{id}")?;
            }
            writeln!(out)?;
        }
        Format::Json => {
            serde_json::to_writer(&mut out, &ids)?;
            writeln!(out)?;
        }
        Format::Tokens => {
            for &id in &ids {
                writeln!(out, "{id}\t{}", tokenizer.token_display(id)?)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// All of standard input as text; input that is not UTF-8 is a usage error.
fn read_stdin_text() -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    String::from_utf8(bytes).map_err(|err| {
        let error = err.utf8_error();
        let at = error.valid_up_to();
        let bad = &err.as_bytes()[at..];
        let len = error.error_len().unwrap_or(bad.len());
        let shown: Vec<String> = bad[..len].iter().map(|b| format!("0x{b:02X}")).collect();
        anyhow::Error::new(UsageError(format!(
            "standard input is not valid UTF-8: byte offset {at} has {} ({}); \
             GPT-2 tokenizes Unicode text, convert the input to UTF-8 first",
            shown.join(" "),
            if error.error_len().is_some() {
                "an invalid sequence"
            } else {
                "an incomplete character at the end"
            }
        )))
    })
}
