//! The fuzz targets' checks (`fuzz/src/checks.rs`, the same functions `cargo fuzz` runs) on
//! the committed seed corpora (`fuzz/seeds/<target>/`) and the minimized inputs of past
//! findings (`fuzz/regressions/<target>/`), so that every `cargo test` replays them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

#[path = "../../fuzz/src/checks.rs"]
mod checks;

/// The files of `fuzz/<kind>/<target>/`, sorted (none when the folder is absent).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = gpt2_tests::root().join("fuzz").join(kind).join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("read a corpus entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs `check` on every seed and regression input of `target`; fails naming every input
/// that panicked. Seeds must exist for every target.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let seeds = inputs("seeds", target);
    assert!(
        !seeds.is_empty(),
        "no seeds for {target} (run fuzz/make_seeds.sh)"
    );
    let all: Vec<PathBuf> = seeds
        .into_iter()
        .chain(inputs("regressions", target))
        .collect();
    let mut failed = Vec::new();
    for path in &all {
        let data = std::fs::read(path).expect("read a fuzz input");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: these inputs panicked: {failed:#?}"
    );
    eprintln!("{target}: {} inputs replayed", all.len());
}

/// A scratch directory for the targets that write files.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

#[test]
fn server_request() {
    replay("server_request", checks::server_request);
}

#[test]
fn index() {
    replay("index", checks::index);
}

#[test]
fn checkpoint() {
    replay("checkpoint", checks::checkpoint);
}

#[test]
fn gguf() {
    replay("gguf", checks::gguf);
}

#[test]
fn hf_dir() {
    let dir = scratch();
    replay("hf_dir", |data| checks::hf_dir(dir.path(), data));
}

#[test]
fn tokenizer_files() {
    let dir = scratch();
    replay("tokenizer_files", |data| {
        checks::tokenizer_files(dir.path(), data)
    });
}

#[test]
fn encode_decode() {
    replay("encode_decode", checks::encode_decode);
}

#[test]
fn sampling() {
    replay("sampling", checks::sampling);
}

/// The seeds reach what their targets are for: the model directories open (but the one
/// named `bad`), the GGUF files parse, the tokenizer files load.
#[test]
fn seeds_are_valid_inputs() {
    let dir = scratch();
    for path in inputs("seeds", "hf_dir") {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let data = std::fs::read(&path).expect("read a seed");
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        std::fs::write(dir.path().join("config.json"), &data[2..2 + len]).expect("write");
        std::fs::write(dir.path().join("model.safetensors"), &data[2 + len..]).expect("write");
        let opened = gpt2_weights::Weights::open(dir.path());
        assert_eq!(opened.is_ok(), !name.contains("bad"), "{name}: {opened:?}");
    }
    for path in inputs("seeds", "gguf") {
        let data = std::fs::read(&path).expect("read a seed");
        let bytes = gpt2_weights::SharedBytes::from_vec(data);
        let file = gpt2_weights::gguf::GgufFile::from_bytes(bytes, &path);
        assert!(file.is_ok(), "{}: {file:?}", path.display());
    }
    for path in inputs("seeds", "tokenizer_files") {
        let data = std::fs::read(&path).expect("read a seed");
        let a_len = u16::from_le_bytes([data[1], data[2]]) as usize;
        let a = &data[3..3 + a_len];
        let b_len = u16::from_le_bytes([data[3 + a_len], data[4 + a_len]]) as usize;
        let b = &data[5 + a_len..5 + a_len + b_len];
        let loaded = if data[0] % 2 == 0 {
            gpt2_tokenizer::Tokenizer::from_vocab_and_merges_bytes(a, b, "vocab", "merges")
        } else {
            std::fs::write(dir.path().join("tokenizer.json"), a).expect("write");
            gpt2_tokenizer::Tokenizer::from_tokenizer_json(dir.path().join("tokenizer.json"))
        };
        assert!(loaded.is_ok(), "{}: {:?}", path.display(), loaded.err());
    }
}
