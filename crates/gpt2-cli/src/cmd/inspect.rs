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
    let w = Weights::open(&args.model)
        .with_context(|| format!("opening --model {}", args.model.display()))?;
    if args.verify {
        w.verify()
            .with_context(|| format!("verifying {}", args.model.display()))?;
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &describe(&args, &w))?;
            writeln!(out)?;
        }
        Format::Text => print_text(&mut out, &args, &w)?,
    }
    Ok(())
}

/// The JSON description: the same fields for every layout, plus the file's version, name and
/// size for GGUF.
fn describe(args: &Args, w: &Weights) -> serde_json::Value {
    let c = w.config();
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
    let mut value = json!({
        "dir": args.model.display().to_string(),
        "layout": w.layout().to_string(),
        "dtype": w.dtype().to_string(),
        "config": c,
        "head_dim": c.head_dim(),
        "num_parameters": w.num_parameters(),
        "verified": args.verify,
        "tensors": tensors,
    });
    if let (Some(g), Some(obj)) = (w.gguf(), value.as_object_mut()) {
        obj.insert("gguf_version".into(), json!(g.version()));
        obj.insert("name".into(), json!(g.name()));
        obj.insert("file_bytes".into(), json!(g.file_len()));
    }
    value
}

/// The text description.
fn print_text(out: &mut impl Write, args: &Args, w: &Weights) -> anyhow::Result<()> {
    let c = w.config();
    writeln!(out, "model:      {}", args.model.display())?;
    match w.gguf() {
        Some(g) => {
            writeln!(
                out,
                "layout:     gguf v{} ({})",
                g.version(),
                g.name().unwrap_or("unnamed")
            )?;
            writeln!(
                out,
                "dtype:      {} (matrices; vectors and wpe f32), {:.1} MiB",
                w.dtype(),
                g.file_len() as f64 / (1024.0 * 1024.0)
            )?;
        }
        None => {
            writeln!(out, "layout:     {}", w.layout())?;
            writeln!(out, "dtype:      {}", w.dtype())?;
        }
    }
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
    Ok(())
}
