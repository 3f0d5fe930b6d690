//! The engine: one thread that owns the model and runs the requests (the scheduler is in
//! `scheduler.rs`), and the handle the routes submit to.
//!
//! Requests wait in a bounded queue; past it they are refused with 503. Each request's
//! events (its text as it comes, then its end) go to its handler over a channel; a handler
//! whose client went away drops the receiver, and the engine frees its slots before the
//! next step.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use gpt2_model::generate::{
    log_softmax, top_ids, ContextOverflow, GenerateOptions, SamplingParams,
};
use gpt2_model::{Gpt2, Tensor};
use gpt2_tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::request::CompletionRequest;

/// The log-prob details of one token (legacy Completions `logprobs`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token as text (`bytes:\xNN…` when it is not whole UTF-8).
    pub token: String,
    /// Its log-prob under the model; `None` for the first prompt token (no context).
    pub logprob: Option<f32>,
    /// The most likely tokens at this position and the chosen one, with their log-probs.
    pub top: Vec<(String, f32)>,
    /// Its offset in the choice's text, in bytes of UTF-8.
    pub text_offset: usize,
}

/// What the engine sends back for a request, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text of choice `index`, with its tokens' log-probs when asked for.
    Text {
        /// The choice.
        index: usize,
        /// The text (whole UTF-8 characters, never part of a stop string).
        text: String,
        /// The tokens behind the text (with `logprobs`).
        logprobs: Vec<TokenLogprob>,
    },
    /// Choice `index` is complete.
    Finish {
        /// The choice.
        index: usize,
        /// `"stop"` or `"length"`.
        reason: &'static str,
    },
    /// All choices are complete.
    Usage {
        /// Prompt tokens (each prompt once).
        prompt_tokens: usize,
        /// Generated tokens (every choice, `best_of` included).
        completion_tokens: usize,
    },
    /// The request failed inside the engine.
    Error(ApiError),
}

/// A request ready to run: prompts tokenized and checked against the model.
#[derive(Debug, Clone)]
pub struct Job {
    /// The validated request.
    pub request: CompletionRequest,
    /// The token ids of each prompt.
    pub prompts: Vec<Vec<u32>>,
}

pub(crate) struct Queued {
    pub(crate) job: Job,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) queued_at: Instant,
}

/// How the engine schedules requests.
///
/// ```
/// let c = gpt2_server::EngineConfig::default();
/// assert_eq!((c.parallel, c.max_queue, c.step_tokens), (16, 256, 256));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Sequences decoded together in one step (slots); a request takes one per choice.
    pub parallel: usize,
    /// Requests that may wait for a slot; more are refused with 503.
    pub max_queue: usize,
    /// Tokens one pass of the model takes: a token of every decoding sequence, then chunks of
    /// new prompts in the room left (at least a quarter of it); when nothing is decoding, a
    /// longer prompt goes whole. 256: a burst of 16 short prompts goes in one or two passes,
    /// where the arithmetic of many rows is cheapest per token, at the cost of a longer pause
    /// for the streams running then (a 256-token pass at 124M takes ~0.35 s on two cores at
    /// the ~720 tok/s of a 512-token prefill); smaller values pause them less.
    pub step_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            parallel: 16,
            max_queue: 256,
            step_tokens: 256,
        }
    }
}

/// The handle to the engine thread: submit jobs, read the model's facts.
#[derive(Clone)]
pub struct Engine {
    queue: SyncSender<Queued>,
    tokenizer: Arc<Tokenizer>,
    n_ctx: usize,
    n_vocab: usize,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// Starts the engine thread on `model`.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(
        model: Gpt2,
        tokenizer: Tokenizer,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = sync_channel(config.max_queue);
        let tokenizer = Arc::new(tokenizer);
        let model_config = *model.config();
        let engine = Engine {
            queue,
            tokenizer: tokenizer.clone(),
            n_ctx: model_config.n_ctx,
            n_vocab: model_config.n_vocab,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("gpt2-engine".into())
            .spawn(move || {
                // A panic inside a step must not take the server down: the requests in flight
                // lose their channels (their handlers answer 500) and the loop starts over.
                while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    crate::scheduler::run(&model, &tokenizer, &jobs, &metrics, config)
                }))
                .is_err()
                {
                    metrics.running.store(0, Ordering::Relaxed);
                    metrics.finished("error");
                }
            })?;
        Ok(engine)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's context length.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The model's vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Queues `job`; its events arrive on `events`.
    ///
    /// # Errors
    /// 503 when the queue is full or the engine has stopped.
    pub fn submit(&self, job: Job, events: UnboundedSender<Event>) -> Result<(), ApiError> {
        let queued = Queued {
            job,
            events,
            queued_at: Instant::now(),
        };
        self.metrics.waiting.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(queued) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.waiting.fetch_sub(1, Ordering::Relaxed);
                Err(ApiError::status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    match e {
                        TrySendError::Full(_) => {
                            "the server is busy: every slot is taken and the queue is full; retry later"
                        }
                        TrySendError::Disconnected(_) => "the engine has stopped",
                    },
                ))
            }
        }
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the model failed: {e}"),
    )
}

