//! `gpt2 serve` as a process on the committed fixture model, over loopback HTTP: ready line,
//! greedy completions equal `gpt2 generate --greedy`, echo log-probs equal `gpt2 score`,
//! concurrent streaming clients all get their own right answer, SIGTERM exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use gpt2_tests::{gpt2, tiny};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(gpt2_tests::gpt2_bin())
            .args([
                "serve",
                "-m",
                tiny().to_str().expect("utf-8 path"),
                "--port",
                "0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gpt2 serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        let server = Server { child, addr };
        let start = Instant::now();
        while server.request("GET", "/health", None).0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(60), "never healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// One HTTP/1.1 request; the status and the (de-chunked) body.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect("a header");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        (status, body)
    }

    fn complete(&self, body: Value) -> Value {
        let (status, text) = self.request("POST", "/v1/completions", Some(&body));
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("json")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `gpt2 generate --greedy` on the fixture: the generated text.
fn cli_greedy(prompt: &str, n: usize) -> String {
    let out = gpt2(&[
        "generate",
        "-m",
        tiny().to_str().expect("path"),
        "--greedy",
        "-n",
        &n.to_string(),
        "--format",
        "json",
        prompt,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["text"].as_str().expect("text").to_string()
}

const LENGTHS: [usize; 4] = [5, 9, 3, 7];
const PROMPTS: [&str; 4] = [
    "Hello there",
    "The quick brown fox jumps",
    "a",
    "Once upon a time, in a land",
];

#[test]
fn greedy_completions_are_the_clis_alone_and_among_concurrent_streams() {
    let server = Server::start(&["--served-model-name", "tiny"]);
    let want: Vec<String> = PROMPTS
        .iter()
        .zip(LENGTHS)
        .map(|(p, n)| cli_greedy(p, n))
        .collect();
    for ((p, n), want) in PROMPTS.iter().zip(LENGTHS).zip(&want) {
        let v = server
            .complete(json!({"model": "tiny", "prompt": p, "max_tokens": n, "temperature": 0}));
        assert_eq!(v["choices"][0]["text"].as_str(), Some(want.as_str()), "{p}");
    }
    // 16 concurrent streaming clients, four of each prompt.
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (server, want) = (&server, &want);
                scope.spawn(move || {
                    let k = i % 4;
                    let body = json!({"prompt": PROMPTS[k], "max_tokens": LENGTHS[k], "temperature": 0, "stream": true});
                    let (status, text) = server.request("POST", "/v1/completions", Some(&body));
                    assert_eq!(status, 200, "{text}");
                    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                    assert_eq!(data.last(), Some(&"[DONE]"));
                    let got: String = data[..data.len() - 1]
                        .iter()
                        .map(|d| serde_json::from_str::<Value>(d).expect("json"))
                        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
                        .collect();
                    assert_eq!(&got, &want[k], "client {i}");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client");
        }
    });
    let (_, metrics) = server.request("GET", "/metrics", None);
    assert!(metrics.contains("gpt2_requests_running 0"), "{metrics}");
    let finished: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("gpt2_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(finished, 20, "{metrics}");
}

#[test]
fn echo_logprobs_are_gpt2_scores() {
    let server = Server::start(&[]);
    let text = "The capital of France is Paris";
    let v = server.complete(json!({"prompt": text, "echo": true, "max_tokens": 0, "logprobs": 1}));
    let got = v["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .expect("logprobs")
        .clone();
    let out = gpt2(&[
        "score",
        "-m",
        tiny().to_str().expect("path"),
        "--format",
        "json",
        text,
    ]);
    assert!(out.status.success());
    let want: Value = serde_json::from_slice(&out.stdout).expect("json");
    let want = want["tokens"].as_array().expect("tokens");
    assert_eq!(got.len(), want.len());
    assert!(got[0].is_null() && want[0]["logprob"].is_null());
    for (g, w) in got.iter().zip(want).skip(1) {
        let (g, w) = (g.as_f64().expect("n"), w["logprob"].as_f64().expect("n"));
        assert!((g - w).abs() <= 1e-4, "{g} vs {w}");
    }
    // The served id defaults to the --model argument.
    let (_, models) = server.request("GET", "/v1/models", None);
    assert!(models.contains(tiny().to_str().expect("path")), "{models}");
}

#[test]
fn sigterm_stops_the_server_with_exit_0() {
    let mut server = Server::start(&[]);
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, no memory involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = gpt2(&[
        "serve",
        "-m",
        tiny().to_str().expect("path"),
        "--max-queue",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = gpt2(&[
        "serve",
        "-m",
        tiny().to_str().expect("path"),
        "--host",
        "no such host!",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
