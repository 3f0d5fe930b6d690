//! The engine: one thread that owns the model and runs the queued requests.
//!
//! Requests wait in a bounded queue (`--max-queue`); past it they are refused with 503. The
//! thread runs one request at a time, token by token, and sends each piece of text to the
//! request's handler as it comes. A handler whose client went away drops its receiver; the
//! engine notices before the next token and moves on.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use gpt2_model::generate::{
    log_softmax, top_ids, ContextOverflow, FinishReason, GenerateOptions, SamplingParams, Session,
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

struct Queued {
    job: Job,
    events: UnboundedSender<Event>,
    queued_at: Instant,
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
    /// Starts the engine thread on `model` with a queue of `max_queue` waiting requests.
    pub fn start(
        model: Gpt2,
        tokenizer: Tokenizer,
        max_queue: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (queue, jobs) = sync_channel(max_queue);
        let tokenizer = Arc::new(tokenizer);
        let config = *model.config();
        let engine = Engine {
            queue,
            tokenizer: tokenizer.clone(),
            n_ctx: config.n_ctx,
            n_vocab: config.n_vocab,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("gpt2-engine".into())
            .spawn(move || run(model, tokenizer, jobs, metrics))
            .map(|_| engine)
            .unwrap_or_else(|e| {
                // Without a thread there is no engine; the queue's receiver is gone and every
                // submit answers 503.
                eprintln!("cannot start the engine thread: {e}");
                let (queue, _) = sync_channel(0);
                Engine {
                    queue,
                    tokenizer: Arc::new(Tokenizer::gpt2()),
                    n_ctx: config.n_ctx,
                    n_vocab: config.n_vocab,
                    metrics: Arc::new(Metrics::default()),
                }
            })
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

fn run(model: Gpt2, tokenizer: Arc<Tokenizer>, jobs: Receiver<Queued>, metrics: Arc<Metrics>) {
    let mut session = Session::new(&model);
    for queued in jobs {
        metrics.waiting.fetch_sub(1, Ordering::Relaxed);
        if queued.events.is_closed() {
            metrics.finished("cancelled");
            continue;
        }
        metrics.running.fetch_add(1, Ordering::Relaxed);
        let mut timing = Timing::new(queued.queued_at, &metrics);
        let outcome = run_job(&mut session, &tokenizer, &queued, &mut timing);
        metrics.running.fetch_sub(1, Ordering::Relaxed);
        metrics
            .request_duration
            .observe(queued.queued_at.elapsed().as_secs_f64());
        match outcome {
            Ok(Outcome::Done(reason)) => metrics.finished(reason),
            Ok(Outcome::Cancelled) => metrics.finished("cancelled"),
            Err(e) => {
                metrics.finished("error");
                let _ = queued.events.send(Event::Error(e));
            }
        }
    }
}

/// Time to first token and between tokens, into the metrics.
struct Timing<'m> {
    start: Instant,
    last: Option<Instant>,
    metrics: &'m Metrics,
}

impl<'m> Timing<'m> {
    fn new(start: Instant, metrics: &'m Metrics) -> Self {
        Timing {
            start,
            last: None,
            metrics,
        }
    }

    fn token(&mut self) {
        let now = Instant::now();
        match self.last {
            None => self
                .metrics
                .time_to_first_token
                .observe((now - self.start).as_secs_f64()),
            Some(last) => self
                .metrics
                .inter_token_latency
                .observe((now - last).as_secs_f64()),
        }
        self.last = Some(now);
        self.metrics
            .generation_tokens
            .fetch_add(1, Ordering::Relaxed);
    }
}

enum Outcome {
    /// Every choice finished; the last choice's finish reason.
    Done(&'static str),
    /// The client went away.
    Cancelled,
}

/// One generated choice, kept whole when `best_of` > `n` (to rank them).
struct Choice {
    text: String,
    logprobs: Vec<TokenLogprob>,
    reason: &'static str,
    sum_logprob: f64,
    tokens: usize,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::status(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the model failed: {e}"),
    )
}

fn run_job(
    session: &mut Session<'_>,
    tok: &Tokenizer,
    queued: &Queued,
    timing: &mut Timing<'_>,
) -> Result<Outcome, ApiError> {
    let (r, events) = (&queued.job.request, &queued.events);
    let send = |e: Event| events.send(e).is_ok();
    let seed = r.seed.unwrap_or_else(rand::random);
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    let mut last_reason = "length";
    for (p, prompt) in queued.job.prompts.iter().enumerate() {
        prompt_tokens += prompt.len();
        timing
            .metrics
            .prompt_tokens
            .fetch_add(prompt.len() as u64, Ordering::Relaxed);
        let echo = match r.echo {
            true => Some(echoed(session.model(), tok, prompt, r.logprobs)?),
            false => None,
        };
        let buffered = r.best_of > r.n;
        let mut choices = Vec::new();
        for j in 0..r.best_of {
            let index = p * r.n + j;
            if !buffered {
                if let Some((text, lp)) = &echo {
                    if !send(Event::Text {
                        index,
                        text: text.clone(),
                        logprobs: lp.clone(),
                    }) {
                        return Ok(Outcome::Cancelled);
                    }
                }
            }
            let offset = echo.as_ref().map_or(0, |(t, _)| t.len());
            let choice = generate_choice(
                session,
                tok,
                r,
                prompt,
                seed,
                j as u64,
                offset,
                timing,
                |text, lp| {
                    !buffered
                        && send(Event::Text {
                            index,
                            text,
                            logprobs: lp,
                        })
                        || buffered && !events.is_closed()
                },
            )?;
            let Some(choice) = choice else {
                return Ok(Outcome::Cancelled);
            };
            completion_tokens += choice.tokens;
            last_reason = choice.reason;
            if buffered {
                choices.push(choice);
            } else if !send(Event::Finish {
                index,
                reason: choice.reason,
            }) {
                return Ok(Outcome::Cancelled);
            }
        }
        if buffered {
            // The n with the highest mean log-prob, best first.
            let mean = |c: &Choice| c.sum_logprob / c.tokens.max(1) as f64;
            choices.sort_by(|a, b| mean(b).total_cmp(&mean(a)));
            for (j, c) in choices.into_iter().take(r.n).enumerate() {
                let index = p * r.n + j;
                let (mut text, mut logprobs) = echo.clone().unwrap_or_default();
                text.push_str(&c.text);
                logprobs.extend(c.logprobs);
                if !send(Event::Text {
                    index,
                    text,
                    logprobs,
                }) || !send(Event::Finish {
                    index,
                    reason: c.reason,
                }) {
                    return Ok(Outcome::Cancelled);
                }
            }
        }
    }
    send(Event::Usage {
        prompt_tokens,
        completion_tokens,
    });
    Ok(Outcome::Done(last_reason))
}

/// The options of choice `stream` of a request.
fn options(r: &CompletionRequest, seed: u64, stream: u64, eos: Option<u32>) -> GenerateOptions {
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

/// Generates one choice, calling `emit(text, logprobs)` for each piece as it comes (return
/// false: the client is gone). `None` when cancelled.
#[allow(clippy::too_many_arguments)]
fn generate_choice(
    session: &mut Session<'_>,
    tok: &Tokenizer,
    r: &CompletionRequest,
    prompt: &[u32],
    seed: u64,
    stream: u64,
    mut offset: usize,
    timing: &mut Timing<'_>,
    mut emit: impl FnMut(String, Vec<TokenLogprob>) -> bool,
) -> Result<Option<Choice>, ApiError> {
    let mut choice = Choice {
        text: String::new(),
        logprobs: Vec::new(),
        reason: "length",
        sum_logprob: 0.0,
        tokens: 0,
    };
    if r.max_tokens == 0 {
        return Ok(Some(choice));
    }
    let eos = tok.end_of_text();
    let generation = session
        .generate(tok, prompt, options(r, seed, stream, eos))
        .map_err(internal)?;
    for token in generation {
        let token = token.map_err(internal)?;
        timing.token();
        choice.tokens += 1;
        choice.sum_logprob += token.logprob as f64;
        let is_eos = token.finish_reason == Some(FinishReason::Eos);
        let mut lps = Vec::new();
        if r.logprobs.is_some() && !is_eos {
            let text = token_text(tok, token.id);
            let mut top: Vec<(String, f32)> = token
                .alternatives
                .iter()
                .map(|c| (token_text(tok, c.id), c.logprob))
                .collect();
            if !token.alternatives.iter().any(|c| c.id == token.id) {
                top.push((text.clone(), token.logprob));
            }
            lps.push(TokenLogprob {
                token: text,
                logprob: Some(token.logprob),
                top,
                text_offset: offset,
            });
            offset += token_len(tok, token.id);
        }
        if let Some(reason) = token.finish_reason {
            choice.reason = match reason {
                FinishReason::Length => "length",
                FinishReason::Eos | FinishReason::Stop => "stop",
            };
        }
        if !token.text.is_empty() || !lps.is_empty() {
            choice.text.push_str(&token.text);
            choice.logprobs.extend(lps.iter().cloned());
            if !emit(token.text, lps) {
                return Ok(None);
            }
        }
    }
    Ok(Some(choice))
}

/// A token's text for `logprobs`: its bytes as UTF-8, or `bytes:\xNN…` (OpenAI's form) when
/// they are not whole characters.
fn token_text(tok: &Tokenizer, id: u32) -> String {
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
fn token_len(tok: &Tokenizer, id: u32) -> usize {
    tok.token_bytes(id).map_or(0, <[u8]>::len)
}

/// The prompt as echoed: its text and, with `logprobs`, every token's log-prob under the
/// model (the first one's is `None`) and the `top` most likely tokens at each position.
fn echoed(
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
                let mut top: Vec<(String, f32)> = top_ids(row, top_n)
                    .into_iter()
                    .map(|t| (token_text(tok, t as u32), lp[t]))
                    .collect();
                if !top_ids(row, top_n).contains(&(id as usize)) {
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
