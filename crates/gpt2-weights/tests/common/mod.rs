//! Helpers shared by the integration tests: locating fixtures.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `fixtures/<rel>` in the repository, if it exists (committed fixtures).
pub fn committed(rel: &str) -> Option<PathBuf> {
    let p = repo_root().join("fixtures").join(rel);
    p.is_dir().then_some(p)
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
