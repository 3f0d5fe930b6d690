//! `gpt2 tokenize` (work in progress).

/// Arguments of `gpt2 tokenize`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `gpt2 tokenize`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`gpt2 tokenize` is not implemented yet")
}
