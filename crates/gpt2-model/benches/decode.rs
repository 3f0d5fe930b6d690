//! Prefill and per-token decode at the GPT-2 124M shape, random weights built in memory
//! (no files needed).
//!
//! `cargo bench -p gpt2-model --bench decode` (set `RAYON_NUM_THREADS` to pin the thread
//! count). Throughput is reported in tokens per second ("elem/s").

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpt2_model::{Config, ContextOverflow, DType, Gpt2, LoadOptions, Logits};

const PROMPT: usize = 32;
const NEW_TOKENS: usize = 128;

fn ids(n: usize, offset: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7919 + offset) % 50257).collect()
}

fn bench_dtype(c: &mut Criterion, dtype: DType, name: &str) {
    let model = Gpt2::random(&Config::GPT2_124M, 0, &LoadOptions::cpu(dtype)).expect("random 124M");
    let mut group = c.benchmark_group(format!("gpt2-124M-{name}"));
    group.sample_size(10);

    for n in [32usize, 512] {
        let prompt = ids(n, 1);
        let mut cache = model.new_cache(ContextOverflow::Error);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("prefill_{n}"), |b| {
            b.iter(|| {
                model
                    .prefill(&mut cache, &[&prompt], Logits::Last)
                    .expect("prefill")
            })
        });
    }

    // One token per iteration after a 32-token prompt; the context runs from 32 to
    // 32 + 128 tokens and then restarts (truncate keeps the prompt and the buffers).
    for batch in [1usize, 4] {
        let prompts: Vec<Vec<u32>> = (0..batch).map(|i| ids(PROMPT, i as u32)).collect();
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let mut cache = model.new_cache(ContextOverflow::Error);
        model
            .prefill(&mut cache, &refs, Logits::Last)
            .expect("prefill");
        cache.reserve(PROMPT + NEW_TOKENS).expect("reserve");
        let next = vec![464u32; batch];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("decode_batch{batch}"), |b| {
            b.iter(|| {
                if cache.len() >= PROMPT + NEW_TOKENS {
                    cache.truncate(PROMPT);
                }
                model.step(&mut cache, &next).expect("step")
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_dtype(c, DType::F32, "f32");
    bench_dtype(c, DType::F16, "f16");
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
