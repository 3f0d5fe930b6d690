//! Project tasks: `cargo xtask <task>` (the alias is in `.cargo/config.toml`).
//!
//! Each task is a module with its own clap `Args` and a `run` function.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod bench;
mod fetch_models;
mod llama;
mod llama_cpp;
mod serve_bench;
mod train_bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// gpt2-rs project tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Download GPT-2 weights (OpenAI's release or the Hugging Face hub) into a models directory.
    FetchModels(fetch_models::Args),
    /// Measure decode/prefill speed, first-token latency and peak RSS of `gpt2 generate` on
    /// random-weight models (the README's "Performance" numbers); with `--serve`, of
    /// `gpt2 serve` under concurrent clients.
    Bench(bench::Args),
    /// Build llama.cpp's `llama-bench` and `llama-quantize` here (from the tree vendored in a
    /// pinned `llama-cpp-python` sdist, into target/llama-cpp) for `bench --llama-bench`.
    LlamaCpp(llama_cpp::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::FetchModels(args) => fetch_models::run(args),
        Task::Bench(args) => bench::run(args),
        Task::LlamaCpp(args) => llama_cpp::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The error and its causes, one per line (no backtrace noise).
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
