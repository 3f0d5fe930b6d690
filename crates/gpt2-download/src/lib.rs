//! Fetch GPT-2's weights — from OpenAI's release or the Hugging Face hub — resumable,
//! verified, and atomic, and find a model on disk from a name like `124M`.
//!
//! Two entry points, shared by `cargo xtask fetch-models` and the `gpt2` CLI:
//!
//! - [`fetch_model`] puts one of the four published sizes into `<models_dir>/<name>`
//!   (`<name>` is OpenAI's: `124M`, `355M`, `774M`, `1558M`) in the Hugging Face layout
//!   (`config.json`, `model.safetensors`, `vocab.json`, `merges.txt`; plus
//!   `tokenizer.json` from the hub), which is what the CLI loads fastest.
//! - [`resolve_model`] turns the CLI's `--model` argument into a directory: a directory is
//!   used as is; a name is looked up in the models directories and downloaded when absent
//!   (unless offline).
//!
//! # Sources
//!
//! - [`Source::OpenAi`] (default): the seven files of OpenAI's release from
//!   `<base>/<name>/<file>` (base [`DEFAULT_OPENAI_BASE_URL`], overridden by
//!   `$GPT2_OPENAI_BASE_URL` or [`FetchOptions::openai_base_url`]). `encoder.json` and
//!   `vocab.bpe` are checked against their known sha256, every tensor of the TensorFlow
//!   checkpoint against the crc32c in its index ([`gpt2_weights::Weights::verify`]), then the
//!   checkpoint is converted with [`gpt2_weights::convert`] and the result loaded and checked
//!   again. `keep_original` keeps OpenAI's files in `<models_dir>/<name>-openai/`.
//! - [`Source::Hf`]: `openai-community/gpt2` (`-medium`, `-large`, `-xl`) through the
//!   `hf-hub` crate (its blocking client; `$HF_ENDPOINT` overrides the hub's URL as hf-hub
//!   reads it). Each file is checked against the hub's metadata: the sha256 of LFS files
//!   (`model.safetensors`), the git blob id of the others — hf-hub itself checks nothing.
//!
//! # Guarantees
//!
//! - A model directory only ever appears complete: files are downloaded into
//!   `<models_dir>/.<name>.download/` (`.download-hf/` for the hub) and the verified result is
//!   renamed into place at the end.
//! - An interrupted download resumes: each file goes to `<file>.part` and a new attempt (or
//!   run) asks only for the missing bytes with an HTTP `Range` request. Sizes are checked
//!   against `Content-Length`/`Content-Range`.
//! - Transient failures (HTTP 5xx/408/429, connection reset, read timeout, a body cut
//!   short) are retried with exponential backoff; a 404 is not; an unreachable server
//!   (refused, DNS, connect timeout) fails at once with [`DownloadError::Unreachable`].
//! - Two fetches of the same model at once take turns on `<models_dir>/.<name>.lock`; the
//!   second finds the model present and downloads nothing.
//! - A file whose checksum is wrong is deleted, never left looking complete.
//! - Nothing is written through a symbolic link: a `<file>.part` or `<file>` in the download
//!   folder that is a symlink (or a directory, FIFO, device) is refused with
//!   [`DownloadError::NotARegularFile`] naming it, and left untouched, as is whatever it
//!   points at. A new `.part` is created exclusively (`O_EXCL`), an existing one is opened
//!   with `O_NOFOLLOW`.
//!
//! # Example
//!
//! ```no_run
//! use gpt2_download::{fetch_model, resolve_model, FetchOptions, ModelSize, ResolveOptions};
//!
//! // What `cargo xtask fetch-models --size 124M` does: ./models/124M
//! let dir = fetch_model(ModelSize::Small124M, &FetchOptions::new("models"))?;
//!
//! // What `gpt2 generate --model gpt2` does.
//! let dir = resolve_model("gpt2", &ResolveOptions::default())?;
//! # Ok::<(), gpt2_download::DownloadError>(())
//! ```

