//! Bad input, end to end: crafted model directories, built here from the committed fixtures
//! (and one seeded random model whose `n_embd` of 32 can be stored as GGUF Q8_0), each given
//! to the real `gpt2` binary under a 4 GiB address-space limit. The families: truncations of
//! every layout, counts and lengths of 2^32 / 2^63 / u64::MAX, overflowing shapes, bad value
//! and tensor types, metadata that disagrees with the tensors, NaN and infinite weights, bad
//! configs and bad tokenizer files, and conversions of such inputs.
//!
//! Every case must be refused cleanly: exit code 1 (2 for a usage error), a message naming
//! the file or field, no panic, no death by a signal, within a time limit, and for
//! `gpt2 convert` nothing at the destination and nothing left in its folder.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gpt2_model::{Config, Gpt2, LoadOptions};
use gpt2_tests::{gpt2, gpt2_bin, repo_fixture};
use gpt2_weights::gguf::{self, GgmlType, GgufFile, GgufTensorOut, Value};
use gpt2_weights::tf;
use serde_json::{json, Value as Json};

/// The TensorFlow index writer of gpt2-weights' tests (one copy for both suites).
#[allow(dead_code)]
#[path = "../../crates/gpt2-weights/tests/common/mod.rs"]
mod tf_writer;

/// The address-space limit of every run (RLIMIT_AS).
const AS_LIMIT: u64 = 4 << 30;
/// A run that takes longer than this is killed and counts as a failure.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Worker threads running cases.
const WORKERS: usize = 2;

/// The cases of each family: printed, asserted, and listed in the README.
const FAMILY_COUNTS: &[(&str, usize)] = &[
    ("truncate", 153),
    ("lengths", 56),
    ("dims", 12),
    ("types", 20),
    ("metadata", 48),
    ("nonfinite", 38),
    ("config", 48),
    ("tokenizer", 21),
    ("convert", 14),
];

// ---------------------------------------------------------------------------------------------
// Running the binary

/// What one run of `gpt2` did.
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn limited_command(args: &[String]) -> Command {
    let mut cmd = Command::new(gpt2_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Few threads and malloc arenas: the address-space limit is about the input, not
        // about how many CPUs this machine has.
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("GPT2_MODELS_DIR", "/nonexistent/gpt2-bad-inputs");
    // SAFETY: the closure only calls setrlimit, which is async-signal-safe, between fork and
    // exec, and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: AS_LIMIT as libc::rlim_t,
                rlim_max: AS_LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs `gpt2 ARGS` under the address-space limit and the time limit.
fn run_limited(args: &[String]) -> Outcome {
    let start = Instant::now();
    let mut child = limited_command(args).spawn().expect("spawn gpt2");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gpt2") {
            break status;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            timed_out = true;
            break child.wait().expect("wait for gpt2");
        }
        std::thread::sleep(Duration::from_millis(3));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    Outcome {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

/// How a case runs the binary on the directory its builder made.
#[derive(Clone, Copy, Debug)]
enum Run {
    /// `gpt2 inspect --model DIR`.
    Inspect,
    /// `gpt2 inspect --model DIR --verify`.
    Verify,
    /// `gpt2 generate -m DIR --greedy -n 2 hi`, with `--dtype` when given.
    Generate(Option<&'static str>),
    /// `gpt2 score -m DIR "hello world"`.
    Score,
    /// `gpt2 convert --from DIR --to OUT --dtype DTYPE`.
    Convert(&'static str),
}

/// One crafted input.
struct Case {
    family: &'static str,
    name: String,
    /// Writes the input under the given (empty) directory; returns the model path to give.
    build: Box<dyn Fn(&Path) -> PathBuf + Send + Sync>,
    run: Run,
    /// Substrings the error message must contain.
    expect: Vec<String>,
    /// The exit code expected (1, or 2 for a usage error).
    code: i32,
}

fn case(
    family: &'static str,
    name: impl Into<String>,
    run: Run,
    expect: &[&str],
    build: impl Fn(&Path) -> PathBuf + Send + Sync + 'static,
) -> Case {
    Case {
        family,
        name: name.into(),
        build: Box::new(build),
        run,
        expect: expect.iter().map(|s| s.to_string()).collect(),
        code: 1,
    }
}

fn args_for(run: Run, model: &Path, out: &Path) -> Vec<String> {
    let m = model.display().to_string();
    let v: Vec<&str> = match run {
        Run::Inspect => vec!["inspect", "--model", &m],
        Run::Verify => vec!["inspect", "--model", &m, "--verify"],
        Run::Generate(None) => vec![
            "generate",
            "-m",
            &m,
            "--offline",
            "--threads",
            "1",
            "--greedy",
            "-n",
            "2",
            "hi",
        ],
        Run::Generate(Some(dtype)) => vec![
            "generate",
            "-m",
            &m,
            "--offline",
            "--threads",
            "1",
            "--greedy",
            "-n",
            "2",
            "--dtype",
            dtype,
            "hi",
        ],
        Run::Score => vec![
            "score",
            "-m",
            &m,
            "--offline",
            "--threads",
            "1",
            "hello world",
        ],
        Run::Convert(dtype) => {
            let o = out.display().to_string();
            return ["convert", "--from", &m, "--to", &o, "--dtype", dtype]
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
    };
    v.iter().map(|s| s.to_string()).collect()
}

/// Every entry under `dir`, recursively, relative to it, sorted.
fn list_tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs one case in `dir`; `Err` says what was wrong with how the binary handled it.
fn check_case(c: &Case, dir: &Path) -> Result<Outcome, String> {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).expect("case dir");
    let model = (c.build)(&input);
    let out_parent = dir.join("out");
    std::fs::create_dir_all(&out_parent).expect("out dir");
    let dest = out_parent.join("converted");
    let args = args_for(c.run, &model, &dest);
    let o = run_limited(&args);
    let mut problems = Vec::new();
    if o.timed_out {
        problems.push(format!("still running after {RUN_TIMEOUT:?}"));
    }
    if let Some(sig) = o.signal {
        problems.push(format!("killed by signal {sig}"));
    }
    if o.code != Some(c.code) {
        problems.push(format!("exit code {:?}, expected {}", o.code, c.code));
    }
    for bad in ["panicked", "RUST_BACKTRACE", "memory allocation of"] {
        if o.stderr.contains(bad) {
            problems.push(format!("stderr has {bad:?}"));
        }
    }
    for want in &c.expect {
        if !o.stderr.contains(want.as_str()) {
            problems.push(format!("stderr lacks {want:?}"));
        }
    }
    let left = list_tree(&out_parent);
    if !left.is_empty() {
        problems.push(format!("left behind in the output folder: {left:?}"));
    }
    if problems.is_empty() {
        Ok(o)
    } else {
        Err(format!(
            "{}; args {:?}\n    stderr: {}\n    stdout: {}",
            problems.join("; "),
            &args[..1],
            o.stderr.trim_end().replace('\n', "\n            "),
            cut(&o.stdout, 300)
        ))
    }
}

fn cut(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

struct Report {
    passed: Vec<(String, Duration)>,
    failed: Vec<(String, String)>,
}

/// Runs `cases` on [`WORKERS`] threads, each in its own directory under `root` (removed
/// after it ran).
fn run_all(cases: &[&Case], root: &Path) -> Report {
    let next = AtomicUsize::new(0);
    let report = Mutex::new(Report {
        passed: Vec::new(),
        failed: Vec::new(),
    });
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = cases.get(i) else { break };
                let dir = root.join(format!("case{i}"));
                let result = check_case(c, &dir);
                let _ = std::fs::remove_dir_all(&dir);
                let mut r = report.lock().expect("report");
                match result {
                    Ok(o) => r.passed.push((c.name.clone(), o.elapsed)),
                    Err(why) => r.failed.push((c.name.clone(), why)),
                }
            });
        }
    });
    report.into_inner().expect("report")
}

// ---------------------------------------------------------------------------------------------
// Files

/// Writes `bytes` at `path`, replacing (never writing through) whatever is there: the case
/// directories hold hard links to the fixtures.
fn put(path: &Path, bytes: impl AsRef<[u8]>) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `dst` (created) with every file of `src` hard-linked (copied where linking fails), except
/// those named in `except`.
fn link_dir(src: &Path, dst: &Path, except: &[&str]) {
    std::fs::create_dir_all(dst).expect("create dir");
    for e in std::fs::read_dir(src).expect("read fixture dir").flatten() {
        let name = e.file_name();
        if except.iter().any(|x| name == *x) || !e.path().is_file() {
            continue;
        }
        let to = dst.join(&name);
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to).expect("copy fixture file");
        }
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn read_json(path: &Path) -> Json {
    serde_json::from_slice(&read(path)).expect("fixture JSON")
}

/// `n` offsets spread evenly over `from..to` (both ends included when `n` > 1).
fn spread(from: usize, to: usize, n: usize) -> Vec<usize> {
    if n == 0 || to <= from {
        return Vec::new();
    }
    (0..n)
        .map(|i| from + (to - 1 - from) * i / (n - 1).max(1))
        .collect()
}

fn dedup(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------------
// Safetensors

/// A safetensors file split into its JSON header and data.
struct St {
    header: Json,
    data: Vec<u8>,
}

fn st_parse(bytes: &[u8]) -> St {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    St {
        header: serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors header"),
        data: bytes[8 + n..].to_vec(),
    }
}

fn st_bytes(st: &St) -> Vec<u8> {
    let mut h = serde_json::to_vec(&st.header).expect("header");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&st.data);
    out
}

/// The byte range of tensor `name` in the data section.
fn st_range(st: &St, name: &str) -> (usize, usize) {
    let o = &st.header[name]["data_offsets"];
    (
        o[0].as_u64().expect("offset") as usize,
        o[1].as_u64().expect("offset") as usize,
    )
}

/// Rebuilds a safetensors file from `st` with only the tensors `keep` accepts, each possibly
/// changed by `edit` (name, header entry, data).
fn st_rebuild(st: &St, keep: impl Fn(&str) -> bool, extra: &[(&str, Json, Vec<u8>)]) -> Vec<u8> {
    let mut names: Vec<&String> = st
        .header
        .as_object()
        .expect("header object")
        .keys()
        .filter(|k| *k != "__metadata__" && keep(k))
        .collect();
    names.sort();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    let mut add = |name: &str, mut entry: Json, bytes: &[u8], data: &mut Vec<u8>| {
        entry["data_offsets"] = json!([data.len(), data.len() + bytes.len()]);
        data.extend_from_slice(bytes);
        header.insert(name.to_string(), entry);
    };
    for name in names {
        let (s, e) = st_range(st, name);
        add(name, st.header[name].clone(), &st.data[s..e], &mut data);
    }
    for (name, entry, bytes) in extra {
        add(name, entry.clone(), bytes, &mut data);
    }
    st_bytes(&St {
        header: Json::Object(header),
        data,
    })
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// Where each field of a GGUF (v2/v3) file is.
#[derive(Debug, Default, Clone)]
struct GgufMap {
    kvs: Vec<KvAt>,
    tensors: Vec<TensorAt>,
}

#[derive(Debug, Clone)]
struct KvAt {
    key: String,
    key_len_at: usize,
    type_at: usize,
    /// For a string value: where its length is.
    str_len_at: Option<usize>,
    /// For an array: where its element type and length are, and its first element.
    array: Option<(usize, usize, usize)>,
}

#[derive(Debug, Clone)]
struct TensorAt {
    name: String,
    name_len_at: usize,
    n_dims_at: usize,
    dims_at: Vec<usize>,
    type_at: usize,
    offset_at: usize,
    offset: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn gguf_skip_value(b: &[u8], pos: &mut usize, t: u32) {
    match t {
        0 | 1 | 7 => *pos += 1,
        2 | 3 => *pos += 2,
        4..=6 => *pos += 4,
        10..=12 => *pos += 8,
        8 => *pos += 8 + u64_at(b, *pos) as usize,
        9 => {
            let elem = u32_at(b, *pos);
            let n = u64_at(b, *pos + 4);
            *pos += 12;
            for _ in 0..n {
                gguf_skip_value(b, pos, elem);
            }
        }
        other => panic!("value type {other} in the base GGUF file"),
    }
}

fn gguf_map(b: &[u8]) -> GgufMap {
    let n_tensors = u64_at(b, 8);
    let n_kv = u64_at(b, 16);
    let mut pos = 24;
    let mut map = GgufMap::default();
    for _ in 0..n_kv {
        let key_len_at = pos;
        let len = u64_at(b, pos) as usize;
        let key = String::from_utf8(b[pos + 8..pos + 8 + len].to_vec()).expect("key");
        pos += 8 + len;
        let type_at = pos;
        let ty = u32_at(b, pos);
        pos += 4;
        let str_len_at = (ty == 8).then_some(pos);
        let array = (ty == 9).then_some((pos, pos + 4, pos + 12));
        gguf_skip_value(b, &mut pos, ty);
        map.kvs.push(KvAt {
            key,
            key_len_at,
            type_at,
            str_len_at,
            array,
        });
    }
    for _ in 0..n_tensors {
        let name_len_at = pos;
        let len = u64_at(b, pos) as usize;
        let name = String::from_utf8(b[pos + 8..pos + 8 + len].to_vec()).expect("name");
        pos += 8 + len;
        let n_dims_at = pos;
        let n_dims = u32_at(b, pos) as usize;
        pos += 4;
        let dims_at = (0..n_dims).map(|i| pos + 8 * i).collect();
        pos += 8 * n_dims;
        let type_at = pos;
        let offset_at = pos + 4;
        let offset = u64_at(b, offset_at);
        pos += 12;
        map.tensors.push(TensorAt {
            name,
            name_len_at,
            n_dims_at,
            dims_at,
            type_at,
            offset_at,
            offset,
        });
    }
    map
}

impl GgufMap {
    fn kv(&self, key: &str) -> &KvAt {
        self.kvs
            .iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("no key {key}"))
    }
    fn tensor(&self, name: &str) -> &TensorAt {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }
    fn header_end(&self) -> usize {
        self.tensors.last().map_or(24, |t| t.offset_at + 8)
    }
}

/// An owned copy of a GGUF file's contents, to change and write again.
#[derive(Clone)]
struct GgufParts {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, GgmlType, Vec<usize>, Vec<u8>)>,
}

fn gguf_parts(path: &Path) -> GgufParts {
    let f = GgufFile::open(path).expect("base GGUF");
    GgufParts {
        metadata: f
            .metadata_entries()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        tensors: f
            .tensors()
            .iter()
            .map(|t| {
                let data = f.tensor_bytes(&t.name).expect("tensor bytes").to_vec();
                (t.name.clone(), t.ggml_type, t.dims.clone(), data)
            })
            .collect(),
    }
}

impl GgufParts {
    fn bytes(&self) -> Vec<u8> {
        let md: Vec<(&str, Value)> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let ts: Vec<GgufTensorOut<'_>> = self
            .tensors
            .iter()
            .map(|(name, ggml_type, dims, data)| GgufTensorOut {
                name,
                ggml_type: *ggml_type,
                dims,
                data,
            })
            .collect();
        let mut out = Vec::new();
        gguf::write(&mut out, &md, &ts).expect("write GGUF");
        out
    }
    fn set(&mut self, key: &str, v: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = v,
            None => self.metadata.push((key.to_string(), v)),
        }
    }
    fn remove(&mut self, key: &str) {
        self.metadata.retain(|(k, _)| k != key);
    }
    fn tensor_mut(&mut self, name: &str) -> &mut (String, GgmlType, Vec<usize>, Vec<u8>) {
        self.tensors
            .iter_mut()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }
}

