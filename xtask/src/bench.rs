//! `cargo xtask bench`: the numbers of the README's "Performance" section, rerunnable.
//!
//! For each size and dtype it makes a random-weight model of that shape if it is missing
//! (`Gpt2::random` + `save_hf`, into `target/bench-models/<size>-random[-<dtype>]`), then runs
//! the release `gpt2` binary several times and prints medians:
//!
//! - **decode tok/s**: `gpt2 generate --stats --format json --greedy --ignore-eos` on a
//!   32-token prompt with 128 new tokens (the `decode_tok_per_s` of the stats object);
//! - **prefill tok/s**: the same with a 512-token prompt and one new token (`prefill_tok_per_s`);
//! - **first token**: wall time from spawning `gpt2 generate -n 1` (32-token prompt, text
//!   output) to the first byte on its stdout: process start, mmap, weight load, tokenizer,
//!   prefill and the first sampled token;
//! - **peak RSS**: the decode run's `VmHWM`, as `gpt2 generate --stats` reports it at its end
//!   (`peak_rss_mib`; Linux only), next to the weight file's size.
//!
//! Before each model's runs the weight file is dropped from the page cache once
//! ([`drop_from_page_cache`]), so that it is read back the way a first run reads a
//! downloaded model; the first run of each series therefore includes a read from disk (the
//! medians are over all runs).
//!
//! `--llama-bench PATH` runs llama.cpp's `llama-bench` on GGUF files of the same models in
//! the same series (see [`crate::llama`]) and adds its decode and prefill columns.
//!
//! `--batch 1,4,16` adds aggregate decode throughput for several sequences decoded together
//! (one `Gpt2::step` for the whole batch per token), measured in this process with the
//! library, since `gpt2 generate --num-samples` runs its samples one after the other.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use gpt2_model::{Config, ContextOverflow, DType, Gpt2, LoadOptions, Logits, ModelSize};

use crate::llama;

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model shapes (124M, 355M, 774M, 1558M), random weights. Repeat or separate with commas.
    #[arg(long = "size", value_name = "SIZE", value_delimiter = ',', value_parser = parse_size,
          default_value = "124M")]
    pub sizes: Vec<ModelSize>,
    /// Weight dtypes to measure (one table each): f32, f16, q8_0 (the f32 file quantized at
    /// load), q8_0-gguf (a GGUF file written once by `gpt2 convert --dtype q8_0`'s converter).
    #[arg(
        long = "dtype",
        value_name = "DTYPE",
        value_delimiter = ',',
        default_value = "f32,f16,q8_0,q8_0-gguf"
    )]
    pub dtypes: Vec<String>,
    /// Runs per measurement (the table shows medians).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub reps: usize,
    /// CPU threads (`gpt2 generate --threads`).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub threads: usize,
    /// Prompt tokens of the decode and first-token runs.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub prompt_tokens: usize,
    /// New tokens of the decode run.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub new_tokens: usize,
    /// Prompt tokens of the prefill run (0 skips it; at most n_ctx - 1).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub prefill_tokens: usize,
    /// Also measure aggregate decode tok/s for these batch sizes (in-process, the library).
    #[arg(long, value_name = "B", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Only the batched measurement (skip the `gpt2 generate` runs).
    #[arg(long, requires = "batch")]
    pub batch_only: bool,
    /// Where the random models are kept.
    #[arg(long, default_value = "target/bench-models", value_name = "DIR")]
    pub models_dir: PathBuf,
    /// The `gpt2` binary to run (default: build it with `cargo build --release -p gpt2-cli`
    /// and use target/release/gpt2).
    #[arg(long, value_name = "PATH")]
    pub gpt2: Option<PathBuf>,
    /// Also run llama.cpp's `llama-bench` (this binary) on GGUF files of the same models, one
    /// run per repetition next to ours, and add its decode and prefill columns.
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
    /// Measure `gpt2 serve` under concurrent streaming clients instead (see
    /// `serve_bench.rs`), next to `gpt2 generate` and the library's batch in the same series.
    #[arg(long, conflicts_with_all = ["batch", "batch_only", "llama_bench", "train"])]
    pub serve: bool,
    /// With `--serve`: the concurrent client counts.
    #[arg(
        long,
        value_name = "N",
        value_delimiter = ',',
        default_value = "1,4,16"
    )]
    pub clients: Vec<usize>,
    /// With `--serve`: send request `i` no earlier than `i / RATE` seconds after a client
    /// count's start (requests per second; default: back to back).
    #[arg(long, value_name = "RATE")]
    pub request_rate: Option<f64>,
    /// With `--serve`: requests per client count and repetition (at least one per client).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub serve_requests: usize,
    /// Measure training instead (`gpt2 train`, 124M shape, B×T = 4×64 and 8×256; see
    /// `train_bench`), next to PyTorch when `--python` is given.
    #[arg(long)]
    pub train: bool,
    /// Optimizer steps per training measurement (after one warm-up step).
    #[arg(long, default_value_t = 3, value_name = "N", requires = "train")]
    pub train_steps: usize,
    /// A Python with torch and transformers, to run tools/bench_train_torch.py (PyTorch
    /// eager) in the training benchmark.
    #[arg(long, value_name = "PATH", requires = "train")]
    pub python: Option<PathBuf>,
}

