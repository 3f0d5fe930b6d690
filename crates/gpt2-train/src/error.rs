//! [`TrainError`]: everything that can go wrong while preparing data, training, saving or
//! resuming.

use std::path::PathBuf;

/// A training error. Each message says what was expected and what was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A data file with nothing in it.
    #[error("the data file {path} is empty: expected UTF-8 text, or a .bin file of little-endian u16 token ids")]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A text data file that is not UTF-8.
    #[error("the data file {path} is not UTF-8 text (invalid byte at offset {offset}); a file of token ids must end in .bin")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// A `.bin` file whose length is not a whole number of u16 ids.
    #[error("the data file {path} has {len} bytes, an odd number: a .bin file holds little-endian u16 token ids")]
    OddBin {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// A token id the model has no embedding for.
    #[error("the data file {path} holds token id {id} (at index {index}), out of range for the model's {n_vocab} tokens")]
    TokenOutOfRange {
        /// The file.
        path: PathBuf,
        /// The id.
        id: u32,
        /// Its index in the file.
        index: usize,
        /// The model's vocabulary size.
        n_vocab: usize,
    },
    /// Not enough tokens for one window of `seq_len + 1`.
    #[error("the {what} data has {tokens} tokens, fewer than one window of seq_len + 1 = {needed} tokens: give more data or a smaller --seq-len")]
    TooFewTokens {
        /// `training` or `validation`.
        what: &'static str,
        /// How many tokens there are.
        tokens: usize,
        /// How many one window needs.
        needed: usize,
    },
    /// A setting out of its range.
    #[error("{name} must be {expected}, got {found}")]
    Setting {
        /// The setting (`--batch-size`, ...).
        name: &'static str,
        /// Its range.
        expected: String,
        /// The value given.
        found: String,
    },
    /// `resume` on something that is not a checkpoint, or one that does not fit.
    #[error("{path} is not a checkpoint this trainer can resume: {reason}")]
    NotACheckpoint {
        /// The directory.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] gpt2_model::ModelError),
    /// Weights could not be read or written.
    #[error(transparent)]
    Weights(#[from] gpt2_weights::WeightsError),
    /// Text could not be encoded.
    #[error(transparent)]
    Tokenizer(#[from] gpt2_tokenizer::Error),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// `Result` with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn setting(
        name: &'static str,
        expected: impl Into<String>,
        found: impl std::fmt::Display,
    ) -> Self {
        TrainError::Setting {
            name,
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    /// Whether the error is in what the user asked for (a setting, the data, the resume
    /// directory) rather than a failure while running: the CLI exits with 2 for these.
    ///
    /// ```
    /// let e = gpt2_train::TrainError::EmptyFile { path: "a.txt".into() };
    /// assert!(e.is_usage());
    /// ```
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            TrainError::EmptyFile { .. }
                | TrainError::NotUtf8 { .. }
                | TrainError::OddBin { .. }
                | TrainError::TokenOutOfRange { .. }
                | TrainError::TooFewTokens { .. }
                | TrainError::Setting { .. }
                | TrainError::NotACheckpoint { .. }
        ) || matches!(self, TrainError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}
