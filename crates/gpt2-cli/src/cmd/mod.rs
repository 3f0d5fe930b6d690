//! One module per subcommand.

pub mod convert;
pub mod detokenize;
pub mod generate;
pub mod inspect;
pub mod load;
pub mod logits;
pub mod score;
pub mod serve;
pub mod tokenize;
pub mod train;

/// An error in what the user typed (as opposed to a failure while running).
///
/// Wrap such errors with `anyhow::Error::new(UsageError(..))` to exit with
/// code 2, like clap's own usage errors; everything else exits with 1.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The process exit code for an error: 2 for usage errors, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| c.is::<UsageError>()) {
        2
    } else {
        1
    }
}