// ---------------------------------------------------------------------------------------------
// TensorFlow checkpoint index (the writer of gpt2-weights' own tests, condensed)

/// The entry of tensor `name`.
fn tf_entry<'a>(ix: &'a mut tf::CheckpointIndex, name: &str) -> &'a mut tf::BundleEntry {
    &mut ix
        .entries
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no entry {name}"))
        .1
}

/// An index file for `index`: one data block, the empty metaindex, the index block, the
/// footer (whose index-block size is `index_size` when given). The encoder is the
/// checkpoint reader's own test writer.
fn tf_index_bytes(index: &tf::CheckpointIndex, index_size: Option<u64>) -> Vec<u8> {
    let entries = tf_writer::index_entries(index);
    let mut file = Vec::new();
    let (off, size) = tf_writer::write_block(&mut file, &tf_writer::index_bytes_block(&entries));
    let last = entries.last().map(|(k, _)| k.clone()).unwrap_or_default();
    let index_block = [(last, tf_writer::handle_bytes(off, size))];
    tf_writer::finish_with_index_size(file, &index_block, index_size)
}

// ---------------------------------------------------------------------------------------------
// The inputs the cases start from

struct Bases {
    _tmp: tempfile::TempDir,
    /// fixtures/tiny/hf (f32 safetensors, n_embd 40, GPT-2's vocabulary).
    hf: PathBuf,
    /// fixtures/tiny/openai (TensorFlow checkpoint).
    openai: PathBuf,
    /// fixtures/tiny/hf converted to f16 by `gpt2 convert`.
    f16: PathBuf,
    /// A seeded random model of n_embd 32 in the HF layout (f32).
    hf32: PathBuf,
    /// `hf32` converted to GGUF Q8_0 by `gpt2 convert` (with GPT-2's tokenizer stored).
    gguf: PathBuf,
    gguf_map: GgufMap,
    gguf_parts: GgufParts,
    /// GPT-2's tokenizer files (encoder.json, vocab.bpe).
    encoder: PathBuf,
    vocab_bpe: PathBuf,
}

