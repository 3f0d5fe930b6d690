//! `gpt2 serve`: an OpenAI-compatible completions server (see the `gpt2-server` crate).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use gpt2_server::{AppState, Engine, EngineConfig, ServerConfig};

use super::load::{self, ModelArgs};
use super::UsageError;

const EXAMPLES: &str = "\
Examples:
  gpt2 serve -m 124M                                  http://127.0.0.1:8080
  gpt2 serve -m models/124M-q8 --port 0                a free port (printed on the first line)
  gpt2 serve -m 355M --api-key $KEY --host 0.0.0.0    every route but /health needs the key

  curl http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' \\
       -d '{\"prompt\": \"Hello\", \"max_tokens\": 16, \"temperature\": 0}'

Routes: GET /health, GET /v1/models, POST /v1/completions (OpenAI's legacy Completions API,
streaming with \"stream\": true), POST /tokenize, POST /detokenize, GET /metrics (Prometheus).
Continuous batching: up to --parallel sequences (one per choice) decode together, new ones
join between steps; up to --max-queue requests wait for a slot, more get 503.
SIGINT/SIGTERM: stop accepting, let open requests finish (at most 30 s), exit 0.";

/// Arguments of `gpt2 serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The model id clients name in requests and /v1/models lists [default: the --model
    /// argument as given].
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Sequences decoded together (slots; a request takes one per choice).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub parallel: usize,

    /// Tokens one pass of the model takes: a token of every decoding sequence, then chunks of
    /// new prompts (so a long prompt does not stall running streams for long; smaller values
    /// pause them less, larger ones take bursts of prompts in fewer, cheaper passes).
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub step_tokens: u64,

    /// Requests that may wait for a slot; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_queue: usize,

    /// Require this key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`) on every route but
    /// /health.
    #[arg(long, value_name = "KEY", env = "GPT2_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// The largest request body accepted, in bytes (larger: 413).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_body_bytes: usize,
}

/// Completes on SIGINT or SIGTERM; then the process exits at most 30 s later even if a
/// request is still running.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    eprintln!("shutting down: no new connections; waiting for open requests (at most 30 s)");
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(0);
    });
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.parallel == 0 || args.parallel > 1024 {
        return Err(UsageError(format!(
            "--parallel must be from 1 to 1024, got {}",
            args.parallel
        ))
        .into());
    }
    if args.max_queue == 0 {
        return Err(UsageError("--max-queue must be at least 1".into()).into());
    }
    if args.max_body_bytes == 0 {
        return Err(UsageError("--max-body-bytes must be at least 1".into()).into());
    }
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            (args.host.as_str(), args.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|()| {
            UsageError(format!(
                "--host {:?} is not an address or a known host name",
                args.host
            ))
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    let state = AppState::new(ServerConfig {
        model_name: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| args.model.model.clone()),
        api_key: args.api_key.clone(),
        max_body_bytes: args.max_body_bytes,
    });
    let server = runtime.spawn(gpt2_server::serve(
        listener,
        state.clone(),
        shutdown_signal(),
    ));
    println!("listening on http://{local}");
    std::io::stdout().flush().context("writing to stdout")?;
    // /health answers 503 while the model loads.
    let loaded = load::load(&args.model)?;
    eprintln!(
        "model {} loaded in {:.2} s; serving it as {:?}",
        loaded.dir.display(),
        loaded.load_time.as_secs_f64(),
        state.config().model_name
    );
    let config = EngineConfig {
        parallel: args.parallel,
        max_queue: args.max_queue,
        step_tokens: usize::try_from(args.step_tokens).unwrap_or(usize::MAX),
    };
    let engine = Engine::start(loaded.model, loaded.tokenizer, config, state.metrics())
        .context("starting the engine thread")?;
    state.set_engine(engine);
    runtime
        .block_on(server)
        .context("the server task failed")?
        .context("the server failed")?;
    Ok(())
}
