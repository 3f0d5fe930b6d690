//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading a vocabulary, encoding or decoding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A token id that the vocabulary does not have.
    #[error("token id {id} is out of range: the vocabulary has {vocab_size} tokens (valid ids are 0 to {})", vocab_size.saturating_sub(1))]
    InvalidId {
        /// The offending id.
        id: u32,
        /// The number of tokens in the vocabulary.
        vocab_size: usize,
    },

    /// The path given to [`Tokenizer::from_dir`](crate::Tokenizer::from_dir) is not a directory.
    #[error("{} is not a directory (expected a directory with GPT-2 tokenizer files)", path.display())]
    NotADirectory {
        /// The path that was given.
        path: PathBuf,
    },

    /// A directory holds none of the supported tokenizer layouts.
    #[error(
        "no GPT-2 tokenizer files in {}: looked for encoder.json + vocab.bpe (OpenAI layout), \
         vocab.json + merges.txt or tokenizer.json (Hugging Face layout)",
        dir.display()
    )]
    NoTokenizerFiles {
        /// The directory that was searched.
        dir: PathBuf,
    },

    /// A directory holds one file of a pair but not the other.
    #[error("{} has {found} but not {missing}, which must come with it", dir.display())]
    IncompleteLayout {
        /// The directory that was searched.
        dir: PathBuf,
        /// The file that is there.
        found: &'static str,
        /// The file that is missing.
        missing: &'static str,
    },

    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A file was read but its content is not what a GPT-2 byte-level BPE tokenizer needs.
    #[error("{source_name} is not a valid {what}: {reason}")]
    InvalidFile {
        /// The file (a path, or a description such as "embedded encoder.json").
        source_name: String,
        /// What the file was expected to be, e.g. "encoder.json/vocab.json vocabulary".
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The Hugging Face `tokenizers` pipeline reported an error while encoding.
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
