//! A real HTTP server on 127.0.0.1 (tiny_http, random free port) that serves model files
//! in OpenAI's blob layout (`/<size>/<file>`) and in the Hugging Face hub's layout
//! (`/api/models/<repo>/revision/<rev>`, `/<repo>/resolve/<rev>/<file>`, LFS files
//! redirected to `/cdn/<sha256>`), with `Range` support, a log of every request, and
//! injectable faults (error statuses, a stalled transfer, a delay).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sha2::Digest as _;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes the server meant to send (for a stall: the bytes sent before stalling).
    pub body_bytes: u64,
}

/// What to do with the next requests for a path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (no body) `times` times.
    Status { status: u16, times: usize },
    /// Send `after` bytes of the body, then stall (never send the rest) `times` times.
    Stall { after: usize, times: usize },
    /// Wait this long before answering (every time).
    Delay(Duration),
    /// Ignore the `Range` header (answer 200 with the whole file) `times` times.
    IgnoreRange { times: usize },
}

struct State {
    /// URL path -> content, for plain files (`/124M/encoder.json`, `/cdn/<sha>`).
    files: HashMap<String, Vec<u8>>,
    /// Hub repos: repo id -> (file name -> content).
    repos: HashMap<String, Vec<(String, Vec<u8>)>>,
    faults: HashMap<String, Fault>,
    log: Vec<Logged>,
    /// The commit the hub reports.
    commit: String,
}

/// The test server. Dropping it stops it.
pub struct Server {
    pub base: String,
    server: Arc<tiny_http::Server>,
    state: Arc<Mutex<State>>,
}

