//! `gpt2 generate`: text generation, streamed to stdout.

use std::io::{self, Write};
use std::time::Instant;

use anyhow::Context;
use gpt2_model::generate::{
    ContextOverflow, GenerateError, GenerateOptions, GeneratedToken, SamplingError, SamplingParams,
    Session,
};
use gpt2_tokenizer::Tokenizer;
use serde::Serialize;

use super::load::{self, ModelArgs};
use super::UsageError;

const EXAMPLES: &str = "\
Examples:
  gpt2 generate \"The meaning of life is\"                    sample 50 tokens from 124M
  gpt2 generate -m 355M -n 100 --temperature 0.8 --top-p 0.95 \"Once upon a time\"
  gpt2 generate --greedy --stats \"Alan Turing theorized that\"
  gpt2 generate --seed 42 --num-samples 3 --stop $'\\n' \"Q: What is a GPU?\\nA:\"
  gpt2 generate --show-probs 5 -n 10 --temperature 2 \"The cat\"  per-step candidates on stderr
  echo \"Hello\" | gpt2 generate --format json --stats          prompt from stdin, JSON out
  gpt2 generate --prompt-ids 464,3290 -m ./models/124M          prompt as token ids, model dir
  gpt2 generate \"\"                                            unconditional (from <|endoftext|>)

The same --seed, prompt and options give the same text on every run. Without --seed a random
seed is used (shown by --stats and in the JSON output).";

/// Context overflow policy on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverflowArg {
    /// A prompt longer than the context is an error; generation stops when the context is full.
    Error,
    /// Keep the most recent n_ctx tokens (a sliding window; slower once the context is full).
    Slide,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The text, streamed as it is generated.
    Text,
    /// One JSON object per sample, printed when it is complete (JSON Lines).
    Json,
}

/// Arguments of `gpt2 generate`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The prompt (read from stdin when absent or "-"; an empty prompt generates unconditionally,
    /// starting from <|endoftext|>).
    #[arg(value_name = "PROMPT", conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,

    /// The prompt as token ids instead of text, e.g. 464,3290.
    #[arg(long, value_name = "IDS", value_parser = load::parse_ids)]
    pub prompt_ids: Option<load::TokenIds>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Maximum number of new tokens per sample.
    #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
    pub max_tokens: usize,

    /// Greedy decoding: always the most likely token (same as --temperature 0).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "min_p"])]
    pub greedy: bool,

    /// Softmax temperature τ > 0: < 1 sharpens the distribution, > 1 flattens it; 0 means greedy.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "T",
        allow_negative_numbers = true
    )]
    pub temperature: f32,

    /// Sample only from the K most likely tokens (K ≥ 1).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Nucleus sampling: only from the most likely tokens whose probabilities add up to P, in (0, 1].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,

    /// Only tokens at least P times as likely as the most likely one, P in [0, 1].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub min_p: Option<f32>,

    /// CTRL repetition penalty (> 0; 1 = none, e.g. 1.2 discourages repeating recent tokens).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "R",
        allow_negative_numbers = true
    )]
    pub repetition_penalty: f32,

    /// How many recent tokens the repetition penalty looks at (default: the whole context).
    #[arg(long, value_name = "N")]
    pub repetition_window: Option<usize>,

    /// Seed of the sampler's random generator (default: a random seed).
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,

    /// Stop when this text appears (not printed). Repeatable. \n, \t and \\ are unescaped.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,

    /// Keep generating past <|endoftext|> (printed as "<|endoftext|>").
    #[arg(long)]
    pub ignore_eos: bool,

    /// How many samples to generate from the prompt (each from its own random stream).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub num_samples: usize,

    /// What to do when prompt + generated tokens outgrow the model's context.
    #[arg(long, value_enum, default_value_t = OverflowArg::Error)]
    pub context_overflow: OverflowArg,

    /// Print the prompt before the generated text (text format).
    #[arg(long)]
    pub echo: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// For every step, print the chosen token and the K most likely candidates with their
    /// probabilities (to stderr in text format; as "steps" in the JSON object).
    #[arg(long, value_name = "K")]
    pub show_probs: Option<usize>,

    /// Print timings to stderr: load time, prompt tokens and prefill tok/s, generated tokens and
    /// decode tok/s, peak RSS on Linux (also as "stats" in the JSON object).
    #[arg(long)]
    pub stats: bool,
}

