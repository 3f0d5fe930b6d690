//! Token-by-token generation: the [`Generation`] iterator.

use gpt2_tokenizer::{StreamDecoder, Tokenizer};

use super::params::{SamplingError, SamplingParams};
use super::sampler::{Candidate, Sampler};
use super::stop::StopMatcher;
pub use crate::ContextOverflow;

/// What generation needs from a language model: the logits of the next token, given a context
/// that grows one token at a time (a KV cache behind the scenes).
///
/// The GPT-2 model of this crate implements it (see the crate docs); tests implement it with
/// small fakes.
pub trait LanguageModel {
    /// The model's error type.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The context length: how many positions the model can attend to.
    fn n_ctx(&self) -> usize;
    /// Forgets any cached context, runs `ids` (1 ≤ len ≤ `n_ctx`) and returns the logits
    /// `[vocab]` predicting the token after the last one.
    fn prefill(&mut self, ids: &[u32]) -> Result<Vec<f32>, Self::Error>;
    /// Appends one token to the cached context (whose length stays ≤ `n_ctx`) and returns the
    /// logits predicting the token after it.
    fn step(&mut self, id: u32) -> Result<Vec<f32>, Self::Error>;
    /// A hint, given before [`prefill`](Self::prefill): the generation that follows needs at
    /// most `columns` positions (≤ `n_ctx`), so a model with a cache can allocate them at once
    /// instead of growing it step by step. The default ignores it.
    fn reserve(&mut self, columns: usize) {
        let _ = columns;
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` were generated, or the context is full (with [`ContextOverflow::Error`]).
    Length,
    /// The model produced `<|endoftext|>`.
    Eos,
    /// A stop string appeared.
    Stop,
}

impl FinishReason {
    /// `"length"`, `"eos"` or `"stop"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
            FinishReason::Stop => "stop",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options of a generation (besides the sampling parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// How the next token is chosen.
    pub sampling: SamplingParams,
    /// At most this many new tokens.
    pub max_new_tokens: usize,
    /// The end-of-text token id (`<|endoftext|>`, 50256 for GPT-2), or `None` for no such token.
    pub eos_token: Option<u32>,
    /// Stop when the model produces `eos_token` (default). When false it is decoded like any
    /// other token (as `<|endoftext|>`) and generation goes on.
    pub stop_at_eos: bool,
    /// Strings that end the generation; the stop string and what follows are not part of the text.
    pub stop_strings: Vec<String>,
    /// Report this many most likely alternatives (model probabilities) with every token.
    pub top_n: usize,
    /// What to do when the context is full. With [`ContextOverflow::Error`], a prompt longer than
    /// `n_ctx` is refused and generation stops when prompt + generated tokens reach `n_ctx` (as
    /// Hugging Face's `max_length`; a prompt of exactly `n_ctx` tokens still gets one new token,
    /// predicted from the full context). With [`ContextOverflow::Slide`], the model sees the most
    /// recent `n_ctx` tokens, recomputed with a prefill for every token once the context is full.
    pub context_overflow: ContextOverflow,
    /// ChaCha stream of the sampler's RNG: use `i` for the i-th of several samples with one seed.
    pub stream: u64,
    /// Added to a token's logit before sampling, by token id (OpenAI's `logit_bias`; −100
    /// bans a token in practice). Ids outside the vocabulary are ignored. Default: none.
    pub logit_bias: Vec<(u32, f32)>,
    /// OpenAI's presence penalty: subtracted once from the logit of every token generated so
    /// far (the prompt does not count). Default 0.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty: subtracted from a token's logit once for each time it was
    /// generated so far. Default 0. Both penalties and the bias change what is drawn, not
    /// the reported log-probs (the model's, as for every other filter).
    pub frequency_penalty: f32,
}

impl Default for GenerateOptions {
    /// 50 new tokens with the default [`SamplingParams`], stopping at `<|endoftext|>` (50256).
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingParams::default(),
            max_new_tokens: 50,
            eos_token: Some(gpt2_tokenizer::END_OF_TEXT),
            stop_at_eos: true,
            stop_strings: Vec::new(),
            top_n: 0,
            context_overflow: ContextOverflow::Error,
            stream: 0,
            logit_bias: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// Why a generation could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A sampling parameter is invalid.
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// The prompt has no tokens.
    #[error(
        "the prompt is empty: give at least one token \
         (for unconditional text, start from <|endoftext|>, id 50256)"
    )]
    EmptyPrompt,
    /// The prompt does not fit in the context.
    #[error(
        "the prompt is {prompt} tokens but the model's context holds at most {n_ctx}: \
         remove at least {} tokens, or let the oldest tokens slide out of the window",
        prompt - n_ctx
    )]
    PromptTooLong {
        /// Prompt length in tokens.
        prompt: usize,
        /// The model's context length.
        n_ctx: usize,
    },
    /// The model failed.
    #[error("the model failed")]
    Model(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A generated token could not be decoded (an id outside the tokenizer's vocabulary).
    #[error("cannot decode generated token {id}")]
    Decode {
        /// The token id.
        id: u32,
        /// The tokenizer's error.
        #[source]
        source: gpt2_tokenizer::Error,
    },
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    /// The token id (an `<|endoftext|>` that ends the generation is reported too).
    pub id: u32,
    /// The text to show now: whole UTF-8 characters only, and nothing that could be the start of a
    /// stop string (that text comes with a later token, or never if the stop string completes).
    /// May be empty. Concatenating every token's `text` gives the generation's full text.
    pub text: String,
    /// Natural log-probability of this token under the unmodified model distribution
    /// (`log_softmax` of the raw logits: before repetition penalty, temperature and filters).
    pub logprob: f32,
    /// This token's probability in the distribution it was drawn from (1 for greedy decoding).
    pub sampling_prob: f32,
    /// The [`GenerateOptions::top_n`] most likely tokens under the model, most likely first.
    pub alternatives: Vec<Candidate>,
    /// `Some` on the last token: why generation ended.
    pub finish_reason: Option<FinishReason>,
}

/// A running generation: an iterator over the new tokens.
///
/// Created by [`Generation::new`], which runs the prompt through the model (the prefill); each call to
/// `next` runs one decode step and draws one token. Drop it to stop early; after the last token
/// (the one with a `finish_reason`) it returns `None`.
///
/// ```
/// use gpt2_model::generate::{GenerateOptions, Generation, LanguageModel, SamplingParams, FinishReason};
/// # struct Toy; impl LanguageModel for Toy { type Error = std::convert::Infallible;
/// #   fn n_ctx(&self) -> usize { 64 }
/// #   fn prefill(&mut self, ids: &[u32]) -> Result<Vec<f32>, Self::Error> { self.step(*ids.last().unwrap()) }
/// #   fn step(&mut self, id: u32) -> Result<Vec<f32>, Self::Error> {
/// #     let mut l = vec![0.0; 50257]; l[(id as usize + 1) % 50257] = 10.0; Ok(l) } }
/// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
/// let mut model = Toy; // any LanguageModel, e.g. a loaded GPT-2's session
/// let options = GenerateOptions { sampling: SamplingParams::greedy(), max_new_tokens: 3, ..Default::default() };
/// let mut text = String::new();
/// for token in Generation::new(&mut model, &tokenizer, &[40], options)? {
///     let token = token?;
///     text += &token.text;
///     if let Some(reason) = token.finish_reason {
///         assert_eq!(reason, FinishReason::Length);
///     }
/// }
/// assert_eq!(text, tokenizer.decode(&[41, 42, 43])?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Generation<'a, M: LanguageModel> {
    model: &'a mut M,
    seq: SeqState<'a>,
    /// Logits for the next token, when computed.
    logits: Option<Vec<f32>>,
    /// A generated token not yet fed to the model (fed lazily, at the next `next`).
    unfed: Option<u32>,
    /// How many context tokens the model's cache holds now.
    in_model: usize,
}

