//! First-run download through the CLI: `gpt2 generate --model 124M --models-dir DIR` with no
//! local copy fetches OpenAI's files from a local HTTP server (`GPT2_OPENAI_BASE_URL`),
//! converts them, and generates the reference text; `--offline` fails fast and says what to do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn repo() -> PathBuf {
    gpt2_tests::root()
}

/// `gpt2` with no ambient model locations: only what the test passes is used.
fn gpt2(home: &Path) -> Command {
    let mut cmd = Command::new(gpt2_tests::gpt2_bin());
    cmd.env_remove("GPT2_MODELS_DIR")
        .env_remove("GPT2_OPENAI_BASE_URL")
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .current_dir(home);
    cmd
}

/// Serves `files` (URL path -> bytes) on 127.0.0.1 (random port); returns the base URL and
/// the log of requested paths.
fn serve(files: Vec<(String, Vec<u8>)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = server.server_addr().to_ip().expect("ip").port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let path = request.url().to_string();
            seen.lock().unwrap().push(path.clone());
            let response = match files.iter().find(|(p, _)| *p == path) {
                Some((_, bytes)) => tiny_http::Response::from_data(bytes.clone()),
                None => tiny_http::Response::from_data(Vec::new()).with_status_code(404),
            };
            let _ = request.respond(response);
        }
    });
    (format!("http://127.0.0.1:{port}"), log)
}

#[test]
fn generate_downloads_a_missing_model_then_runs_it() {
    let openai = repo().join("fixtures/tiny/openai");
    let vocab = repo().join("crates/gpt2-tokenizer/data");
    if !openai.join("hparams.json").is_file() || !vocab.join("encoder.json").is_file() {
        eprintln!("skipped: fixtures/tiny/openai or crates/gpt2-tokenizer/data is missing");
        return;
    }
    let mut files = Vec::new();
    for dir in [&openai, &vocab] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            files.push((format!("/124M/{name}"), std::fs::read(&path).unwrap()));
        }
    }
    let (base, log) = serve(files);
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("fixtures/tiny/reference.json")).unwrap(),
    )
    .unwrap();
    let prompt = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["text"] == "The")
        .expect("a prompt \"The\" in fixtures/tiny/reference.json");
    let expected = prompt["greedy"]["text"].as_str().unwrap();
    let n = prompt["greedy"]["max_new_tokens"]
        .as_u64()
        .unwrap()
        .to_string();

    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let run = || {
        gpt2(tmp.path())
            .env("GPT2_OPENAI_BASE_URL", &base)
            .args([
                "generate",
                "The",
                "--model",
                "124M",
                "--greedy",
                "--ignore-eos",
                "-n",
                &n,
            ])
            .arg("--models-dir")
            .arg(&models)
            .output()
            .unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gpt2 generate failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(expected),
        "expected {expected:?} in {stdout:?}"
    );
    assert!(models.join("124M/model.safetensors").is_file());
    assert!(
        stderr.contains("124M"),
        "no download progress on stderr: {stderr}"
    );
    let fetched = log.lock().unwrap().len();
    assert_eq!(fetched, 7, "{:?}", log.lock().unwrap());

    // Second run: the model is found, nothing is fetched, same text.
    let out = run();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(expected));
    assert_eq!(log.lock().unwrap().len(), fetched);
}

#[test]
fn offline_without_the_model_fails_with_the_ways_out() {
    let tmp = tempfile::tempdir().unwrap();
    let out = gpt2(tmp.path())
        .args([
            "generate",
            "Hello",
            "--model",
            "gpt2-medium",
            "--offline",
            "--models-dir",
        ])
        .arg(tmp.path().join("empty"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cargo xtask fetch-models --size 355M"),
        "{stderr}"
    );
    assert!(stderr.contains("--model DIR"), "{stderr}");
    assert!(!tmp.path().join("empty/355M").exists());
}
