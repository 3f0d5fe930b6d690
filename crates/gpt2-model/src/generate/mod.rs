//! Text generation: sampling strategies and the token stream.
//!
//! - [`SamplingParams`] / [`Sampler`]: greedy, temperature, top-k, top-p (nucleus), min-p and the CTRL
//!   repetition penalty, applied to one logits vector, with a seeded, portable RNG owned by the sampler.
//! - [`StopMatcher`]: stop strings, including ones that span token boundaries (text that could be the
//!   start of a stop string is held back until it is known not to be).
//! - [`Generation`]: the token stream over any [`LanguageModel`] — prefill, then one token per
//!   `next()`, each with its text piece, log-prob and optional alternatives; stops at
//!   `<|endoftext|>`, a stop string, `max_new_tokens` or a full context.
//! - [`Sequence`]: one sequence's state without the model, for callers that step the model
//!   themselves (a server batching many sequences with `Gpt2::step_ragged`).
//! - [`Session`]: a loaded [`Gpt2`](crate::Gpt2) with its KV cache, the [`LanguageModel`] to generate
//!   with; [`generate_batch`] generates from several prompts in one batch.
//! - [`score`]: log-probabilities and perplexity of a text, with a sliding window past `n_ctx`.

mod params;
mod sampler;
mod score;
mod session;
mod stop;
mod stream;

#[cfg(test)]
mod fixture_tests;

pub use params::{SamplingError, SamplingParams};
pub use sampler::{
    apply_repetition_penalty, argmax, log_softmax, log_sum_exp, sampling_distribution,
    softmax_with_temperature, top_ids, Candidate, Sample, Sampler,
};
pub use score::{score, ScoreError, ScoreOptions, ScoreResult, TokenScore};
pub use session::{generate_batch, BatchOutput, Session};
pub use stop::StopMatcher;
pub use stream::{
    ContextOverflow, FinishReason, GenerateError, GenerateOptions, GeneratedToken, Generation,
    LanguageModel, Sequence,
};
