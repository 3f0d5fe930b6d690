//! A Hugging Face model directory (`config.json` + `model.safetensors`) from arbitrary
//! bytes, opened, read and loaded into the model (see `checks::hf_dir` for the input layout).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| gpt2_fuzz::scratch_dir("hf_dir"));
    gpt2_fuzz::checks::hf_dir(dir, data)
});
