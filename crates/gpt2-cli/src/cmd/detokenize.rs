//! `gpt2 detokenize` (work in progress).

/// Arguments of `gpt2 detokenize`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `gpt2 detokenize`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`gpt2 detokenize` is not implemented yet")
}