/// The prompt tokens the model sees: all of them, or under [`ContextOverflow::Slide`] the last
/// `n_ctx`. Errors on an empty prompt or (under `Error`) one longer than `n_ctx`.
pub(crate) fn prompt_window(
    prompt: &[u32],
    n_ctx: usize,
    overflow: ContextOverflow,
) -> Result<&[u32], GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    match overflow {
        ContextOverflow::Error if prompt.len() > n_ctx => Err(GenerateError::PromptTooLong {
            prompt: prompt.len(),
            n_ctx,
        }),
        _ => Ok(&prompt[prompt.len().saturating_sub(n_ctx)..]),
    }
}

/// Everything about one sequence being generated, except the model: sampler, decoders, history.
pub(crate) struct SeqState<'t> {
    pub(crate) options: GenerateOptions,
    decoder: StreamDecoder<'t>,
    sampler: Sampler,
    stop: StopMatcher,
    /// Prompt (possibly cut to the window) and generated tokens.
    pub(crate) context: Vec<u32>,
    pub(crate) prompt_len: usize,
    pub(crate) generated: Vec<u32>,
    pub(crate) finish: Option<FinishReason>,
}

impl<'t> SeqState<'t> {
    pub(crate) fn new(
        tokenizer: &'t Tokenizer,
        window: &[u32],
        options: GenerateOptions,
        stream: u64,
    ) -> Result<Self, GenerateError> {
        Ok(SeqState {
            decoder: tokenizer.stream_decoder(),
            sampler: Sampler::with_stream(options.sampling, stream)?,
            stop: StopMatcher::new(options.stop_strings.iter().cloned()),
            context: window.to_vec(),
            prompt_len: window.len(),
            generated: Vec::new(),
            finish: (options.max_new_tokens == 0).then_some(FinishReason::Length),
            options,
        })
    }

