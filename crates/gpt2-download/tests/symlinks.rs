//! Symbolic links (and other non-files) planted in the download folder: a fetch refuses them,
//! naming the path, and writes nothing through them; the file they point at is untouched.
#![cfg(unix)]

mod support;

use std::path::Path;
use std::time::Duration;

use gpt2_download::{fetch_model, DownloadError, FetchOptions, ModelSize};
use support::{real_vocab, repo_path, Server};

const DATA: &str = "model.ckpt.data-00000-of-00001";

/// A server with the micro fixture as "124M", or `None` when the tokenizer files are absent.
fn server() -> Option<Server> {
    let Some((encoder, vocab)) = real_vocab() else {
        eprintln!("skipped: no encoder.json/vocab.bpe");
        return None;
    };
    let server = Server::start();
    server.put_openai(
        "124M",
        &repo_path("fixtures/micro/openai"),
        &[("encoder.json", encoder), ("vocab.bpe", vocab)],
    );
    Some(server)
}

fn options(server: &Server, models: &Path) -> FetchOptions {
    let mut opts = FetchOptions::new(models);
    opts.openai_base_url = server.base.clone();
    opts.progress = false;
    opts.connect_timeout = Duration::from_secs(5);
    opts.read_timeout = Duration::from_millis(500);
    opts.retries = 0;
    opts
}

/// Plants `link` -> `target` in `<models>/.124M.download/`, fetches, and checks the refusal.
fn refused_with(models: &Path, server: &Server, link: &str, target: &Path) -> String {
    let staging = models.join(".124M.download");
    std::fs::create_dir_all(&staging).unwrap();
    let planted = staging.join(link);
    std::os::unix::fs::symlink(target, &planted).unwrap();
    let err = fetch_model(ModelSize::Small124M, &options(server, models)).unwrap_err();
    assert!(
        matches!(&err, DownloadError::NotARegularFile { path, found } if *path == planted && *found == "a symbolic link"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&planted.display().to_string()) && msg.contains("symbolic link"),
        "{msg}"
    );
    // The link is left as it was, and no model appeared.
    assert_eq!(std::fs::read_link(&planted).unwrap(), target);
    assert!(!models.join("124M").exists());
    msg
}

#[test]
fn a_symlinked_part_file_is_refused_and_its_target_untouched() {
    let Some(server) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim.bin");
    std::fs::write(&victim, b"precious bytes").unwrap();
    let models = tmp.path().join("models");
    refused_with(&models, &server, &format!("{DATA}.part"), &victim);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious bytes");
}

#[test]
fn a_dangling_symlinked_part_file_creates_nothing() {
    let Some(server) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("outside-new-file");
    let models = tmp.path().join("models");
    refused_with(&models, &server, "hparams.json.part", &target);
    assert!(target.symlink_metadata().is_err(), "a file was created");
}

#[test]
fn a_symlinked_destination_is_refused() {
    let Some(server) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.json");
    std::fs::write(&victim, b"{}").unwrap();
    let models = tmp.path().join("models");
    refused_with(&models, &server, "hparams.json", &victim);
    assert_eq!(std::fs::read(&victim).unwrap(), b"{}");
    assert!(!models.join(".124M.download/hparams.json.part").exists());
}

#[test]
fn a_directory_at_the_part_path_is_refused() {
    let Some(server) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let part = models.join(".124M.download/checkpoint.part");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join("inside"), b"x").unwrap();
    let err = fetch_model(ModelSize::Small124M, &options(&server, &models)).unwrap_err();
    assert!(
        matches!(&err, DownloadError::NotARegularFile { path, found: "a directory" } if *path == part),
        "{err:?}"
    );
    assert_eq!(std::fs::read(part.join("inside")).unwrap(), b"x");
}

#[test]
fn a_regular_part_file_is_still_resumed_and_then_the_fetch_succeeds() {
    let Some(server) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let staging = models.join(".124M.download");
    std::fs::create_dir_all(&staging).unwrap();
    let data = std::fs::read(repo_path("fixtures/micro/openai").join(DATA)).unwrap();
    std::fs::write(staging.join(format!("{DATA}.part")), &data[..1000]).unwrap();
    let dir = fetch_model(ModelSize::Small124M, &options(&server, &models)).unwrap();
    assert!(dir.join("model.safetensors").is_file());
    let reqs = server.requests_for(&format!("/124M/{DATA}"));
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=1000-"));
}
