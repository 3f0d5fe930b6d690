//! Encode throughput of GPT-2's tokenizer, in MB/s, on a few MB of mixed text.
//!
//! The text is every case of `tests/data/cases.jsonl` (prose, code, man pages,
//! whitespace runs, many scripts, emoji, numbers; ~600 KB) repeated to about 4 MB.
//! Also measures building the tokenizer: from the embedded vocabulary (what the CLI
//! does at every start), and from files in OpenAI's and Hugging Face's layouts.
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

    // A short prompt, as in generation.
    c.bench_function("encode/prompt", |b| {
        b.iter(|| tokenizer.encode(black_box("The meaning of life is")))
    });
}

fn bench_construction(c: &mut Criterion) {
    let mut group = c.benchmark_group("construction");
    group.sample_size(20);
    group.bench_function("gpt2_embedded", |b| b.iter(Tokenizer::gpt2));

    let dir = tempfile::tempdir().expect("temp dir");
    let openai = dir.path().join("openai");
    let hf = dir.path().join("hf");
    for sub in [&openai, &hf] {
        std::fs::create_dir(sub).expect("create dir");
    }
    let write =
        |path: std::path::PathBuf, bytes: &[u8]| std::fs::write(path, bytes).expect("write");
    write(
        openai.join("encoder.json"),
        include_bytes!("../data/encoder.json"),
    );
    write(
        openai.join("vocab.bpe"),
        include_bytes!("../data/vocab.bpe"),
    );
    write(hf.join("tokenizer.json"), &tokenizer_json());
    group.bench_function("from_dir_openai", |b| {
        b.iter(|| Tokenizer::from_dir(&openai).expect("load"))
    });
    group.bench_function("from_dir_tokenizer_json", |b| {
        b.iter(|| Tokenizer::from_dir(&hf).expect("load"))
    });
    group.finish();
}

/// A `tokenizer.json` as Hugging Face writes it for `gpt2`.
fn tokenizer_json() -> Vec<u8> {
    let vocab: serde_json::Value =
        serde_json::from_slice(include_bytes!("../data/encoder.json")).expect("vocab");
    let merges: Vec<serde_json::Value> = include_str!("../data/vocab.bpe")
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(' '))
        .map(|(a, b)| serde_json::json!([a, b]))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    }))
    .expect("json")
}

criterion_group!(benches, bench_encode, bench_construction);
criterion_main!(benches);