/// Unescapes `\n`, `\t`, `\r` and `\\` in a `--stop` value.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The command-line flag a sampling error is about, for the message.
fn flag_of(err: &SamplingError) -> &'static str {
    match err {
        SamplingError::Temperature(_) => "--temperature",
        SamplingError::TopK(_) => "--top-k",
        SamplingError::TopP(_) => "--top-p",
        SamplingError::MinP(_) => "--min-p",
        SamplingError::RepetitionPenalty(_) => "--repetition-penalty",
        SamplingError::RepetitionWindow => "--repetition-window",
        SamplingError::EmptyLogits | SamplingError::NanLogit(_) => "sampling",
    }
}

/// A seed from the clock and the process id, when none is given.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    // SplitMix64 finaliser: spread the bits.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Timings (and the peak memory so far) of one sample.
#[derive(Debug, Serialize)]
struct Stats {
    load_ms: f64,
    prompt_tokens: usize,
    prefill_ms: f64,
    prefill_tok_per_s: f64,
    generated_tokens: usize,
    decode_ms: f64,
    decode_tok_per_s: f64,
    /// The process's peak resident set so far (`VmHWM`), MiB; `None` where the OS does not
    /// say (not Linux).
    peak_rss_mib: Option<f64>,
}

/// This process's peak resident set size (`VmHWM` of /proc/self/status), MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// One candidate in `steps` (JSON).
#[derive(Debug, Serialize)]
struct JsonCandidate {
    id: u32,
    token: String,
    prob: f32,
    sampling_prob: f32,
}

/// One generation step (JSON, with --show-probs).
#[derive(Debug, Serialize)]
struct JsonStep {
    id: u32,
    token: String,
    logprob: f32,
    prob: f32,
    sampling_prob: f32,
    top: Vec<JsonCandidate>,
}

/// The JSON object of one sample.
#[derive(Debug, Serialize)]
struct JsonSample {
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
    text: String,
    finish_reason: &'static str,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<JsonStep>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<Stats>,
}

