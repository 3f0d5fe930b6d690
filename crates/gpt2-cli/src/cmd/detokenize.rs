//! `gpt2 detokenize`: decode GPT-2 token ids back into text.

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::Context;

use super::tokenize::load_tokenizer;
use super::UsageError;

const AFTER_HELP: &str = "\
Ids may be separated by spaces, newlines or commas, and may be wrapped in [ ] so that
`gpt2 tokenize --format json` output can be piped in. The text is printed exactly,
with no newline added, so `gpt2 tokenize | gpt2 detokenize` gives back the input.
Byte sequences that are not valid UTF-8 are printed as U+FFFD (like OpenAI's decoder
with errors=\"replace\"), unless --bytes is given.

Exit status: 0 on success, 2 for bad usage (including an id that is not a number or
not in the vocabulary), 1 for other errors.

Examples:
  gpt2 detokenize 15496 11 995 0                       # Hello, world!
  echo '15496, 11, 995, 0' | gpt2 detokenize           # ids from standard input
  gpt2 tokenize 'héllo' | gpt2 detokenize              # héllo
  gpt2 tokenize --format json < a.txt | gpt2 detokenize > b.txt   # b.txt = a.txt";

/// Decode GPT-2 token ids back into text.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Directory with tokenizer files: encoder.json + vocab.bpe (OpenAI), or vocab.json +
    /// merges.txt or tokenizer.json (Hugging Face). Default: GPT-2's built-in vocabulary.
    #[arg(long, value_name = "DIR")]
    pub vocab: Option<PathBuf>,

    /// Write the tokens' raw bytes, without replacing invalid UTF-8.
    #[arg(long)]
    pub bytes: bool,

    /// Token ids. Without them, ids are read from standard input.
    #[arg(value_name = "IDS")]
    pub ids: Vec<String>,
}

/// Runs `gpt2 detokenize`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let input = if args.ids.is_empty() {
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        String::from_utf8(bytes).map_err(|_| {
            UsageError("standard input is not valid UTF-8 text; expected token ids".into())
        })?
    } else {
        args.ids.join(" ")
    };
    let tokenizer = load_tokenizer(args.vocab.as_deref())?;
    let ids = parse_ids(&input, tokenizer.vocab_size())?;

    let mut out = BufWriter::new(io::stdout().lock());
    if args.bytes {
        out.write_all(&tokenizer.decode_bytes(&ids)?)?;
    } else {
        out.write_all(tokenizer.decode(&ids)?.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Parses ids separated by whitespace and/or commas, optionally inside `[ ]`.
fn parse_ids(input: &str, vocab_size: usize) -> Result<Vec<u32>, UsageError> {
    let trimmed = input.trim();
    let inner = match trimmed.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| UsageError("the ids start with '[' but do not end with ']'".into()))?,
        None => trimmed,
    };
    let max = vocab_size.saturating_sub(1);
    inner
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let id: u32 = piece.parse().map_err(|_| {
                UsageError(format!(
                    "{} is not a token id (expected a whole number from 0 to {max})",
                    gpt2_tokenizer::excerpt(piece)
                ))
            })?;
            if id as usize >= vocab_size {
                return Err(UsageError(format!(
                    "token id {id} is out of range: the vocabulary has {vocab_size} tokens \
                     (ids 0 to {max})"
                )));
            }
            Ok(id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_ids;

    #[test]
    fn parses_separators_and_brackets() {
        assert_eq!(parse_ids("1 2,3\n4 , 5", 10).unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(parse_ids(" [1, 2, 3]\n", 10).unwrap(), [1, 2, 3]);
        assert_eq!(parse_ids("", 10).unwrap(), Vec::<u32>::new());
        assert_eq!(parse_ids("[]", 10).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(parse_ids("1 x", 10).unwrap_err().0.contains("\"x\""));
        assert!(parse_ids("-1", 10).is_err());
        assert!(parse_ids("10", 10).unwrap_err().0.contains("out of range"));
        assert!(parse_ids("[1, 2", 10).is_err());
        assert!(parse_ids("99999999999", 10).is_err());
    }
}
