//! Generation on [`Gpt2`]: a single-sequence [`Session`] and batched generation.

use gpt2_tokenizer::Tokenizer;

use super::stream::{
    model_error, prompt_window, ContextOverflow, FinishReason, GenerateError, GenerateOptions,
    GeneratedToken, Generation, LanguageModel, SeqState,
};
use crate::{Gpt2, KvCache, Logits, ModelError};

/// A loaded model with its own KV cache: the [`LanguageModel`] that [`Generation`] runs on.
///
/// The cache (and its buffers) is reused by every generation started from the session.
///
/// ```
/// use gpt2_model::generate::{GenerateOptions, SamplingParams, Session};
/// use gpt2_model::{Gpt2, LoadOptions};
/// use gpt2_weights::Config;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config { n_vocab: 50257, n_ctx: 16, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let model = Gpt2::random(&config, 42, &LoadOptions::default())?;
/// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
/// let mut session = Session::new(&model);
/// let options = GenerateOptions { sampling: SamplingParams::greedy(), max_new_tokens: 5, ..Default::default() };
/// let prompt = tokenizer.encode("Hello")?;
/// let mut ids = Vec::new();
/// for token in session.generate(&tokenizer, &prompt, options)? {
///     ids.push(token?.id); // print token.text as it comes to stream
/// }
/// assert!(ids.len() <= 5);
/// # Ok(()) }
/// ```
pub struct Session<'m> {
    model: &'m Gpt2,
    cache: KvCache,
}

impl<'m> Session<'m> {
    /// A session with an empty cache.
    pub fn new(model: &'m Gpt2) -> Self {
        Session {
            model,
            cache: model.new_cache(ContextOverflow::Error),
        }
    }

    /// The model.
    pub fn model(&self) -> &'m Gpt2 {
        self.model
    }

    /// Starts a generation from `prompt` (runs the prefill now); iterate over it for the tokens.
    pub fn generate<'s>(
        &'s mut self,
        tokenizer: &'s Tokenizer,
        prompt: &[u32],
        options: GenerateOptions,
    ) -> Result<Generation<'s, Self>, GenerateError> {
        Generation::new(self, tokenizer, prompt, options)
    }
}

fn last_row(logits: candle_core::Tensor) -> Result<Vec<f32>, ModelError> {
    Ok(logits.squeeze(0)?.to_vec1::<f32>()?)
}

impl LanguageModel for Session<'_> {
    type Error = ModelError;

    fn n_ctx(&self) -> usize {
        self.model.config().n_ctx
    }

    fn prefill(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        last_row(self.model.prefill(&mut self.cache, &[ids], Logits::Last)?)
    }

    fn step(&mut self, id: u32) -> Result<Vec<f32>, ModelError> {
        last_row(self.model.step(&mut self.cache, &[id])?)
    }

    /// Allocates the cache for `columns` positions now: no regrowth (and no copy of the
    /// cache) during the generation, and no more room than it can use.
    fn reserve(&mut self, columns: usize) {
        // Only a hint: if it cannot be done now, the cache grows as it goes.
        let _ = self.cache.reserve(columns);
    }
}

/// One sequence of a batched generation, complete.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutput {
    /// The prompt tokens the model saw.
    pub prompt: Vec<u32>,
    /// The generated tokens, in order, as [`Generation`] yields them.
    pub tokens: Vec<GeneratedToken>,
    /// The full generated text (the `text` of every token).
    pub text: String,
    /// Why this sequence ended.
    pub finish_reason: FinishReason,
}

impl BatchOutput {
    /// The generated token ids.
    pub fn ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }
}

/// Generates from several prompts at once (of different lengths), in one batch on the model.
///
/// Each sequence is generated exactly as [`Generation`] would alone (same stop rules; its sampler
/// uses ChaCha stream `options.stream + i`), so with greedy decoding every sequence gets the ids it
/// gets alone. Sequences that finish early ride along until all are done (their results are
/// ignored). The batch is left-padded to its longest prompt, so with [`ContextOverflow::Error`]
/// the batch's context is full — and every unfinished sequence ends with
/// [`FinishReason::Length`] — when the longest prompt plus the generated tokens reach `n_ctx`.
///
/// ```
/// use gpt2_model::generate::{generate_batch, GenerateOptions, SamplingParams};
/// use gpt2_model::{Gpt2, LoadOptions};
/// use gpt2_weights::Config;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config { n_vocab: 50257, n_ctx: 32, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let model = Gpt2::random(&config, 1, &LoadOptions::default())?;
/// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
/// let options = GenerateOptions { sampling: SamplingParams::greedy(), max_new_tokens: 4, ..Default::default() };
/// let outputs = generate_batch(&model, &tokenizer, &[&[464, 3290], &[40]], &options)?;
/// assert_eq!(outputs.len(), 2);
/// # Ok(()) }
/// ```
pub fn generate_batch(
    model: &Gpt2,
    tokenizer: &Tokenizer,
    prompts: &[&[u32]],
    options: &GenerateOptions,
) -> Result<Vec<BatchOutput>, GenerateError> {
    let n_ctx = model.config().n_ctx;
    let mut seqs = Vec::with_capacity(prompts.len());
    let mut windows = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        let window = prompt_window(prompt, n_ctx, options.context_overflow)?;
        windows.push(window);
        seqs.push(SeqState::new(
            tokenizer,
            window,
            options.clone(),
            options.stream.wrapping_add(i as u64),
        )?);
    }
    let mut outputs: Vec<Vec<GeneratedToken>> = vec![Vec::new(); prompts.len()];
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let mut cache = model.new_cache(options.context_overflow);
    let mut logits = model
        .prefill(&mut cache, &windows, Logits::Last)
        .map_err(model_error)?;
    loop {
        let rows: Vec<Vec<f32>> = logits
            .to_vec2::<f32>()
            .map_err(|e| model_error(ModelError::from(e)))?;
        // The token drawn now makes every row `cache.len() + 1` columns long; with the Error
        // policy the batch cannot be fed another token once that reaches n_ctx.
        let context_full =
            options.context_overflow == ContextOverflow::Error && cache.len() + 1 >= n_ctx;
        let mut next = Vec::with_capacity(seqs.len());
        for ((seq, out), row) in seqs.iter_mut().zip(&mut outputs).zip(&rows) {
            if seq.finish.is_none() {
                out.push(seq.accept(row, context_full)?);
            }
            // Finished rows are fed their last token again; their logits are ignored.
            next.push(seq.context.last().copied().unwrap_or_default());
        }
        if seqs.iter().all(|s| s.finish.is_some()) {
            break;
        }
        logits = model.step(&mut cache, &next).map_err(model_error)?;
    }
    Ok(seqs
        .into_iter()
        .zip(outputs)
        .map(|(seq, tokens)| BatchOutput {
            prompt: seq.context[..seq.prompt_len].to_vec(),
            text: tokens.iter().map(|t| t.text.as_str()).collect(),
            finish_reason: seq.finish.unwrap_or(FinishReason::Length),
            tokens,
        })
        .collect())
}