/// The CPU this runs on, for the top of every table: its model name, family and model
/// numbers, and the vector features the kernels choose by (Linux; "unknown CPU" elsewhere).
pub fn cpu_summary() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let Some(model) = field("model name") else {
        return "unknown CPU".into();
    };
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = [
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx512_bf16",
        "avx512fp16",
        "amx_tile",
    ]
    .into_iter()
    .filter(|f| flags.split_whitespace().any(|x| x == *f))
    .collect();
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    format!(
        "{model} (family {} model {}), {cpus} CPUs, {}",
        field("cpu family").unwrap_or_else(|| "?".into()),
        field("model").unwrap_or_else(|| "?".into()),
        have.join(" ")
    )
}

/// 1 GiB of u64 for [`read_bandwidth`]: distinct values, written once so that every page is
/// really there (made once per bench run, then read at every repetition).
pub fn bandwidth_buffer() -> Vec<u64> {
    (0..1u64 << 27).collect()
}

/// The memory read bandwidth `threads` threads reach, in GB/s: each streams its share of
/// `buf` (much larger than any cache, see [`bandwidth_buffer`]) and sums it; the best of
/// three passes. This is what the decode kernels' weight streams are compared with (a decode
/// step reads every weight once).
pub fn read_bandwidth(buf: &[u64], threads: usize) -> f64 {
    let share = buf.len().div_ceil(threads.max(1)).max(1);
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let total = std::thread::scope(|s| {
            let parts: Vec<_> = buf
                .chunks(share)
                .map(|part| {
                    s.spawn(move || {
                        // Four independent sums, so the loads are not serialized on one add.
                        let mut acc = [0u64; 4];
                        for c in part.chunks_exact(4) {
                            for l in 0..4 {
                                acc[l] = acc[l].wrapping_add(c[l]);
                            }
                        }
                        acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                    })
                })
                .collect();
            parts
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max(std::mem::size_of_val(buf) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

fn parse_size(s: &str) -> Result<ModelSize, String> {
    s.parse::<ModelSize>().map_err(|e| e.to_string())
}

/// The median of `v` (the mean of the two middle values for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A deterministic prompt of `n` token ids spread over the vocabulary.
pub fn prompt_ids(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + 1) % n_vocab.max(1)) as u32)
        .collect()
}

/// The directory of the random model of `config` stored as `dtype` (`f32` or `f16`; `q8_0`
/// uses the f32 file, quantized at load time; `q8_0-gguf` a GGUF converted from the f32
/// model), creating it when missing.
pub fn ensure_model(
    models_dir: &Path,
    name: &str,
    config: &Config,
    dtype: &str,
) -> anyhow::Result<PathBuf> {
    if dtype == "q8_0-gguf" {
        let dir = models_dir.join(format!("{name}-random-q8_0-gguf"));
        if dir.join(gpt2_weights::gguf::GGUF_FILE).is_file() {
            return Ok(dir);
        }
        let from = ensure_model(models_dir, name, config, "f32")?;
        eprintln!(
            "converting {} to GGUF q8_0 in {}",
            from.display(),
            dir.display()
        );
        // GPT-2's tokenizer in the file, as `gpt2 convert` stores it for a model without
        // tokenizer files: llama.cpp needs one to load the model.
        let gpt2 = gpt2_tokenizer::Tokenizer::gpt2();
        let (tokens, merges) = gpt2.tokens_and_merges();
        let opts = gpt2_weights::gguf::GgufOptions {
            name: format!("{name}-random"),
            tokenizer: Some(gpt2_weights::gguf::TokenizerLists {
                tokens,
                merges,
                eos: gpt2.end_of_text(),
            }),
        };
        gpt2_weights::gguf::convert_to_gguf(&from, &dir, &opts)
            .with_context(|| format!("cannot convert {} to GGUF", from.display()))?;
        return Ok(dir);
    }
    let (suffix, store) = match dtype {
        "f16" => ("-f16", DType::F16),
        _ => ("", DType::F32),
    };
    let dir = models_dir.join(format!("{name}-random{suffix}"));
    if dir.join("model.safetensors").is_file() && dir.join("config.json").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(models_dir)
        .with_context(|| format!("cannot create {}", models_dir.display()))?;
    eprintln!(
        "making a random {name} model ({store:?}) in {}",
        dir.display()
    );
    let model = Gpt2::random(config, 0, &LoadOptions::cpu(store))
        .with_context(|| format!("cannot build a random {name} model"))?;
    model
        .save_hf(&dir)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(dir)
}

/// Asks the kernel to drop `path` from the page cache (Linux; elsewhere nothing), so that the
/// next run reads it from disk the way a user's first run reads a downloaded model: through
/// `gpt2`'s map, which asks for transparent huge pages (`MADV_HUGEPAGE`). A file this tool
/// (or any writer) has just written sits in the cache in 4 KiB pages instead, and the decode
/// kernels, which read the weights in place, run ~20% slower on it (f16, 124M, measured).
pub fn drop_from_page_cache(path: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(file) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only changes caching, never the data.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

/// What one `gpt2 generate` run measured.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    /// Seconds from spawning the process to the first byte on its stdout.
    pub first_byte_s: f64,
    /// Peak resident set size of the child, bytes (0 where /proc is missing).
    pub max_rss_bytes: u64,
    /// `stats.prefill_tok_per_s` (JSON runs; NaN otherwise).
    pub prefill_tok_per_s: f64,
    /// `stats.decode_tok_per_s` (JSON runs; NaN otherwise).
    pub decode_tok_per_s: f64,
}

/// Runs `gpt2 generate` with `args` and measures it (see [`RunResult`]).
pub fn run_generate(gpt2: &Path, args: &[String]) -> anyhow::Result<RunResult> {
    let start = Instant::now();
    let mut child = Command::new(gpt2)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", gpt2.display()))?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    // stderr on its own thread so a chatty child never blocks on a full pipe.
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut first = [0u8; 1];
    let mut out = Vec::new();
    let n = stdout.read(&mut first).context("cannot read the output")?;
    let first_byte_s = start.elapsed().as_secs_f64();
    out.extend_from_slice(&first[..n]);
    stdout
        .read_to_end(&mut out)
        .context("cannot read the output")?;
    let ok = child.wait().context("cannot wait for gpt2")?.success();
    let err = err_reader.join().unwrap_or_default();
    if !ok {
        bail!("{} {} failed:\n{err}", gpt2.display(), args.join(" "));
    }
    let out = String::from_utf8_lossy(&out);
    let (mut prefill, mut decode, mut max_rss_bytes) = (f64::NAN, f64::NAN, 0);
    if args.iter().any(|a| a == "json") {
        let line = out.lines().next().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("unexpected output of gpt2 generate: {line:?}"))?;
        let stat = |k: &str| v["stats"][k].as_f64().unwrap_or(f64::NAN);
        prefill = stat("prefill_tok_per_s");
        decode = stat("decode_tok_per_s");
        // gpt2's own VmHWM, read at its end (Linux): no polling thread competing with the
        // measured process for the two cores.
        let mib = stat("peak_rss_mib");
        if mib.is_finite() {
            max_rss_bytes = (mib * 1024.0 * 1024.0) as u64;
        }
    }
    Ok(RunResult {
        first_byte_s,
        max_rss_bytes,
        prefill_tok_per_s: prefill,
        decode_tok_per_s: decode,
    })
}