fn bases() -> &'static Bases {
    static BASES: OnceLock<Bases> = OnceLock::new();
    BASES.get_or_init(|| {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let hf = repo_fixture("tiny/hf");
        let openai = repo_fixture("tiny/openai");
        let s = |p: &Path| p.display().to_string();
        let f16 = tmp.path().join("f16");
        let o = gpt2(&[
            "convert",
            "--from",
            &s(&hf),
            "--to",
            &s(&f16),
            "--dtype",
            "f16",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let hf32 = tmp.path().join("hf32");
        let config = Config {
            n_vocab: 50257,
            n_ctx: 32,
            n_embd: 32,
            n_head: 4,
            n_layer: 2,
            layer_norm_epsilon: 1e-5,
        };
        Gpt2::random(&config, 11, &LoadOptions::default())
            .expect("random model")
            .save_hf(&hf32)
            .expect("save random model");
        let gguf_dir = tmp.path().join("gguf");
        let o = gpt2(&[
            "convert",
            "--from",
            &s(&hf32),
            "--to",
            &s(&gguf_dir),
            "--dtype",
            "q8_0",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let gguf = gguf_dir.join("model.gguf");
        let gguf_map = gguf_map(&read(&gguf));
        let gguf_parts = gguf_parts(&gguf);
        let data = gpt2_tests::root().join("crates/gpt2-tokenizer/data");
        Bases {
            _tmp: tmp,
            hf,
            openai,
            f16,
            hf32,
            gguf,
            gguf_map,
            gguf_parts,
            encoder: data.join("encoder.json"),
            vocab_bpe: data.join("vocab.bpe"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Case builders

/// A copy of the HF directory `base` whose `file` is `bytes`.
fn hf_with_file(base: &Path, file: &'static str, bytes: Vec<u8>) -> impl Fn(&Path) -> PathBuf {
    let base = base.to_path_buf();
    let bytes = Arc::new(bytes);
    move |dir: &Path| {
        link_dir(&base, dir, &[file]);
        put(&dir.join(file), &*bytes);
        dir.to_path_buf()
    }
}

/// A directory holding only `model.gguf` with these bytes.
fn gguf_with(bytes: Vec<u8>) -> impl Fn(&Path) -> PathBuf {
    let bytes = Arc::new(bytes);
    move |dir: &Path| {
        put(&dir.join("model.gguf"), &*bytes);
        dir.to_path_buf()
    }
}

/// A copy of the base GGUF file with `value` (little-endian, its width) written at `at`.
fn gguf_patched(patches: &[(usize, Vec<u8>)]) -> impl Fn(&Path) -> PathBuf {
    let mut bytes = read(&bases().gguf);
    for (at, v) in patches {
        bytes[*at..*at + v.len()].copy_from_slice(v);
    }
    gguf_with(bytes)
}

const HUGE: [(u64, &str); 3] = [(1 << 63, "2^63"), (u64::MAX, "u64::MAX"), (1 << 32, "2^32")];

fn truncations() -> Vec<Case> {
    let b = bases();
    let mut cases = Vec::new();
    // Safetensors: inside the length, the header, the data.
    let st = read(&b.hf.join("model.safetensors"));
    let n = u64_at(&st, 0) as usize;
    let mut offsets = vec![0, 1, 4, 7, 8, 9, 10, 8 + n - 1, 8 + n, 8 + n + 1];
    offsets.extend(spread(8, 8 + n, 14));
    offsets.extend(spread(8 + n, st.len(), 16));
    offsets.push(st.len() - 1);
    for (i, at) in dedup(offsets).into_iter().enumerate() {
        let run = if i % 6 == 5 {
            Run::Generate(None)
        } else {
            Run::Inspect
        };
        cases.push(case(
            "truncate",
            format!("safetensors cut at {at}"),
            run,
            &["model.safetensors"],
            hf_with_file(&b.hf, "model.safetensors", st[..at].to_vec()),
        ));
    }
    // TensorFlow index: everywhere, the footer densely.
    let index = read(&b.openai.join("model.ckpt.index"));
    let mut offsets = spread(0, index.len(), 24);
    offsets.extend(index.len() - 48..index.len());
    for at in dedup(offsets).into_iter().step_by(2) {
        cases.push(case(
            "truncate",
            format!("model.ckpt.index cut at {at}"),
            Run::Inspect,
            &["model.ckpt.index"],
            hf_with_file(&b.openai, "model.ckpt.index", index[..at].to_vec()),
        ));
    }
    // TensorFlow data shard.
    let shard = "model.ckpt.data-00000-of-00001";
    let data_len = std::fs::metadata(b.openai.join(shard))
        .expect("shard")
        .len() as usize;
    for (i, at) in dedup(spread(0, data_len, 18)).into_iter().enumerate() {
        let base = b.openai.clone();
        let run = if i % 4 == 3 { Run::Score } else { Run::Inspect };
        cases.push(case(
            "truncate",
            format!("{shard} cut at {at}"),
            run,
            &[shard],
            move |dir: &Path| {
                link_dir(&base, dir, &[shard]);
                let bytes = read(&base.join(shard));
                put(&dir.join(shard), &bytes[..at]);
                dir.to_path_buf()
            },
        ));
    }
    // GGUF: every field of the header's start, then spread over metadata, infos and data.
    let g = read(&b.gguf);
    let map = &b.gguf_map;
    let mut offsets = vec![0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32];
    for k in map.kvs.iter().take(4) {
        offsets.extend([k.key_len_at + 4, k.type_at, k.type_at + 2, k.type_at + 4]);
    }
    for t in map.tensors.iter().take(2) {
        offsets.extend([t.name_len_at + 3, t.n_dims_at, t.type_at, t.offset_at + 7]);
    }
    let tokens = map.kv("tokenizer.ggml.tokens").array.expect("tokens array");
    offsets.extend([tokens.0, tokens.1, tokens.2, tokens.2 + 9]);
    offsets.extend(spread(32, map.header_end(), 14));
    offsets.extend(spread(map.header_end(), g.len(), 12));
    offsets.push(g.len() - 1);
    for (i, at) in dedup(offsets).into_iter().enumerate() {
        let run = if i % 8 == 7 {
            Run::Generate(None)
        } else {
            Run::Inspect
        };
        cases.push(case(
            "truncate",
            format!("model.gguf cut at {at}"),
            run,
            &["model.gguf"],
            gguf_with(g[..at].to_vec()),
        ));
    }
    cases
}

fn lengths() -> Vec<Case> {
    let b = bases();
    let map = &b.gguf_map;
    let mut cases = Vec::new();
    let tokens = map.kv("tokenizer.ggml.tokens").array.expect("tokens");
    let merges = map.kv("tokenizer.ggml.merges").array.expect("merges");
    let u64_fields: Vec<(String, usize)> = vec![
        ("tensor count".into(), 8),
        ("metadata count".into(), 16),
        ("first key's length".into(), map.kvs[0].key_len_at),
        (
            "general.name's length".into(),
            map.kv("general.name").str_len_at.expect("string"),
        ),
        ("tokens array length".into(), tokens.1),
        ("first token's length".into(), tokens.2),
        ("merges array length".into(), merges.1),
        (
            "first tensor name's length".into(),
            map.tensors[0].name_len_at,
        ),
        (
            "last tensor name's length".into(),
            map.tensors.last().expect("tensors").name_len_at,
        ),
        (
            "token_embd dimension 0".into(),
            map.tensor("token_embd.weight").dims_at[0],
        ),
        (
            "output_norm.bias dimension".into(),
            map.tensor("output_norm.bias").dims_at[0],
        ),
        (
            "token_embd offset".into(),
            map.tensor("token_embd.weight").offset_at,
        ),
    ];
    for (what, at) in u64_fields {
        for (v, shown) in HUGE {
            cases.push(case(
                "lengths",
                format!("GGUF {what} = {shown}"),
                Run::Inspect,
                &["model.gguf"],
                gguf_patched(&[(at, v.to_le_bytes().to_vec())]),
            ));
        }
    }
    for (v, shown) in [(5u32, "5"), (1 << 31, "2^31"), (u32::MAX, "u32::MAX")] {
        let at = map.tensor("blk.0.attn_qkv.weight").n_dims_at;
        cases.push(case(
            "lengths",
            format!("GGUF n_dims = {shown}"),
            Run::Inspect,
            &["model.gguf"],
            gguf_patched(&[(at, v.to_le_bytes().to_vec())]),
        ));
    }
    // Safetensors' header length.
    let st = read(&b.hf.join("model.safetensors"));
    let n = u64_at(&st, 0);
    for (v, shown) in HUGE.into_iter().chain([
        (0, "0"),
        (1, "1"),
        (st.len() as u64, "the file's size"),
        (n + 8, "8 more than the header"),
    ]) {
        let mut bytes = st.clone();
        bytes[..8].copy_from_slice(&v.to_le_bytes());
        cases.push(case(
            "lengths",
            format!("safetensors header length = {shown}"),
            Run::Inspect,
            &["model.safetensors"],
            hf_with_file(&b.hf, "model.safetensors", bytes),
        ));
    }
    // TensorFlow: an entry's offset and size, the index block's size, the shard count.
    let index = tf::parse_index(&read(&b.openai.join("model.ckpt.index"))).expect("index");
    let tf_case = |name: String, expect: &[&str], edit: &dyn Fn(&mut tf::CheckpointIndex)| {
        let mut ix = index.clone();
        edit(&mut ix);
        case(
            "lengths",
            name,
            Run::Inspect,
            expect,
            hf_with_file(&b.openai, "model.ckpt.index", tf_index_bytes(&ix, None)),
        )
    };
    for (v, shown) in [
        (1u64 << 62, "2^62"),
        (i64::MAX as u64, "i64::MAX"),
        (1 << 32, "2^32"),
    ] {
        cases.push(tf_case(
            format!("TF model/wte offset = {shown}"),
            &["model/wte"],
            &|ix| tf_entry(ix, "model/wte").offset = v,
        ));
        cases.push(tf_case(
            format!("TF model/wte size = {shown}"),
            &["model/wte"],
            &|ix| tf_entry(ix, "model/wte").size = v,
        ));
    }
    for (v, shown) in [(1u64 << 62, "2^62"), (1 << 32, "2^32")] {
        let bytes = tf_index_bytes(&index, Some(v));
        cases.push(case(
            "lengths",
            format!("TF index block size = {shown}"),
            Run::Inspect,
            &["model.ckpt.index"],
            hf_with_file(&b.openai, "model.ckpt.index", bytes),
        ));
    }
    for (v, shown) in [(i32::MAX as u32, "i32::MAX"), (100_000, "100000")] {
        cases.push(tf_case(
            format!("TF num_shards = {shown}"),
            &["model.ckpt"],
            &|ix| ix.header.num_shards = v,
        ));
    }
    cases
}

fn dims() -> Vec<Case> {
    let b = bases();
    let map = &b.gguf_map;
    let mut cases = Vec::new();
    let te = map.tensor("token_embd.weight");
    let pe = map.tensor("position_embd.weight");
    for (t, d0, d1, shown) in [
        (te, 1u64 << 32, 1u64 << 32, "token_embd [2^32, 2^32]"),
        (te, 1 << 40, 1 << 40, "token_embd [2^40, 2^40]"),
        (te, 32, u64::MAX, "token_embd [u64::MAX, 32]"),
        (pe, u64::MAX, 2, "position_embd [2, u64::MAX]"),
        (pe, 1 << 33, 1 << 31, "position_embd [2^31, 2^33]"),
    ] {
        cases.push(case(
            "dims",
            format!("GGUF {shown}"),
            Run::Inspect,
            &["model.gguf"],
            gguf_patched(&[
                (t.dims_at[0], d0.to_le_bytes().to_vec()),
                (t.dims_at[1], d1.to_le_bytes().to_vec()),
            ]),
        ));
    }
    let st = st_parse(&read(&b.hf.join("model.safetensors")));
    for shape in [
        json!([1u64 << 32, 1u64 << 32]),
        json!([1u64 << 62, 4]),
        json!([u64::MAX, 2]),
        json!([1u64 << 22, 1u64 << 22, 1u64 << 22]),
    ] {
        let mut edited = St {
            header: st.header.clone(),
            data: Vec::new(),
        };
        edited.header["wte.weight"]["shape"] = shape.clone();
        let mut bytes = st_bytes(&edited);
        bytes.extend_from_slice(&st.data);
        cases.push(case(
            "dims",
            format!("safetensors wte.weight shape {shape}"),
            Run::Inspect,
            &["model.safetensors"],
            hf_with_file(&b.hf, "model.safetensors", bytes),
        ));
    }
    let index = tf::parse_index(&read(&b.openai.join("model.ckpt.index"))).expect("index");
    for shape in [
        vec![1u64 << 32, 1 << 32],
        vec![1 << 62, 4],
        vec![1 << 21; 4],
    ] {
        let mut ix = index.clone();
        for (n, e) in ix.entries.iter_mut() {
            if n == "model/wte" {
                e.shape = shape.clone();
            }
        }
        cases.push(case(
            "dims",
            format!("TF model/wte shape {shape:?}"),
            Run::Inspect,
            &["wte.weight", "found"],
            hf_with_file(&b.openai, "model.ckpt.index", tf_index_bytes(&ix, None)),
        ));
    }
    cases
}

fn types() -> Vec<Case> {
    let b = bases();
    let map = &b.gguf_map;
    let mut cases = Vec::new();
    let u32p = |at: usize, v: u32| (at, v.to_le_bytes().to_vec());
    let first = &map.kvs[0];
    let tokens = map.kv("tokenizer.ggml.tokens").array.expect("tokens");
    let te = map.tensor("token_embd.weight");
    let norm = map.tensor("output_norm.weight");
    let mut patched = |name: &str, expect: &[&str], p: (usize, Vec<u8>)| {
        cases.push(case(
            "types",
            format!("GGUF {name}"),
            Run::Inspect,
            expect,
            gguf_patched(&[p]),
        ));
    };
    patched(
        "value type 13",
        &["model.gguf", &first.key],
        u32p(first.type_at, 13),
    );
    patched(
        "value type u32::MAX",
        &["model.gguf", &first.key],
        u32p(first.type_at, u32::MAX),
    );
    patched(
        "value type array (of a string)",
        &["model.gguf"],
        u32p(first.type_at, 9),
    );
    patched(
        "array element type 13",
        &["model.gguf", "tokenizer.ggml.tokens"],
        u32p(tokens.0, 13),
    );
    patched(
        "array element type u32::MAX",
        &["model.gguf", "tokenizer.ggml.tokens"],
        u32p(tokens.0, u32::MAX),
    );
    patched(
        "array element type array",
        &["model.gguf", "tokenizer.ggml.tokens"],
        u32p(tokens.0, 9),
    );
    let bc = map.kv("gpt2.block_count");
    patched(
        "gpt2.block_count stored as f32",
        &["model.gguf", "gpt2.block_count"],
        u32p(bc.type_at, 6),
    );
    let eps = map.kv("gpt2.attention.layer_norm_epsilon");
    patched(
        "layer_norm_epsilon stored as u32",
        &["model.gguf", "gpt2.attention.layer_norm_epsilon"],
        u32p(eps.type_at, 4),
    );
    patched(
        "token_embd type Q4_0",
        &["model.gguf", "token_embd.weight", "Q4_0"],
        u32p(te.type_at, 2),
    );
    patched(
        "token_embd type 99",
        &["model.gguf", "token_embd.weight"],
        u32p(te.type_at, 99),
    );
    patched(
        "token_embd type u32::MAX",
        &["model.gguf", "token_embd.weight"],
        u32p(te.type_at, u32::MAX),
    );
    patched(
        "token_embd type F32",
        &["model.gguf", "token_embd"],
        u32p(te.type_at, 0),
    );
    patched(
        "output_norm.weight type 31",
        &["model.gguf", "output_norm.weight"],
        u32p(norm.type_at, 31),
    );
    // Safetensors dtypes.
    let st = st_parse(&read(&b.hf.join("model.safetensors")));
    for (tensor, dtype) in [
        ("ln_f.weight", "I32"),
        ("wte.weight", "F64"),
        ("wpe.weight", "Q8"),
        ("h.0.ln_1.bias", "BOOL"),
    ] {
        let mut edited = St {
            header: st.header.clone(),
            data: Vec::new(),
        };
        edited.header[tensor]["dtype"] = json!(dtype);
        let mut bytes = st_bytes(&edited);
        bytes.extend_from_slice(&st.data);
        cases.push(case(
            "types",
            format!("safetensors {tensor} dtype {dtype}"),
            Run::Inspect,
            &["model.safetensors"],
            hf_with_file(&b.hf, "model.safetensors", bytes),
        ));
    }
    // TensorFlow dtypes.
    let index = tf::parse_index(&read(&b.openai.join("model.ckpt.index"))).expect("index");
    for (tensor, dtype) in [("model/ln_f/g", 3u32), ("model/wte", 2), ("model/wpe", 999)] {
        let mut ix = index.clone();
        for (n, e) in ix.entries.iter_mut() {
            if n == tensor {
                e.dtype = dtype;
            }
        }
        cases.push(case(
            "types",
            format!("TF {tensor} dtype {dtype}"),
            Run::Inspect,
            &[tensor],
            hf_with_file(&b.openai, "model.ckpt.index", tf_index_bytes(&ix, None)),
        ));
    }
    cases
}

fn metadata() -> Vec<Case> {
    let b = bases();
    let mut cases = Vec::new();
    let mut gg = |name: &str, expect: &[&str], edit: &dyn Fn(&mut GgufParts)| {
        let mut p = b.gguf_parts.clone();
        edit(&mut p);
        cases.push(case(
            "metadata",
            format!("GGUF {name}"),
            Run::Generate(None),
            expect,
            gguf_with(p.bytes()),
        ));
    };
    gg(
        "gpt2.vocab_size 50000",
        &["model.gguf", "gpt2.vocab_size"],
        &|p| p.set("gpt2.vocab_size", Value::U32(50000)),
    );
    gg("gpt2.embedding_length 64", &["model.gguf"], &|p| {
        p.set("gpt2.embedding_length", Value::U32(64))
    });
    gg(
        "gpt2.block_count 3",
        &["missing 12 tensor(s)", "h.2."],
        &|p| p.set("gpt2.block_count", Value::U32(3)),
    );
    gg(
        "gpt2.block_count 1",
        &["unexpected 12 tensor(s)", "blk.1."],
        &|p| p.set("gpt2.block_count", Value::U32(1)),
    );
    gg(
        "gpt2.context_length 64",
        &["wpe.weight", "[64, 32]"],
        &|p| p.set("gpt2.context_length", Value::U32(64)),
    );
    gg(
        "gpt2.feed_forward_length 100",
        &["model.gguf", "gpt2.feed_forward_length"],
        &|p| p.set("gpt2.feed_forward_length", Value::U32(100)),
    );
    gg(
        "general.architecture llama",
        &["model.gguf", "general.architecture"],
        &|p| p.set("general.architecture", Value::String("llama".into())),
    );
    gg(
        "no gpt2.block_count",
        &["model.gguf", "gpt2.block_count"],
        &|p| p.remove("gpt2.block_count"),
    );
    gg(
        "no gpt2.attention.layer_norm_epsilon",
        &["model.gguf", "gpt2.attention.layer_norm_epsilon"],
        &|p| p.remove("gpt2.attention.layer_norm_epsilon"),
    );
    gg(
        "a token fewer than token_embd's rows",
        &["model.gguf", "tokenizer.ggml.tokens"],
        &|p| {
            if let Some((_, Value::Array(t))) = p
                .metadata
                .iter_mut()
                .find(|(k, _)| k == "tokenizer.ggml.tokens")
            {
                t.pop();
            }
            p.set("tokenizer.ggml.bos_token_id", Value::U32(100));
            p.set("tokenizer.ggml.eos_token_id", Value::U32(100));
        },
    );
    gg(
        "tokenizer.ggml.eos_token_id 60000",
        &["model.gguf", "tokenizer.ggml.eos_token_id"],
        &|p| p.set("tokenizer.ggml.eos_token_id", Value::U32(60000)),
    );
    gg(
        "a merge without a space",
        &["model.gguf", "tokenizer.ggml.merges"],
        &|p| {
            if let Some((_, Value::Array(m))) = p
                .metadata
                .iter_mut()
                .find(|(k, _)| k == "tokenizer.ggml.merges")
            {
                m[0] = Value::String("abc".into());
            }
        },
    );
    gg(
        "tokenizer.ggml.model llama",
        &["model.gguf", "tokenizer.ggml.model"],
        &|p| p.set("tokenizer.ggml.model", Value::String("llama".into())),
    );
    gg(
        "tokenizer.ggml.tokens of integers",
        &["model.gguf", "tokenizer.ggml.tokens"],
        &|p| {
            let n = 50257;
            p.set(
                "tokenizer.ggml.tokens",
                Value::Array((0..n).map(Value::U32).collect()),
            )
        },
    );
    gg(
        "general.alignment 0",
        &["model.gguf", "general.alignment"],
        &|p| p.set("general.alignment", Value::U32(0)),
    );
    gg(
        "general.alignment 3",
        &["model.gguf", "general.alignment"],
        &|p| p.set("general.alignment", Value::U32(3)),
    );
    gg(
        "general.alignment 2^40",
        &["model.gguf", "general.alignment"],
        &|p| p.set("general.alignment", Value::U64(1 << 40)),
    );
    gg(
        "a key twice",
        &["model.gguf", "gpt2.block_count", "twice"],
        &|p| p.metadata.push(("gpt2.block_count".into(), Value::U32(2))),
    );
    gg(
        "no blk.1.ffn_up.weight",
        &["missing", "h.1.mlp.c_fc.weight"],
        &|p| p.tensors.retain(|t| t.0 != "blk.1.ffn_up.weight"),
    );
    gg("no token_embd.weight", &["missing", "wte.weight"], &|p| {
        p.tensors.retain(|t| t.0 != "token_embd.weight")
    });
    gg(
        "position_embd [16, 32]",
        &["wpe.weight", "[16, 32]"],
        &|p| {
            let t = p.tensor_mut("position_embd.weight");
            t.2 = vec![16, 32];
            t.3.truncate(16 * 32 * 4);
        },
    );
    gg("output_norm.bias [16]", &["ln_f.bias", "[16]"], &|p| {
        let t = p.tensor_mut("output_norm.bias");
        t.2 = vec![16];
        t.3.truncate(16 * 4);
    });
    gg(
        "an unknown tensor",
        &["unexpected", "blk.0.ffn_gate.weight"],
        &|p| {
            let t = p.tensor_mut("blk.0.ffn_up.weight").clone();
            p.tensors
                .push(("blk.0.ffn_gate.weight".into(), t.1, t.2, t.3));
        },
    );
    gg(
        "a tensor name twice",
        &["model.gguf", "output_norm.bias", "twice"],
        &|p| {
            let t = p.tensor_mut("output_norm.bias").clone();
            p.tensors.push(t);
        },
    );
    gg(
        "output.weight differing from token_embd",
        &["model.gguf", "output.weight"],
        &|p| {
            let mut t = p.tensor_mut("token_embd.weight").clone();
            t.0 = "output.weight".into();
            t.3[2] ^= 1;
            p.tensors.push(t);
        },
    );
    // Raw patches: overlapping and misaligned offsets.
    let map = &b.gguf_map;
    let (t0, t1) = (&map.tensors[0], &map.tensors[1]);
    cases.push(case(
        "metadata",
        "GGUF two tensors at one offset",
        Run::Inspect,
        &["model.gguf", "overlap"],
        gguf_patched(&[(t1.offset_at, t0.offset.to_le_bytes().to_vec())]),
    ));
    cases.push(case(
        "metadata",
        "GGUF a misaligned offset",
        Run::Inspect,
        &["model.gguf", "alignment"],
        gguf_patched(&[(t1.offset_at, (t1.offset + 4).to_le_bytes().to_vec())]),
    ));

    // Hugging Face: config.json against the tensors, tensors missing or of the wrong shape.
    let config = read_json(&b.hf.join("config.json"));
    let mut hf = |name: &str, expect: &[&str], edit: &dyn Fn(&mut Json)| {
        let mut c = config.clone();
        edit(&mut c);
        cases.push(case(
            "metadata",
            format!("config.json {name}"),
            Run::Generate(None),
            expect,
            hf_with_file(&b.hf, "config.json", c.to_string().into_bytes()),
        ));
    };
    hf("vocab_size 50000", &["wte.weight"], &|c| {
        c["vocab_size"] = json!(50000)
    });
    hf("n_embd 80", &["wte.weight"], &|c| c["n_embd"] = json!(80));
    hf("n_layer 3", &["h.2."], &|c| c["n_layer"] = json!(3));
    hf("n_layer 1", &["h.1."], &|c| c["n_layer"] = json!(1));
    hf("n_positions 64", &["wpe.weight"], &|c| {
        c["n_positions"] = json!(64);
        c["n_ctx"] = json!(64);
    });
    let st = st_parse(&read(&b.hf.join("model.safetensors")));
    let mut sts = |name: &str, expect: &[&str], bytes: Vec<u8>| {
        cases.push(case(
            "metadata",
            format!("safetensors {name}"),
            Run::Generate(None),
            expect,
            hf_with_file(&b.hf, "model.safetensors", bytes),
        ));
    };
    sts(
        "without h.1.mlp.c_fc.bias",
        &["h.1.mlp.c_fc.bias", "missing"],
        st_rebuild(&st, |n| n != "h.1.mlp.c_fc.bias", &[]),
    );
    sts(
        "without wte.weight",
        &["wte.weight", "missing"],
        st_rebuild(&st, |n| n != "wte.weight", &[]),
    );
    let (s, _) = st_range(&st, "ln_f.weight");
    sts(
        "ln_f.weight of shape [20]",
        &["ln_f.weight"],
        st_rebuild(
            &st,
            |n| n != "ln_f.weight",
            &[(
                "ln_f.weight",
                json!({"dtype": "F32", "shape": [20]}),
                st.data[s..s + 80].to_vec(),
            )],
        ),
    );
    let (s, e) = st_range(&st, "h.0.attn.c_proj.weight");
    sts(
        "h.0.attn.c_proj.weight transposed-looking [20, 80]",
        &["h.0.attn.c_proj.weight"],
        st_rebuild(
            &st,
            |n| n != "h.0.attn.c_proj.weight",
            &[(
                "h.0.attn.c_proj.weight",
                json!({"dtype": "F32", "shape": [20, 80]}),
                st.data[s..e].to_vec(),
            )],
        ),
    );
    let (s, e) = st_range(&st, "wte.weight");
    let mut lm = st.data[s..e].to_vec();
    lm[5] ^= 1;
    sts(
        "lm_head.weight differing from wte.weight",
        &["lm_head.weight"],
        st_rebuild(
            &st,
            |_| true,
            &[(
                "lm_head.weight",
                json!({"dtype": "F32", "shape": [50257, 40]}),
                lm,
            )],
        ),
    );
    let (s, e) = st_range(&st, "h.0.ln_1.bias");
    sts(
        "an unknown tensor",
        &["h.0.ln_3.bias", "unexpected"],
        st_rebuild(
            &st,
            |_| true,
            &[(
                "h.0.ln_3.bias",
                json!({"dtype": "F32", "shape": [40]}),
                st.data[s..e].to_vec(),
            )],
        ),
    );

    // TensorFlow: hparams.json against the tensors; the index's entries.
    let hparams = read_json(&b.openai.join("hparams.json"));
    let mut hp = |name: &str, expect: &[&str], edit: &dyn Fn(&mut Json)| {
        let mut c = hparams.clone();
        edit(&mut c);
        cases.push(case(
            "metadata",
            format!("hparams.json {name}"),
            Run::Generate(None),
            expect,
            hf_with_file(&b.openai, "hparams.json", c.to_string().into_bytes()),
        ));
    };
    hp("n_vocab 50000", &["wte"], &|c| c["n_vocab"] = json!(50000));
    hp("n_layer 3", &["h.2."], &|c| c["n_layer"] = json!(3));
    hp("n_ctx 64", &["wpe"], &|c| c["n_ctx"] = json!(64));
    let index = tf::parse_index(&read(&b.openai.join("model.ckpt.index"))).expect("index");
    let mut ix_case =
        |name: &str, run: Run, expect: &[&str], edit: &dyn Fn(&mut tf::CheckpointIndex)| {
            let mut ix = index.clone();
            edit(&mut ix);
            cases.push(case(
                "metadata",
                format!("TF index {name}"),
                run,
                expect,
                hf_with_file(&b.openai, "model.ckpt.index", tf_index_bytes(&ix, None)),
            ));
        };
    ix_case(
        "without model/h1/mlp/c_fc/b",
        Run::Inspect,
        &["h.1.mlp.c_fc.bias"],
        &|ix| ix.entries.retain(|(n, _)| n != "model/h1/mlp/c_fc/b"),
    );
    ix_case(
        "model/ln_f/g of the wrong crc32c",
        Run::Verify,
        &["model/ln_f/g", "checksum"],
        &|ix| {
            for (n, e) in ix.entries.iter_mut() {
                if n == "model/ln_f/g" {
                    e.crc32c ^= 1;
                }
            }
        },
    );
    ix_case(
        "model/ln_f/g of the wrong crc32c (generate)",
        Run::Generate(None),
        &["model/ln_f/g", "checksum"],
        &|ix| {
            for (n, e) in ix.entries.iter_mut() {
                if n == "model/ln_f/g" {
                    e.crc32c ^= 1;
                }
            }
        },
    );
    ix_case(
        "model/wpe in shard 1 of 1",
        Run::Inspect,
        &["model/wpe", "shard"],
        &|ix| {
            for (n, e) in ix.entries.iter_mut() {
                if n == "model/wpe" {
                    e.shard_id = 1;
                }
            }
        },
    );
    ix_case(
        "num_shards 2 (one missing)",
        Run::Inspect,
        &["model.ckpt.data-00000-of-00002", "missing"],
        &|ix| ix.header.num_shards = 2,
    );
    ix_case(
        "big-endian",
        Run::Inspect,
        &["model.ckpt.index", "big-endian"],
        &|ix| ix.header.endianness = 1,
    );
    ix_case(
        "model/wte shape [40, 50257]",
        Run::Inspect,
        &["wte.weight"],
        &|ix| {
            for (n, e) in ix.entries.iter_mut() {
                if n == "model/wte" {
                    e.shape = vec![40, 50257];
                }
            }
        },
    );
    cases
}

/// The bytes of `v` in `dtype` ("F32", "F16").
fn value_bytes(dtype: &str, v: f32) -> Vec<u8> {
    match dtype {
        "F16" => {
            let bits: u16 = if v.is_nan() {
                0x7e00
            } else if v == f32::INFINITY {
                0x7c00
            } else {
                0xfc00
            };
            bits.to_le_bytes().to_vec()
        }
        _ => v.to_le_bytes().to_vec(),
    }
}

fn nonfinite() -> Vec<Case> {
    let b = bases();
    let mut cases = Vec::new();
    // Safetensors, f32 and f16 storage, computed in f32 and f16.
    for (base, label) in [(&b.hf, "f32"), (&b.f16, "f16")] {
        let bytes = read(&base.join("model.safetensors"));
        let st = st_parse(&bytes);
        let n = u64_at(&bytes, 0) as usize;
        for (tensor, v, index) in [
            ("ln_f.weight", f32::NAN, 3usize),
            ("h.0.attn.c_attn.bias", f32::INFINITY, 7),
            ("wpe.weight", f32::NEG_INFINITY, 100),
            ("h.1.mlp.c_fc.weight", f32::NAN, 1000),
            ("h.0.attn.c_proj.weight", f32::INFINITY, 5),
            ("wte.weight", f32::NAN, 40 * 464 + 3),
        ] {
            let dtype = st.header[tensor]["dtype"]
                .as_str()
                .expect("dtype")
                .to_string();
            let width = if dtype == "F16" { 2 } else { 4 };
            let (s, _) = st_range(&st, tensor);
            let mut patched = bytes.clone();
            let at = 8 + n + s + width * index;
            patched[at..at + width].copy_from_slice(&value_bytes(&dtype, v));
            for compute in ["f32", "f16"] {
                cases.push(case(
                    "nonfinite",
                    format!("{label} safetensors {tensor}[{index}] = {v}, computed in {compute}"),
                    Run::Generate(Some(compute)),
                    &[tensor],
                    hf_with_file(base, "model.safetensors", patched.clone()),
                ));
            }
        }
    }
    // GGUF: f32 vectors and Q8_0 block scales.
    let g = read(&b.gguf);
    let file = GgufFile::open(&b.gguf).expect("base GGUF");
    let data_offset = file.data_offset() as usize;
    for (tensor, canonical, v, at_in) in [
        ("output_norm.weight", "ln_f.weight", f32::NAN, 4 * 3),
        (
            "blk.0.attn_norm.bias",
            "h.0.ln_1.bias",
            f32::INFINITY,
            4 * 9,
        ),
        ("position_embd.weight", "wpe.weight", f32::NAN, 4 * 70),
        // A Q8_0 block is a f16 scale and 32 i8: the scale of block 5.
        (
            "blk.0.ffn_up.weight",
            "h.0.mlp.c_fc.weight",
            f32::NAN,
            34 * 5,
        ),
        (
            "blk.1.attn_qkv.weight",
            "h.1.attn.c_attn.weight",
            f32::INFINITY,
            34 * 2,
        ),
        ("token_embd.weight", "wte.weight", f32::NAN, 34 * 929),
    ] {
        let t = file.tensor(tensor).expect("tensor");
        let at = data_offset + t.offset as usize + at_in;
        let bytes = if t.ggml_type == GgmlType::Q8_0 {
            value_bytes("F16", v)
        } else {
            value_bytes("F32", v)
        };
        let mut patched = g.clone();
        patched[at..at + bytes.len()].copy_from_slice(&bytes);
        for compute in [None, Some("f32")] {
            cases.push(case(
                "nonfinite",
                format!(
                    "GGUF {tensor} ({}) = {v}, computed in {}",
                    t.ggml_type,
                    compute.unwrap_or("q8_0")
                ),
                Run::Generate(compute),
                &[canonical],
                gguf_with(patched.clone()),
            ));
        }
    }
    // TensorFlow: the checksum is right, the value is not.
    let shard = "model.ckpt.data-00000-of-00001";
    let index = tf::parse_index(&read(&b.openai.join("model.ckpt.index"))).expect("index");
    for (tensor, canonical, v, index_in) in [
        ("model/ln_f/b", "ln_f.bias", f32::NAN, 1usize),
        (
            "model/h0/mlp/c_proj/w",
            "h.0.mlp.c_proj.weight",
            f32::INFINITY,
            77,
        ),
    ] {
        let mut data = read(&b.openai.join(shard));
        let mut ix = index.clone();
        let e = &mut ix
            .entries
            .iter_mut()
            .find(|(n, _)| n == tensor)
            .expect("entry")
            .1;
        let at = e.offset as usize + 4 * index_in;
        data[at..at + 4].copy_from_slice(&v.to_le_bytes());
        e.crc32c = crc32c::crc32c(&data[e.offset as usize..(e.offset + e.size) as usize]);
        let index_bytes = Arc::new(tf_index_bytes(&ix, None));
        let data = Arc::new(data);
        let base = b.openai.clone();
        cases.push(case(
            "nonfinite",
            format!("TF {tensor}[{index_in}] = {v}"),
            Run::Generate(None),
            &[canonical],
            move |dir: &Path| {
                link_dir(&base, dir, &[shard, "model.ckpt.index"]);
                put(&dir.join(shard), &*data);
                put(&dir.join("model.ckpt.index"), &*index_bytes);
                dir.to_path_buf()
            },
        ));
    }
    cases
}

fn configs() -> Vec<Case> {
    let b = bases();
    let mut cases = Vec::new();
    let config = read_json(&b.hf.join("config.json"));
    let mut hf = |name: &str, expect: &[&str], text: String| {
        cases.push(case(
            "config",
            format!("config.json {name}"),
            Run::Generate(None),
            expect,
            hf_with_file(&b.hf, "config.json", text.into_bytes()),
        ));
    };
    let set = |key: &str, v: Json| {
        let mut c = config.clone();
        c[key] = v;
        c.to_string()
    };
    for (key, v, why) in [
        ("n_layer", json!(0), "n_layer"),
        ("n_layer", json!(5000), "n_layer"),
        ("n_layer", json!(1u64 << 62), "n_layer"),
        ("n_layer", json!(u64::MAX), "n_layer"),
        ("n_layer", json!(-2), "n_layer"),
        ("n_layer", json!(2.5), "n_layer"),
        ("n_layer", json!("2"), "n_layer"),
        ("n_layer", Json::Null, "n_layer"),
        ("n_head", json!(3), "n_head"),
        ("n_head", json!(0), "n_head"),
        ("n_head", json!(80), "n_head"),
        ("n_embd", json!(0), "n_embd"),
        ("n_embd", json!(1u64 << 40), "n_embd"),
        ("n_embd", json!([40]), "n_embd"),
        ("vocab_size", json!(1u64 << 40), "n_vocab"),
        ("vocab_size", json!(0), "n_vocab"),
        ("n_positions", json!(0), "n_ctx"),
        ("layer_norm_epsilon", json!(-1.0), "layer_norm_epsilon"),
        ("layer_norm_epsilon", json!(0.0), "layer_norm_epsilon"),
        ("layer_norm_epsilon", json!(1e-50), "layer_norm_epsilon"),
        ("layer_norm_epsilon", json!(1e39), "layer_norm_epsilon"),
        ("layer_norm_epsilon", json!("NaN"), "layer_norm_epsilon"),
        ("layer_norm_epsilon", json!("inf"), "layer_norm_epsilon"),
        ("activation_function", json!(5), "activation_function"),
        ("activation_function", json!("relu"), "activation_function"),
        ("n_inner", json!("big"), "n_inner"),
        ("n_inner", json!(100), "n_inner"),
    ] {
        hf(&format!("{key} = {v}"), &["config.json", why], set(key, v));
    }
    let mut c = config.to_string();
    c = c.replacen(
        "\"layer_norm_epsilon\":",
        "\"layer_norm_epsilon\": 1e999, \"x\":",
        1,
    );
    hf("layer_norm_epsilon = 1e999", &["config.json"], c);
    hf("a list", &["config.json"], "[]".into());
    hf("a string", &["config.json"], "\"gpt2\"".into());
    hf("empty", &["config.json"], String::new());
    hf(
        "cut short",
        &["config.json"],
        config.to_string()[..40].into(),
    );
    hf(
        "10 MB of spaces then garbage",
        &["config.json"],
        format!("{}x", " ".repeat(10 << 20)),
    );
    // hparams.json of the TensorFlow layout.
    let hparams = read_json(&b.openai.join("hparams.json"));
    let mut hp = |name: &str, expect: &[&str], text: String| {
        cases.push(case(
            "config",
            format!("hparams.json {name}"),
            Run::Generate(None),
            expect,
            hf_with_file(&b.openai, "hparams.json", text.into_bytes()),
        ));
    };
    for (key, v) in [
        ("n_layer", json!(0)),
        ("n_head", json!(3)),
        ("n_vocab", json!("x")),
        ("n_ctx", json!(1u64 << 40)),
        ("n_embd", json!(-40)),
    ] {
        let mut c = hparams.clone();
        c[key] = v.clone();
        hp(
            &format!("{key} = {v}"),
            &["hparams.json", key],
            c.to_string(),
        );
    }
    hp("a number", &["hparams.json"], "7".into());
    // GGUF hyperparameters.
    let mut gg = |name: &str, expect: &[&str], key: &str, v: Value| {
        let mut p = b.gguf_parts.clone();
        p.set(key, v);
        cases.push(case(
            "config",
            format!("GGUF {name}"),
            Run::Generate(None),
            expect,
            gguf_with(p.bytes()),
        ));
    };
    gg(
        "block_count 0",
        &["model.gguf", "n_layer"],
        "gpt2.block_count",
        Value::U32(0),
    );
    gg(
        "block_count 2^62",
        &["model.gguf", "n_layer"],
        "gpt2.block_count",
        Value::U64(1 << 62),
    );
    gg(
        "head_count 3",
        &["model.gguf", "n_head"],
        "gpt2.attention.head_count",
        Value::U32(3),
    );
    gg(
        "head_count -4",
        &["model.gguf", "gpt2.attention.head_count"],
        "gpt2.attention.head_count",
        Value::I32(-4),
    );
    gg(
        "context_length 0",
        &["model.gguf", "n_ctx"],
        "gpt2.context_length",
        Value::U32(0),
    );
    let eps = "gpt2.attention.layer_norm_epsilon";
    gg(
        "eps NaN",
        &["model.gguf", "layer_norm_epsilon"],
        eps,
        Value::F32(f32::NAN),
    );
    gg(
        "eps inf",
        &["model.gguf", "layer_norm_epsilon"],
        eps,
        Value::F32(f32::INFINITY),
    );
    gg(
        "eps -1",
        &["model.gguf", "layer_norm_epsilon"],
        eps,
        Value::F64(-1.0),
    );
    gg(
        "eps a string",
        &["model.gguf", eps],
        eps,
        Value::String("1e-5".into()),
    );
    cases
}

fn tokenizers() -> Vec<Case> {
    let b = bases();
    let mut cases = Vec::new();
    let encoder: serde_json::Map<String, Json> = match read_json(&b.encoder) {
        Json::Object(m) => m,
        _ => panic!("encoder.json is a map"),
    };
    let vocab = read(&b.vocab_bpe);
    // An OpenAI-layout model directory with these tokenizer files.
    let mut oa = |name: &str, expect: &[&str], enc: Vec<u8>, bpe: Vec<u8>| {
        let base = b.openai.clone();
        let (enc, bpe) = (Arc::new(enc), Arc::new(bpe));
        cases.push(case(
            "tokenizer",
            format!("encoder.json + vocab.bpe: {name}"),
            Run::Generate(None),
            expect,
            move |dir: &Path| {
                link_dir(&base, dir, &[]);
                put(&dir.join("encoder.json"), &*enc);
                put(&dir.join("vocab.bpe"), &*bpe);
                dir.to_path_buf()
            },
        ));
    };
    let enc_text = |m: &serde_json::Map<String, Json>| Json::Object(m.clone()).to_string();
    oa(
        "encoder.json a list",
        &["encoder.json"],
        b"[1, 2, 3]".to_vec(),
        vocab.clone(),
    );
    oa(
        "encoder.json not JSON",
        &["encoder.json"],
        b"{\"a\": 1,".to_vec(),
        vocab.clone(),
    );
    let mut m = encoder.clone();
    m.insert("\u{120}the".into(), json!(99999));
    oa(
        "an id out of range",
        &["encoder.json"],
        enc_text(&m).into_bytes(),
        vocab.clone(),
    );
    let mut m = encoder.clone();
    m.insert("\u{120}the".into(), json!(5));
    oa(
        "an id twice",
        &["encoder.json"],
        enc_text(&m).into_bytes(),
        vocab.clone(),
    );
    let mut m = encoder.clone();
    m.insert("\u{120}the".into(), json!(-1));
    oa(
        "a negative id",
        &["encoder.json"],
        enc_text(&m).into_bytes(),
        vocab.clone(),
    );
    let mut m = encoder.clone();
    m.insert("\u{120}the".into(), json!("262"));
    oa(
        "an id that is a string",
        &["encoder.json"],
        enc_text(&m).into_bytes(),
        vocab.clone(),
    );
    let mut m = encoder.clone();
    m.insert("\u{120}the".into(), json!(1u64 << 40));
    oa(
        "an id of 2^40",
        &["encoder.json"],
        enc_text(&m).into_bytes(),
        vocab.clone(),
    );
    // A duplicated key: the JSON text names one token twice, with two ids.
    let text = enc_text(&encoder);
    let dup = text.replacen('{', "{\"!\": 50000, ", 1);
    oa(
        "a token twice",
        &["encoder.json"],
        dup.into_bytes(),
        vocab.clone(),
    );
    let mut lines: Vec<&[u8]> = vocab.split(|&c| c == b'\n').collect();
    let with_line = |at: usize, line: &'static [u8]| {
        let mut l = lines.clone();
        l[at] = line;
        l.join(&b'\n')
    };
    let three = with_line(5, b"a b c");
    let one = with_line(7, b"abc");
    let unknown = with_line(9, b"\xe2\x82\xac\xe2\x82\xac q");
    let invalid_utf8 = with_line(11, b"\xff\xfe \x80");
    oa(
        "a merge of three tokens",
        &["vocab.bpe"],
        text.clone().into_bytes(),
        three,
    );
    oa(
        "a merge of one token",
        &["vocab.bpe"],
        text.clone().into_bytes(),
        one,
    );
    oa(
        "a merge of unknown tokens",
        &["vocab.bpe"],
        text.clone().into_bytes(),
        unknown,
    );
    oa(
        "a line that is not UTF-8",
        &["vocab.bpe"],
        text.clone().into_bytes(),
        invalid_utf8,
    );
    let long = vec![b'a'; 10 << 20];
    lines.insert(3, &long);
    oa(
        "a 10 MB line",
        &["vocab.bpe"],
        text.clone().into_bytes(),
        lines.join(&b'\n'),
    );
    // Fewer tokens than the model's vocabulary: the 256 byte tokens, no merges.
    let bytes_only: serde_json::Map<String, Json> = encoder
        .iter()
        .filter(|(_, v)| v.as_u64().is_some_and(|id| id < 256))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    oa(
        "256 tokens for a vocabulary of 50257",
        &["256", "50257"],
        enc_text(&bytes_only).into_bytes(),
        b"#version: 0.2\n".to_vec(),
    );
    // Hugging Face layouts.
    let mut hf = |name: &str, expect: &[&str], files: Vec<(&'static str, Vec<u8>)>| {
        let base = b.hf.clone();
        let files = Arc::new(files);
        cases.push(case(
            "tokenizer",
            format!("HF tokenizer: {name}"),
            Run::Generate(None),
            expect,
            move |dir: &Path| {
                link_dir(&base, dir, &[]);
                for (f, bytes) in files.iter() {
                    put(&dir.join(f), bytes);
                }
                dir.to_path_buf()
            },
        ));
    };
    hf(
        "vocab.json without merges.txt",
        &["merges.txt"],
        vec![("vocab.json", text.clone().into_bytes())],
    );
    hf(
        "vocab.json a number",
        &["vocab.json"],
        vec![
            ("vocab.json", b"42".to_vec()),
            ("merges.txt", vocab.clone()),
        ],
    );
    hf(
        "tokenizer.json not JSON",
        &["tokenizer.json"],
        vec![("tokenizer.json", b"{\"model\": ".to_vec())],
    );
    hf(
        "tokenizer.json without a model",
        &["tokenizer.json"],
        vec![("tokenizer.json", b"{}".to_vec())],
    );
    hf(
        "tokenizer.json vocab a list",
        &["tokenizer.json"],
        vec![(
            "tokenizer.json",
            json!({"model": {"type": "BPE", "vocab": [1, 2], "merges": []}})
                .to_string()
                .into_bytes(),
        )],
    );
    hf(
        "tokenizer.json a WordPiece model",
        &["tokenizer.json"],
        vec![(
            "tokenizer.json",
            json!({"model": {"type": "WordPiece", "vocab": {"a": 0}}})
                .to_string()
                .into_bytes(),
        )],
    );
    hf(
        "tokenizer.json merges not strings",
        &["tokenizer.json"],
        vec![(
            "tokenizer.json",
            json!({"model": {"type": "BPE", "vocab": encoder, "merges": [1, 2]}})
                .to_string()
                .into_bytes(),
        )],
    );
    cases
}

/// Conversions of bad inputs: each must fail and leave nothing in the output folder.
fn conversions() -> Vec<Case> {
    let b = bases();
    let mut cases = Vec::new();
    let st = read(&b.hf.join("model.safetensors"));
    for (at, dtype) in [(9, "f32"), (st.len() / 2, "f16"), (st.len() - 1, "bf16")] {
        cases.push(case(
            "convert",
            format!("safetensors cut at {at} to {dtype}"),
            Run::Convert(dtype),
            &["model.safetensors"],
            hf_with_file(&b.hf, "model.safetensors", st[..at].to_vec()),
        ));
    }
    let index = tf::parse_index(&read(&b.openai.join("model.ckpt.index"))).expect("index");
    let mut ix = index.clone();
    for (n, e) in ix.entries.iter_mut() {
        if n == "model/ln_f/b" {
            e.crc32c ^= 1;
        }
    }
    for dtype in ["f32", "f16"] {
        cases.push(case(
            "convert",
            format!("TF model/ln_f/b of the wrong crc32c to {dtype}"),
            Run::Convert(dtype),
            &["model/ln_f/b"],
            hf_with_file(&b.openai, "model.ckpt.index", tf_index_bytes(&ix, None)),
        ));
    }
    let g = read(&b.gguf);
    for (at, dtype) in [(g.len() / 3, "f32"), (g.len() - 5, "q8_0")] {
        cases.push(case(
            "convert",
            format!("GGUF cut at {at} to {dtype}"),
            Run::Convert(dtype),
            &["model.gguf"],
            gguf_with(g[..at].to_vec()),
        ));
    }
    // A NaN or a too large weight cannot be quantized.
    let bytes = read(&b.hf32.join("model.safetensors"));
    let parsed = st_parse(&bytes);
    let n = u64_at(&bytes, 0) as usize;
    for (tensor, v) in [
        ("h.1.mlp.c_fc.weight", f32::NAN),
        ("wte.weight", f32::INFINITY),
        ("h.0.attn.c_proj.weight", 1e38),
    ] {
        let (s, _) = st_range(&parsed, tensor);
        let mut patched = bytes.clone();
        let at = 8 + n + s + 4 * 17;
        patched[at..at + 4].copy_from_slice(&v.to_le_bytes());
        cases.push(case(
            "convert",
            format!("{tensor} = {v} to q8_0"),
            Run::Convert("q8_0"),
            &[tensor],
            hf_with_file(&b.hf32, "model.safetensors", patched),
        ));
    }
    // Too large for f16.
    let st_tiny = st_parse(&st);
    let n = u64_at(&st, 0) as usize;
    let (s, _) = st_range(&st_tiny, "h.0.mlp.c_fc.weight");
    let mut patched = st.clone();
    patched[8 + n + s..8 + n + s + 4].copy_from_slice(&1e6f32.to_le_bytes());
    cases.push(case(
        "convert",
        "h.0.mlp.c_fc.weight = 1e6 to f16",
        Run::Convert("f16"),
        &["h.0.mlp.c_fc.weight", "f16"],
        hf_with_file(&b.hf, "model.safetensors", patched),
    ));
    // A bad config, a bad tokenizer (q8_0 stores it).
    let mut c = read_json(&b.hf32.join("config.json"));
    c["n_head"] = json!(5);
    cases.push(case(
        "convert",
        "config.json n_head 5 to q8_0",
        Run::Convert("q8_0"),
        &["config.json", "n_head"],
        hf_with_file(&b.hf32, "config.json", c.to_string().into_bytes()),
    ));
    let base = b.hf32.clone();
    cases.push(case(
        "convert",
        "tokenizer.json not JSON to q8_0",
        Run::Convert("q8_0"),
        &["tokenizer.json"],
        move |dir: &Path| {
            link_dir(&base, dir, &[]);
            put(&dir.join("tokenizer.json"), b"{\"model\"");
            dir.to_path_buf()
        },
    ));
    let base = b.hf32.clone();
    let enc = b.encoder.clone();
    cases.push(case(
        "convert",
        "vocab.bpe a 10 MB line to q8_0",
        Run::Convert("q8_0"),
        &["vocab.bpe"],
        move |dir: &Path| {
            link_dir(&base, dir, &[]);
            std::fs::copy(&enc, dir.join("encoder.json")).expect("copy encoder.json");
            let mut bpe = b"#version: 0.2\n".to_vec();
            bpe.extend(std::iter::repeat_n(b'x', 10 << 20));
            put(&dir.join("vocab.bpe"), bpe);
            dir.to_path_buf()
        },
    ));
    cases
}

fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(truncations());
    cases.extend(lengths());
    cases.extend(dims());
    cases.extend(types());
    cases.extend(metadata());
    cases.extend(nonfinite());
    cases.extend(configs());
    cases.extend(tokenizers());
    cases.extend(conversions());
    cases
}

fn counts(cases: &[Case]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for c in cases {
        *m.entry(c.family).or_insert(0) += 1;
    }
    m
}

#[test]
fn every_bad_input_is_refused_cleanly() {
    let cases = all_cases();
    let by_family = counts(&cases);
    eprintln!("bad-input cases per family:");
    for (family, n) in &by_family {
        eprintln!("  {family:10} {n}");
    }
    eprintln!("  {:10} {}", "total", cases.len());
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let start = Instant::now();
    let refs: Vec<&Case> = cases.iter().collect();
    let report = run_all(&refs, root.path());
    eprintln!(
        "{} cases in {:.1}s ({} refused cleanly, {} not)",
        cases.len(),
        start.elapsed().as_secs_f64(),
        report.passed.len(),
        report.failed.len()
    );
    let mut slowest = report.passed.clone();
    slowest.sort_by_key(|b| std::cmp::Reverse(b.1));
    for (name, t) in slowest.iter().take(3) {
        eprintln!("  slowest: {name} ({:.2}s)", t.as_secs_f64());
    }
    let failed: Vec<String> = report
        .failed
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} case(s) not refused cleanly:\n{}",
        failed.len(),
        failed.join("\n")
    );
    let want: BTreeMap<&str, usize> = FAMILY_COUNTS.iter().copied().collect();
    assert_eq!(
        by_family, want,
        "case counts per family changed: update FAMILY_COUNTS and the README's table"
    );
}
