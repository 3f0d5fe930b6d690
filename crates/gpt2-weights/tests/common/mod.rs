//! Helpers shared by the integration tests: locating fixtures.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `fixtures/<rel>`: the committed fixtures (always present in a clone).
pub fn fixtures(rel: &str) -> PathBuf {
    repo_root().join("fixtures").join(rel)
}

/// `../shared/fixtures/<rel>` beside the checkout, if present.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = repo_root().join("../shared/fixtures").join(rel);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "note: {} absent; skipping the part of this test that uses it",
            p.display()
        );
        None
    }
}
