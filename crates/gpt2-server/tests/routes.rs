//! The routes on a small random GPT-2 (the real architecture and vocabulary), in process:
//! answers against the library's own generation and scoring, streaming against non-streaming,
//! every error's status and shape, the API key, cancellation.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use gpt2_model::generate::{score, GenerateOptions, SamplingParams, ScoreOptions, Session};
use gpt2_model::{Config, Gpt2, LoadOptions};
use gpt2_server::{router, AppState, Engine, EngineConfig, ServerConfig};
use gpt2_tokenizer::Tokenizer;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const CONFIG: Config = Config {
    n_vocab: 50257,
    n_ctx: 64,
    n_embd: 32,
    n_head: 2,
    n_layer: 2,
    layer_norm_epsilon: 1e-5,
};

fn model() -> Gpt2 {
    Gpt2::random(&CONFIG, 7, &LoadOptions::default()).expect("random model")
}

fn app_with(config: ServerConfig) -> (Router, Arc<AppState>) {
    let state = AppState::new(config);
    // Few slots and short prefill chunks: requests queue, prompts prefill in pieces.
    let config = EngineConfig {
        parallel: 4,
        max_queue: 16,
        step_tokens: 5,
    };
    let engine =
        Engine::start(model(), Tokenizer::gpt2(), config, state.metrics()).expect("engine");
    state.set_engine(engine);
    (router(state.clone()), state)
}

