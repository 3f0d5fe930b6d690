//! Time to load a model directory and compute the first next-token logits, and the peak RSS.
//! Creates a random model of the 124M shape at DIR first if DIR does not exist.
//!
//! `cargo run --release -p gpt2-model --example load_time -- DIR [f32|f16]`
use std::time::Instant;

use gpt2_model::{Config, DType, Gpt2, LoadOptions, Logits};

fn vm_hwm_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: load_time DIR [f32|f16]")?);
    let dtype = match args.next().as_deref() {
        Some("f16") => DType::F16,
        _ => DType::F32,
    };
    if !dir.exists() {
        let t = Instant::now();
        Gpt2::random(&Config::GPT2_124M, 0, &LoadOptions::default())?.save_hf(&dir)?;
        println!(
            "created {} in {:.2} s (run again to measure a cold process)",
            dir.display(),
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let file_mib =
        std::fs::metadata(dir.join("model.safetensors"))?.len() as f64 / (1024.0 * 1024.0);
    let t = Instant::now();
    let model = Gpt2::load(&dir, &LoadOptions::cpu(dtype))?;
    let load = t.elapsed().as_secs_f64();
    let mut cache = model.new_cache(Default::default());
    let prompt: Vec<u32> = (0..32).map(|i| (i * 7919 + 1) % 50257).collect();
    let logits = model.prefill(&mut cache, &[&prompt], Logits::Last)?;
    let first: Vec<u32> = logits.argmax(1)?.to_vec1()?;
    let total = t.elapsed().as_secs_f64();
    println!(
        "{dtype:?}: load {load:.3} s, load + 32-token prefill -> first token {:?} {total:.3} s; peak RSS {:.0} MiB = {:.2}x the {file_mib:.0} MiB file",
        first,
        vm_hwm_mib().unwrap_or(f64::NAN),
        vm_hwm_mib().unwrap_or(f64::NAN) / file_mib
    );
    Ok(())
}
