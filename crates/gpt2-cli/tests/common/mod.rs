//! Fixture locations shared by the `gpt2` binary's integration tests.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed fixture model in Hugging Face's layout (fixtures/tiny: random weights, n_ctx 32).
pub fn tiny() -> PathBuf {
    root().join("fixtures/tiny/hf")
}

/// fixtures/tiny/reference.json: what transformers computes for the tiny model.
pub fn reference() -> Value {
    let path = root().join("fixtures/tiny/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read reference.json"))
        .expect("parse reference.json")
}
