//! Shared by the fuzz targets: their bodies live in [`checks`], plain functions that the
//! workspace's tests also run on the committed seeds and regression inputs.

pub mod checks;

/// A scratch directory of this process for the targets that need files (removed by nobody:
/// it lives in the system's temporary directory and holds a few files at most).
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt2-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}
