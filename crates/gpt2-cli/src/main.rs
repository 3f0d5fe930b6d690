//! `gpt2`: run OpenAI's GPT-2 from the terminal.
//!
//! Each subcommand lives in its own module under `cmd/`, with its clap
//! arguments next to the code that runs it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod cmd;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// GPT-2 in Rust: generate text, score it, tokenize it, train or fine-tune a model, and
/// convert or inspect OpenAI's released weights.
#[derive(Parser)]
#[command(name = "gpt2", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt (streamed to stdout).
    Generate(cmd::generate::Args),
    /// Score a text: per-token log-probabilities and perplexity.
    Score(cmd::score::Args),
    /// Encode text into GPT-2 token ids.
    Tokenize(cmd::tokenize::Args),
    /// Decode GPT-2 token ids back into text.
    Detokenize(cmd::detokenize::Args),
    /// Convert weights (OpenAI's release or HF) to a Hugging Face directory.
    Convert(cmd::convert::Args),
    /// Show a model directory's layout, config, dtype and tensors.
    Inspect(cmd::inspect::Args),
    /// Write a model's logits for a prompt to a safetensors file.
    Logits(cmd::logits::Args),
    /// Serve a model over HTTP with OpenAI's Completions API.
    Serve(cmd::serve::Args),
    /// Fine-tune a model on your own text, or train one from scratch.
    Train(Box<cmd::train::Args>),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => cmd::generate::run(args),
        Command::Score(args) => cmd::score::run(args),
        Command::Tokenize(args) => cmd::tokenize::run(args),
        Command::Detokenize(args) => cmd::detokenize::run(args),
        Command::Convert(args) => cmd::convert::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Logits(args) => cmd::logits::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Train(args) => cmd::train::run(*args),
    }
}

/// The longest error message (or cause) printed, in bytes; longer ones lose their middle.
const MAX_MESSAGE: usize = 1000;

fn main() -> ExitCode {
    keep_freed_memory();
    // clap prints usage errors itself and exits with code 2; one that quotes a huge argument
    // is cut first (an argument can be 128 KiB).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() && err.to_string().len() > MAX_MESSAGE => {
            let message = gpt2_tokenizer::shorten_message(err.to_string(), MAX_MESSAGE);
            let _ = writeln!(io::stderr().lock(), "{}", message.trim_end());
            return ExitCode::from(2);
        }
        Err(err) => err.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let mut stderr = io::stderr().lock();
            // Every message is cut to a few hundred bytes: some quote the input (a line of a
            // file, a JSON value) that was wrong, and that input may be megabytes long.
            let brief = |message: String| gpt2_tokenizer::shorten_message(message, MAX_MESSAGE);
            let _ = writeln!(stderr, "error: {}", brief(err.to_string()));
            for cause in err.chain().skip(1) {
                let _ = writeln!(stderr, "  caused by: {}", brief(cause.to_string()));
            }
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}

/// Tells glibc's allocator to keep freed memory for reuse. A forward pass over a long prompt
/// allocates and frees a few megabytes per tensor op; by default glibc serves such blocks
/// with `mmap` and gives them back with `munmap` (or trims its heap), so every op paid for
/// fresh zeroed pages: page faults were ~18% of a 512-token prefill. With blocks up to 32 MiB
/// on the heap and up to 512 MiB of free heap kept, prefill is ~25% faster; decode, whose
/// tensors are small, keeps the same peak RSS. Elsewhere (musl, other OSes) nothing changes.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; it runs before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// A closed stdout (`gpt2 generate ... | head`) is not an error worth reporting.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
