//! `gpt2 score`: how likely a text is under the model (log-probabilities, perplexity).

use std::io::{self, Write};

use anyhow::Context;
use gpt2_model::generate::{score, ScoreError, ScoreOptions};
use serde::Serialize;

use super::load::{self, ModelArgs};
use super::UsageError;

const EXAMPLES: &str = "\
Examples:
  gpt2 score \"The quick brown fox jumps over the lazy dog.\"
  gpt2 score --bos --format json \"Hello world\"        score the first token too, per-token JSON
  gpt2 score -m 355M --stride 256 < book.txt           long text: sliding window, stride 256
  gpt2 score --ids 464,3290,3332                        token ids instead of text

Method: the log-probability of each token given the ones before it (natural log, nats).
Without --bos the first token has no context and is not scored. A text longer than the model's
context (n_ctx tokens) is scored with a sliding window, as in Hugging Face's perplexity guide:
windows of n_ctx tokens start every STRIDE tokens, and each window scores only the tokens the
previous one did not, so every token is scored once with at least n_ctx - STRIDE tokens of left
context. Perplexity = exp(-total log-prob / scored tokens).";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A short human-readable summary.
    Text,
    /// One JSON object with the totals and every token's log-prob.
    Json,
}

/// Arguments of `gpt2 score`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The text to score (read from stdin when absent or "-").
    #[arg(value_name = "TEXT", conflicts_with = "ids")]
    pub text: Option<String>,

    /// The text as token ids instead, e.g. 464,3290.
    #[arg(long, value_name = "IDS", value_parser = load::parse_ids)]
    pub ids: Option<load::TokenIds>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Prepend <|endoftext|> so the first token is scored too.
    #[arg(long)]
    pub bos: bool,

    /// Sliding-window step for texts longer than the context, 1..=n_ctx (default n_ctx / 2).
    #[arg(long, value_name = "N")]
    pub stride: Option<usize>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Serialize)]
struct JsonToken {
    id: u32,
    text: String,
    logprob: Option<f64>,
}

#[derive(Serialize)]
struct JsonScore {
    n_tokens: usize,
    n_scored: usize,
    logprob: f64,
    mean_logprob: Option<f64>,
    perplexity: Option<f64>,
    bos: bool,
    windows: usize,
    tokens: Vec<JsonToken>,
}

/// Runs `gpt2 score`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let text = match &args.ids {
        Some(_) => None,
        None => Some(load::text_or_stdin(args.text.as_deref())?),
    };
    let loaded = load::load(&args.model)?;
    let tokenizer = &loaded.tokenizer;
    let ids = match (&args.ids, &text) {
        (Some(ids), _) => ids.0.clone(),
        (None, Some(text)) => tokenizer.encode(text).context("cannot tokenize the text")?,
        (None, None) => Vec::new(),
    };
    load::check_ids(&ids, loaded.model.config().n_vocab)?;
    let options = ScoreOptions {
        stride: args.stride,
        prepend_bos: args.bos,
        bos_token: tokenizer
            .end_of_text()
            .unwrap_or(gpt2_tokenizer::END_OF_TEXT),
    };
    let result = score(&loaded.model, &ids, &options).map_err(|e| match e {
        ScoreError::Empty | ScoreError::Stride { .. } => UsageError(e.to_string()).into(),
        other => anyhow::Error::new(other).context("scoring failed"),
    })?;

    let stdout = io::stdout();
    let mut out = stdout.lock();
    match args.format {
        Format::Json => {
            let json = JsonScore {
                n_tokens: result.tokens.len(),
                n_scored: result.n_scored,
                logprob: result.logprob,
                mean_logprob: result.mean_logprob(),
                perplexity: result.perplexity(),
                bos: args.bos,
                windows: result.windows,
                tokens: result
                    .tokens
                    .iter()
                    .map(|t| JsonToken {
                        id: t.id,
                        text: tokenizer.decode(&[t.id]).unwrap_or_default(),
                        logprob: t.logprob,
                    })
                    .collect(),
            };
            let line = serde_json::to_string(&json).context("cannot encode the JSON output")?;
            writeln!(out, "{line}")?;
        }
        Format::Text => {
            writeln!(
                out,
                "tokens:     {} ({} scored{})",
                result.tokens.len(),
                result.n_scored,
                if result.windows > 1 {
                    format!(", {} windows", result.windows)
                } else {
                    String::new()
                }
            )?;
            writeln!(out, "log-prob:   {:.4} nats", result.logprob)?;
            match (result.mean_logprob(), result.perplexity()) {
                (Some(mean), Some(ppl)) => {
                    writeln!(out, "mean:       {mean:.4} nats/token")?;
                    writeln!(out, "perplexity: {ppl:.4}")?;
                }
                _ => writeln!(
                    out,
                    "perplexity: n/a (no token was scored: a single token has no context; try --bos)"
                )?,
            }
        }
    }
    out.flush()?;
    Ok(())
}
