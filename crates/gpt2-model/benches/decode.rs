//! Prefill and per-token decode at the GPT-2 124M shape, random weights built in memory, in
//! f32, f16 and q8_0; and the time to load a 124M-shape model from disk (f32 safetensors, the
//! same quantized at load, and its GGUF q8_0 conversion), saved once into a temporary directory.
//!
//! `cargo bench -p gpt2-model --bench decode` (set `RAYON_NUM_THREADS` to pin the thread
//! count; a filter such as `-- 124M-q8_0/` or `-- 124M-load` runs one group). Throughput is
//! reported in tokens per second ("elem/s").

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpt2_model::{Config, ContextOverflow, DType, Gpt2, LoadOptions, Logits};

const PROMPT: usize = 32;
const NEW_TOKENS: usize = 128;

fn ids(n: usize, offset: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7919 + offset) % 50257).collect()
}

fn bench_model(c: &mut Criterion, opts: &LoadOptions, name: &str) {
    let model = Gpt2::random(&Config::GPT2_124M, 0, opts).expect("random 124M");
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

/// `Gpt2::load` of a random 124M-shape model written once as f32 safetensors (475 MiB; the
/// matrices are used in place from the mapped file), the same file quantized to q8_0 at load,
/// and its GGUF q8_0 conversion (130 MiB, loaded without re-quantizing). The files stay in the
/// page cache between iterations, so this is the warm-cache load time.
fn bench_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let f32_dir = dir.path().join("124M-f32");
    let q8_dir = dir.path().join("124M-q8_0");
    Gpt2::random(&Config::GPT2_124M, 0, &LoadOptions::default())
        .expect("random 124M")
        .save_hf(&f32_dir)
        .expect("save f32 safetensors");
    gpt2_weights::gguf::convert_to_gguf(&f32_dir, &q8_dir, &Default::default())
        .expect("convert to GGUF q8_0");

    let mut group = c.benchmark_group("gpt2-124M-load");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    let cases = [
        ("f32_safetensors", &f32_dir, LoadOptions::cpu(DType::F32)),
        ("f32_safetensors_to_q8_0", &f32_dir, LoadOptions::q8_0()),
        ("gguf_q8_0", &q8_dir, LoadOptions::q8_0()),
    ];
    for (name, path, opts) in &cases {
        group.bench_function(*name, |b| b.iter(|| Gpt2::load(path, opts).expect("load")));
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_model(c, &LoadOptions::cpu(DType::F32), "f32");
    bench_model(c, &LoadOptions::cpu(DType::F16), "f16");
    bench_model(c, &LoadOptions::q8_0(), "q8_0");
    bench_load(c);
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