/// The common `gpt2 generate` arguments.
pub fn generate_args(
    dir: &Path,
    dtype: &str,
    threads: usize,
    prompt: &[u32],
    new: usize,
    json: bool,
) -> Vec<String> {
    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let mut a: Vec<String> = [
        "generate",
        "--offline",
        "--greedy",
        "--ignore-eos",
        "--stats",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "-m".into(),
        dir.display().to_string(),
        "--dtype".into(),
        dtype.trim_end_matches("-gguf").into(),
        "--threads".into(),
        threads.to_string(),
        "-n".into(),
        new.to_string(),
        "--prompt-ids".into(),
        ids.join(","),
        "--format".into(),
        if json { "json" } else { "text" }.into(),
    ]);
    a
}

/// Aggregate decode throughput of `batch` sequences decoded together: prefill `prompt` for
/// every sequence (each a little different), then `new` greedy steps of the whole batch.
/// Returns tokens per second over the decode steps (`batch · new / time`).
pub fn batched_decode(
    model: &Gpt2,
    batch: usize,
    prompt: &[u32],
    new: usize,
) -> anyhow::Result<f64> {
    let n_vocab = model.config().n_vocab as u32;
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            let mut p = prompt.to_vec();
            if let Some(first) = p.first_mut() {
                *first = (*first + b as u32) % n_vocab;
            }
            p
        })
        .collect();
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut cache = model.new_cache(ContextOverflow::Error);
    cache.reserve(prompt.len() + new)?;
    let mut logits = model.prefill(&mut cache, &refs, Logits::Last)?;
    let start = Instant::now();
    for _ in 0..new {
        let next: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        logits = model.step(&mut cache, &next)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((batch * new) as f64 / secs.max(1e-9))
}