    /// `logits` with the options' logit bias and presence/frequency penalties (OpenAI's
    /// formula: `l[j] − c[j]·frequency − [c[j] > 0]·presence`, `c[j]` the times token `j` was
    /// generated), or `None` when the options have none.
    fn adjusted(&self, logits: &[f32]) -> Option<Vec<f32>> {
        let o = &self.options;
        let penalties = o.presence_penalty != 0.0 || o.frequency_penalty != 0.0;
        if o.logit_bias.is_empty() && !penalties {
            return None;
        }
        let mut out = logits.to_vec();
        for &(id, bias) in &o.logit_bias {
            if let Some(l) = out.get_mut(id as usize) {
                *l += bias;
            }
        }
        if penalties {
            let mut counts = std::collections::HashMap::<u32, u32>::new();
            for &id in &self.generated {
                *counts.entry(id).or_default() += 1;
            }
            for (id, c) in counts {
                if let Some(l) = out.get_mut(id as usize) {
                    *l -= c as f32 * o.frequency_penalty + o.presence_penalty;
                }
            }
        }
        Some(out)
    }

    /// Draws the next token from `logits`, decodes it, checks every stop condition.
    /// `context_full`: the model cannot take another token (with [`ContextOverflow::Error`]).
    pub(crate) fn accept(
        &mut self,
        logits: &[f32],
        context_full: bool,
    ) -> Result<GeneratedToken, GenerateError> {
        let sample = match self.adjusted(logits) {
            Some(adjusted) => self.sampler.sample_adjusted(
                logits,
                &adjusted,
                &self.context,
                self.options.top_n,
            )?,
            None => self
                .sampler
                .sample(logits, &self.context, self.options.top_n)?,
        };
        let id = sample.token.id;
        self.context.push(id);
        self.generated.push(id);

        let is_eos = self.options.stop_at_eos && Some(id) == self.options.eos_token;
        let mut text = String::new();
        let mut finish = None;
        if is_eos {
            finish = Some(FinishReason::Eos);
        } else {
            let piece = self
                .decoder
                .push(id)
                .map_err(|source| GenerateError::Decode { id, source })?;
            let (shown, stopped) = self.stop.push(&piece);
            text = shown;
            if stopped {
                finish = Some(FinishReason::Stop);
            }
        }
        if finish.is_none() && (self.generated.len() >= self.options.max_new_tokens || context_full)
        {
            finish = Some(FinishReason::Length);
        }
        if matches!(finish, Some(FinishReason::Length | FinishReason::Eos)) {
            // Release what the decoder and the stop matcher held back; a stop string can still
            // complete in the decoder's last bytes.
            let (shown, stopped) = self.stop.push(&self.decoder.finish());
            text.push_str(&shown);
            if stopped {
                finish = Some(FinishReason::Stop);
            } else {
                text.push_str(&self.stop.finish());
            }
        }
        self.finish = finish;
        Ok(GeneratedToken {
            id,
            text,
            logprob: sample.token.logprob,
            sampling_prob: sample.token.sampling_prob,
            alternatives: sample.alternatives,
            finish_reason: finish,
        })
    }
}

