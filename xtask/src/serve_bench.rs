//! `cargo xtask bench --serve`: `gpt2 serve` under concurrent streaming clients, measured as
//! vLLM's `benchmark_serving` measures a server, next to the two numbers it must keep up
//! with, in one interleaved series:
//!
//! - **`gpt2 generate`**: one stream's decode tok/s (`--stats`), which one client should
//!   reach (≥ 95%, as 1 / TPOT);
//! - **the library's batch**: aggregate decode tok/s of `--clients`' largest count decoded
//!   together in this process ([`batched_decode`]), which that many clients should reach
//!   (≥ 90% of it).
//!
//! Each repetition runs, in turn, one `gpt2 generate`, one batched decode, and every client
//! count against a server started once per dtype (`--parallel` = the largest count). A
//! client sends fixed-length token-id prompts (`temperature: 0`, `ignore_eos`, `stream`)
//! back to back, each its own prompt; with `--request-rate R`, request `i` (of all clients)
//! is sent no earlier than `i / R` seconds after the start (a steady arrival rate, as vLLM's
//! `--request-rate` with `--max-concurrency` = the clients). Per client count:
//!
//! - req/s and output tok/s: completed requests and generated tokens over the level's wall
//!   time (medians over repetitions);
//! - TTFT: request sent → first text event; TPOT: (last − first event) / (tokens − 1) per
//!   request; ITL: between consecutive text events (median and p99 over every request of
//!   every repetition).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gpt2_model::ModelSize;

use crate::bench::{
    batched_decode, ensure_model, generate_args, load_for_batch, median, prompt_ids, run_generate,
    Args,
};

/// One request's timings: when it was sent, and when each text event arrived.
struct Timed {
    sent: Instant,
    events: Vec<Instant>,
}

/// One client count's numbers from one repetition.
struct Level {
    req_s: f64,
    tok_s: f64,
    requests: Vec<Timed>,
}