/// The commit hash the fake hub reports (until [`Server::set_commit`]).
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Files stored in LFS on the fake hub (redirected to `/cdn/<sha256>`).
fn is_lfs(file: &str) -> bool {
    file.ends_with(".safetensors")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

pub fn git_blob_id(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Server {
    pub fn start() -> Server {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let state = Arc::new(Mutex::new(State {
            files: HashMap::new(),
            repos: HashMap::new(),
            faults: HashMap::new(),
            log: Vec::new(),
            commit: COMMIT.to_string(),
        }));
        let base = format!("http://127.0.0.1:{port}");
        {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            let base = base.clone();
            thread::spawn(move || {
                for request in server.incoming_requests() {
                    let state = Arc::clone(&state);
                    let base = base.clone();
                    thread::spawn(move || handle(request, &state, &base));
                }
            });
        }
        Server {
            base,
            server,
            state,
        }
    }

    /// Serves `content` at `path` (`/124M/hparams.json`).
    pub fn put(&self, path: &str, content: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), content);
    }

    /// Stops serving `path` (it answers 404).
    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().files.remove(path);
    }

    /// Serves OpenAI's layout for `size` from the files of `dir` plus `extra` (name, content).
    pub fn put_openai(&self, size: &str, dir: &Path, extra: &[(&str, Vec<u8>)]) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            self.put(&format!("/{size}/{name}"), std::fs::read(&path).unwrap());
        }
        for (name, content) in extra {
            self.put(&format!("/{size}/{name}"), content.clone());
        }
    }

    /// Serves a hub repository with these files; LFS files also at `/cdn/<sha256>`.
    /// `lie_about` makes the API and headers announce another sha256 for that LFS file.
    pub fn put_repo(&self, repo: &str, files: Vec<(String, Vec<u8>)>) {
        let mut st = self.state.lock().unwrap();
        for (name, content) in &files {
            if is_lfs(name) {
                st.files
                    .insert(format!("/cdn/{}", sha256_hex(content)), content.clone());
            }
        }
        st.repos.insert(repo.to_string(), files);
    }

    /// Replaces the bytes served for an LFS blob (the hub keeps announcing the old sha256).
    pub fn corrupt_cdn(&self, original: &[u8], served: Vec<u8>) {
        self.put(&format!("/cdn/{}", sha256_hex(original)), served);
    }

    /// Makes the hub report another commit (as when `main` moves).
    pub fn set_commit(&self, commit: &str) {
        self.state.lock().unwrap().commit = commit.to_string();
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests whose path (without query) is `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.path.split('?').next() == Some(path))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
}

/// A body that sends `limit` bytes and then stalls (the client gives up by read timeout).
struct Stalling {
    inner: Cursor<Vec<u8>>,
    limit: usize,
    sent: usize,
    stall: bool,
}

impl Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= self.limit {
            if self.stall {
                thread::sleep(Duration::from_secs(3));
            }
            return Ok(0);
        }
        let n = buf.len().min(self.limit - self.sent);
        let n = self.inner.read(&mut buf[..n])?;
        self.sent += n;
        Ok(n)
    }
}

fn handle(request: tiny_http::Request, state: &Mutex<State>, base: &str) {
    let url = request.url().to_string();
    let path = url.split('?').next().unwrap_or("").to_string();
    let range = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .map(|h| h.value.as_str().to_string());

    // Fault injection.
    let fault = {
        let mut st = state.lock().unwrap();
        let fault = st.faults.get(&path).cloned();
        match fault {
            Some(Fault::Status { status, times }) if times > 0 => {
                st.faults.insert(
                    path.clone(),
                    Fault::Status {
                        status,
                        times: times - 1,
                    },
                );
                Some(Fault::Status { status, times })
            }
            Some(Fault::Stall { after, times }) if times > 0 => {
                st.faults.insert(
                    path.clone(),
                    Fault::Stall {
                        after,
                        times: times - 1,
                    },
                );
                Some(Fault::Stall { after, times })
            }
            Some(Fault::Delay(d)) => Some(Fault::Delay(d)),
            Some(Fault::IgnoreRange { times }) if times > 0 => {
                st.faults
                    .insert(path.clone(), Fault::IgnoreRange { times: times - 1 });
                Some(Fault::IgnoreRange { times })
            }
            _ => None,
        }
    };
    if let Some(Fault::Delay(d)) = fault {
        thread::sleep(d);
    }
    if let Some(Fault::Status { status, .. }) = fault {
        log(state, &path_with_query(&url), range, status, 0);
        let _ = request.respond(tiny_http::Response::empty(status));
        return;
    }

    // The hub's API.
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let (repo, _rev) = rest.split_once("/revision/").unwrap_or((rest, "main"));
        let body = {
            let st = state.lock().unwrap();
            st.repos
                .get(repo)
                .map(|files| repo_json(repo, files, &st.commit))
        };
        match body {
            Some(body) => {
                let bytes = body.into_bytes();
                log(state, &url, range, 200, bytes.len() as u64);
                let _ = request.respond(
                    tiny_http::Response::from_data(bytes)
                        .with_header(header("Content-Type", "application/json")),
                );
            }
            None => {
                log(state, &url, range, 404, 0);
                let _ = request.respond(tiny_http::Response::empty(404));
            }
        }
        return;
    }
    if let Some((repo, rest)) = path[1..].split_once("/resolve/") {
        let file = rest
            .split_once('/')
            .map(|(_, f)| f.to_string())
            .unwrap_or_default();
        let (content, commit) = {
            let st = state.lock().unwrap();
            let content = st.repos.get(repo).and_then(|files| {
                files
                    .iter()
                    .find(|(n, _)| *n == file)
                    .map(|(_, c)| c.clone())
            });
            (content, st.commit.clone())
        };
        let Some(content) = content else {
            log(state, &url, range, 404, 0);
            let _ = request.respond(tiny_http::Response::empty(404));
            return;
        };
        if is_lfs(&file) {
            let sha = sha256_hex(&content);
            log(state, &url, range, 302, 0);
            let resp = tiny_http::Response::empty(302)
                .with_header(header("Location", &format!("{base}/cdn/{sha}")))
                .with_header(header("X-Linked-Etag", &format!("\"{sha}\"")))
                .with_header(header("X-Linked-Size", &content.len().to_string()))
                .with_header(header("X-Repo-Commit", &commit))
                .with_header(header("ETag", &format!("\"{}\"", git_blob_id(b"pointer"))));
            let _ = request.respond(resp);
            return;
        }
        let etag = git_blob_id(&content);
        serve_bytes(
            request,
            state,
            &url,
            range.clone(),
            range,
            content,
            None,
            vec![
                header("ETag", &format!("\"{etag}\"")),
                header("X-Repo-Commit", &commit),
            ],
        );
        return;
    }

    // Plain files (OpenAI's blob storage, the CDN).
    let content = state.lock().unwrap().files.get(&path).cloned();
    match content {
        Some(content) => {
            let stall = match fault {
                Some(Fault::Stall { after, .. }) => Some(after),
                _ => None,
            };
            let honoured = match fault {
                Some(Fault::IgnoreRange { .. }) => None,
                _ => range.clone(),
            };
            serve_bytes(
                request,
                state,
                &url,
                range,
                honoured,
                content,
                stall,
                vec![],
            );
        }
        None => {
            log(state, &url, range, 404, 0);
            let _ = request.respond(tiny_http::Response::empty(404));
        }
    }
}

fn path_with_query(url: &str) -> String {
    url.to_string()
}

fn log(state: &Mutex<State>, path: &str, range: Option<String>, status: u16, body_bytes: u64) {
    state.lock().unwrap().log.push(Logged {
        path: path.to_string(),
        range,
        status,
        body_bytes,
    });
}

/// 200, or 206 for `Range: bytes=N-` / `bytes=N-M`, or 416.
#[allow(clippy::too_many_arguments)]
fn serve_bytes(
    request: tiny_http::Request,
    state: &Mutex<State>,
    url: &str,
    range: Option<String>,
    honoured: Option<String>,
    content: Vec<u8>,
    stall_after: Option<usize>,
    headers: Vec<tiny_http::Header>,
) {
    let len = content.len();
    let mut status = 200u16;
    let mut start = 0usize;
    let mut end = len.saturating_sub(1);
    let mut extra = headers;
    if let Some(r) = &honoured {
        let spec = r.trim().strip_prefix("bytes=").unwrap_or("");
        let (a, b) = spec.split_once('-').unwrap_or(("", ""));
        let a: usize = a.parse().unwrap_or(0);
        if a >= len {
            log(state, url, range.clone(), 416, 0);
            let resp = tiny_http::Response::empty(416)
                .with_header(header("Content-Range", &format!("bytes */{len}")));
            let _ = request.respond(resp);
            return;
        }
        start = a;
        if let Ok(b) = b.parse::<usize>() {
            end = b.min(len - 1);
        }
        status = 206;
        extra.push(header(
            "Content-Range",
            &format!("bytes {start}-{end}/{len}"),
        ));
    }
    let body = content[start..=end].to_vec();
    let body_len = body.len();
    let sent = stall_after.map_or(body_len, |a| a.min(body_len));
    log(state, url, range, status, sent as u64);
    let reader = Stalling {
        inner: Cursor::new(body),
        limit: sent,
        sent: 0,
        stall: sent < body_len,
    };
    let mut resp = tiny_http::Response::new(
        tiny_http::StatusCode(status),
        vec![header("Accept-Ranges", "bytes")],
        reader,
        Some(body_len),
        None,
    );
    for h in extra {
        resp.add_header(h);
    }
    let _ = request.respond(resp);
}

/// `GET /api/models/<repo>?blobs=true` as the hub answers it (the fields hf-hub and this
/// crate read).
fn repo_json(repo: &str, files: &[(String, Vec<u8>)], commit: &str) -> String {
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|(name, content)| {
            if is_lfs(name) {
                serde_json::json!({
                    "rfilename": name,
                    "blobId": git_blob_id(b"pointer"),
                    "size": content.len(),
                    "lfs": {"sha256": sha256_hex(content), "size": content.len(), "pointerSize": 134}
                })
            } else {
                serde_json::json!({"rfilename": name, "blobId": git_blob_id(content), "size": content.len()})
            }
        })
        .collect();
    serde_json::json!({
        "_id": "000000000000000000000000",
        "id": repo,
        "modelId": repo,
        "sha": commit,
        "private": false,
        "siblings": siblings,
    })
    .to_string()
}

/// `crates/gpt2-download/../../<rel>`: a path in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// OpenAI's real `encoder.json` and `vocab.bpe`: from gpt2-tokenizer's data, else from the
/// shared fixtures beside the checkout; `None` when neither is there.
pub fn real_vocab() -> Option<(Vec<u8>, Vec<u8>)> {
    let candidates = [
        repo_path("crates/gpt2-tokenizer/data"),
        repo_path("../shared/fixtures/gpt2-vocab"),
    ];
    for dir in candidates {
        if let (Ok(e), Ok(v)) = (
            std::fs::read(dir.join("encoder.json")),
            std::fs::read(dir.join("vocab.bpe")),
        ) {
            return Some((e, v));
        }
    }
    None
}
