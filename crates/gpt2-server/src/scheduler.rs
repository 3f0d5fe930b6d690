//! The engine thread's loop: continuous batching.
//!
//! Every choice of every request is a sequence with a KV cache of its own (a slot). A loop
//! iteration
//! 1. drops the sequences whose client went away (their slots are free at once);
//! 2. takes new requests from the queue while slots are free, and gives waiting sequences a
//!    slot;
//! 3. picks what this pass feeds: the last token of every decoding sequence, then chunks of
//!    new prompts, at most `step_tokens` tokens in all (a long prompt takes several passes,
//!    so running streams do not stall);
//! 4. runs them in one pass ([`Gpt2::extend_ragged`]: each weight is read once per pass for
//!    all of them; attention runs per sequence);
//! 5. hands each sequence its logits ([`Sequence::accept`]) and sends the new text.
//!
//! Sequences join after their prefill and leave when done, between steps. Each has its own
//! sampler (seeded by the request, stream = its choice number) and the products are
//! row-wise, so a request's tokens do not depend on what else is running.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use gpt2_model::generate::{FinishReason, GenerateError, GeneratedToken, Sequence};
use gpt2_model::{ContextOverflow, Gpt2, KvCache};
use gpt2_tokenizer::Tokenizer;

use crate::engine::{
    echoed, internal, options, token_len, token_text, EngineConfig, Event, Queued, TokenLogprob,
};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A request being served.
struct Request {
    queued: Queued,
    seed: u64,
    /// Per prompt: the echoed text and its log-probs.
    echo: Vec<(String, Vec<TokenLogprob>)>,
    /// With `best_of > n`: the finished choices of each prompt, to rank.
    buffered: Vec<Vec<Choice>>,
    /// Sequences not finished yet.
    remaining: usize,
    prompt_tokens: usize,
    completion_tokens: usize,
    last_token_at: Option<Instant>,
    last_reason: &'static str,
    /// Ended (done, cancelled or failed): its sequences are dropped.
    ended: bool,
}

type Shared = Rc<RefCell<Request>>;

impl Request {
    fn send(&self, e: Event) -> bool {
        self.queued.events.send(e).is_ok()
    }

    fn buffered(&self) -> bool {
        let r = &self.queued.job.request;
        r.best_of > r.n
    }
}

/// One generated choice (kept whole when it must be ranked).
#[derive(Default)]
struct Choice {
    text: String,
    logprobs: Vec<TokenLogprob>,
    reason: &'static str,
    sum_logprob: f64,
    tokens: usize,
}

/// A sequence in a slot.
struct Active<'t> {
    req: Shared,
    prompt: usize,
    j: usize,
    seq: Sequence<'t>,
    cache: KvCache,
    /// Prompt tokens prefilled so far.
    fed: usize,
    /// The last generated token, fed at the next decode step.
    next: Option<u32>,
    choice: Choice,
    /// Byte offset of the next token in the choice's text (for `text_offset`).
    offset: usize,
}