fn app() -> Router {
    app_with(ServerConfig {
        model_name: "tiny".into(),
        ..Default::default()
    })
    .0
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let (status, text) = send(app, req).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn greedy_text(prompt: &str, n: usize) -> String {
    let model = model();
    let tok = Tokenizer::gpt2();
    let ids = tok.encode(prompt).expect("encode");
    let mut session = Session::new(&model);
    let options = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_new_tokens: n,
        ..Default::default()
    };
    session
        .generate(&tok, &ids, options)
        .expect("generate")
        .map(|t| t.expect("token").text)
        .collect()
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn health_models_and_tokenize() {
    let state = AppState::new(ServerConfig::default());
    let early = router(state.clone());
    let (status, _) = send(
        &early,
        Request::get("/health").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = post(&early, "/v1/completions", json!({"prompt": "a"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let app = app();
    let (status, body) = send(
        &app,
        Request::get("/health").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"ok"}"#)
    );
    let (_, body) = send(
        &app,
        Request::get("/v1/models").body(Body::empty()).expect("req"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["owned_by"], "gpt2-rs");
    let (status, v) = post(&app, "/tokenize", json!({"content": "Hello world"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["tokens"], json!([15496, 995]));
    let (_, v) = post(&app, "/detokenize", json!({"tokens": [15496, 995]})).await;
    assert_eq!(v["content"], "Hello world");
    let (status, v) = post(&app, "/detokenize", json!({"tokens": [50257]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn greedy_equals_the_library_and_streaming_equals_one_answer() {
    let app = app();
    let want = greedy_text("The quick brown fox", 12);
    let req = json!({"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0});
    let (status, v) = post(&app, "/v1/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")));
    assert_eq!(v["choices"][0]["text"], want.as_str());
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(
        v["usage"]["total_tokens"],
        4 + v["usage"]["completion_tokens"].as_u64().expect("n")
    );

    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = Request::post("/v1/completions")
        .body(Body::from(streamed.to_string()))
        .expect("req");
    let (status, body) = send(&app, r).await;
    assert_eq!(status, StatusCode::OK);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|c| c["text"].as_str()))
        .collect();
    assert_eq!(text, want);
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&v["choices"][0]["finish_reason"]]);
    assert_eq!(chunks.last().expect("usage chunk")["usage"], v["usage"]);
}

#[tokio::test]
async fn several_prompts_n_and_seeds() {
    let app = app();
    let req = json!({"prompt": [[7454, 2402], [464, 3290]], "n": 2, "max_tokens": 6, "seed": 42, "temperature": 1.0});
    let (status, a) = post(&app, "/v1/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let (_, b) = post(&app, "/v1/completions", req).await;
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .expect("choices")
            .iter()
            .map(|c| c["text"].as_str().expect("text").to_string())
            .collect()
    };
    assert_eq!(texts(&a).len(), 4);
    assert_eq!(texts(&a), texts(&b), "the same seed gives the same texts");
    for (i, c) in a["choices"].as_array().expect("choices").iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    // best_of: the best of 3 is one choice.
    let (status, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "a", "best_of": 3, "max_tokens": 4, "seed": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn echo_logprobs_equal_the_library_score() {
    let app = app();
    let prompt = "The capital of France is Paris";
    let (status, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": prompt, "echo": true, "max_tokens": 0, "logprobs": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["text"], prompt);
    let lps = &choice["logprobs"];
    let token_logprobs = lps["token_logprobs"].as_array().expect("array");
    assert!(token_logprobs[0].is_null());
    let model = model();
    let ids = Tokenizer::gpt2().encode(prompt).expect("encode");
    let want = score(&model, &ids, &ScoreOptions::default()).expect("score");
    assert_eq!(token_logprobs.len(), ids.len());
    for (got, w) in token_logprobs.iter().zip(&want.tokens).skip(1) {
        let (got, w) = (got.as_f64().expect("number"), w.logprob.expect("scored"));
        assert!((got - w).abs() < 1e-4, "{got} vs {w}");
    }
    assert_eq!(lps["tokens"].as_array().map(Vec::len), Some(ids.len()));
    assert_eq!(lps["text_offset"][1], 3); // "The" | " capital"
    assert!(lps["top_logprobs"][0].is_null());
    assert!(lps["top_logprobs"][1]
        .as_object()
        .is_some_and(|m| (2..=3).contains(&m.len())));
}

#[tokio::test]
async fn stop_strings_and_logit_bias() {
    let app = app();
    let base = json!({"prompt": "Hello", "max_tokens": 8, "temperature": 0});
    let (_, plain) = post(&app, "/v1/completions", base.clone()).await;
    let text = plain["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_string();
    let tok = Tokenizer::gpt2();
    let first = tok.encode(&greedy_text("Hello", 1)).expect("encode")[0];
    let mut banned = base.clone();
    banned["logit_bias"] = json!({ first.to_string(): -100 });
    let (_, v) = post(&app, "/v1/completions", banned).await;
    assert_ne!(v["choices"][0]["text"].as_str(), Some(text.as_str()));
    // A stop string cut from the middle of the greedy text.
    let cut: String = text.chars().skip(2).take(2).collect();
    if !cut.is_empty() {
        let mut stopped = base.clone();
        stopped["stop"] = json!([cut.clone()]);
        let (_, v) = post(&app, "/v1/completions", stopped).await;
        let got = v["choices"][0]["text"].as_str().expect("text");
        assert_eq!(got, &text[..text.find(&cut).expect("in text")]);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let (app, _) = app_with(ServerConfig {
        model_name: "tiny".into(),
        max_body_bytes: 4096,
        ..Default::default()
    });
    let check = |status: StatusCode, v: &Value, want: StatusCode, needle: &str| {
        assert_eq!(status, want, "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        assert!(v["error"]["type"].is_string());
    };
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "a", "model": "gpt-4"}),
    )
    .await;
    check(s, &v, StatusCode::NOT_FOUND, "gpt-4");
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "a", "max_tokens": 100}),
    )
    .await;
    check(
        s,
        &v,
        StatusCode::BAD_REQUEST,
        "maximum context length is 64",
    );
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let (s, v) = post(&app, "/v1/completions", json!({"prompt": [1, 99999]})).await;
    check(s, &v, StatusCode::BAD_REQUEST, "99999");
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "a", "temperature": -1}),
    )
    .await;
    check(s, &v, StatusCode::BAD_REQUEST, "temperature");
    assert_eq!(v["error"]["param"], "temperature");
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "a", "suffix": "b"}),
    )
    .await;
    check(s, &v, StatusCode::BAD_REQUEST, "insert");
    let (s, body) = send(
        &app,
        Request::post("/v1/completions")
            .body(Body::from("{not json"))
            .expect("req"),
    )
    .await;
    check(
        s,
        &serde_json::from_str(&body).expect("json"),
        StatusCode::BAD_REQUEST,
        "not valid JSON",
    );
    let big = json!({"prompt": "a".repeat(5000)});
    let (s, v) = post(&app, "/v1/completions", big).await;
    check(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "4096");
    let (s, body) = send(
        &app,
        Request::get("/v1/completions")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    check(
        s,
        &serde_json::from_str(&body).expect("json"),
        StatusCode::METHOD_NOT_ALLOWED,
        "GET",
    );
    let (s, body) = send(
        &app,
        Request::get("/v2/nothing")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    check(
        s,
        &serde_json::from_str(&body).expect("json"),
        StatusCode::NOT_FOUND,
        "/v2/nothing",
    );
}

#[tokio::test]
async fn the_api_key_guards_everything_but_health() {
    let (app, _) = app_with(ServerConfig {
        model_name: "tiny".into(),
        api_key: Some("sekrit".into()),
        ..Default::default()
    });
    let (s, _) = send(
        &app,
        Request::get("/health").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("x-api-key", "nope")],
    ] {
        let mut r = Request::get("/v1/models");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        let (s, body) = send(&app, r.body(Body::empty()).expect("req")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("authentication_error"));
    }
    for (k, v) in [("authorization", "Bearer sekrit"), ("x-api-key", "sekrit")] {
        let r = Request::get("/v1/models")
            .header(k, v)
            .body(Body::empty())
            .expect("req");
        assert_eq!(send(&app, r).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_client_that_goes_away_frees_the_engine() {
    let (app, state) = app_with(ServerConfig::default());
    let req = json!({"prompt": "a", "max_tokens": 60, "stream": true, "ignore_eos": true});
    let res = app
        .clone()
        .oneshot(
            Request::post("/v1/completions")
                .body(Body::from(req.to_string()))
                .expect("req"),
        )
        .await
        .expect("response");
    let mut body = res.into_body();
    let first = body.frame().await.expect("a first chunk").expect("frame");
    assert!(first.data_ref().is_some());
    drop(body); // the client disconnects
    let metrics = state.metrics();
    for _ in 0..200 {
        if metrics
            .render()
            .contains("gpt2_requests_total{finish_reason=\"cancelled\"} 1")
        {
            // The engine is free: the next request runs.
            let (s, _) = post(
                &app,
                "/v1/completions",
                json!({"prompt": "b", "max_tokens": 2}),
            )
            .await;
            assert_eq!(s, StatusCode::OK);
            assert!(metrics.render().contains("gpt2_requests_running 0"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the cancelled request was not counted: {}",
        metrics.render()
    );
}

/// Continuous batching changes no numbers: concurrent greedy requests of different lengths
/// (more than the 4 slots, prompts longer than the 5-token prefill chunk) each get what they
/// get alone, and a seeded sampled request gives the same text alone and under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_do_not_depend_on_what_else_runs() {
    let app = app();
    let prompts = [
        "The quick brown fox jumps over the lazy dog and",
        "a",
        "Once upon a time there was",
        "Hello",
        "In 1848, the revolutions across Europe began with",
        "1 2 3 4 5 6 7 8",
    ];
    let sampled = json!({"prompt": "The meaning of life is", "max_tokens": 10, "seed": 7, "temperature": 0.9, "top_k": 50, "n": 2});
    let (_, alone) = post(&app, "/v1/completions", sampled.clone()).await;
    let mut tasks = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let (app, p) = (app.clone(), p.to_string());
        let n = 3 + 2 * i;
        tasks.push(tokio::spawn(async move {
            let body =
                json!({"prompt": p, "max_tokens": n, "temperature": 0, "stream": i % 2 == 0});
            let req = Request::post("/v1/completions")
                .body(Body::from(body.to_string()))
                .expect("req");
            let (status, text) = send(&app, req).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            let got: String = if i % 2 == 0 {
                let data = sse_data(&text);
                data[..data.len() - 1]
                    .iter()
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
                    .collect()
            } else {
                let v: Value = serde_json::from_str(&text).expect("json");
                v["choices"][0]["text"].as_str().expect("text").to_string()
            };
            (p, n, got)
        }));
    }
    let under_load = {
        let app = app.clone();
        tokio::spawn(async move { post(&app, "/v1/completions", sampled).await.1 })
    };
    for t in tasks {
        let (p, n, got) = t.await.expect("task");
        assert_eq!(got, greedy_text(&p, n), "{p:?}");
    }
    let under_load = under_load.await.expect("task");
    assert_eq!(alone["choices"], under_load["choices"]);
}

/// Past the slots and the queue, a request is refused at once with 503 and `Retry-After`;
/// the queued one runs when the slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let state = AppState::new(ServerConfig::default());
    let config = EngineConfig {
        parallel: 1,
        max_queue: 1,
        step_tokens: 64,
    };
    let engine =
        Engine::start(model(), Tokenizer::gpt2(), config, state.metrics()).expect("engine");
    state.set_engine(engine);
    let app = router(state.clone());
    let long = json!({"prompt": "a", "max_tokens": 60, "ignore_eos": true, "stream": true});
    let running = app
        .clone()
        .oneshot(
            Request::post("/v1/completions")
                .body(Body::from(long.to_string()))
                .expect("req"),
        )
        .await
        .expect("response");
    let mut body = running.into_body();
    body.frame().await.expect("a first chunk").expect("frame"); // the slot is taken
    let queued = {
        let app = app.clone();
        tokio::spawn(async move {
            post(
                &app,
                "/v1/completions",
                json!({"prompt": "b", "max_tokens": 2}),
            )
            .await
        })
    };
    let metrics = state.metrics();
    for _ in 0..200 {
        if metrics.render().contains("gpt2_requests_waiting 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let res = app
        .clone()
        .oneshot(
            Request::post("/v1/completions")
                .body(Body::from(json!({"prompt": "c"}).to_string()))
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("queue is full")),
        "{v}"
    );
    while body.frame().await.is_some() {} // the running request finishes
    let (status, v) = queued.await.expect("task");
    assert_eq!(status, StatusCode::OK, "{v}");
}
