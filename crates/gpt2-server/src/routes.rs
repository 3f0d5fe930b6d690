//! The HTTP routes.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc::unbounded_channel;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::engine::{Engine, Event, Job, TokenLogprob};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::request::{CompletionRequest, Prompt};

/// How the server is set up (the `gpt2 serve` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The model id clients name (`model`), and that `/v1/models` lists.
    pub model_name: String,
    /// When set, every route but `/health` needs `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
    pub api_key: Option<String>,
    /// The largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_name: "gpt2".into(),
            api_key: None,
            max_body_bytes: 1 << 20,
        }
    }
}

/// The shared state of the routes: the configuration, the engine once the model is loaded,
/// and the metrics.
pub struct AppState {
    config: ServerConfig,
    engine: OnceLock<Engine>,
    metrics: Arc<Metrics>,
    created: u64,
}

impl AppState {
    /// A state with no model yet: `/health` answers 503 until [`AppState::set_engine`].
    pub fn new(config: ServerConfig) -> Arc<Self> {
        Arc::new(AppState {
            config,
            engine: OnceLock::new(),
            metrics: Arc::new(Metrics::default()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// The metrics (for [`Engine::start`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Serves requests with `engine` from now on (a second call is ignored).
    pub fn set_engine(&self, engine: Engine) {
        let _ = self.engine.set(engine);
    }

    fn engine(&self) -> Result<&Engine, ApiError> {
        self.engine.get().ok_or_else(|| {
            ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model is still loading",
            )
        })
    }
}

/// The router with every route, the API key check and the body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &state.config.api_key else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    match bearer.or(x_api_key) {
        Some(given) if given == key => next.run(req).await,
        Some(_) => ApiError::status(StatusCode::UNAUTHORIZED, "invalid API key").into_response(),
        None => ApiError::status(
            StatusCode::UNAUTHORIZED,
            "an API key is required: send `Authorization: Bearer KEY` or `X-Api-Key: KEY`",
        )
        .into_response(),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::status(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.engine() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading model"})),
        )
            .into_response(),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{
        "id": state.config.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "gpt2-rs",
    }]}))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// The body, or 413 past the limit.
fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the server's limit of {limit} bytes"),
        ),
        status => ApiError::status(status, e.body_text()),
    })
}

fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// vLLM's `/tokenizer_info`, which lm-evaluation-harness asks for to use the server's
/// tokenizer (`/tokenize`, `/detokenize`) instead of a local one.
async fn tokenizer_info(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let engine = state.engine()?;
    let eos = engine.tokenizer().end_of_text().and_then(|id| {
        engine
            .tokenizer()
            .token_spelling(id)
            .ok()
            .map(str::to_string)
    });
    Ok(Json(json!({
        "tokenizer_class": "GPT2Tokenizer",
        "eos_token": eos,
        "bos_token": eos,
        "pad_token": null,
        "model_max_length": engine.n_ctx(),
        "vocab_size": engine.n_vocab(),
    })))
}

async fn tokenize(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let obj = json_object(&body(raw, state.config.max_body_bytes)?)?;
    let engine = state.engine()?;
    // `content` (llama.cpp's name) or `prompt` (vLLM's, which lm-evaluation-harness sends).
    let Some(Value::String(content)) = obj.get("content").or_else(|| obj.get("prompt")) else {
        return Err(ApiError::invalid(
            "content",
            "is required and must be a string (or give it as `prompt`)",
        ));
    };
    let tokens = engine
        .tokenizer()
        .encode(content)
        .map_err(|e| ApiError::invalid("content", format!("cannot be encoded: {e}")))?;
    Ok(Json(json!({ "tokens": tokens })))
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let obj = json_object(&body(raw, state.config.max_body_bytes)?)?;
    let engine = state.engine()?;
    let ids = match obj.get("tokens") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
            .collect::<Option<Vec<u32>>>(),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid("tokens", "is required and must be an array of token ids"))?;
    check_ids(&ids, engine.n_vocab())?;
    let content = engine
        .tokenizer()
        .decode(&ids)
        .map_err(|e| ApiError::invalid("tokens", format!("cannot be decoded: {e}")))?;
    // Under both names, as for /tokenize.
    Ok(Json(json!({ "content": content, "prompt": content })))
}

fn check_ids(ids: &[u32], n_vocab: usize) -> Result<(), ApiError> {
    match ids.iter().find(|&&id| id as usize >= n_vocab) {
        Some(id) => Err(ApiError::invalid(
            "prompt",
            format!("holds token id {id}, but the model's vocabulary has {n_vocab} tokens (ids 0 to {})", n_vocab - 1),
        )),
        None => Ok(()),
    }
}