pub(crate) fn run(
    model: &Gpt2,
    tok: &Tokenizer,
    jobs: &Receiver<Queued>,
    metrics: &Metrics,
    config: EngineConfig,
) {
    let parallel = config.parallel.max(1);
    let mut waiting: VecDeque<(Shared, usize, usize)> = VecDeque::new();
    let mut active: Vec<Active<'_>> = Vec::new();
    let mut spare: Vec<KvCache> = Vec::new();
    loop {
        // 1. Clients that went away.
        for a in &active {
            cancel_if_gone(&a.req, metrics);
        }
        for (r, ..) in &waiting {
            cancel_if_gone(r, metrics);
        }
        active.retain(|a| !a.req.borrow().ended);
        waiting.retain(|(r, ..)| !r.borrow().ended);

        // 2. New requests while slots are free; waiting sequences into free slots.
        while active.len() + waiting.len() < parallel {
            let queued = if active.is_empty() && waiting.is_empty() {
                match jobs.recv() {
                    Ok(q) => q,
                    Err(_) => return, // the server is gone
                }
            } else {
                match jobs.try_recv() {
                    Ok(q) => q,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            };
            metrics.waiting.fetch_sub(1, Ordering::Relaxed);
            if let Some(req) = admit(model, tok, queued, metrics) {
                let (prompts, best_of) = {
                    let r = req.borrow();
                    (r.queued.job.prompts.len(), r.queued.job.request.best_of)
                };
                for p in 0..prompts {
                    for j in 0..best_of {
                        waiting.push_back((req.clone(), p, j));
                    }
                }
            }
        }
        while active.len() < parallel {
            let Some((req, p, j)) = waiting.pop_front() else {
                break;
            };
            match start(model, tok, &req, p, j, spare.pop()) {
                Ok(a) => active.push(a),
                Err(e) => fail(&req, e, metrics),
            }
        }

        // 3. What this pass feeds: every decoding sequence's token, then prompt chunks.
        let take = prompt_chunks(&active, config.step_tokens);

        // 4. One pass for all of them.
        let mut rows: Vec<usize> = Vec::new();
        let mut chunks: Vec<&[u32]> = Vec::new();
        let mut caches: Vec<&mut KvCache> = Vec::new();
        for (i, a) in active.iter_mut().enumerate() {
            let Active {
                seq,
                cache,
                next,
                fed,
                ..
            } = a;
            let chunk = match next {
                Some(token) => std::slice::from_ref(&*token),
                None if take[i] > 0 => &seq.prompt()[*fed..*fed + take[i]],
                None => continue,
            };
            rows.push(i);
            chunks.push(chunk);
            caches.push(cache);
        }
        if !rows.is_empty() {
            let logits = model
                .extend_ragged(&mut caches, &chunks)
                .and_then(|l| Ok(l.to_vec2::<f32>()?));
            drop(caches);
            match logits {
                // 5. Each sequence's next token (a prompt's, once it is all in).
                Ok(logits) => {
                    // The sequences whose prompt is all in draw their tokens together (in
                    // parallel), then each token is delivered in order.
                    let mut ready: Vec<(usize, &[f32])> = Vec::new();
                    for (&i, l) in rows.iter().zip(&logits) {
                        let a = &mut active[i];
                        a.fed += take[i];
                        if a.fed == a.seq.prompt().len() {
                            ready.push((i, l));
                        }
                    }
                    // `rows`, and so `ready`, ascend: one walk over `active` pairs them.
                    let mut batch: Vec<(&mut Sequence<'_>, &[f32])> = Vec::new();
                    let mut next = ready.iter().peekable();
                    for (i, a) in active.iter_mut().enumerate() {
                        if let Some(&(_, l)) = next.next_if(|(r, _)| *r == i) {
                            batch.push((&mut a.seq, l));
                        }
                    }
                    let tokens = Sequence::accept_all(&mut batch);
                    drop(batch);
                    for (&(i, _), token) in ready.iter().zip(tokens) {
                        deliver(&mut active[i], token, tok, metrics);
                    }
                }
                Err(e) => {
                    for &i in &rows {
                        fail(&active[i].req, internal(&e), metrics);
                    }
                }
            }
        }

        // Finished sequences leave; their caches are kept for the next ones.
        let mut i = 0;
        while i < active.len() {
            let done = active[i].seq.finish_reason().is_some() || active[i].req.borrow().ended;
            if done {
                let a = active.swap_remove(i);
                finish_sequence(a, &mut spare, metrics);
            } else {
                i += 1;
            }
        }
    }
}

/// How many prompt tokens each sequence in `active` feeds this pass. A pass takes at most
/// `step_tokens` tokens: one per decoding sequence, then prompt chunks in arrival order in the
/// room left (at least a quarter of it, so prompts never starve), so a long prompt does not
/// stall the streams for long. When nothing is decoding, a prompt longer than that goes whole,
/// in one pass of its own (as `gpt2 generate` prefills it).
fn prompt_chunks(active: &[Active<'_>], step_tokens: usize) -> Vec<usize> {
    let step_tokens = step_tokens.max(1);
    let decoding = active.iter().filter(|a| a.next.is_some()).count();
    let mut room = match decoding {
        0 => step_tokens,
        d => step_tokens.saturating_sub(d).max(step_tokens.div_ceil(4)),
    };
    let mut take = vec![0; active.len()];
    for (i, a) in active.iter().enumerate() {
        let rest = a.seq.prompt().len() - a.fed;
        if a.next.is_some() || rest == 0 || a.seq.finish_reason().is_some() {
            continue;
        }
        if decoding == 0 && room == step_tokens && rest > room {
            take[i] = rest;
            break;
        }
        if room == 0 {
            break;
        }
        take[i] = rest.min(room);
        room -= take[i];
    }
    take
}

/// Ends an admitted request (once): counted by `reason`, its duration observed.
fn end(r: &mut Request, reason: &'static str, metrics: &Metrics) {
    if !r.ended {
        r.ended = true;
        metrics.running.fetch_sub(1, Ordering::Relaxed);
        metrics.finished(reason);
        metrics
            .request_duration
            .observe(r.queued.queued_at.elapsed().as_secs_f64());
    }
}

fn cancel_if_gone(req: &Shared, metrics: &Metrics) {
    let mut r = req.borrow_mut();
    if r.queued.events.is_closed() {
        end(&mut r, "cancelled", metrics);
    }
}

fn fail(req: &Shared, e: ApiError, metrics: &Metrics) {
    let mut r = req.borrow_mut();
    if !r.ended {
        r.send(Event::Error(e));
        end(&mut r, "error", metrics);
    }
}

/// A request taken from the queue: its echoes computed, its sequences to be started. `None`
/// when it is already complete (`max_tokens: 0`) or gone.
fn admit(model: &Gpt2, tok: &Tokenizer, queued: Queued, metrics: &Metrics) -> Option<Shared> {
    if queued.events.is_closed() {
        metrics.finished("cancelled");
        return None;
    }
    let r = &queued.job.request;
    let mut echo = Vec::new();
    for prompt in &queued.job.prompts {
        metrics
            .prompt_tokens
            .fetch_add(prompt.len() as u64, Ordering::Relaxed);
        if r.echo {
            match echoed(model, tok, prompt, r.logprobs) {
                Ok(e) => echo.push(e),
                Err(e) => {
                    let _ = queued.events.send(Event::Error(e));
                    metrics.finished("error");
                    return None;
                }
            }
        } else {
            echo.push(Default::default());
        }
    }
    let prompts = queued.job.prompts.len();
    let req = Request {
        seed: r.seed.unwrap_or_else(rand::random),
        buffered: (0..prompts).map(|_| Vec::new()).collect(),
        remaining: prompts * r.best_of,
        prompt_tokens: queued.job.prompts.iter().map(Vec::len).sum(),
        completion_tokens: 0,
        last_token_at: None,
        last_reason: "length",
        ended: false,
        echo,
        queued,
    };
    if req.queued.job.request.max_tokens == 0 {
        // Nothing to generate: the echo (or an empty text) is each choice's whole answer.
        let n = req.queued.job.request.n;
        for p in 0..prompts {
            for j in 0..n {
                let index = p * n + j;
                let (text, logprobs) = req.echo[p].clone();
                req.send(Event::Text {
                    index,
                    text,
                    logprobs,
                });
                req.send(Event::Finish {
                    index,
                    reason: "length",
                });
            }
        }
        req.send(Event::Usage {
            prompt_tokens: req.prompt_tokens,
            completion_tokens: 0,
        });
        metrics.finished("length");
        metrics
            .request_duration
            .observe(req.queued.queued_at.elapsed().as_secs_f64());
        return None;
    }
    metrics.running.fetch_add(1, Ordering::Relaxed);
    Some(Rc::new(RefCell::new(req)))
}

/// Sequence `j` of prompt `p` in a slot (reusing `cache` when given); its echo is sent.
fn start<'t>(
    model: &Gpt2,
    tok: &'t Tokenizer,
    req: &Shared,
    p: usize,
    j: usize,
    cache: Option<KvCache>,
) -> Result<Active<'t>, ApiError> {
    let r = req.borrow();
    let request = &r.queued.job.request;
    let options = options(request, r.seed, j as u64, tok.end_of_text());
    let seq = Sequence::new(tok, &r.queued.job.prompts[p], model.config().n_ctx, options)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut cache = cache.unwrap_or_else(|| model.new_cache(ContextOverflow::Error));
    cache.reset();
    // Room for the whole sequence now: no regrowth while decoding.
    let columns = seq.prompt().len() + request.max_tokens;
    let _ = cache.reserve(columns);
    let (echo_text, echo_lps) = &r.echo[p];
    if !r.buffered() && (!echo_text.is_empty() || !echo_lps.is_empty()) {
        r.send(Event::Text {
            index: p * request.n + j,
            text: echo_text.clone(),
            logprobs: echo_lps.clone(),
        });
    }
    let offset = echo_text.len();
    drop(r);
    Ok(Active {
        req: req.clone(),
        prompt: p,
        j,
        seq,
        cache,
        fed: 0,
        next: None,
        choice: Choice::default(),
        offset,
    })
}

/// Hands `a` its next token (drawn by [`Sequence::accept_all`]) and sends what comes of it.
fn deliver(
    a: &mut Active<'_>,
    token: Result<GeneratedToken, GenerateError>,
    tok: &Tokenizer,
    metrics: &Metrics,
) {
    let token = match token {
        Ok(t) => t,
        Err(e) => return fail(&a.req, internal(e), metrics),
    };
    a.next = token.finish_reason.is_none().then_some(token.id);
    let req = a.req.clone();
    let mut r = req.borrow_mut();
    let now = Instant::now();
    match r.last_token_at {
        None => metrics
            .time_to_first_token
            .observe((now - r.queued.queued_at).as_secs_f64()),
        Some(t) => metrics.inter_token_latency.observe((now - t).as_secs_f64()),
    }
    r.last_token_at = Some(now);
    r.completion_tokens += 1;
    metrics.generation_tokens.fetch_add(1, Ordering::Relaxed);
    let lps = logprob_entry(&r, a, &token, tok);
    a.choice.tokens += 1;
    a.choice.sum_logprob += token.logprob as f64;
    if let Some(reason) = token.finish_reason {
        a.choice.reason = match reason {
            FinishReason::Length => "length",
            FinishReason::Eos | FinishReason::Stop => "stop",
        };
    }
    if token.text.is_empty() && lps.is_empty() {
        return;
    }
    if r.buffered() {
        a.choice.text.push_str(&token.text);
        a.choice.logprobs.extend(lps);
    } else {
        let index = a.prompt * r.queued.job.request.n + a.j;
        r.send(Event::Text {
            index,
            text: token.text,
            logprobs: lps,
        });
    }
}

/// The `logprobs` entry of a generated token (none without `logprobs`). An `<|endoftext|>`
/// that ends the choice has one too, as OpenAI returns it (its text is not in the choice's).
fn logprob_entry(
    r: &Request,
    a: &mut Active<'_>,
    token: &GeneratedToken,
    tok: &Tokenizer,
) -> Vec<TokenLogprob> {
    if r.queued.job.request.logprobs.is_none() {
        return Vec::new();
    }
    let text = token_text(tok, token.id);
    let mut top: Vec<(String, f32)> = token
        .alternatives
        .iter()
        .map(|c| (token_text(tok, c.id), c.logprob))
        .collect();
    if !token.alternatives.iter().any(|c| c.id == token.id) {
        top.push((text.clone(), token.logprob));
    }
    let entry = TokenLogprob {
        token: text,
        logprob: Some(token.logprob),
        top,
        text_offset: a.offset,
    };
    a.offset += token_len(tok, token.id);
    vec![entry]
}

/// A sequence leaves its slot: its choice is sent (or ranked with its siblings), and the
/// request ends when it was the last one.
fn finish_sequence(a: Active<'_>, spare: &mut Vec<KvCache>, metrics: &Metrics) {
    spare.push(a.cache);
    let mut r = a.req.borrow_mut();
    if r.ended {
        return;
    }
    let request = r.queued.job.request.clone();
    r.last_reason = a.choice.reason;
    if r.buffered() {
        r.buffered[a.prompt].push(a.choice);
        if r.buffered[a.prompt].len() == request.best_of {
            // The n with the highest mean log-prob, best first.
            let mean = |c: &Choice| c.sum_logprob / c.tokens.max(1) as f64;
            let mut choices = std::mem::take(&mut r.buffered[a.prompt]);
            choices.sort_by(|x, y| mean(y).total_cmp(&mean(x)));
            for (j, c) in choices.into_iter().take(request.n).enumerate() {
                let index = a.prompt * request.n + j;
                let (mut text, mut logprobs) = r.echo[a.prompt].clone();
                text.push_str(&c.text);
                logprobs.extend(c.logprobs);
                r.send(Event::Text {
                    index,
                    text,
                    logprobs,
                });
                r.send(Event::Finish {
                    index,
                    reason: c.reason,
                });
            }
        }
    } else {
        let index = a.prompt * request.n + a.j;
        r.send(Event::Finish {
            index,
            reason: a.choice.reason,
        });
    }
    r.remaining -= 1;
    if r.remaining == 0 {
        r.send(Event::Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
        });
        let reason = r.last_reason;
        end(&mut r, reason, metrics);
    }
}