/// The `p`-th percentile (nearest rank) of `v`; NaN when empty.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// A running `gpt2 serve`, stopped on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(
        gpt2: &Path,
        dir: &Path,
        dtype: &str,
        threads: usize,
        parallel: usize,
    ) -> anyhow::Result<Server> {
        let mut child = Command::new(gpt2)
            .args(["serve", "--offline", "-m"])
            .arg(dir)
            .args(["--dtype", dtype.trim_end_matches("-gguf")])
            .args(["--threads", &threads.to_string()])
            .args(["--parallel", &parallel.to_string()])
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {} serve", gpt2.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading gpt2 serve's first line")?;
        let base = match line.trim().strip_prefix("listening on ") {
            Some(b) => b.to_string(),
            None => {
                let _ = child.kill();
                bail!("gpt2 serve printed {line:?} instead of `listening on http://…`");
            }
        };
        let server = Server { child, base };
        let start = Instant::now();
        while ureq::get(&format!("{}/health", server.base))
            .call()
            .is_err()
        {
            if start.elapsed() > Duration::from_secs(300) {
                bail!("gpt2 serve did not become healthy in 300 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// One streaming completion of `prompt`, `new` greedy tokens.
    fn complete(&self, agent: &ureq::Agent, prompt: &[u32], new: usize) -> anyhow::Result<Timed> {
        let body = serde_json::json!({
            "prompt": prompt, "max_tokens": new, "temperature": 0,
            "ignore_eos": true, "stream": true,
        });
        let sent = Instant::now();
        let resp = agent
            .post(&format!("{}/v1/completions", self.base))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .context("POST /v1/completions")?;
        let mut events = Vec::new();
        for line in BufReader::new(resp.into_reader()).lines() {
            let line = line.context("reading the event stream")?;
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                break;
            }
            let v: serde_json::Value =
                serde_json::from_str(data).with_context(|| format!("event {data:?}"))?;
            if v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                events.push(Instant::now());
            }
        }
        Ok(Timed { sent, events })
    }

    /// `requests` completions from `clients` concurrent clients.
    fn level(
        &self,
        clients: usize,
        requests: usize,
        rate: Option<f64>,
        prompt_tokens: usize,
        new: usize,
        n_vocab: usize,
    ) -> anyhow::Result<Level> {
        let next = AtomicUsize::new(0);
        let done = Mutex::new(Vec::new());
        let start = Instant::now();
        std::thread::scope(|s| -> anyhow::Result<()> {
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    s.spawn(|| -> anyhow::Result<()> {
                        let agent = ureq::AgentBuilder::new()
                            .timeout(Duration::from_secs(600))
                            .build();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= requests {
                                return Ok(());
                            }
                            // With a rate: request i is sent no earlier than i / rate.
                            if let Some(r) = rate {
                                let due = start + Duration::from_secs_f64(i as f64 / r);
                                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            }
                            // Each request its own prompt: a shifted id pattern.
                            let prompt: Vec<u32> =
                                prompt_ids(prompt_tokens + i, n_vocab)[i..].to_vec();
                            let t = self.complete(&agent, &prompt, new)?;
                            done.lock()
                                .map_err(|_| anyhow::anyhow!("poisoned"))?
                                .push(t);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            }
            Ok(())
        })?;
        let wall = start.elapsed().as_secs_f64();
        let requests = done.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let tokens: usize = requests.iter().map(|r| r.events.len()).sum();
        Ok(Level {
            req_s: requests.len() as f64 / wall,
            tok_s: tokens as f64 / wall,
            requests,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM: the server drains (nothing is running) and exits.
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Runs `cargo xtask bench --serve` for every dtype and size of `args`.
pub fn run(args: &Args, gpt2: &Path) -> anyhow::Result<()> {
    let clients = &args.clients;
    let most = clients.iter().copied().max().unwrap_or(1);
    println!(
        "cargo xtask bench --serve: {}; {} threads, {}-token prompts, {} new tokens, \
         greedy streaming clients, {} repetitions, random weights",
        crate::bench::cpu_summary(),
        args.threads,
        args.prompt_tokens,
        args.new_tokens,
        args.reps
    );
    match args.request_rate {
        Some(r) => println!("requests sent at {r} per second"),
        None => println!("requests sent back to back"),
    }
    for dtype in &args.dtypes {
        for &size in &args.sizes {
            run_one(args, gpt2, size, dtype, most)?;
        }
    }
    Ok(())
}

fn run_one(
    args: &Args,
    gpt2: &Path,
    size: ModelSize,
    dtype: &str,
    most: usize,
) -> anyhow::Result<()> {
    let config = size.config();
    let dir = ensure_model(&args.models_dir, size.openai_name(), &config, dtype)?;
    let server = Server::start(gpt2, &dir, dtype, args.threads, most)?;
    let prompt = prompt_ids(args.prompt_tokens, config.n_vocab);
    // Warm-up: the first request maps the weights in.
    server.complete(&ureq::agent(), &prompt, 4)?;
    let library = load_for_batch(&dir, dtype)?;
    let decode_args = generate_args(&dir, dtype, args.threads, &prompt, args.new_tokens, true);
    let (mut generate, mut batch) = (Vec::new(), Vec::new());
    let mut levels: Vec<Vec<Level>> = args.clients.iter().map(|_| Vec::new()).collect();
    for rep in 0..args.reps {
        eprint!("\r{size} {dtype}: repetition {}/{}", rep + 1, args.reps);
        generate.push(run_generate(gpt2, &decode_args)?.decode_tok_per_s);
        batch.push(batched_decode(&library, most, &prompt, args.new_tokens)?);
        for (c, &clients) in args.clients.iter().enumerate() {
            let requests = args.serve_requests.max(clients);
            levels[c].push(server.level(
                clients,
                requests,
                args.request_rate,
                args.prompt_tokens,
                args.new_tokens,
                config.n_vocab,
            )?);
        }
    }
    eprintln!();
    drop(server);
    let (generate, batch) = (median(&generate), median(&batch));
    println!("\n### {size} {dtype}\n");
    println!(
        "`gpt2 generate` decode: {generate:.1} tok/s; library batch {most}: {batch:.1} tok/s \
         (medians)\n"
    );
    println!("| clients | req/s | out tok/s | TTFT med / p99 (ms) | TPOT med / p99 (ms) | ITL med / p99 (ms) |");
    println!("|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for (c, &clients) in args.clients.iter().enumerate() {
        let reps = &levels[c];
        let all: Vec<&Timed> = reps.iter().flat_map(|l| &l.requests).collect();
        let ttft: Vec<f64> = all
            .iter()
            .filter_map(|r| r.events.first().map(|t| (*t - r.sent).as_secs_f64()))
            .collect();
        let tpot: Vec<f64> = all
            .iter()
            .filter(|r| r.events.len() > 1)
            .map(|r| {
                let (first, last) = (r.events[0], r.events[r.events.len() - 1]);
                (last - first).as_secs_f64() / (r.events.len() - 1) as f64
            })
            .collect();
        let itl: Vec<f64> = all
            .iter()
            .flat_map(|r| r.events.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()))
            .collect();
        let req_s = median(&reps.iter().map(|l| l.req_s).collect::<Vec<_>>());
        let tok_s = median(&reps.iter().map(|l| l.tok_s).collect::<Vec<_>>());
        let ms = |v: &[f64], p: f64| percentile(v, p) * 1e3;
        println!(
            "| {clients} | {req_s:.2} | {tok_s:.1} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} / {:.1} |",
            ms(&ttft, 50.0),
            ms(&ttft, 99.0),
            ms(&tpot, 50.0),
            ms(&tpot, 99.0),
            ms(&itl, 50.0),
            ms(&itl, 99.0),
        );
        summary.push((
            clients,
            tok_s,
            percentile(&tpot, 50.0),
            percentile(&ttft, 99.0),
        ));
    }
    // The targets, as ratios.
    if let Some(&(1, _, tpot, ttft_1)) = summary.iter().find(|s| s.0 == 1) {
        println!(
            "\none client: 1 / TPOT = {:.1} tok/s = {:.2}× `gpt2 generate` (target ≥ 0.95)",
            1.0 / tpot,
            1.0 / tpot / generate
        );
        if let Some(&(n, tok_s, _, ttft_n)) = summary.iter().find(|s| s.0 == most && most > 1) {
            println!(
                "{n} clients: {tok_s:.1} tok/s = {:.2}× the library's batch {n} (target ≥ 0.90); \
                 TTFT p99 {:.2}× one client's (target < 3)",
                tok_s / batch,
                ttft_n / ttft_1
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 100.0);
        assert_eq!(percentile(&v, 100.0), 101.0);
        assert_eq!(percentile(&[f64::NAN, 2.0], 50.0), 2.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