mod error;
mod fsutil;
mod http;
mod hub;
mod openai;
mod progress;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use error::DownloadError;
pub use gpt2_weights::ModelSize;
pub use hub::HF_FILES;
pub use openai::{ENCODER_JSON_SHA256, OPENAI_FILES, VOCAB_BPE_SHA256};

use crate::fsutil::{looks_like_model_dir, ModelLock};
use crate::progress::Reporter;

/// Where OpenAI's release lives: files at `<base>/<size>/<file>`.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://openaipublic.blob.core.windows.net/gpt-2/models";
/// Environment variable that overrides [`DEFAULT_OPENAI_BASE_URL`].
pub const OPENAI_BASE_URL_ENV: &str = "GPT2_OPENAI_BASE_URL";
/// Environment variable naming the directory models are looked up in and downloaded to.
pub const MODELS_DIR_ENV: &str = "GPT2_MODELS_DIR";

/// Where to download from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// OpenAI's original release (TensorFlow checkpoint), converted after download.
    #[default]
    OpenAi,
    /// The Hugging Face hub (`openai-community/gpt2`...), already in the HF layout.
    Hf,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::OpenAi => "openai",
            Source::Hf => "hf",
        })
    }
}

impl FromStr for Source {
    type Err = String;

    /// `openai`, or `hf` (also `huggingface`, `hub`).
    ///
    /// ```
    /// use gpt2_download::Source;
    /// assert_eq!("hf".parse::<Source>(), Ok(Source::Hf));
    /// assert!("s3".parse::<Source>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Source::OpenAi),
            "hf" | "huggingface" | "hub" => Ok(Source::Hf),
            other => Err(format!("unknown source {other:?}: expected openai or hf")),
        }
    }
}

/// How [`fetch_model`] works. Build it with [`FetchOptions::new`] and change fields.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The directory that receives `<name>/` (and `<name>-openai/` with `keep_original`).
    pub models_dir: PathBuf,
    /// Where to download from (default [`Source::OpenAi`]).
    pub source: Source,
    /// Keep OpenAI's original files in `<models_dir>/<name>-openai/` (default false: they are
    /// removed after a verified conversion).
    pub keep_original: bool,
    /// Base URL of OpenAI's release: `$GPT2_OPENAI_BASE_URL` or [`DEFAULT_OPENAI_BASE_URL`].
    pub openai_base_url: String,
    /// The hub's URL; `None` (default) lets hf-hub use `$HF_ENDPOINT` or `https://huggingface.co`.
    pub hf_endpoint: Option<String>,
    /// Never download: succeed only if the model is already there (default false).
    pub offline: bool,
    /// Progress on stderr: bars on a terminal, plain lines otherwise (default true).
    pub progress: bool,
    /// Connect timeout (default 10 s): an unreachable server fails within it.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of an answer (default 60 s); then the transfer is
    /// retried from where it stopped.
    pub read_timeout: Duration,
    /// Retries of a transient failure per file (default 4).
    pub retries: u32,
    /// Delay before the first retry, doubled for each next one (default 1 s).
    pub retry_delay: Duration,
}

impl FetchOptions {
    /// Defaults for downloading into `models_dir`, reading `$GPT2_OPENAI_BASE_URL`.
    ///
    /// ```
    /// use gpt2_download::{FetchOptions, Source};
    /// let mut opts = FetchOptions::new("models");
    /// opts.source = Source::Hf;
    /// assert_eq!(opts.models_dir, std::path::PathBuf::from("models"));
    /// assert!(!opts.offline && !opts.keep_original);
    /// ```
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        FetchOptions {
            models_dir: models_dir.into(),
            source: Source::OpenAi,
            keep_original: false,
            openai_base_url: openai_base_url_from_env(),
            hf_endpoint: None,
            offline: false,
            progress: true,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            retries: 4,
            retry_delay: Duration::from_secs(1),
        }
    }

    pub(crate) fn http_settings(&self) -> http::HttpSettings {
        http::HttpSettings {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            retries: self.retries,
            retry_delay: self.retry_delay,
        }
    }
}