/// One sequence's generation state without the model: its sampler, stop strings, decoder
/// and history. For callers that run the model themselves, e.g. a server stepping many
/// sequences together with [`Gpt2::step_ragged`](crate::Gpt2::step_ragged): hand it the
/// logits predicting its next token and it draws, decodes and checks every stop condition
/// exactly as [`Generation`] does (which is built on it), so a sequence gives the same
/// tokens alone or among others.
///
/// ```
/// use gpt2_model::generate::{GenerateOptions, SamplingParams, Sequence};
/// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
/// let options = GenerateOptions { sampling: SamplingParams::greedy(), max_new_tokens: 2, ..Default::default() };
/// let mut seq = Sequence::new(&tokenizer, &[40], 1024, options)?;
/// let mut logits = vec![0f32; 50257];
/// logits[41] = 5.0;
/// assert_eq!(seq.accept(&logits)?.id, 41);
/// assert!(seq.accept(&logits)?.finish_reason.is_some());
/// # Ok::<(), gpt2_model::generate::GenerateError>(())
/// ```
pub struct Sequence<'t> {
    state: SeqState<'t>,
    n_ctx: usize,
}

impl<'t> Sequence<'t> {
    /// A sequence continuing `prompt` for a model of context `n_ctx`, with `options`
    /// (its RNG stream is [`GenerateOptions::stream`]).
    ///
    /// # Errors
    /// Invalid sampling parameters, an empty prompt, or a prompt longer than `n_ctx` (with
    /// [`ContextOverflow::Error`]; under `Slide` the last `n_ctx` tokens are kept).
    pub fn new(
        tokenizer: &'t Tokenizer,
        prompt: &[u32],
        n_ctx: usize,
        options: GenerateOptions,
    ) -> Result<Self, GenerateError> {
        let window = prompt_window(prompt, n_ctx, options.context_overflow)?;
        let stream = options.stream;
        Ok(Sequence {
            state: SeqState::new(tokenizer, window, options, stream)?,
            n_ctx,
        })
    }

    /// Draws the next token from `logits` (the model's, `[n_vocab]`, predicting the token
    /// after [`context`](Self::context)), decodes it and checks the stop conditions.
    ///
    /// # Errors
    /// NaN or empty logits, or a token the tokenizer cannot decode.
    pub fn accept(&mut self, logits: &[f32]) -> Result<GeneratedToken, GenerateError> {
        let context_full = self.state.context.len() + 1 >= self.n_ctx
            && self.state.options.context_overflow == ContextOverflow::Error;
        self.state.accept(logits, context_full)
    }

    /// [`accept`](Self::accept) for every `(sequence, logits)` pair of a batch, the pairs
    /// in parallel on the CPU threads that run the model's decode steps: what a server does
    /// after each step of many sequences (one thread took ~2.4 ms per step of 16 streams in
    /// `gpt2 serve` to sample, decode and hand on their tokens). Each result is exactly what `accept` gives that sequence alone: a
    /// sequence's sampler draws from its own RNG stream.
    ///
    /// ```
    /// use gpt2_model::generate::{GenerateOptions, Sequence};
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// let mut a = Sequence::new(&tokenizer, &[40], 1024, GenerateOptions::default())?;
    /// let mut b = Sequence::new(&tokenizer, &[41], 1024, GenerateOptions::default())?;
    /// let (mut la, mut lb) = (vec![0f32; 50257], vec![0f32; 50257]);
    /// la[7] = 50.0;
    /// lb[9] = 50.0;
    /// let tokens = Sequence::accept_all(&mut [(&mut a, &la[..]), (&mut b, &lb[..])]);
    /// assert_eq!(tokens[0].as_ref().map(|t| t.id).ok(), Some(7));
    /// assert_eq!(tokens[1].as_ref().map(|t| t.id).ok(), Some(9));
    /// # Ok::<(), gpt2_model::generate::GenerateError>(())
    /// ```
    pub fn accept_all(
        batch: &mut [(&mut Sequence<'t>, &[f32])],
    ) -> Vec<Result<GeneratedToken, GenerateError>> {
        let mut work: Vec<_> = batch
            .iter_mut()
            .map(|pair| (pair, None::<Result<GeneratedToken, GenerateError>>))
            .collect();
        crate::cpu::team::for_each_chunk_mut(&mut work, 1, |_, w| {
            for (pair, out) in w {
                *out = Some(pair.0.accept(pair.1));
            }
        });
        // (Every pair ran above; one that had not would run here, in order.)
        work.into_iter()
            .map(|(pair, out)| match out {
                Some(result) => result,
                None => pair.0.accept(pair.1),
            })
            .collect()
    }

    /// The prompt the model sees (cut to the window) followed by the generated tokens.
    pub fn context(&self) -> &[u32] {
        &self.state.context
    }

    /// The prompt tokens the model sees.
    pub fn prompt(&self) -> &[u32] {
        &self.state.context[..self.state.prompt_len]
    }

    /// The tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.state.generated
    }

    /// Why the sequence ended, once it has (at once for `max_new_tokens == 0`).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.state.finish
    }
}