fn per_s(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// A probability for the tables: 4 decimals, or scientific notation when tiny.
fn prob(p: f32) -> String {
    if p != 0.0 && p < 1e-3 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

/// A token as shown in the probability tables: its bytes, escaped, in quotes.
fn shown(tokenizer: &Tokenizer, id: u32) -> String {
    match tokenizer.token_display(id) {
        Ok(s) => format!("\"{s}\""),
        Err(_) => format!("<{id}>"),
    }
}

/// Writes the --show-probs block of one step.
fn write_step(
    err: &mut impl Write,
    tokenizer: &Tokenizer,
    step: usize,
    token: &GeneratedToken,
    sampling: bool,
) -> io::Result<()> {
    let chosen = shown(tokenizer, token.id);
    write!(
        err,
        "step {step}: {chosen} (id {}) p={}",
        token.id,
        prob(token.logprob.exp())
    )?;
    if sampling {
        write!(err, ", drawn with p={}", prob(token.sampling_prob))?;
    }
    writeln!(err)?;
    if sampling {
        writeln!(
            err,
            "    {:>4}  {:>8}  {:>8}  token",
            "rank", "model p", "sample p"
        )?;
    } else {
        writeln!(err, "    {:>4}  {:>8}  token", "rank", "model p")?;
    }
    for (rank, c) in token.alternatives.iter().enumerate() {
        let mark = if c.id == token.id { "  <" } else { "" };
        if sampling {
            writeln!(
                err,
                "    {:>4}  {:>8}  {:>8}  {} (id {}){mark}",
                rank + 1,
                prob(c.prob()),
                prob(c.sampling_prob),
                shown(tokenizer, c.id),
                c.id
            )?;
        } else {
            writeln!(
                err,
                "    {:>4}  {:>8}  {} (id {}){mark}",
                rank + 1,
                prob(c.prob()),
                shown(tokenizer, c.id),
                c.id
            )?;
        }
    }
    Ok(())
}

/// Maps generation errors the user caused (options, prompt) to usage errors.
fn generate_error(err: GenerateError) -> anyhow::Error {
    match err {
        // NaN logits come from the model (weights that hold a NaN or an infinity), not
        // from an option.
        GenerateError::Sampling(e @ (SamplingError::NanLogit(_) | SamplingError::EmptyLogits)) => {
            anyhow::Error::new(e).context(
                "generation failed: the model computed NaN (are its weights finite numbers?)",
            )
        }
        GenerateError::Sampling(e) => UsageError(format!("{}: {e}", flag_of(&e))).into(),
        GenerateError::PromptTooLong { .. } | GenerateError::EmptyPrompt => {
            UsageError(err.to_string()).into()
        }
        other => anyhow::Error::new(other).context("generation failed"),
    }
}

/// Runs `gpt2 generate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    // Check the options before loading anything.
    let seed = args.seed.unwrap_or_else(random_seed);
    let sampling = SamplingParams {
        temperature: if args.greedy { 0.0 } else { args.temperature },
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        repetition_window: args.repetition_window,
        seed,
    };
    sampling
        .validate()
        .map_err(|e| UsageError(format!("{}: {e}", flag_of(&e))))?;
    if args.num_samples == 0 {
        return Err(UsageError("--num-samples must be at least 1, got 0".into()).into());
    }
    if args.stop.iter().any(String::is_empty) {
        return Err(UsageError("--stop: a stop string cannot be empty".into()).into());
    }
    let prompt_text = match &args.prompt_ids {
        Some(_) => None,
        None => Some(load::text_or_stdin(args.prompt.as_deref())?),
    };

    let loaded = load::load(&args.model)?;
    let tokenizer = &loaded.tokenizer;
    let n_vocab = loaded.model.config().n_vocab;
    let eos = tokenizer
        .end_of_text()
        .unwrap_or(gpt2_tokenizer::END_OF_TEXT);
    let mut prompt = match (&args.prompt_ids, &prompt_text) {
        (Some(ids), _) => ids.0.clone(),
        (None, Some(text)) => tokenizer
            .encode(text)
            .context("cannot tokenize the prompt")?,
        (None, None) => Vec::new(),
    };
    if prompt.is_empty() {
        // Unconditional generation, as OpenAI's sample.py: start from <|endoftext|>.
        prompt.push(eos);
    }
    load::check_ids(&prompt, n_vocab)?;

    let options = GenerateOptions {
        sampling,
        max_new_tokens: args.max_tokens,
        eos_token: Some(eos),
        stop_at_eos: !args.ignore_eos,
        stop_strings: args.stop.iter().map(|s| unescape(s)).collect(),
        top_n: args.show_probs.unwrap_or(0),
        context_overflow: match args.context_overflow {
            OverflowArg::Error => ContextOverflow::Error,
            OverflowArg::Slide => ContextOverflow::Slide,
        },
        stream: 0,
        ..GenerateOptions::default()
    };

    let stdout = io::stdout();
    let mut out = stdout.lock();
    let stderr = io::stderr();
    // Both on one terminal: start each --show-probs table on a line of its own.
    let shared_terminal = {
        use std::io::IsTerminal;
        stdout.is_terminal() && stderr.is_terminal()
    };
    let mut session = Session::new(&loaded.model);
    for sample in 0..args.num_samples {
        let options = GenerateOptions {
            stream: sample as u64,
            ..options.clone()
        };
        let text_mode = args.format == Format::Text;
        if text_mode && args.num_samples > 1 {
            writeln!(out, "--- sample {} of {} ---", sample + 1, args.num_samples)?;
        }
        let prefill_start = Instant::now();
        let generation = session
            .generate(tokenizer, &prompt, options)
            .map_err(generate_error)?;
        let prefill_time = prefill_start.elapsed();
        let prompt_ids = generation.prompt().to_vec();
        let mut ends_with_newline = true;
        if text_mode && args.echo {
            let echoed = match &prompt_text {
                Some(text) => text.clone(),
                None => tokenizer.decode(&prompt).unwrap_or_default(),
            };
            if !echoed.is_empty() {
                out.write_all(echoed.as_bytes())?;
                out.flush()?;
                ends_with_newline = echoed.ends_with('\n');
            }
        }
        let decode_start = Instant::now();
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut steps = Vec::new();
        let mut finish = "length";
        for token in generation {
            let token = token.map_err(generate_error)?;
            ids.push(token.id);
            if let Some(k) = args.show_probs {
                if text_mode {
                    let mut err = stderr.lock();
                    if k > 0 {
                        if shared_terminal && !ends_with_newline {
                            writeln!(err)?;
                        }
                        write_step(
                            &mut err,
                            tokenizer,
                            ids.len(),
                            &token,
                            !sampling.is_greedy(),
                        )?;
                    }
                } else {
                    steps.push(JsonStep {
                        id: token.id,
                        token: tokenizer.decode(&[token.id]).unwrap_or_default(),
                        logprob: token.logprob,
                        prob: token.logprob.exp(),
                        sampling_prob: token.sampling_prob,
                        top: token
                            .alternatives
                            .iter()
                            .map(|c| JsonCandidate {
                                id: c.id,
                                token: tokenizer.decode(&[c.id]).unwrap_or_default(),
                                prob: c.prob(),
                                sampling_prob: c.sampling_prob,
                            })
                            .collect(),
                    });
                }
            }
            if text_mode {
                if !token.text.is_empty() {
                    out.write_all(token.text.as_bytes())?;
                    out.flush()?;
                    ends_with_newline = token.text.ends_with('\n');
                }
            } else {
                text.push_str(&token.text);
            }
            if let Some(reason) = token.finish_reason {
                finish = reason.as_str();
            }
        }
        let decode_time = decode_start.elapsed();
        if text_mode && !ends_with_newline {
            writeln!(out)?;
            out.flush()?;
        }
        let stats = Stats {
            load_ms: loaded.load_time.as_secs_f64() * 1e3,
            prompt_tokens: prompt_ids.len(),
            prefill_ms: prefill_time.as_secs_f64() * 1e3,
            prefill_tok_per_s: per_s(prompt_ids.len(), prefill_time.as_secs_f64()),
            generated_tokens: ids.len(),
            decode_ms: decode_time.as_secs_f64() * 1e3,
            decode_tok_per_s: per_s(ids.len(), decode_time.as_secs_f64()),
            // Read only when it is printed.
            peak_rss_mib: args.stats.then(peak_rss_mib).flatten(),
        };
        if args.stats {
            let mut err = stderr.lock();
            if sample == 0 {
                writeln!(
                    err,
                    "load:    {:.1} ms ({})",
                    stats.load_ms,
                    loaded.dir.display()
                )?;
            }
            writeln!(
                err,
                "prefill: {} prompt tokens in {:.1} ms ({:.1} tok/s)",
                stats.prompt_tokens, stats.prefill_ms, stats.prefill_tok_per_s
            )?;
            writeln!(
                err,
                "decode:  {} tokens in {:.1} ms ({:.1} tok/s), finish reason {finish}, seed {seed}",
                stats.generated_tokens, stats.decode_ms, stats.decode_tok_per_s
            )?;
            if let Some(mib) = stats.peak_rss_mib {
                writeln!(err, "memory:  peak RSS {mib:.0} MiB")?;
            }
        }
        if !text_mode {
            let json = JsonSample {
                prompt_ids,
                ids,
                text,
                finish_reason: finish,
                seed,
                steps: args.show_probs.map(|_| steps),
                stats: args.stats.then_some(stats),
            };
            let line = serde_json::to_string(&json).context("cannot encode the JSON output")?;
            writeln!(out, "{line}")?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_stop_strings() {
        assert_eq!(unescape(r"a\nb\t\\c\x"), "a\nb\t\\c\\x");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("end\\"), "end\\");
    }

    #[test]
    fn random_seeds_differ() {
        let a = random_seed();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_ne!(a, random_seed());
    }
}
