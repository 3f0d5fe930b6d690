//! `gpt2 inspect`: show what a model directory holds — layout, hyperparameters,
//! parameter count, dtype and every tensor's name and shape.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use gpt2_weights::Weights;
use serde_json::json;

/// Output format of `gpt2 inspect`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// One JSON object.
    Json,
}

/// Describe a model directory (either layout, or a GGUF model) without loading the model.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (OpenAI or Hugging Face layout, or a GGUF model: a directory with
    /// model.gguf, or a .gguf file).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also read every tensor and check every stored checksum (GGUF: load the model).
    #[arg(long)]
    pub verify: bool,
}

/// Runs `gpt2 inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(file) = gpt2_model::gguf::find_gguf(&args.model) {
        return run_gguf(&args, &file);
    }
    let w = Weights::open(&args.model)
        .with_context(|| format!("opening --model {}", args.model.display()))?;
    if args.verify {
        w.verify()
            .with_context(|| format!("verifying {}", args.model.display()))?;
    }
    let c = w.config();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let tensors: Vec<_> = w
                .infos()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "stored_name": t.stored_name,
                        "shape": t.shape,
                        "dtype": t.dtype.to_string(),
                    })
                })
                .collect();
            let value = json!({
                "dir": args.model.display().to_string(),
                "layout": w.layout().to_string(),
                "dtype": w.dtype().to_string(),
                "config": c,
                "head_dim": c.head_dim(),
                "num_parameters": w.num_parameters(),
                "verified": args.verify,
                "tensors": tensors,
            });
            serde_json::to_writer_pretty(&mut out, &value)?;
            writeln!(out)?;
        }
        Format::Text => {
            writeln!(out, "model:      {}", args.model.display())?;
            writeln!(out, "layout:     {}", w.layout())?;
            writeln!(out, "dtype:      {}", w.dtype())?;
            writeln!(
                out,
                "config:     n_vocab={} n_ctx={} n_embd={} n_head={} (head_dim {}) n_layer={} layer_norm_epsilon={:e}",
                c.n_vocab,
                c.n_ctx,
                c.n_embd,
                c.n_head,
                c.head_dim(),
                c.n_layer,
                c.layer_norm_epsilon
            )?;
            writeln!(out, "parameters: {}", w.num_parameters())?;
            if args.verify {
                writeln!(
                    out,
                    "verified:   every tensor read, every stored checksum matches"
                )?;
            }
            let infos: Vec<_> = w.infos().collect();
            writeln!(out, "tensors:    {}", infos.len())?;
            let width = infos.iter().map(|t| t.name.len()).max().unwrap_or(0);
            for t in infos {
                let shape = format!("{:?}", t.shape);
                if t.stored_name == t.name {
                    writeln!(out, "  {:width$}  {shape:16} {}", t.name, t.dtype)?;
                } else {
                    writeln!(
                        out,
                        "  {:width$}  {shape:16} {}  ({})",
                        t.name, t.dtype, t.stored_name
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// `gpt2 inspect` on a GGUF model.
fn run_gguf(args: &Args, file: &std::path::Path) -> anyhow::Result<()> {
    use gpt2_model::gguf::GgufFile;
    let g = GgufFile::open(file).with_context(|| format!("opening --model {}", file.display()))?;
    if args.verify {
        g.load(&gpt2_model::LoadOptions::q8_0())
            .with_context(|| format!("verifying {}", file.display()))?;
    }
    let c = g.config();
    let tensors = g.tensors();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let list: Vec<_> = tensors
                .iter()
                .map(|t| {
                    json!({
                        "name": t.canonical,
                        "stored_name": t.name,
                        "shape": t.shape,
                        "dtype": t.dtype.to_lowercase(),
                    })
                })
                .collect();
            let value = json!({
                "dir": args.model.display().to_string(),
                "layout": "gguf",
                "gguf_version": g.version(),
                "name": g.name(),
                "dtype": "q8_0",
                "config": c,
                "head_dim": c.head_dim(),
                "num_parameters": g.num_parameters(),
                "file_bytes": g.file_len(),
                "verified": args.verify,
                "tensors": list,
            });
            serde_json::to_writer_pretty(&mut out, &value)?;
            writeln!(out)?;
        }
        Format::Text => {
            writeln!(out, "model:      {}", file.display())?;
            writeln!(
                out,
                "layout:     gguf v{} ({})",
                g.version(),
                g.name().unwrap_or("unnamed")
            )?;
            writeln!(
                out,
                "dtype:      q8_0 (matrices; vectors and wpe f32), {:.1} MiB",
                g.file_len() as f64 / (1024.0 * 1024.0)
            )?;
            writeln!(
                out,
                "config:     n_vocab={} n_ctx={} n_embd={} n_head={} (head_dim {}) n_layer={} layer_norm_epsilon={:e}",
                c.n_vocab,
                c.n_ctx,
                c.n_embd,
                c.n_head,
                c.head_dim(),
                c.n_layer,
                c.layer_norm_epsilon
            )?;
            writeln!(out, "parameters: {}", g.num_parameters())?;
            if args.verify {
                writeln!(out, "verified:   every tensor read and the model built")?;
            }
            writeln!(out, "tensors:    {}", tensors.len())?;
            let width = tensors.iter().map(|t| t.canonical.len()).max().unwrap_or(0);
            for t in tensors {
                let shape = format!("{:?}", t.shape);
                writeln!(
                    out,
                    "  {:width$}  {shape:16} {:4}  ({})",
                    t.canonical, t.dtype, t.name
                )?;
            }
        }
    }
    Ok(())
}
