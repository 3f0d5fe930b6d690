//! An OpenAI-compatible completions server for gpt2-rs models (the `gpt2 serve` command).
//!
//! Routes ([`router`]):
//! - `GET /health`: `{"status":"ok"}` once the model is loaded, 503 before;
//! - `GET /v1/models`: the one served model;
//! - `POST /v1/completions`: OpenAI's legacy Completions API ([`CompletionRequest`]): one or
//!   several prompts (text or token ids), `n`/`best_of`, sampling, `stop`, `logprobs` in the
//!   legacy shape (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`), `echo` (with
//!   `max_tokens: 0` it scores the prompt, as lm-evaluation-harness asks), `seed`,
//!   `logit_bias`, presence/frequency penalties, and SSE streaming (`stream`,
//!   `stream_options.include_usage`);
//! - `POST /tokenize`, `POST /detokenize`;
//! - `GET /metrics`: Prometheus text ([`Metrics`]).
//!
//! Every error is OpenAI's shape ([`ApiError`]) and names the field at fault.
//!
//! The [`Engine`] runs on one thread that owns the model and batches continuously: every
//! choice of every request is a sequence with a cache of its own, up to
//! [`EngineConfig::parallel`] of them decode together in one step (each weight read once per
//! step for all), new ones join after their prefill (chunked, so running streams do not
//! stall) and finished ones leave, between steps. Past the slots requests wait in a bounded
//! queue; past that, 503 with `Retry-After`. A client that goes away frees its slots before
//! the next step. Greedy completions are `gpt2 generate --greedy`'s, token for token, alone
//! or among others; a seeded request gives the same text whenever it runs.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use gpt2_server::{serve, AppState, Engine, EngineConfig, ServerConfig};
//! let model = gpt2_model::Gpt2::load("models/124M", &Default::default())?;
//! let state = AppState::new(ServerConfig { model_name: "124M".into(), ..Default::default() });
//! let engine = Engine::start(model, gpt2_tokenizer::Tokenizer::gpt2(), EngineConfig::default(), state.metrics())?;
//! state.set_engine(engine);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, state, std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod engine;
mod error;
mod metrics;
mod request;
mod routes;
mod scheduler;

pub use engine::{Engine, EngineConfig, Event, Job, TokenLogprob};
pub use error::ApiError;
pub use metrics::{Histogram, Metrics};
pub use request::{CompletionRequest, Prompt, MAX_CHOICES};
pub use routes::{router, AppState, ServerConfig};

use std::future::Future;
use std::sync::Arc;

/// Serves [`router`]`(state)` on `listener` until `shutdown` completes; then stops accepting
/// connections and lets the open ones finish.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
