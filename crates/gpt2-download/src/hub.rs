//! The Hugging Face hub (`openai-community/gpt2`...) through `hf-hub`'s blocking client.
//!
//! hf-hub downloads each file into a private cache inside the staging directory; this
//! module checks every file against the hub's own metadata (`?blobs=true`: the LFS
//! sha256 for large files, the git blob id for the others) because hf-hub does not.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpt2_weights::Weights;
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use serde::Deserialize;

use crate::error::DownloadError;
use crate::fsutil::{self, check_checksum};
use crate::progress::Reporter;
use crate::FetchOptions;

/// The files fetched from the hub: the weights, their config and the tokenizer.
pub const HF_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
];

/// What `GET /api/models/<repo>/revision/<rev>?blobs=true` returns (the parts used).
#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "blobId", default)]
    blob_id: Option<String>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

/// Fetches `repo_id` into `target` (renamed into place only when complete and verified).
pub(crate) fn fetch(
    name: &str,
    repo_id: &str,
    opts: &FetchOptions,
    target: &Path,
    reporter: &Reporter,
) -> Result<(), DownloadError> {
    let staging = fsutil::hidden_sibling(&opts.models_dir, name, "download-hf");
    let cache = staging.join("hf-cache");
    let out = staging.join("hf");
    fsutil::create_dir_all(&out)?;

    // HF_ENDPOINT and the user's token are read as hf-hub reads them; the files go to a
    // private cache that is removed at the end.
    let mut builder = ApiBuilder::from_env()
        .with_cache_dir(cache.clone())
        .with_progress(false)
        .with_retries(opts.retries as usize);
    if let Some(endpoint) = &opts.hf_endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    let api = builder
        .build()
        .map_err(|e| hub_error(repo_id, "setting up the client", e))?;

    // The file list with sizes and hashes, at the current commit of `main`.
    let info_req = api
        .model(repo_id.to_string())
        .info_request()
        .query("blobs", "true");
    let info_url = info_req.url().to_string();
    let info: RepoInfo = match info_req
        .timeout(opts.connect_timeout + Duration::from_secs(60))
        .call()
    {
        Ok(resp) => resp.into_json().map_err(|e| DownloadError::Hub {
            repo: repo_id.to_string(),
            message: format!("{info_url}: expected the repository's JSON description: {e}"),
        })?,
        Err(e) => return Err(ureq_error(repo_id, &info_url, e)),
    };
    // Files kept from an earlier run were checked against that run's commit: if `main` has
    // moved since, start over so that all files come from one commit.
    let commit_file = staging.join("commit");
    if let Ok(previous) = fs::read_to_string(&commit_file) {
        if previous.trim() != info.sha {
            reporter.say(format!(
                "{name}: {repo_id} moved from commit {} to {} since the last attempt; starting over",
                previous.trim(),
                info.sha
            ));
            fsutil::remove_dir_if_exists(&out)?;
            fsutil::create_dir_all(&out)?;
        }
    }
    fs::write(&commit_file, &info.sha)
        .map_err(|e| DownloadError::io("writing", &commit_file, e))?;

    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        info.sha.clone(),
    ));

    for file in HF_FILES {
        let dest = out.join(file);
        if dest.is_file() {
            continue; // verified and moved here by an earlier run
        }
        let sibling = info
            .siblings
            .iter()
            .find(|s| s.rfilename == file)
            .ok_or_else(|| DownloadError::Hub {
                repo: repo_id.to_string(),
                message: format!(
                    "the repository (commit {}) has no file {file}; expected {}",
                    info.sha,
                    HF_FILES.join(", ")
                ),
            })?;
        let progress = reporter.file(&format!("{name}/{file}"));
        let pointer = repo
            .download_with_progress(file, progress)
            .map_err(|e| hub_error(repo_id, file, e))?;
        // hf-hub returns a symlink in its snapshot dir; the bytes are in its blob file.
        let blob =
            fs::canonicalize(&pointer).map_err(|e| DownloadError::io("resolving", &pointer, e))?;
        verify(&blob, sibling)?;
        fs::rename(&blob, &dest)
            .or_else(|_| fs::copy(&blob, &dest).map(|_| ()))
            .map_err(|e| DownloadError::io("moving into place", &dest, e))?;
    }

    Weights::open(&out)
        .and_then(|w| w.verify())
        .map_err(|source| DownloadError::Weights {
            context: format!("checking the downloaded model in {}", out.display()),
            source: Box::new(source),
        })?;
    fsutil::rename(&out, target)?;
    fsutil::remove_dir_if_exists(&staging)?;
    Ok(())
}

