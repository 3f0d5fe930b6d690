//! The one error type of this crate.

use std::path::PathBuf;

use gpt2_weights::WeightsError;

/// Everything that can go wrong while finding or fetching a model.
///
/// Every message says what was expected and what was found (or which URL or
/// file failed), so it can be shown to a user as is.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// A model name that is neither one of the published sizes nor an existing directory.
    #[error(
        "unknown model {spec:?}: expected a model directory or one of {valid} \
         (hub names also accept the openai-community/ prefix)"
    )]
    UnknownModel {
        /// What was asked for.
        spec: String,
        /// The accepted names, comma separated.
        valid: String,
    },

    /// A path (it contains a path separator) that is not a directory.
    #[error("model directory {0} does not exist (or is not a directory)")]
    ModelDirNotFound(PathBuf),

    /// The model is not on disk and downloading is not allowed (`--offline`).
    #[error(
        "model {model} is not on disk (looked in {searched}) and --offline forbids downloading it; \
         fetch it first with `cargo xtask fetch-models --size {model}` (or `--source hf`), \
         or point --model at a model directory (--model DIR)"
    )]
    Offline {
        /// The model's name (`124M`...).
        model: String,
        /// The directories looked in, comma separated.
        searched: String,
    },

    /// The server could not be reached at all (refused, DNS, connect timeout): nothing
    /// was retried, because waiting would not help.
    #[error(
        "cannot reach {url}: {message}. Without network access, fetch the model elsewhere with \
         `cargo xtask fetch-models` and copy it, or point --model at a model directory (--model DIR)"
    )]
    Unreachable {
        /// The URL that was requested.
        url: String,
        /// What the HTTP client reported.
        message: String,
    },

    /// The server answered 404: the file does not exist there (not retried).
    #[error("{url}: not found (HTTP 404); expected the file to exist at this URL")]
    NotFound {
        /// The URL that was requested.
        url: String,
    },

    /// The server answered with an error status (after the retries, for 5xx).
    #[error("{url}: HTTP {status} {reason} (expected 200 or 206){retried}")]
    HttpStatus {
        /// The URL that was requested.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The status text the server sent.
        reason: String,
        /// ", after N retries" when retries were made, else empty.
        retried: String,
    },

    /// The transfer failed part way (connection reset, read timeout, closed early) and
    /// the retries ran out. What arrived is kept in a `.part` file and a new run resumes it.
    #[error(
        "{url}: transfer failed after {received} bytes{retried}: {message} (a new run resumes it)"
    )]
    Transfer {
        /// The URL that was requested.
        url: String,
        /// Bytes of the file on disk when it failed.
        received: u64,
        /// ", after N retries" when retries were made, else empty.
        retried: String,
        /// What went wrong.
        message: String,
    },

    /// The server's answer was not what HTTP promises (bad `Content-Range`, no `Location`...).
    #[error("{url}: unexpected response: {message}")]
    BadResponse {
        /// The URL that was requested.
        url: String,
        /// What was wrong with it.
        message: String,
    },

    /// A download path (`<file>.part` or the file itself) is something other than a regular
    /// file: a symbolic link (possibly planted to redirect the write elsewhere), a directory,
    /// a FIFO or a device. Nothing is written through it and it is left as it is.
    #[error(
        "{path}: expected a regular file (or nothing) at this download path, found {found}; \
         refusing to write through it: remove it and run again"
    )]
    NotARegularFile {
        /// The path.
        path: PathBuf,
        /// What is there (`a symbolic link`, `a directory`...).
        found: &'static str,
    },

    /// A file's size differs from the size the server announced.
    #[error("{file}: expected {expected} bytes, got {found}; the file was removed")]
    SizeMismatch {
        /// The file.
        file: PathBuf,
        /// The announced size.
        expected: u64,
        /// The size on disk.
        found: u64,
    },

    /// A file's checksum differs from the known one; the file was removed so that a new run
    /// fetches it again.
    #[error(
        "{file}: {algorithm} mismatch: expected {expected}, found {found}; the file was removed"
    )]
    ChecksumMismatch {
        /// The file.
        file: PathBuf,
        /// `sha256`, `git-sha1`...
        algorithm: &'static str,
        /// The known checksum (hex).
        expected: String,
        /// The checksum of the file (hex).
        found: String,
    },

    /// The downloaded weights did not load or did not verify (crc32c of the checkpoint,
    /// tensor names and shapes, config).
    #[error("{context}: {source}")]
    Weights {
        /// What was being done (`verifying /tmp/.../model.ckpt`...).
        context: String,
        /// The underlying error.
        #[source]
        source: Box<WeightsError>,
    },

    /// A model directory exists but is not a usable model.
    #[error("{dir} exists but is not a valid model ({source}); remove it to download it again")]
    Invalid {
        /// The directory.
        dir: PathBuf,
        /// Why it does not load.
        #[source]
        source: Box<WeightsError>,
    },

    /// The path where a model should be exists but holds no model.
    #[error(
        "{0} exists but holds no model (expected config.json + model.safetensors, or OpenAI's \
         hparams.json + checkpoint + model.ckpt.* files); remove it or choose another models directory"
    )]
    NotAModel(PathBuf),

    /// The Hugging Face hub's answer about the repository was not usable.
    #[error("{repo}: {message}")]
    Hub {
        /// The repository (`openai-community/gpt2`).
        repo: String,
        /// What went wrong.
        message: String,
    },

    /// There is no directory to download into (no `--models-dir`, no `$GPT2_MODELS_DIR` and
    /// no platform cache directory).
    #[error(
        "no directory to download {model} into: pass --models-dir DIR or set GPT2_MODELS_DIR \
         (no platform cache directory was found)"
    )]
    NoDownloadDir {
        /// The model's name.
        model: String,
    },

    /// A local file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`creating`, `renaming`...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl DownloadError {
    /// Shorthand for [`DownloadError::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        DownloadError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// True when the error means the network (or the server) could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DownloadError::Unreachable { .. })
    }
}

/// `", after N retries"` or nothing.
pub(crate) fn retried_suffix(retries: u32) -> String {
    match retries {
        0 => String::new(),
        1 => ", after 1 retry".to_string(),
        n => format!(", after {n} retries"),
    }
}
