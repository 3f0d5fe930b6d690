//! The crate's error type.

use candle_core::DType;

/// Everything that can go wrong while loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or validating the weights failed (missing file, bad shape, checksum...).
    #[error(transparent)]
    Weights(#[from] gpt2_weights::WeightsError),

    /// A weight is NaN or infinite.
    #[error("tensor `{name}`: value {index} is {value}; a model's weights must be finite numbers")]
    NonFinite {
        /// The canonical tensor name.
        name: String,
        /// The index of the first bad value (row-major).
        index: usize,
        /// The value.
        value: f32,
    },

    /// A Q8_0 block of a weight matrix has a NaN or infinite scale.
    #[error("tensor `{name}`: the Q8_0 block holding value {index} has scale {scale}; a model's weights must be finite numbers")]
    NonFiniteScale {
        /// The canonical tensor name.
        name: String,
        /// The row-major index of the block's first value.
        index: usize,
        /// The scale.
        scale: f32,
    },

    /// A weight matrix cannot be stored in 8-bit blocks (a NaN, an infinity, or a weight
    /// too large for the block scale).
    #[error("tensor `{name}` cannot be quantized to Q8_0: {source}")]
    Quantize {
        /// The canonical tensor name.
        name: String,
        /// What is wrong with it.
        source: gpt2_weights::q8_0::Q8Error,
    },

    /// A tensor operation failed (an unsupported dtype on this device, out of memory...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// More positions than the model's context (`n_ctx`) were asked for, and the
    /// overflow policy is [`ContextOverflow::Error`](crate::ContextOverflow::Error).
    #[error(
        "context overflow: the model holds at most n_ctx = {n_ctx} tokens per sequence; \
         {cached} are already in the cache and {requested} more were given, so only {fits} more fit \
         (start a new sequence, shorten the input, or choose ContextOverflow::Slide to keep the most \
         recent {n_ctx} tokens)"
    )]
    ContextOverflow {
        /// The model's context length.
        n_ctx: usize,
        /// Positions already used in the cache (including left padding in a batch).
        cached: usize,
        /// New tokens given in the failing call.
        requested: usize,
        /// How many more tokens would have fit.
        fits: usize,
    },

    /// A token id is not in the vocabulary.
    #[error("token id {id} (sequence {sequence}, position {position}) is out of range: the vocabulary has {n_vocab} tokens (ids 0..={max})", max = n_vocab - 1)]
    TokenOutOfRange {
        /// The bad id.
        id: u32,
        /// Which sequence of the batch it was in.
        sequence: usize,
        /// Its index within the given tokens of that sequence.
        position: usize,
        /// The vocabulary size.
        n_vocab: usize,
    },

    /// A sequence with no tokens was given where at least one is needed.
    #[error("sequence {sequence} of the batch is empty: at least one token is needed (GPT-2 uses <|endoftext|> = 50256 to start from nothing)")]
    EmptySequence {
        /// Which sequence of the batch was empty.
        sequence: usize,
    },

    /// A batch had no sequences, or calls on one cache disagree on the batch size.
    #[error("batch size mismatch: expected {expected} sequences, found {found}")]
    BatchSize {
        /// The batch size the cache holds (or 1 or more for a new batch).
        expected: usize,
        /// The number of sequences given.
        found: usize,
    },

    /// Sequences of one `extend` call must all add the same number of tokens.
    #[error("every sequence must add the same number of tokens in one call: sequence 0 adds {expected}, sequence {sequence} adds {found}")]
    RaggedExtend {
        /// Tokens added by sequence 0.
        expected: usize,
        /// Index of the first sequence that differs.
        sequence: usize,
        /// Tokens it adds.
        found: usize,
    },

    /// An input tensor had the wrong shape or dtype.
    #[error("bad input: expected {expected}, found {found}")]
    BadInput {
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },

    /// The model cannot compute in this dtype.
    #[error("unsupported compute dtype {0:?}: the model computes in f32 or f16 (bf16 only on GPUs: candle's CPU matmul has no bf16)")]
    UnsupportedDtype(DType),

    /// The hyperparameters are inconsistent.
    #[error("invalid config: {0}")]
    Config(String),
}

/// `Result` with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
