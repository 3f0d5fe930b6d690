//! `cargo xtask bench --train`: training speed, `gpt2 train` against PyTorch eager, side by
//! side in one run.
//!
//! Both train a new 124M-shape model (random weights, dropout 0, f32) with AdamW and gradient
//! clipping on the same random token ids, on `--threads` threads, at two shapes of the
//! micro-batch: B=4, T=64 and B=8, T=256. Ours is the release `gpt2 train` (its `--log-json`
//! tokens per second, the median over the steps after the first); PyTorch's is
//! `tools/bench_train_torch.py` (Hugging Face's GPT2LMHeadModel + torch.optim.AdamW,
//! `torch.set_num_threads`), run with `--python PATH` (a Python with torch and transformers,
//! e.g. the venv of tools/requirements-fixtures.txt). Peak RSS is each process's `ru_maxrss`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::bench::median;

/// The micro-batch shapes measured: (B, T).
const SHAPES: [(usize, usize); 2] = [(4, 64), (8, 256)];

/// One measurement.
struct Row {
    ms_per_step: f64,
    tokens_per_s: f64,
    peak_rss_mib: f64,
}

/// Runs `cmd` to the end; its exit status and peak RSS (MiB).
fn run_measured(cmd: &mut Command) -> anyhow::Result<(bool, f64, String)> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the benchmark run")?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.context("no stdout")?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).context("cannot read its output")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it in for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child process, with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        bail!("cannot wait for the benchmark run");
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, usage.ru_maxrss as f64 / 1024.0, out))
}

fn ours(
    gpt2: &Path,
    work: &Path,
    data: &Path,
    (b, t): (usize, usize),
    steps: usize,
    threads: usize,
) -> anyhow::Result<Row> {
    let out = work.join(format!("run-{b}x{t}"));
    let log = work.join(format!("log-{b}x{t}.jsonl"));
    let _ = std::fs::remove_dir_all(&out);
    let args: Vec<String> = [
        "train",
        "--n-layer",
        "12",
        "--n-embd",
        "768",
        "--n-head",
        "12",
        "--n-ctx",
        "1024",
        "--data-order",
        "sequential",
        "--warmup-steps",
        "1",
        "--sample-every",
        "0",
        "--eval-every",
        "0",
        "--save-every",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--log-json".into(),
        log.display().to_string(),
        "--steps".into(),
        (steps + 1).to_string(),
        "--stop-after".into(),
        (steps + 1).to_string(),
        "--batch-size".into(),
        b.to_string(),
        "--seq-len".into(),
        t.to_string(),
        "--threads".into(),
        threads.to_string(),
    ])
    .collect();
    let (ok, rss, _) = run_measured(Command::new(gpt2).args(&args))?;
    if !ok {
        bail!("gpt2 train failed (B={b}, T={t})");
    }
    let text = std::fs::read_to_string(&log).context("no --log-json written")?;
    let tps: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["tokens_per_s"].as_f64())
        .skip(1)
        .collect();
    let _ = std::fs::remove_dir_all(&out);
    let tokens_per_s = median(&tps);
    Ok(Row {
        ms_per_step: (b * t) as f64 / tokens_per_s * 1e3,
        tokens_per_s,
        peak_rss_mib: rss,
    })
}

fn pytorch(
    python: &Path,
    (b, t): (usize, usize),
    steps: usize,
    threads: usize,
) -> anyhow::Result<Row> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/bench_train_torch.py");
    let (ok, rss, out) = run_measured(Command::new(python).arg(script).args([
        "--batch-size",
        &b.to_string(),
        "--seq-len",
        &t.to_string(),
        "--steps",
        &steps.to_string(),
        "--threads",
        &threads.to_string(),
    ]))?;
    if !ok {
        bail!("tools/bench_train_torch.py failed (B={b}, T={t})");
    }
    let v: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap_or(""))
        .context("tools/bench_train_torch.py printed no JSON")?;
    Ok(Row {
        ms_per_step: v["ms_per_step"].as_f64().unwrap_or(f64::NAN),
        tokens_per_s: v["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
        peak_rss_mib: rss,
    })
}

/// Runs the training benchmark and prints its table.
pub fn run(
    gpt2: &Path,
    work: &Path,
    steps: usize,
    threads: usize,
    python: Option<&PathBuf>,
) -> anyhow::Result<()> {
    if steps == 0 {
        bail!("--train-steps must be at least 1");
    }
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let data = work.join("ids.bin");
    let ids: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (((i * 7919 + i / 7) % 50257) as u16).to_le_bytes())
        .collect();
    std::fs::write(&data, ids).with_context(|| format!("cannot write {}", data.display()))?;
    let weights_mib = 124_439_808.0 * 4.0 / (1024.0 * 1024.0);
    println!("CPU: {}", crate::bench::cpu_summary());
    println!("training, 124M shape (f32 weights {weights_mib:.0} MiB), {threads} threads, median of {steps} steps after a warm-up step");
    println!();
    println!("| B×T | gpt2-rs ms/step | gpt2-rs tok/s | gpt2-rs peak RSS | PyTorch ms/step | PyTorch tok/s | PyTorch peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for shape in SHAPES {
        let a = ours(gpt2, work, &data, shape, steps, threads)?;
        let p = match python {
            Some(py) => Some(pytorch(py, shape, steps, threads)?),
            None => None,
        };
        let cell =
            |r: &Option<Row>, f: &dyn Fn(&Row) -> String| r.as_ref().map_or("–".to_string(), f);
        println!(
            "| {}×{} | {:.0} | {:.0} | {:.0} MiB | {} | {} | {} |",
            shape.0,
            shape.1,
            a.ms_per_step,
            a.tokens_per_s,
            a.peak_rss_mib,
            cell(&p, &|r| format!("{:.0}", r.ms_per_step)),
            cell(&p, &|r| format!("{:.0}", r.tokens_per_s)),
            cell(&p, &|r| format!("{:.0} MiB", r.peak_rss_mib)),
        );
    }
    Ok(())
}