/// `$GPT2_OPENAI_BASE_URL` when set and not empty, else [`DEFAULT_OPENAI_BASE_URL`].
fn openai_base_url_from_env() -> String {
    std::env::var(OPENAI_BASE_URL_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.to_string())
}

/// The directory a size lives in under `models_dir`: `<models_dir>/124M` etc.
///
/// ```
/// use gpt2_download::{model_dir, ModelSize};
/// assert_eq!(model_dir("models".as_ref(), ModelSize::Xl1558M), std::path::Path::new("models/1558M"));
/// ```
pub fn model_dir(models_dir: &Path, size: ModelSize) -> PathBuf {
    models_dir.join(size.openai_name())
}

/// Makes sure `<opts.models_dir>/<name>` holds the model `size` and returns that path.
///
/// If the directory is already there (in either layout) it is opened to check it is a
/// model, nothing is downloaded and the progress output says so. Otherwise (unless
/// `opts.offline`) the model is downloaded from `opts.source`, verified, converted (OpenAI
/// source) and renamed into place; see the [crate docs](crate) for the guarantees.
///
/// The model is checked against the hyperparameters it comes with (`hparams.json` /
/// `config.json`), not against [`ModelSize::config`], so a test server can serve a tiny
/// model under a real size's name.
///
/// ```no_run
/// use gpt2_download::{fetch_model, FetchOptions, ModelSize, Source};
/// let mut opts = FetchOptions::new("models");
/// opts.source = Source::Hf;
/// let dir = fetch_model(ModelSize::Medium355M, &opts)?;
/// assert!(dir.ends_with("355M"));
/// # Ok::<(), gpt2_download::DownloadError>(())
/// ```
pub fn fetch_model(size: ModelSize, opts: &FetchOptions) -> Result<PathBuf, DownloadError> {
    let reporter = Reporter::new(opts.progress);
    let name = size.openai_name();
    let target = model_dir(&opts.models_dir, size);
    if present(&target, name, &reporter)? {
        return Ok(target);
    }
    if opts.offline {
        return Err(DownloadError::Offline {
            model: name.to_string(),
            searched: opts.models_dir.display().to_string(),
        });
    }
    fsutil::create_dir_all(&opts.models_dir)?;
    let _lock = ModelLock::acquire(
        &fsutil::hidden_sibling(&opts.models_dir, name, "lock"),
        &reporter,
    )?;
    // Another fetch may have finished while we waited for the lock.
    if present(&target, name, &reporter)? {
        return Ok(target);
    }
    match opts.source {
        Source::OpenAi => {
            reporter.say(format!(
                "{name}: downloading OpenAI's release from {}",
                opts.openai_base_url
            ));
            openai::fetch(name, opts, &target, &reporter)?;
        }
        Source::Hf => {
            reporter.say(format!(
                "{name}: downloading {} from the Hugging Face hub",
                size.hub_repo()
            ));
            hub::fetch(name, size.hub_repo(), opts, &target, &reporter)?;
        }
    }
    warn_if_not_the_published_shape(size, &target, &reporter);
    reporter.say(format!("{name}: ready in {}", target.display()));
    Ok(target)
}

/// The model is checked against its own hyperparameters (see [`fetch_model`]); a model that
/// is not the published size's shape is worth a note (a wrong `--base-url`, a test server...).
fn warn_if_not_the_published_shape(size: ModelSize, dir: &Path, reporter: &Reporter) {
    if let Ok(weights) = gpt2_weights::Weights::open(dir) {
        let found = weights.config();
        let expected = size.config();
        if (
            found.n_vocab,
            found.n_ctx,
            found.n_embd,
            found.n_head,
            found.n_layer,
        ) != (
            expected.n_vocab,
            expected.n_ctx,
            expected.n_embd,
            expected.n_head,
            expected.n_layer,
        ) {
            reporter.say(format!(
                "note: {} holds n_layer {}, n_embd {}, n_head {}, n_ctx {}, n_vocab {}; the published \
                 {size} has n_layer {}, n_embd {}, n_head {}, n_ctx {}, n_vocab {}",
                dir.display(),
                found.n_layer,
                found.n_embd,
                found.n_head,
                found.n_ctx,
                found.n_vocab,
                expected.n_layer,
                expected.n_embd,
                expected.n_head,
                expected.n_ctx,
                expected.n_vocab
            ));
        }
    }
}