/// Tokenizes and checks a request's prompts against the model.
fn job(engine: &Engine, request: CompletionRequest) -> Result<Job, ApiError> {
    let mut prompts = Vec::with_capacity(request.prompts.len());
    for p in &request.prompts {
        let mut ids = match p {
            Prompt::Text(t) => engine
                .tokenizer()
                .encode(t)
                .map_err(|e| ApiError::invalid("prompt", format!("cannot be encoded: {e}")))?,
            Prompt::Ids(ids) => ids.clone(),
        };
        check_ids(&ids, engine.n_vocab())?;
        if ids.is_empty() {
            // An empty prompt is a document start, as OpenAI treats it.
            ids.extend(engine.tokenizer().end_of_text());
        }
        let want = ids.len().saturating_add(request.max_tokens);
        if want > engine.n_ctx() {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "is too large: this model's maximum context length is {} tokens, however you requested {want} tokens ({} in the prompt, {} for the completion); at most {} fit",
                    engine.n_ctx(),
                    ids.len(),
                    request.max_tokens,
                    engine.n_ctx().saturating_sub(ids.len()),
                ),
            )
            .with_code("context_length_exceeded"));
        }
        prompts.push(ids);
    }
    Ok(Job { request, prompts })
}

fn completion_id() -> String {
    format!("cmpl-{:024x}", rand::random::<u128>() >> 32)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn logprobs_json(lps: &[TokenLogprob]) -> Value {
    json!({
        "tokens": lps.iter().map(|l| &l.token).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| match l.logprob {
            None => Value::Null,
            Some(_) => Value::Object(l.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect()),
        }).collect::<Vec<_>>(),
        "text_offset": lps.iter().map(|l| l.text_offset).collect::<Vec<_>>(),
    })
}

async fn completions(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(raw, state.config.max_body_bytes)?;
    let request = CompletionRequest::parse(&bytes)?;
    let name = &state.config.model_name;
    if let Some(model) = &request.model {
        if model != name {
            return Err(ApiError::status(
                StatusCode::NOT_FOUND,
                format!("the model `{model}` does not exist; this server serves `{name}`"),
            )
            .with_code("model_not_found"));
        }
    }
    let engine = state.engine()?;
    let job = job(engine, request)?;
    let (stream, include_usage, n_choices, logprobs) = (
        job.request.stream,
        job.request.include_usage,
        job.prompts.len() * job.request.n,
        job.request.logprobs.is_some(),
    );
    let (tx, rx) = unbounded_channel();
    engine.submit(job, tx)?;
    let (id, created, model) = (completion_id(), now(), name.clone());
    if stream {
        let head = json!({"id": id, "object": "text_completion", "created": created, "model": model, "system_fingerprint": fingerprint()});
        let events = UnboundedReceiverStream::new(rx).filter_map(move |e| {
            let mut chunk = head.clone();
            let body = match e {
                Event::Text { index, text, logprobs: lps } => {
                    chunk["choices"] = json!([{"text": text, "index": index,
                        "logprobs": if logprobs { logprobs_json(&lps) } else { Value::Null },
                        "finish_reason": null}]);
                    chunk
                }
                Event::Finish { index, reason } => {
                    chunk["choices"] = json!([{"text": "", "index": index, "logprobs": null, "finish_reason": reason}]);
                    chunk
                }
                Event::Usage { prompt_tokens, completion_tokens } if include_usage => {
                    chunk["choices"] = json!([]);
                    chunk["usage"] = usage(prompt_tokens, completion_tokens);
                    chunk
                }
                Event::Usage { .. } => return None,
                Event::Error(e) => e.body(),
            };
            Some(Ok::<_, Infallible>(SseEvent::default().data(body.to_string())))
        });
        let done = tokio_stream::once(Ok(SseEvent::default().data("[DONE]")));
        return Ok(Sse::new(events.chain(done)).into_response());
    }
    let mut rx = rx;
    let mut choices: Vec<(String, Vec<TokenLogprob>, Option<&'static str>)> =
        vec![(String::new(), Vec::new(), None); n_choices];
    let mut usage_json = None;
    while let Some(e) = rx.recv().await {
        match e {
            Event::Text {
                index,
                text,
                logprobs: lps,
            } => {
                if let Some(c) = choices.get_mut(index) {
                    c.0.push_str(&text);
                    c.1.extend(lps);
                }
            }
            Event::Finish { index, reason } => {
                if let Some(c) = choices.get_mut(index) {
                    c.2 = Some(reason);
                }
            }
            Event::Usage {
                prompt_tokens,
                completion_tokens,
            } => usage_json = Some(usage(prompt_tokens, completion_tokens)),
            Event::Error(e) => return Err(e),
        }
    }
    // The engine ends every request with its usage; a channel closed before it means the
    // engine failed mid-request.
    let Some(usage_json) = usage_json else {
        return Err(ApiError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the engine stopped before the completion was finished",
        ));
    };
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(index, (text, lps, reason))| {
            json!({"text": text, "index": index,
                "logprobs": if logprobs { logprobs_json(&lps) } else { Value::Null },
                "finish_reason": reason.unwrap_or("length")})
        })
        .collect();
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "system_fingerprint": fingerprint(), "choices": choices, "usage": usage_json,
    }))
    .into_response())
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens})
}

fn fingerprint() -> String {
    format!("gpt2-rs-{}", env!("CARGO_PKG_VERSION"))
}
