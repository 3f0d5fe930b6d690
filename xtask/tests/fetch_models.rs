//! `cargo xtask fetch-models` end to end against a local HTTP server: the plain progress
//! lines (stderr is not a terminal here), the printed directory, a re-run that downloads
//! nothing, `--keep-original`, and the error for a bad size.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.env_remove("GPT2_OPENAI_BASE_URL");
    cmd
}

/// Serves `/124M/<file>` for the micro fixture plus the real tokenizer files; `None` when
/// they are not in the checkout.
fn serve() -> Option<String> {
    let model = repo().join("fixtures/micro/openai");
    let vocab = repo().join("crates/gpt2-tokenizer/data");
    if !model.join("hparams.json").is_file() || !vocab.join("encoder.json").is_file() {
        eprintln!("skipped: fixtures/micro/openai or crates/gpt2-tokenizer/data is missing");
        return None;
    }
    let mut files = Vec::new();
    for (dir, names) in [
        (
            &model,
            &[
                "checkpoint",
                "hparams.json",
                "model.ckpt.data-00000-of-00001",
                "model.ckpt.index",
                "model.ckpt.meta",
            ][..],
        ),
        (&vocab, &["encoder.json", "vocab.bpe"][..]),
    ] {
        for name in names {
            files.push((format!("/124M/{name}"), std::fs::read(dir.join(name)).ok()?));
        }
    }
    let server = tiny_http::Server::http("127.0.0.1:0").ok()?;
    let port = server.server_addr().to_ip()?.port();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let response = match files.iter().find(|(p, _)| p == request.url()) {
                Some((_, bytes)) => tiny_http::Response::from_data(bytes.clone()),
                None => tiny_http::Response::from_data(Vec::new()).with_status_code(404),
            };
            let _ = request.respond(response);
        }
    });
    Some(format!("http://127.0.0.1:{port}"))
}

#[test]
fn fetch_models_prints_progress_lines_and_the_directory() {
    let Some(base) = serve() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models");
    let run = |extra: &[&str]| {
        xtask()
            .args([
                "fetch-models",
                "--size",
                "124M",
                "--base-url",
                &base,
                "--dir",
            ])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };

    let out = run(&["--keep-original"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dir.join("124M").display().to_string()
    );
    for file in [
        "checkpoint",
        "encoder.json",
        "model.ckpt.data-00000-of-00001",
        "vocab.bpe",
    ] {
        assert!(
            stderr.contains(&format!("downloading 124M/{file}")),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("done 124M/{file}")), "{stderr}");
    }
    assert!(stderr.contains("verifying the checkpoint"), "{stderr}");
    assert!(dir.join("124M/model.safetensors").is_file());
    assert!(dir.join("124M-openai/model.ckpt.index").is_file());

    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("already present"), "{stderr}");
    assert!(!stderr.contains("downloading 124M/"), "{stderr}");
}

#[test]
fn a_bad_size_is_a_usage_error() {
    let out = xtask()
        .args(["fetch-models", "--size", "999M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("124M, 355M, 774M, 1558M"), "{stderr}");
}