/// The options of choice `stream` of a request.
pub(crate) fn options(
    r: &CompletionRequest,
    seed: u64,
    stream: u64,
    eos: Option<u32>,
) -> GenerateOptions {
    let sampling = match r.temperature {
        0.0 => SamplingParams {
            repetition_penalty: r.repetition_penalty,
            ..SamplingParams::greedy()
        },
        t => SamplingParams {
            temperature: t,
            top_k: r.top_k,
            top_p: r.top_p.filter(|&p| p < 1.0),
            min_p: r.min_p.filter(|&p| p > 0.0),
            repetition_penalty: r.repetition_penalty,
            repetition_window: None,
            seed,
        },
    };
    GenerateOptions {
        sampling,
        max_new_tokens: r.max_tokens,
        eos_token: eos,
        stop_at_eos: !r.ignore_eos,
        stop_strings: r.stop.clone(),
        top_n: r.logprobs.unwrap_or(0),
        context_overflow: ContextOverflow::Error,
        stream,
        logit_bias: r.logit_bias.clone(),
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
    }
}

/// A token's text for `logprobs`: its bytes as UTF-8, or `bytes:\xNN…` (OpenAI's form) when
/// they are not whole characters.
pub(crate) fn token_text(tok: &Tokenizer, id: u32) -> String {
    match tok.token_bytes(id) {
        Ok(b) => match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => b
                .iter()
                .fold("bytes:".to_string(), |s, b| s + &format!("\\x{b:02x}")),
        },
        Err(_) => format!("<token {id}>"),
    }
}

/// A token's length in bytes of text.
pub(crate) fn token_len(tok: &Tokenizer, id: u32) -> usize {
    tok.token_bytes(id).map_or(0, <[u8]>::len)
}

/// The prompt as echoed: its text and, with `logprobs`, every token's log-prob under the
/// model (the first one's is `None`) and the `top` most likely tokens at each position.
pub(crate) fn echoed(
    model: &Gpt2,
    tok: &Tokenizer,
    prompt: &[u32],
    logprobs: Option<usize>,
) -> Result<(String, Vec<TokenLogprob>), ApiError> {
    let text = tok.decode(prompt).map_err(internal)?;
    let Some(top_n) = logprobs else {
        return Ok((text, Vec::new()));
    };
    let ids = Tensor::new(prompt, model.device())
        .and_then(|t| t.unsqueeze(0))
        .map_err(internal)?;
    let logits = model.forward(&ids).map_err(internal)?;
    let rows: Vec<Vec<f32>> = logits
        .squeeze(0)
        .and_then(|l| l.to_dtype(gpt2_model::DType::F32))
        .and_then(|l| l.to_vec2())
        .map_err(internal)?;
    let mut out = Vec::with_capacity(prompt.len());
    let mut offset = 0;
    for (i, &id) in prompt.iter().enumerate() {
        let token = token_text(tok, id);
        let (logprob, top) = match i {
            0 => (None, Vec::new()),
            _ => {
                let row = &rows[i - 1];
                let lp = log_softmax(row);
                let ids = top_ids(row, top_n);
                let mut top: Vec<(String, f32)> = ids
                    .iter()
                    .map(|&t| (token_text(tok, t as u32), lp[t]))
                    .collect();
                if !ids.contains(&(id as usize)) {
                    top.push((token.clone(), lp[id as usize]));
                }
                (Some(lp[id as usize]), top)
            }
        };
        out.push(TokenLogprob {
            token,
            logprob,
            top,
            text_offset: offset,
        });
        offset += token_len(tok, id);
    }
    Ok((text, out))
}