/// `Ok(true)` when `target` is a loadable model, `Ok(false)` when it does not exist.
fn present(target: &Path, name: &str, reporter: &Reporter) -> Result<bool, DownloadError> {
    if !target.exists() {
        return Ok(false);
    }
    if !looks_like_model_dir(target) {
        return Err(DownloadError::NotAModel(target.to_path_buf()));
    }
    gpt2_weights::Weights::open(target).map_err(|source| DownloadError::Invalid {
        dir: target.to_path_buf(),
        source: Box::new(source),
    })?;
    reporter.say(format!(
        "{name}: already present in {}, nothing to download",
        target.display()
    ));
    Ok(true)
}

/// How [`resolve_model`] looks for models and where it downloads them.
///
/// [`ResolveOptions::default`] reads the environment (`$GPT2_MODELS_DIR`,
/// `$GPT2_OPENAI_BASE_URL`, the platform cache directory); a CLI then sets the fields its
/// flags give:
///
/// ```
/// use gpt2_download::ResolveOptions;
/// let opts = ResolveOptions {
///     models_dir: Some("/data/models".into()), // --models-dir
///     offline: true,                           // --offline
///     ..ResolveOptions::default()
/// };
/// assert_eq!(opts.search_dirs()[0], std::path::PathBuf::from("/data/models"));
/// assert_eq!(opts.download_dir(), Some("/data/models".into()));
/// ```
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// `--models-dir`: searched first, and the download target when set.
    pub models_dir: Option<PathBuf>,
    /// `$GPT2_MODELS_DIR`: searched second, and the download target when `models_dir` is not set.
    pub env_models_dir: Option<PathBuf>,
    /// `./models` (what `cargo xtask fetch-models` fills by default): searched third.
    pub local_models_dir: PathBuf,
    /// The platform cache directory + `gpt2-rs` (`~/.cache/gpt2-rs` on Linux): searched last,
    /// and the download target when neither `models_dir` nor `env_models_dir` is set.
    pub cache_dir: Option<PathBuf>,
    /// `--offline`: never download; a model not on disk is an error naming the ways out.
    pub offline: bool,
    /// Progress on stderr while downloading (default true).
    pub progress: bool,
    /// Where to download from (default [`Source::OpenAi`]).
    pub source: Source,
    /// Base URL of OpenAI's release (default `$GPT2_OPENAI_BASE_URL` or [`DEFAULT_OPENAI_BASE_URL`]).
    pub openai_base_url: String,
    /// The hub's URL; `None` lets hf-hub use `$HF_ENDPOINT` or `https://huggingface.co`.
    pub hf_endpoint: Option<String>,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            models_dir: None,
            env_models_dir: std::env::var_os(MODELS_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            local_models_dir: PathBuf::from("models"),
            cache_dir: default_cache_dir(),
            offline: false,
            progress: true,
            source: Source::OpenAi,
            openai_base_url: openai_base_url_from_env(),
            hf_endpoint: None,
        }
    }
}

impl ResolveOptions {
    /// The directories a model name is looked up in, in order: `models_dir`,
    /// `env_models_dir`, `local_models_dir`, `cache_dir` (those that are set).
    pub fn search_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let candidates = [
            self.models_dir.clone(),
            self.env_models_dir.clone(),
            Some(self.local_models_dir.clone()),
            self.cache_dir.clone(),
        ];
        for dir in candidates.into_iter().flatten() {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// Where a missing model is downloaded: `models_dir`, else `env_models_dir`, else `cache_dir`.
    pub fn download_dir(&self) -> Option<PathBuf> {
        self.models_dir
            .clone()
            .or_else(|| self.env_models_dir.clone())
            .or_else(|| self.cache_dir.clone())
    }
}

/// The platform cache directory for models: `~/.cache/gpt2-rs` on Linux,
/// `~/Library/Caches/gpt2-rs` on macOS, `%LOCALAPPDATA%\gpt2-rs` on Windows.
pub fn default_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("gpt2-rs"))
}