/// The model's weight file: `model.gguf` when there is one, else `model.safetensors`.
fn weight_file(dir: &Path) -> PathBuf {
    let gguf = dir.join(gpt2_weights::gguf::GGUF_FILE);
    if gguf.is_file() {
        gguf
    } else {
        dir.join("model.safetensors")
    }
}

fn file_size(dir: &Path) -> u64 {
    std::fs::metadata(weight_file(dir)).map_or(0, |m| m.len())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn build_gpt2() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the release gpt2 binary");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "gpt2-cli",
            "--bin",
            "gpt2",
        ])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p gpt2-cli failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    Ok(target
        .join("release")
        .join(format!("gpt2{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `cargo xtask bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.reps == 0 || args.threads == 0 {
        bail!("--reps and --threads must be at least 1");
    }
    for d in &args.dtypes {
        if !matches!(d.as_str(), "f32" | "f16" | "q8_0" | "q8_0-gguf") {
            bail!("--dtype: expected f32, f16, q8_0 or q8_0-gguf, found {d:?}");
        }
    }
    // Candle and rayon read these once, at the first tensor operation (the batched runs and
    // model generation happen in this process).
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", args.threads.to_string());
    if args.clients.contains(&0) || args.serve_requests == 0 {
        bail!("--clients and --serve-requests must be at least 1");
    }
    if args
        .request_rate
        .is_some_and(|r| !(r.is_finite() && r > 0.0))
    {
        bail!("--request-rate must be a positive number of requests per second");
    }
    if args.train {
        let gpt2 = match &args.gpt2 {
            Some(p) => p.clone(),
            None => build_gpt2()?,
        };
        let work = args.models_dir.join("train");
        return crate::train_bench::run(
            &gpt2,
            &work,
            args.train_steps,
            args.threads,
            args.python.as_ref(),
        );
    }
    let gpt2 = if args.batch_only {
        PathBuf::new()
    } else {
        match &args.gpt2 {
            Some(p) => p.clone(),
            None => build_gpt2()?,
        }
    };
    if args.serve {
        return crate::serve_bench::run(&args, &gpt2);
    }
    println!("CPU: {}", cpu_summary());
    let probe = bandwidth_buffer();
    let mut bandwidth = vec![read_bandwidth(&probe, args.threads)];
    println!(
        "cargo xtask bench: {} threads, greedy, {}-token prompt + {} new tokens (decode), \
         {}-token prompt (prefill), medians of {} runs, random weights",
        args.threads, args.prompt_tokens, args.new_tokens, args.prefill_tokens, args.reps
    );
    for dtype in &args.dtypes {
        let mut rows = Vec::new();
        let mut batch_rows = Vec::new();
        for &size in &args.sizes {
            let config = size.config();
            let dir = ensure_model(&args.models_dir, size.openai_name(), &config, dtype)?;
            drop_from_page_cache(&weight_file(&dir));
            if !args.batch_only {
                let prompt = prompt_ids(args.prompt_tokens, config.n_vocab);
                let long = prompt_ids(
                    args.prefill_tokens.min(config.n_ctx.saturating_sub(1)),
                    config.n_vocab,
                );
                let decode_args =
                    generate_args(&dir, dtype, args.threads, &prompt, args.new_tokens, true);
                let first_args = generate_args(&dir, dtype, args.threads, &prompt, 1, false);
                let prefill_args = generate_args(&dir, dtype, args.threads, &long, 1, true);
                let (mut decode, mut rss, mut first, mut prefill) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let llama_model = match &args.llama_bench {
                    None => None,
                    Some(_) => match llama::gguf_for(
                        &args.models_dir,
                        size.openai_name(),
                        dtype,
                        &ensure_model(&args.models_dir, size.openai_name(), &config, "q8_0-gguf")?
                            .join(gpt2_weights::gguf::GGUF_FILE),
                    ) {
                        Ok(p) => {
                            drop_from_page_cache(&p);
                            Some(p)
                        }
                        Err(msg) => {
                            eprintln!("{msg}");
                            None
                        }
                    },
                };
                let (mut l_decode, mut l_prefill) = (Vec::new(), Vec::new());
                let (mut l_dv, mut l_pv) = (llama::Variant::AsAsked, llama::Variant::AsAsked);
                for rep in 0..args.reps {
                    eprint!("\r{size} {dtype}: run {}/{}", rep + 1, args.reps);
                    bandwidth.push(read_bandwidth(&probe, args.threads));
                    let r = run_generate(&gpt2, &first_args)?;
                    first.push(r.first_byte_s);
                    let r = run_generate(&gpt2, &decode_args)?;
                    decode.push(r.decode_tok_per_s);
                    rss.push(r.max_rss_bytes as f64);
                    if !long.is_empty() {
                        let r = run_generate(&gpt2, &prefill_args)?;
                        prefill.push(r.prefill_tok_per_s);
                    }
                    if let (Some(lb), Some(m)) = (&args.llama_bench, &llama_model) {
                        let (ts, v) =
                            llama::run(lb, m, args.threads, prompt.len(), args.new_tokens, l_dv)?;
                        l_decode.push(ts);
                        l_dv = v;
                        if !long.is_empty() {
                            let (ts, v) = llama::run(lb, m, args.threads, long.len(), 0, l_pv)?;
                            l_prefill.push(ts);
                            l_pv = v;
                        }
                    }
                }
                eprintln!();
                let (decode, prefill) = (median(&decode), median(&prefill));
                let llama_cells = if args.llama_bench.is_none() {
                    String::new()
                } else if llama_model.is_none() {
                    " — | — | — | — |".to_string()
                } else {
                    let (d, p) = (median(&l_decode), median(&l_prefill));
                    let ratio = |a: f64, b: f64| {
                        if (a / b).is_finite() {
                            format!("{:.2}×", a / b)
                        } else {
                            "—".to_string()
                        }
                    };
                    format!(
                        " {d:.1}{} | {} | {} | {} |",
                        l_dv.note(),
                        if p.is_nan() {
                            "—".to_string()
                        } else {
                            format!("{p:.0}{}", l_pv.note())
                        },
                        ratio(decode, d),
                        ratio(prefill, p),
                    )
                };
                let file = file_size(&dir);
                let rss = median(&rss);
                // A decode step reads every weight once: the file's bytes per token (not for
                // q8_0 quantized at load, whose file is the f32 one).
                let streamed = if dtype == "q8_0" {
                    "—".to_string()
                } else {
                    let gbs = file as f64 * decode / 1e9;
                    format!("{gbs:.1} ({:.0}%)", 100.0 * gbs / median(&bandwidth))
                };
                rows.push(format!(
                    "| {size} | {:.1} | {streamed} | {} | {:.3} | {:.0} | {:.0} | {:.2} |{llama_cells}",
                    decode,
                    if prefill.is_nan() {
                        "—".to_string()
                    } else {
                        format!("{prefill:.0}")
                    },
                    median(&first),
                    rss / (1024.0 * 1024.0),
                    mib(file),
                    if file > 0 {
                        rss / file as f64
                    } else {
                        f64::NAN
                    },
                ));
            }
            if !args.batch.is_empty() {
                let model = load_for_batch(&dir, dtype)?;
                let prompt = prompt_ids(args.prompt_tokens, config.n_vocab);
                let mut cells = Vec::new();
                for &b in &args.batch {
                    let mut v = Vec::new();
                    for _ in 0..args.reps {
                        v.push(batched_decode(&model, b, &prompt, args.new_tokens)?);
                    }
                    cells.push(format!("{:.1}", median(&v)));
                }
                batch_rows.push(format!("| {size} | {} |", cells.join(" | ")));
            }
        }
        if !rows.is_empty() {
            println!("\n### {dtype}");
            let (llama_head, llama_rule) = if args.llama_bench.is_some() {
                (
                    " llama.cpp decode tok/s | llama.cpp prefill tok/s | decode ratio | prefill ratio |",
                    "---|---|---|---|",
                )
            } else {
                ("", "")
            };
            println!(
                "\nread bandwidth ({} threads, 1 GiB streamed, the probe run once per repetition): \
                 median {:.1} GB/s",
                args.threads,
                median(&bandwidth)
            );
            println!("\n| shape | decode tok/s | decode weights GB/s (% of read bandwidth) | prefill tok/s | start → first token (s) | peak RSS (MiB) | weight file (MiB) | RSS / file |{llama_head}");
            println!("|---|---|---|---|---|---|---|---|{llama_rule}");
            for r in &rows {
                println!("{r}");
            }
        }
        if !batch_rows.is_empty() {
            println!("\n### {dtype}: aggregate decode tok/s by batch size (library, in-process)\n");
            let heads: Vec<String> = args.batch.iter().map(|b| format!("batch {b}")).collect();
            println!("| shape | {} |", heads.join(" | "));
            println!("|---|{}", "---|".repeat(args.batch.len()));
            for r in &batch_rows {
                println!("{r}");
            }
        }
    }
    Ok(())
}

/// Loads a bench model for the in-process batched runs.
pub fn load_for_batch(dir: &Path, dtype: &str) -> anyhow::Result<Gpt2> {
    let opts = match dtype {
        "f16" => LoadOptions::cpu(DType::F16),
        "q8_0" | "q8_0-gguf" => LoadOptions::q8_0(),
        _ => LoadOptions::cpu(DType::F32),
    };
    Gpt2::load(dir, &opts).with_context(|| format!("cannot load {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn prompts_are_in_the_vocabulary() {
        let p = prompt_ids(600, 100);
        assert_eq!(p.len(), 600);
        assert!(p.iter().all(|&id| id < 100));
        assert_eq!(p, prompt_ids(600, 100));
    }

    /// The in-process parts at a tiny shape: the random model is written once and reused,
    /// and the batched decode runs for several batch sizes.
    #[test]
    fn tiny_model_and_batched_decode() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let config = Config {
            n_vocab: 64,
            n_ctx: 32,
            n_embd: 32,
            n_head: 2,
            n_layer: 2,
            layer_norm_epsilon: 1e-5,
        };
        let dir = ensure_model(tmp.path(), "tiny", &config, "f32")?;
        assert_eq!(dir, tmp.path().join("tiny-random"));
        let modified = std::fs::metadata(dir.join("model.safetensors"))?.modified()?;
        assert_eq!(ensure_model(tmp.path(), "tiny", &config, "f32")?, dir);
        assert_eq!(
            std::fs::metadata(dir.join("model.safetensors"))?.modified()?,
            modified
        );
        let f16 = ensure_model(tmp.path(), "tiny", &config, "f16")?;
        assert!(file_size(&f16) < file_size(&dir));
        let gguf = ensure_model(tmp.path(), "tiny", &config, "q8_0-gguf")?;
        assert!(weight_file(&gguf).ends_with("model.gguf"));
        assert!(file_size(&gguf) < file_size(&f16));
        for (dtype, dir) in [
            ("f32", &dir),
            ("f16", &f16),
            ("q8_0", &dir),
            ("q8_0-gguf", &gguf),
        ] {
            let model = load_for_batch(dir, dtype)?;
            for b in [1, 3] {
                let tps = batched_decode(&model, b, &prompt_ids(5, 64), 4)?;
                assert!(tps.is_finite() && tps > 0.0);
            }
        }
        Ok(())
    }
}
