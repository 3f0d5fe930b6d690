//! Project tasks: `cargo xtask <task>` (the alias is in `.cargo/config.toml`).
//!
//! Each task is a module with its own clap `Args` and a `run` function.

mod fetch_models;

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
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::FetchModels(args) => fetch_models::run(args),
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
