//! `cargo xtask fetch-models`: download, verify and convert GPT-2 weights.
//!
//! All the work is done by `gpt2_download::fetch_model` (the `gpt2` CLI's first-run
//! download calls the same function).

use std::path::PathBuf;

use anyhow::Context;
use gpt2_download::{fetch_model, FetchOptions, ModelSize, Source};

/// Arguments of `cargo xtask fetch-models`.
#[derive(clap::Args)]
pub struct Args {
    /// Model sizes to fetch (124M, 355M, 774M, 1558M; hub names like gpt2-medium work too).
    /// Repeat the flag or separate with commas. Default: 124M.
    #[arg(long = "size", value_name = "SIZE", value_delimiter = ',', value_parser = parse_size,
          conflicts_with = "all")]
    sizes: Vec<ModelSize>,
    /// Fetch all four sizes.
    #[arg(long)]
    all: bool,
    /// Where to download from: openai (OpenAI's release, converted to safetensors) or hf
    /// (the Hugging Face hub).
    #[arg(long, default_value = "openai", value_parser = parse_source)]
    source: Source,
    /// Directory receiving DIR/SIZE/ (e.g. models/124M).
    #[arg(long, default_value = "models")]
    dir: PathBuf,
    /// Keep OpenAI's original files in DIR/SIZE-openai/ (default: removed after conversion).
    #[arg(long)]
    keep_original: bool,
    /// Base URL of OpenAI's release (files at URL/SIZE/FILE); default $GPT2_OPENAI_BASE_URL,
    /// else OpenAI's blob storage (openaipublic.blob.core.windows.net/gpt-2/models).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_size(s: &str) -> Result<ModelSize, String> {
    s.parse::<ModelSize>().map_err(|e| e.to_string())
}

fn parse_source(s: &str) -> Result<Source, String> {
    s.parse::<Source>()
}

/// Fetches every requested size, in order; stops at the first failure.
pub fn run(args: Args) -> anyhow::Result<()> {
    let sizes: Vec<ModelSize> = if args.all {
        ModelSize::ALL.to_vec()
    } else if args.sizes.is_empty() {
        vec![ModelSize::Small124M]
    } else {
        let mut sizes = args.sizes.clone();
        sizes.dedup();
        sizes
    };
    let mut opts = FetchOptions::new(&args.dir);
    opts.source = args.source;
    opts.keep_original = args.keep_original;
    opts.progress = !args.quiet;
    if let Some(url) = args.base_url {
        opts.openai_base_url = url;
    }
    for size in sizes {
        let dir = fetch_model(size, &opts)
            .with_context(|| format!("fetching GPT-2 {size} from {}", args.source))?;
        println!("{}", dir.display());
    }
    Ok(())
}
