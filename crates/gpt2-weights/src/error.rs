//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while reading, validating or writing weights.
///
/// Every message names the file or tensor involved and, where it applies, what was
/// expected and what was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that the layout needs is not there.
    #[error("{}: missing ({needed_for})", path.display())]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// Why it is needed.
        needed_for: String,
    },
    /// The directory is neither an OpenAI nor a Hugging Face model directory.
    #[error("{}: not a GPT-2 model directory: looked for {looked_for}", dir.display())]
    UnknownLayout {
        /// The directory.
        dir: PathBuf,
        /// What was looked for.
        looked_for: String,
    },
    /// Hyperparameters that are missing, malformed or impossible.
    #[error("{}invalid config: {message}", source_prefix(file))]
    InvalidConfig {
        /// The file they came from, if any.
        file: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
    /// A malformed file (checkpoint index, safetensors header, JSON index...).
    #[error("{file}: {message}")]
    Format {
        /// The file (or `<bytes>` when parsing from memory).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor's data does not match the checksum stored in the checkpoint index.
    #[error(
        "{}: checksum mismatch for tensor `{tensor}`: the index says crc32c {expected:#010x}, \
         the data has {found:#010x} (corrupted or incomplete download?)",
        file.display()
    )]
    Checksum {
        /// The data file holding the tensor.
        file: PathBuf,
        /// The tensor's name as stored in the file.
        tensor: String,
        /// The (unmasked) crc32c from the index.
        expected: u32,
        /// The crc32c of the bytes found.
        found: u32,
    },
    /// The tensors do not match what the config describes.
    #[error("{}: tensors do not match the config: {mismatch}", dir.display())]
    Mismatch {
        /// The model directory.
        dir: PathBuf,
        /// The missing, unexpected and wrongly shaped tensors, all together.
        mismatch: Mismatch,
    },
    /// A tensor name that this model does not have.
    #[error("no tensor named `{0}` (canonical names look like `h.0.attn.c_attn.weight`)")]
    UnknownTensor(String),
    /// Something well-formed that this crate does not support (a dtype, compression...).
    #[error("{file}: unsupported: {message}")]
    Unsupported {
        /// The file.
        file: String,
        /// What is not supported.
        message: String,
    },
    /// A GGUF metadata entry is missing, of the wrong type, or has an impossible value.
    #[error("{}: metadata `{key}`: expected {expected}, found {found}", file.display())]
    Metadata {
        /// The GGUF file.
        file: PathBuf,
        /// The metadata key (cut to a few hundred bytes).
        key: String,
        /// What was expected.
        expected: String,
        /// What was found (a short description; quoted input is cut to a few hundred bytes).
        found: String,
    },
    /// Weights that cannot be stored as Q8_0 (NaN, infinity, a scale too large for f16).
    #[error("{}: tensor `{tensor}`: {source}", file.display())]
    Quantize {
        /// The file being written.
        file: PathBuf,
        /// The canonical tensor name.
        tensor: String,
        /// What is wrong.
        source: crate::q8_0::Q8Error,
    },
    /// The destination of a conversion already exists.
    #[error("{}: already exists; remove it or choose another destination", .0.display())]
    DestinationExists(PathBuf),
    /// A string that is not a known dtype / model size.
    #[error("unknown {what} `{found}`: expected one of {expected}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The input.
        found: String,
        /// The accepted values.
        expected: &'static str,
    },
}

/// `s` cut to at most 200 bytes (at a character boundary), marked when cut: for quoting input
/// in messages.
pub(crate) fn cut(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

fn source_prefix(file: &Option<PathBuf>) -> String {
    match file {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

impl WeightsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WeightsError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn metadata(
        file: &std::path::Path,
        key: &str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        WeightsError::Metadata {
            file: file.to_path_buf(),
            key: cut(key),
            expected: expected.into(),
            found: found.into(),
        }
    }
    pub(crate) fn format(file: impl fmt::Display, message: impl Into<String>) -> Self {
        WeightsError::Format {
            file: file.to_string(),
            message: message.into(),
        }
    }
}

/// The difference between the tensors found and the tensors a [`Config`](crate::Config) needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// Canonical names that were expected but not found.
    pub missing: Vec<String>,
    /// Names that were found but are not part of GPT-2 (as stored in the file).
    pub unexpected: Vec<String>,
    /// `(name, expected shape, found shape)`.
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl Mismatch {
    /// True when nothing is missing, unexpected or wrongly shaped.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.wrong_shape.is_empty() {
            let items: Vec<String> = self
                .wrong_shape
                .iter()
                .map(|(n, e, found)| format!("`{n}` expected shape {e:?}, found {found:?}"))
                .collect();
            parts.push(format!("wrong shape: {}", items.join(", ")));
        }
        if !self.missing.is_empty() {
            parts.push(format!(
                "missing {} tensor(s): {}",
                self.missing.len(),
                list(&self.missing)
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "unexpected {} tensor(s): {}",
                self.unexpected.len(),
                list(&self.unexpected)
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

fn list(names: &[String]) -> String {
    const MAX: usize = 20;
    let mut s: Vec<String> = names.iter().take(MAX).map(|n| format!("`{n}`")).collect();
    if names.len() > MAX {
        s.push(format!("... ({} more)", names.len() - MAX));
    }
    s.join(", ")
}