impl<'a, M: LanguageModel> Generation<'a, M> {
    /// Validates the options and runs the prompt through the model.
    ///
    /// # Errors
    /// Invalid sampling parameters, an empty prompt, a prompt longer than the context (with
    /// [`ContextOverflow::Error`]), or a model failure.
    pub fn new(
        model: &'a mut M,
        tokenizer: &'a Tokenizer,
        prompt: &[u32],
        options: GenerateOptions,
    ) -> Result<Self, GenerateError> {
        let window = prompt_window(prompt, model.n_ctx(), options.context_overflow)?;
        let stream = options.stream;
        let columns = window
            .len()
            .saturating_add(options.max_new_tokens)
            .min(model.n_ctx());
        let seq = SeqState::new(tokenizer, window, options, stream)?;
        model.reserve(columns);
        let logits = model.prefill(window).map_err(model_error)?;
        Ok(Generation {
            in_model: window.len(),
            seq,
            logits: Some(logits),
            unfed: None,
            model,
        })
    }

    /// The prompt tokens the model saw (the last `n_ctx` of the prompt with [`ContextOverflow::Slide`]).
    pub fn prompt(&self) -> &[u32] {
        &self.seq.context[..self.seq.prompt_len]
    }

    /// The tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.seq.generated
    }

    /// Why the generation ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.seq.finish
    }

    /// Logits for the next token: feeds the last generated token first if needed.
    fn next_logits(&mut self) -> Result<Vec<f32>, GenerateError> {
        if let Some(logits) = self.logits.take() {
            return Ok(logits);
        }
        let n_ctx = self.model.n_ctx();
        let id = self.unfed.take().unwrap_or_default();
        if self.in_model < n_ctx {
            self.in_model += 1;
            self.model.step(id).map_err(model_error)
        } else {
            // Slide: the most recent n_ctx tokens (the new one included).
            let context = &self.seq.context;
            let window = &context[context.len() - n_ctx..];
            self.in_model = window.len();
            self.model.prefill(window).map_err(model_error)
        }
    }

    fn advance(&mut self) -> Result<GeneratedToken, GenerateError> {
        let logits = self.next_logits()?;
        let context_full = self.seq.context.len() + 1 >= self.model.n_ctx()
            && self.seq.options.context_overflow == ContextOverflow::Error;
        let token = self.seq.accept(&logits, context_full)?;
        if token.finish_reason.is_none() {
            self.unfed = Some(token.id);
        }
        Ok(token)
    }
}

pub(crate) fn model_error<E: std::error::Error + Send + Sync + 'static>(err: E) -> GenerateError {
    GenerateError::Model(Box::new(err))
}