/// Size and hash against the hub's metadata; a mismatching file is removed.
fn verify(blob: &Path, sibling: &Sibling) -> Result<(), DownloadError> {
    let found = fs::metadata(blob)
        .map_err(|e| DownloadError::io("reading", blob, e))?
        .len();
    let expected_size = sibling.lfs.as_ref().map(|l| l.size).or(sibling.size);
    if let Some(expected) = expected_size {
        if found != expected {
            let _ = fs::remove_file(blob);
            return Err(DownloadError::SizeMismatch {
                file: named(blob, &sibling.rfilename),
                expected,
                found,
            });
        }
    }
    let checked = match (&sibling.lfs, &sibling.blob_id) {
        (Some(lfs), _) => check_checksum(blob, "sha256", &lfs.sha256),
        (None, Some(id)) => check_checksum(blob, "git-sha1", id),
        (None, None) => {
            return Err(DownloadError::Hub {
                repo: sibling.rfilename.clone(),
                message: "the hub gave neither an LFS sha256 nor a blob id for this file, \
                          so it cannot be verified"
                    .to_string(),
            })
        }
    };
    checked.map_err(|e| match e {
        DownloadError::ChecksumMismatch {
            algorithm,
            expected,
            found,
            ..
        } => DownloadError::ChecksumMismatch {
            file: named(blob, &sibling.rfilename),
            algorithm,
            expected,
            found,
        },
        other => other,
    })
}

/// `blob (file)` for messages: hf-hub's blob files are named by their hash.
fn named(blob: &Path, file: &str) -> PathBuf {
    PathBuf::from(format!("{file} ({})", blob.display()))
}

/// An hf-hub error as a [`DownloadError`], keeping "cannot reach" distinct.
fn hub_error(repo: &str, what: &str, e: ApiError) -> DownloadError {
    match e {
        ApiError::RequestError(boxed) => ureq_error(repo, what, *boxed),
        ApiError::TooManyRetries(inner) => match *inner {
            ApiError::RequestError(boxed) => ureq_error(repo, what, *boxed),
            other => DownloadError::Hub {
                repo: repo.to_string(),
                message: format!("{what}: {other} (retries exhausted)"),
            },
        },
        other => DownloadError::Hub {
            repo: repo.to_string(),
            message: format!("{what}: {other}"),
        },
    }
}

/// A ureq error (hf-hub uses the same ureq) as a [`DownloadError`].
fn ureq_error(repo: &str, what: &str, e: ureq::Error) -> DownloadError {
    match e {
        ureq::Error::Status(404, resp) => DownloadError::NotFound {
            url: resp.get_url().to_string(),
        },
        ureq::Error::Status(status, resp) => DownloadError::HttpStatus {
            url: resp.get_url().to_string(),
            status,
            reason: resp.status_text().to_string(),
            retried: String::new(),
        },
        ureq::Error::Transport(t) if crate::http::is_unreachable(&t) => {
            DownloadError::Unreachable {
                url: t
                    .url()
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| what.to_string()),
                message: t.to_string(),
            }
        }
        ureq::Error::Transport(t) => DownloadError::Hub {
            repo: repo.to_string(),
            message: format!("{what}: {t}"),
        },
    }
}
