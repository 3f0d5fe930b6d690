//! `GET /metrics`: Prometheus text exposition of the server's gauges, counters and histograms.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A histogram with fixed bucket bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    state: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            state: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        if let Ok(mut s) = self.state.lock() {
            for (count, &b) in s.0.iter_mut().zip(self.bounds) {
                if v <= b {
                    *count += 1;
                }
            }
            s.1 += v;
            s.2 += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let Ok(s) = self.state.lock() else { return };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (count, b) in s.0.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.2);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", s.1, s.2);
    }
}

const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const DURATION: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The server's metrics, shared by the routes and the engine.
///
/// ```
/// let m = gpt2_server::Metrics::default();
/// m.finished("stop");
/// assert!(m.render().contains("gpt2_requests_total{finish_reason=\"stop\"} 1"));
/// ```
#[derive(Debug)]
pub struct Metrics {
    /// Requests being generated now.
    pub running: AtomicUsize,
    /// Requests queued.
    pub waiting: AtomicUsize,
    /// Prompt tokens processed.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generation_tokens: AtomicU64,
    finished: Mutex<BTreeMap<&'static str, u64>>,
    /// Queue entry → first generated token.
    pub time_to_first_token: Histogram,
    /// Between consecutive generated tokens of a request.
    pub inter_token_latency: Histogram,
    /// Queue entry → last event.
    pub request_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            finished: Mutex::new(BTreeMap::new()),
            time_to_first_token: Histogram::new(LATENCY),
            inter_token_latency: Histogram::new(LATENCY),
            request_duration: Histogram::new(DURATION),
        }
    }
}

impl Metrics {
    /// Counts a finished request (`stop`, `length`, `cancelled`, `error`).
    pub fn finished(&self, reason: &'static str) {
        if let Ok(mut m) = self.finished.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "gpt2_requests_running",
            "Requests being generated.",
            self.running.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gpt2_requests_waiting",
            "Requests in the queue.",
            self.waiting.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "gpt2_prompt_tokens_total",
            "Prompt tokens processed.",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "gpt2_generation_tokens_total",
            "Tokens generated.",
            self.generation_tokens.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP gpt2_requests_total Finished requests by finish reason.\n# TYPE gpt2_requests_total counter"
        );
        if let Ok(m) = self.finished.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(out, "gpt2_requests_total{{finish_reason=\"{reason}\"}} {n}");
            }
        }
        self.time_to_first_token.render(
            &mut out,
            "gpt2_time_to_first_token_seconds",
            "Time from queue entry to the first token.",
        );
        self.inter_token_latency.render(
            &mut out,
            "gpt2_inter_token_latency_seconds",
            "Time between generated tokens.",
        );
        self.request_duration.render(
            &mut out,
            "gpt2_request_duration_seconds",
            "Time from queue entry to the end of the request.",
        );
        out
    }
}
