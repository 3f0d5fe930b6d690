//! Encode throughput of GPT-2's tokenizer, in MB/s, on a few MB of mixed text.
//!
//! The text is every case of `tests/data/cases.jsonl` (prose, code, man pages,
//! whitespace runs, many scripts, emoji, numbers; ~600 KB) repeated to about 4 MB.
//! Also measures building the tokenizer from the embedded vocabulary.
//!
//! Run with `cargo bench -p gpt2-tokenizer`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpt2_tokenizer::Tokenizer;
use std::hint::black_box;

const CASES: &str = include_str!("../tests/data/cases.jsonl");
const TARGET_BYTES: usize = 4 << 20;

/// The case texts, concatenated and repeated to about `TARGET_BYTES`.
fn mixed_text() -> String {
    let texts: Vec<String> = CASES
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|case| case.get("text")?.as_str().map(str::to_string))
        .collect();
    let one_round = texts.join("\n");
    let mut text = String::with_capacity(TARGET_BYTES + one_round.len());
    while text.len() < TARGET_BYTES {
        text.push_str(&one_round);
        text.push('\n');
    }
    text
}

fn bench_encode(c: &mut Criterion) {
    let tokenizer = Tokenizer::gpt2();
    let text = mixed_text();
    let mut group = c.benchmark_group("encode");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("mixed_4MB", |b| {
        b.iter(|| tokenizer.encode(black_box(&text)))
    });
    group.finish();

    c.bench_function("Tokenizer::gpt2 (construction)", |b| {
        b.iter(Tokenizer::gpt2)
    });
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
