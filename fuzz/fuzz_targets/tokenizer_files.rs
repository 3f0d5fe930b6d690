//! Tokenizer files (`encoder.json` + `vocab.bpe`, or `tokenizer.json`) from arbitrary bytes
//! through the loaders, then encodes and decodes with what loaded (see
//! `checks::tokenizer_files` for the input layout).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| gpt2_fuzz::scratch_dir("tokenizer_files"));
    gpt2_fuzz::checks::tokenizer_files(dir, data)
});