impl<M: LanguageModel> Iterator for Generation<'_, M> {
    type Item = Result<GeneratedToken, GenerateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.seq.finish.is_some() {
            return None;
        }
        let result = self.advance();
        if result.is_err() {
            // An error ends the generation.
            self.seq.finish = Some(FinishReason::Length);
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_all_gives_each_sequence_what_it_draws_alone() {
        let tok = Tokenizer::gpt2();
        // Seeded sampling from flat-ish logits (many tokens likely), twice with one seed, and
        // greedy; then a NaN row.
        let sampled = |seed: u64| GenerateOptions {
            sampling: SamplingParams {
                temperature: 1.0,
                seed,
                ..Default::default()
            },
            max_new_tokens: 8,
            ..Default::default()
        };
        let options = [
            sampled(1),
            sampled(2),
            sampled(1),
            GenerateOptions::default(),
        ];
        let new = |o: &GenerateOptions| Sequence::new(&tok, &[464], 1024, o.clone());
        let mut alone: Vec<Sequence<'_>> = options.iter().map(|o| new(o).unwrap()).collect();
        let mut together: Vec<Sequence<'_>> = options.iter().map(|o| new(o).unwrap()).collect();
        for step in 0..8 {
            let rows: Vec<Vec<f32>> = (0..options.len())
                .map(|i| {
                    (0..50257)
                        .map(|t| ((t * 31 + i + step) % 97) as f32 * 0.05)
                        .collect()
                })
                .collect();
            let want: Vec<_> = alone
                .iter_mut()
                .zip(&rows)
                .map(|(s, l)| s.accept(l))
                .collect();
            let mut batch: Vec<(&mut Sequence<'_>, &[f32])> = together
                .iter_mut()
                .zip(&rows)
                .map(|(s, l)| (s, l.as_slice()))
                .collect();
            let got = Sequence::accept_all(&mut batch);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(w.is_ok(), "step {step}: {w:?}");
                assert_eq!(g.as_ref().ok(), w.as_ref().ok(), "step {step}");
            }
        }
        // An error stays with its sequence.
        let mut bad = new(&options[0]).unwrap();
        let mut good = new(&options[3]).unwrap();
        let (nan, ok) = (vec![f32::NAN; 50257], vec![0f32; 50257]);
        let got = Sequence::accept_all(&mut [(&mut bad, &nan[..]), (&mut good, &ok[..])]);
        assert!(got[0].is_err() && got[1].is_ok());
        assert!(Sequence::accept_all(&mut []).is_empty());
    }

    /// A fake model: the next token is `table(last token)` with logit 10, everything else 0.
    /// Records how it was called.
    struct Fake {
        n_ctx: usize,
        next: fn(u32) -> u32,
        calls: Vec<String>,
        cached: usize,
    }

    impl Fake {
        fn new(n_ctx: usize, next: fn(u32) -> u32) -> Self {
            Fake {
                n_ctx,
                next,
                calls: Vec::new(),
                cached: 0,
            }
        }
        fn logits(&self, last: u32) -> Vec<f32> {
            let mut l = vec![0.0; 50257];
            l[(self.next)(last) as usize] = 10.0;
            l
        }
    }

    impl LanguageModel for Fake {
        type Error = std::io::Error;
        fn n_ctx(&self) -> usize {
            self.n_ctx
        }
        fn prefill(&mut self, ids: &[u32]) -> Result<Vec<f32>, Self::Error> {
            assert!(!ids.is_empty() && ids.len() <= self.n_ctx);
            self.calls.push(format!("prefill {}", ids.len()));
            self.cached = ids.len();
            Ok(self.logits(ids[ids.len() - 1]))
        }
        fn step(&mut self, id: u32) -> Result<Vec<f32>, Self::Error> {
            assert!(self.cached < self.n_ctx, "step past the context");
            self.cached += 1;
            self.calls.push(format!("step {id}"));
            Ok(self.logits(id))
        }
    }

    fn greedy(max_new_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            sampling: SamplingParams::greedy(),
            max_new_tokens,
            ..Default::default()
        }
    }

    fn collect<M: LanguageModel>(
        model: &mut M,
        prompt: &[u32],
        options: GenerateOptions,
    ) -> (Vec<u32>, String, Option<FinishReason>) {
        let tok = Tokenizer::gpt2();
        let gen = Generation::new(model, &tok, prompt, options).unwrap();
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut reason = None;
        for t in gen {
            let t = t.unwrap();
            assert!(reason.is_none(), "token after the finish");
            ids.push(t.id);
            text += &t.text;
            reason = t.finish_reason;
        }
        (ids, text, reason)
    }

    #[test]
    fn max_tokens_and_lazy_feeding() {
        let mut m = Fake::new(64, |id| id + 1);
        let (ids, text, reason) = collect(&mut m, &[10, 20], greedy(3));
        assert_eq!(ids, vec![21, 22, 23]);
        assert_eq!(text, Tokenizer::gpt2().decode(&[21, 22, 23]).unwrap());
        assert_eq!(reason, Some(FinishReason::Length));
        // The last token is never fed: no wasted forward pass.
        assert_eq!(m.calls, vec!["prefill 2", "step 21", "step 22"]);
        let (ids, _, _) = collect(&mut m, &[10], greedy(0));
        assert!(ids.is_empty());
    }

    #[test]
    fn stops_at_eos_unless_told_not_to() {
        let mut m = Fake::new(64, |id| if id == 5 { 50256 } else { 5 });
        let (ids, text, reason) = collect(&mut m, &[1], greedy(10));
        assert_eq!(ids, vec![5, 50256]);
        assert_eq!(text, "&");
        assert_eq!(reason, Some(FinishReason::Eos));
        let opts = GenerateOptions {
            stop_at_eos: false,
            ..greedy(3)
        };
        let (ids, text, reason) = collect(&mut m, &[1], opts);
        assert_eq!(ids, vec![5, 50256, 5]);
        assert_eq!(text, "&<|endoftext|>&");
        assert_eq!(reason, Some(FinishReason::Length));
    }

    #[test]
    fn stop_string_across_tokens_is_not_shown() {
        let tok = Tokenizer::gpt2();
        // " the cat sat on the mat" token by token, cycling.
        let ids = tok.encode(" the cat sat on the mat").unwrap();
        assert!(ids.len() >= 6);
        // A fake whose next token follows the sequence.
        struct Seq(Vec<u32>, usize);
        impl LanguageModel for Seq {
            type Error = std::io::Error;
            fn n_ctx(&self) -> usize {
                64
            }
            fn prefill(&mut self, _: &[u32]) -> Result<Vec<f32>, Self::Error> {
                self.1 = 0;
                self.step(0)
            }
            fn step(&mut self, _: u32) -> Result<Vec<f32>, Self::Error> {
                let mut l = vec![0.0; 50257];
                l[self.0[self.1 % self.0.len()] as usize] = 5.0;
                self.1 += 1;
                Ok(l)
            }
        }
        let mut m = Seq(ids.clone(), 0);
        let opts = GenerateOptions {
            stop_strings: vec!["t sat".into()],
            ..greedy(20)
        };
        let (got, text, reason) = collect(&mut m, &[1], opts);
        assert_eq!(text, " the ca");
        assert_eq!(reason, Some(FinishReason::Stop));
        // Stopped on the token that completed the stop string (" sat").
        assert_eq!(got, ids[..3].to_vec());
        // A stop string that never appears: everything comes out, nothing held back at the end.
        let opts = GenerateOptions {
            stop_strings: vec![" mat!".into()],
            ..greedy(ids.len())
        };
        let (_, text, reason) = collect(&mut m, &[1], opts);
        assert_eq!(text, " the cat sat on the mat");
        assert_eq!(reason, Some(FinishReason::Length));
    }

    #[test]
    fn context_full_stops_or_slides() {
        let mut m = Fake::new(8, |id| id + 1);
        // 6-token prompt, n_ctx 8: only 2 new tokens fit.
        let (ids, _, reason) = collect(&mut m, &[1, 2, 3, 4, 5, 6], greedy(10));
        assert_eq!(ids, vec![7, 8]);
        assert_eq!(reason, Some(FinishReason::Length));
        // A prompt that fills the context still gets the token predicted from it.
        let (ids, _, reason) = collect(&mut m, &[1, 2, 3, 4, 5, 6, 7, 8], greedy(10));
        assert_eq!(ids, vec![9]);
        assert_eq!(reason, Some(FinishReason::Length));

        let tok = Tokenizer::gpt2();
        let err = Generation::new(&mut m, &tok, &[1; 9], greedy(1))
            .err()
            .unwrap();
        assert!(matches!(
            err,
            GenerateError::PromptTooLong {
                prompt: 9,
                n_ctx: 8
            }
        ));
        assert!(err.to_string().contains("at most 8"), "{err}");
        assert!(matches!(
            Generation::new(&mut m, &tok, &[], greedy(1)).err(),
            Some(GenerateError::EmptyPrompt)
        ));

        let slide = GenerateOptions {
            context_overflow: ContextOverflow::Slide,
            ..greedy(5)
        };
        m.calls.clear();
        let (ids, _, reason) = collect(&mut m, &[1, 2, 3, 4, 5, 6], slide.clone());
        assert_eq!(ids, vec![7, 8, 9, 10, 11]);
        assert_eq!(reason, Some(FinishReason::Length));
        assert_eq!(
            m.calls,
            vec!["prefill 6", "step 7", "step 8", "prefill 8", "prefill 8"]
        );
        // An overlong prompt keeps its last n_ctx tokens.
        let tok = Tokenizer::gpt2();
        let gen = Generation::new(&mut m, &tok, &[1; 12], slide).unwrap();
        assert_eq!(gen.prompt().len(), 8);
    }

    #[test]
    fn dropping_the_iterator_stops_early() {
        let mut m = Fake::new(64, |id| id + 1);
        let tok = Tokenizer::gpt2();
        let mut gen = Generation::new(&mut m, &tok, &[1], greedy(100)).unwrap();
        assert_eq!(gen.next().unwrap().unwrap().id, 2);
        assert_eq!(gen.generated(), &[2]);
        drop(gen);
        assert_eq!(m.calls, vec!["prefill 1"]);
    }

    #[test]
    fn alternatives_and_logprobs() {
        let mut m = Fake::new(64, |id| id + 1);
        let tok = Tokenizer::gpt2();
        let opts = GenerateOptions {
            top_n: 3,
            ..greedy(1)
        };
        let t = Generation::new(&mut m, &tok, &[1], opts)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(t.id, 2);
        assert_eq!(t.alternatives.len(), 3);
        assert_eq!(t.alternatives[0].id, 2);
        // logit 10 among 50256 zeros.
        let want = 10.0 - (10f64.exp() + 50256.0).ln();
        assert!((t.logprob as f64 - want).abs() < 1e-5);
        assert_eq!(t.sampling_prob, 1.0);
    }

    #[test]
    fn logit_bias_and_openai_penalties_change_the_draw_not_the_logprobs() {
        // Always predicts token 7 (logit 10); 8 and everything else have logit 0.
        let mut m = Fake::new(64, |_| 7);
        let (ids, _, _) = collect(&mut m, &[1], greedy(3));
        assert_eq!(ids, vec![7, 7, 7]);
        let banned = GenerateOptions {
            logit_bias: vec![(7, -100.0), (8, 1.0), (u32::MAX, 5.0)],
            ..greedy(2)
        };
        let (ids, _, _) = collect(&mut m, &[1], banned.clone());
        assert_eq!(ids, vec![8, 8]);
        let tok = Tokenizer::gpt2();
        let t = Generation::new(&mut m, &tok, &[1], banned)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let want = 0.0 - (10f64.exp() + 50256.0).ln(); // the model's log-prob of token 8
        assert!((t.logprob as f64 - want).abs() < 1e-5);
        // Frequency 4: after two 7s its logit is 10 − 8 = 2, still first; after three, −2.
        let freq = GenerateOptions {
            frequency_penalty: 4.0,
            ..greedy(4)
        };
        let (ids, _, _) = collect(&mut m, &[1], freq);
        assert_eq!(ids, vec![7, 7, 7, 0]);
        // Presence 11: once generated, 7 falls below the zeros (the lowest id wins ties).
        let presence = GenerateOptions {
            presence_penalty: 11.0,
            ..greedy(3)
        };
        let (ids, _, _) = collect(&mut m, &[1], presence);
        assert_eq!(ids, vec![7, 0, 1]);
    }

    #[test]
    fn invalid_sampling_is_an_error_before_the_model_runs() {
        let mut m = Fake::new(64, |id| id + 1);
        let tok = Tokenizer::gpt2();
        let mut opts = greedy(1);
        opts.sampling.top_p = Some(0.0);
        assert!(matches!(
            Generation::new(&mut m, &tok, &[1], opts).err(),
            Some(GenerateError::Sampling(SamplingError::TopP(_)))
        ));
        assert!(m.calls.is_empty());
    }
}
