//! `cargo xtask bench --llama-bench PATH`: llama.cpp's `llama-bench` on the same random
//! models, in the same series as `gpt2` (one run of each per repetition), so the two are
//! compared under the same load of a shared machine.
//!
//! llama.cpp reads GGUF: the q8_0 dtypes use the file `gpt2 convert --dtype q8_0` writes;
//! f32 and f16 need `<size>-random-f32.gguf` / `-f16.gguf` next to the bench models, which
//! `tools/make_llama_gguf.py` writes (the command is printed when one is missing).
//!
//! Decode is `llama-bench -p 0 -n <new> -d <prompt>` (generation after a prompt of the same
//! length as ours) and prefill `-p <prefill> -n 0`, one repetition per call (`-r 1`), with the
//! same thread count. Some llama.cpp builds crash on some of these (an AMX build on a
//! machine whose hypervisor does not enable AMX tiles processes single tokens but dies on
//! prompts); then the next variant is tried (decode at depth 0, then without weight
//! repacking) and the table says which one ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

/// One way of calling `llama-bench` that may work where another crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As asked.
    AsAsked,
    /// Decode from an empty context (`-d 0`).
    NoDepth,
    /// Without weight repacking (`--repack 0`).
    NoRepack,
}

impl Variant {
    /// A note for the table.
    pub fn note(self) -> &'static str {
        match self {
            Variant::AsAsked => "",
            Variant::NoDepth => " (depth 0)",
            Variant::NoRepack => " (--repack 0)",
        }
    }
}

/// The GGUF file llama.cpp runs for the bench model `name` in `dtype`, or the command that
/// makes it. `q8_gguf` is the model's q8_0 `model.gguf` (`bench::ensure_model`'s): what the
/// q8_0 dtypes run, and where the f32/f16 files take their metadata from.
pub fn gguf_for(
    models_dir: &Path,
    name: &str,
    dtype: &str,
    q8_gguf: &Path,
) -> Result<PathBuf, String> {
    if dtype.starts_with("q8_0") {
        return Ok(q8_gguf.to_path_buf());
    }
    let p = models_dir.join(format!("{name}-random-{dtype}.gguf"));
    if p.is_file() {
        return Ok(p);
    }
    let src = models_dir.join(format!("{name}-random"));
    Err(format!(
        "llama.cpp needs {}; make it with (pip install gguf numpy):\n  python \
         tools/make_llama_gguf.py --model {} --metadata-from {} --outtype {dtype} --out {}",
        p.display(),
        src.display(),
        q8_gguf.display(),
        p.display()
    ))
}

/// Tokens per second of one `llama-bench` test: decode (`prompt` tokens of context, then
/// `new` generated) when `new > 0`, else a prefill of `prompt` tokens. Tries the variants
/// from `start` on and returns the one that ran.
pub fn run(
    llama_bench: &Path,
    model: &Path,
    threads: usize,
    prompt: usize,
    new: usize,
    start: Variant,
) -> anyhow::Result<(f64, Variant)> {
    let variants: &[Variant] = if new > 0 {
        &[Variant::AsAsked, Variant::NoDepth, Variant::NoRepack]
    } else {
        &[Variant::AsAsked, Variant::NoRepack]
    };
    let mut last_err = String::new();
    for &v in variants.iter().skip_while(|&&v| v != start) {
        let mut args: Vec<String> = vec![
            "-m".into(),
            model.display().to_string(),
            "-t".into(),
            threads.to_string(),
            "-r".into(),
            "1".into(),
            "-o".into(),
            "json".into(),
        ];
        if new > 0 {
            let depth = if v == Variant::NoDepth { 0 } else { prompt };
            args.extend(["-p", "0", "-n"].map(String::from));
            args.extend([new.to_string(), "-d".into(), depth.to_string()]);
        } else {
            args.extend(["-p".into(), prompt.to_string(), "-n".into(), "0".into()]);
        }
        if v == Variant::NoRepack {
            args.extend(["--repack".into(), "0".into()]);
        }
        let out = Command::new(llama_bench)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", llama_bench.display()))?;
        if !out.status.success() {
            last_err = format!(
                "{} {}: {}",
                llama_bench.display(),
                args.join(" "),
                out.status
            );
            continue;
        }
        let v_json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("unexpected output of {}", llama_bench.display()))?;
        let ts = v_json[0]["avg_ts"]
            .as_f64()
            .with_context(|| format!("no avg_ts in the output of {}", llama_bench.display()))?;
        return Ok((ts, v));
    }
    anyhow::bail!("every llama-bench variant failed; the last: {last_err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_f16_file_says_how_to_make_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q8 = dir.path().join("124M-random-q8_0-gguf/model.gguf");
        let err = gguf_for(dir.path(), "124M", "f16", &q8).expect_err("missing");
        assert!(err.contains("tools/make_llama_gguf.py"), "{err}");
        assert!(err.contains("--outtype f16"), "{err}");
        assert!(err.contains(&q8.display().to_string()), "{err}");
        std::fs::write(dir.path().join("124M-random-f16.gguf"), b"").expect("write");
        assert!(gguf_for(dir.path(), "124M", "f16", &q8).is_ok());
        assert_eq!(gguf_for(dir.path(), "124M", "q8_0", &q8), Ok(q8));
    }
}