/// The model names [`resolve_model`] accepts, for messages.
pub const MODEL_NAMES: &str = "124M, 355M, 774M, 1558M, gpt2, gpt2-medium, gpt2-large, gpt2-xl";

/// Turns a `--model` argument into a model directory, downloading the model if needed.
///
/// - An existing directory is returned as is (no check; loading it reports problems).
/// - A name — `124M` `355M` `774M` `1558M` or `gpt2` `gpt2-medium` `gpt2-large` `gpt2-xl`
///   (also `openai-community/gpt2`...) — is looked up as `<dir>/<OpenAI name>` (e.g.
///   `models/124M` for `gpt2`) in each of [`ResolveOptions::search_dirs`]; the first that
///   holds a model (either layout) wins.
/// - Not found: with `offline`, [`DownloadError::Offline`] (naming `cargo xtask
///   fetch-models` and `--model DIR`); otherwise [`fetch_model`] into
///   [`ResolveOptions::download_dir`], with progress on stderr. No network fails fast with
///   [`DownloadError::Unreachable`].
/// - Anything else: [`DownloadError::ModelDirNotFound`] if it looks like a path (contains a
///   path separator or starts with `.` or `~`), else [`DownloadError::UnknownModel`] listing
///   the valid names.
///
/// ```no_run
/// use gpt2_download::{resolve_model, ResolveOptions};
/// // `gpt2 generate --model 124M --models-dir /data/models`
/// let opts = ResolveOptions { models_dir: Some("/data/models".into()), ..Default::default() };
/// let dir = resolve_model("124M", &opts)?;
/// # Ok::<(), gpt2_download::DownloadError>(())
/// ```
pub fn resolve_model(spec: &str, opts: &ResolveOptions) -> Result<PathBuf, DownloadError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let size = match spec.parse::<ModelSize>() {
        Ok(size) => size,
        Err(_) if looks_like_path(spec) => {
            return Err(DownloadError::ModelDirNotFound(path.to_path_buf()))
        }
        Err(_) => {
            return Err(DownloadError::UnknownModel {
                spec: spec.to_string(),
                valid: MODEL_NAMES.to_string(),
            })
        }
    };
    let searched = opts.search_dirs();
    for dir in &searched {
        let candidate = model_dir(dir, size);
        if looks_like_model_dir(&candidate) {
            return Ok(candidate);
        }
    }
    let name = size.openai_name();
    if opts.offline {
        return Err(DownloadError::Offline {
            model: name.to_string(),
            searched: searched
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let download_dir = opts
        .download_dir()
        .ok_or_else(|| DownloadError::NoDownloadDir {
            model: name.to_string(),
        })?;
    let mut fetch = FetchOptions::new(download_dir);
    fetch.source = opts.source;
    fetch.openai_base_url = opts.openai_base_url.clone();
    fetch.hf_endpoint = opts.hf_endpoint.clone();
    fetch.progress = opts.progress;
    fetch_model(size, &fetch)
}

/// A spec that is meant as a path rather than a name.
fn looks_like_path(spec: &str) -> bool {
    spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || spec.starts_with('.')
        || spec.starts_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(base: &Path) -> ResolveOptions {
        ResolveOptions {
            models_dir: None,
            env_models_dir: None,
            local_models_dir: base.join("local"),
            cache_dir: Some(base.join("cache")),
            offline: true,
            progress: false,
            source: Source::OpenAi,
            openai_base_url: "http://127.0.0.1:9".into(),
            hf_endpoint: None,
        }
    }

    fn fake_model(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::fs::write(dir.join("model.safetensors"), "").unwrap();
    }

    #[test]
    fn search_order_and_download_dir() {
        let base = Path::new("/x");
        let mut o = opts(base);
        assert_eq!(
            o.search_dirs(),
            vec![base.join("local"), base.join("cache")]
        );
        assert_eq!(o.download_dir(), Some(base.join("cache")));
        o.env_models_dir = Some(base.join("env"));
        assert_eq!(o.download_dir(), Some(base.join("env")));
        o.models_dir = Some(base.join("flag"));
        assert_eq!(
            o.search_dirs(),
            vec![
                base.join("flag"),
                base.join("env"),
                base.join("local"),
                base.join("cache")
            ]
        );
        assert_eq!(o.download_dir(), Some(base.join("flag")));
    }

    #[test]
    fn names_are_found_in_search_order() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(tmp.path());
        o.env_models_dir = Some(tmp.path().join("env"));
        fake_model(&tmp.path().join("cache/124M"));
        assert_eq!(
            resolve_model("gpt2", &o).unwrap(),
            tmp.path().join("cache/124M")
        );
        fake_model(&tmp.path().join("local/124M"));
        assert_eq!(
            resolve_model("124M", &o).unwrap(),
            tmp.path().join("local/124M")
        );
        fake_model(&tmp.path().join("env/124M"));
        assert_eq!(
            resolve_model("openai-community/gpt2", &o).unwrap(),
            tmp.path().join("env/124M")
        );
        // A directory that is not a model is skipped.
        std::fs::create_dir_all(tmp.path().join("flag/124M")).unwrap();
        o.models_dir = Some(tmp.path().join("flag"));
        assert_eq!(
            resolve_model("124m", &o).unwrap(),
            tmp.path().join("env/124M")
        );
    }

    #[test]
    fn a_directory_is_used_as_is() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("anything");
        std::fs::create_dir_all(&dir).unwrap();
        let spec = dir.to_str().unwrap();
        assert_eq!(resolve_model(spec, &opts(tmp.path())).unwrap(), dir);
    }

    #[test]
    fn offline_and_missing_names_the_ways_out() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model("gpt2-medium", &opts(tmp.path())).unwrap_err();
        assert!(matches!(err, DownloadError::Offline { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("cargo xtask fetch-models --size 355M"),
            "{msg}"
        );
        assert!(msg.contains("--model DIR"), "{msg}");
        assert!(
            msg.contains(&tmp.path().join("cache").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn unknown_names_and_missing_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model("gpt3", &opts(tmp.path())).unwrap_err();
        assert!(matches!(err, DownloadError::UnknownModel { .. }), "{err:?}");
        for name in [
            "124M",
            "355M",
            "774M",
            "1558M",
            "gpt2",
            "gpt2-medium",
            "gpt2-large",
            "gpt2-xl",
        ] {
            assert!(err.to_string().contains(name), "{err}");
        }
        let missing = tmp.path().join("nope");
        let err = resolve_model(missing.to_str().unwrap(), &opts(tmp.path())).unwrap_err();
        assert!(matches!(err, DownloadError::ModelDirNotFound(_)), "{err:?}");
        let err = resolve_model("./models/1558M", &opts(tmp.path())).unwrap_err();
        assert!(matches!(err, DownloadError::ModelDirNotFound(_)), "{err:?}");
    }

    #[test]
    fn no_download_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(tmp.path());
        o.cache_dir = None;
        o.offline = false;
        let err = resolve_model("124M", &o).unwrap_err();
        assert!(
            matches!(err, DownloadError::NoDownloadDir { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn sources_parse() {
        assert_eq!("openai".parse::<Source>(), Ok(Source::OpenAi));
        assert_eq!("HF".parse::<Source>(), Ok(Source::Hf));
        assert_eq!(Source::Hf.to_string(), "hf");
        assert!("ftp"
            .parse::<Source>()
            .unwrap_err()
            .contains("openai or hf"));
    }
}
