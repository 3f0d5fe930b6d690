//! File helpers: hashing, the per-model lock, model-directory checks.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha1::Digest as _;

use crate::error::DownloadError;
use crate::progress::Reporter;

/// Lowercase hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams a file through `update`.
fn read_chunks(path: &Path, mut update: impl FnMut(&[u8])) -> Result<(), DownloadError> {
    let mut file = File::open(path).map_err(|e| DownloadError::io("opening", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| DownloadError::io("reading", path, e))?;
        if n == 0 {
            return Ok(());
        }
        update(&buf[..n]);
    }
}

/// sha256 of a file, lowercase hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String, DownloadError> {
    let mut h = sha2::Sha256::new();
    read_chunks(path, |b| h.update(b))?;
    Ok(hex(&h.finalize()))
}

/// git's blob id of a file: sha1 of `"blob {len}\0"` + content, lowercase hex. The hub
/// reports it as `blobId` (and as the ETag) for files not stored in LFS.
pub(crate) fn git_blob_sha1(path: &Path) -> Result<String, DownloadError> {
    let len = fs::metadata(path)
        .map_err(|e| DownloadError::io("reading", path, e))?
        .len();
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    read_chunks(path, |b| h.update(b))?;
    Ok(hex(&h.finalize()))
}

/// Checks a file's checksum; on a mismatch the file is removed (so that nothing corrupt
/// stays behind looking complete) and an error names both values.
pub(crate) fn check_checksum(
    path: &Path,
    algorithm: &'static str,
    expected: &str,
) -> Result<(), DownloadError> {
    let found = match algorithm {
        "git-sha1" => git_blob_sha1(path)?,
        _ => sha256_file(path)?,
    };
    if found.eq_ignore_ascii_case(expected.trim()) {
        return Ok(());
    }
    let _ = fs::remove_file(path);
    Err(DownloadError::ChecksumMismatch {
        file: path.to_path_buf(),
        algorithm,
        expected: expected.trim().to_ascii_lowercase(),
        found,
    })
}

/// An exclusive lock on `<models_dir>/.<name>.lock`, held while a model is fetched, so
/// that two fetches of the same model (threads or processes) take turns. The lock is
/// released when this value is dropped (or the process dies); the empty lock file stays.
pub(crate) struct ModelLock {
    _file: File,
}

impl ModelLock {
    /// Takes the lock, waiting (and saying so) while another fetch holds it.
    pub(crate) fn acquire(path: &Path, reporter: &Reporter) -> Result<ModelLock, DownloadError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| DownloadError::io("creating the lock file", path, e))?;
        // Fully qualified: std's own File::lock/try_lock (Rust 1.89+) have the same names.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                reporter.say(format!(
                    "waiting for another download of the same model to finish (lock {})",
                    path.display()
                ));
                fs4::FileExt::lock(&file).map_err(|e| DownloadError::io("locking", path, e))?;
            }
            Err(fs4::TryLockError::Error(e)) => return Err(DownloadError::io("locking", path, e)),
        }
        Ok(ModelLock { _file: file })
    }
}

/// True when `dir` holds a model in either layout (checks that the key files exist, not
/// their contents: [`crate::fetch_model`] only ever renames complete directories into place).
pub(crate) fn looks_like_model_dir(dir: &Path) -> bool {
    let has = |f: &str| dir.join(f).is_file();
    dir.is_dir()
        && ((has("config.json") && has("model.safetensors"))
            || (has("hparams.json") && has("model.ckpt.index") && has("checkpoint")))
}

/// Removes a directory tree if it exists.
pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<(), DownloadError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DownloadError::io("removing", dir, e)),
    }
}

/// `fs::rename` with the error naming both paths' source.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), DownloadError> {
    fs::rename(from, to).map_err(|e| DownloadError::io("renaming into place", to, e))
}

/// Creates a directory and its parents.
pub(crate) fn create_dir_all(dir: &Path) -> Result<(), DownloadError> {
    fs::create_dir_all(dir).map_err(|e| DownloadError::io("creating", dir, e))
}

/// `<dir>/.<name>.<suffix>`: hidden working paths next to the model directory (same
/// filesystem, so the final rename is atomic).
pub(crate) fn hidden_sibling(models_dir: &Path, name: &str, suffix: &str) -> PathBuf {
    models_dir.join(format!(".{name}.{suffix}"))
}
