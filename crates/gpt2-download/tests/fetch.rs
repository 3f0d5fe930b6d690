//! End-to-end fetches against a real HTTP server on 127.0.0.1 (no internet needed):
//! OpenAI's layout (download, sha256, crc32c, convert, load) and the hub's (through
//! hf-hub), resume, error statuses, corruption, refused connections, concurrent fetches.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpt2_download::{
    fetch_model, resolve_model, DownloadError, FetchOptions, ModelSize, ResolveOptions, Source,
    OPENAI_FILES,
};
use gpt2_weights::{Layout, Weights};
use support::{real_vocab, repo_path, Fault, Server};

const DATA: &str = "/124M/model.ckpt.data-00000-of-00001";

/// The model served as "124M": the committed micro fixture (OpenAI layout) with OpenAI's
/// real tokenizer files (their sha256 is checked).
struct Fixture {
    openai_dir: PathBuf,
    hf_dir: PathBuf,
    encoder: Vec<u8>,
    vocab: Vec<u8>,
}

fn fixture() -> Option<Fixture> {
    let openai_dir = repo_path("fixtures/micro/openai");
    let hf_dir = repo_path("fixtures/micro/hf");
    if !openai_dir.join("hparams.json").is_file() || !hf_dir.join("config.json").is_file() {
        eprintln!("skipped: fixtures/micro is missing");
        return None;
    }
    let Some((encoder, vocab)) = real_vocab() else {
        eprintln!("skipped: no encoder.json/vocab.bpe (crates/gpt2-tokenizer/data or ../shared)");
        return None;
    };
    Some(Fixture {
        openai_dir,
        hf_dir,
        encoder,
        vocab,
    })
}

fn openai_server(fx: &Fixture) -> Server {
    let server = Server::start();
    server.put_openai(
        "124M",
        &fx.openai_dir,
        &[
            ("encoder.json", fx.encoder.clone()),
            ("vocab.bpe", fx.vocab.clone()),
        ],
    );
    server
}

fn options(server: &Server, models: &Path) -> FetchOptions {
    let mut opts = FetchOptions::new(models);
    opts.openai_base_url = server.base.clone();
    opts.hf_endpoint = Some(server.base.clone());
    opts.progress = false;
    opts.connect_timeout = Duration::from_secs(5);
    opts.read_timeout = Duration::from_millis(500);
    opts.retries = 2;
    opts.retry_delay = Duration::from_millis(20);
    opts
}

fn data_len(fx: &Fixture) -> u64 {
    std::fs::metadata(fx.openai_dir.join("model.ckpt.data-00000-of-00001"))
        .unwrap()
        .len()
}

/// The directory is a complete, verified HF-layout model with the fixture's numbers.
fn assert_loadable(dir: &Path, fx: &Fixture) {
    let w = Weights::open(dir).unwrap();
    w.verify().unwrap();
    assert_eq!(w.layout(), Layout::HuggingFace);
    let original = Weights::open(&fx.openai_dir).unwrap();
    assert_eq!(w.config(), original.config());
    for name in original.names() {
        assert_eq!(
            w.tensor(name).unwrap().to_f32_vec(),
            original.tensor(name).unwrap().to_f32_vec(),
            "{name}"
        );
    }
}

/// Nothing that looks like a finished model, and no converted leftovers.
fn assert_absent(models: &Path) {
    assert!(!models.join("124M").exists(), "a model directory appeared");
}

#[test]
fn openai_fetch_converts_verifies_and_reruns_download_nothing() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");

    let dir = fetch_model(ModelSize::Small124M, &options(&server, &models)).unwrap();
    assert_eq!(dir, models.join("124M"));
    assert_loadable(&dir, &fx);
    assert_eq!(std::fs::read(dir.join("vocab.json")).unwrap(), fx.encoder);
    assert_eq!(std::fs::read(dir.join("merges.txt")).unwrap(), fx.vocab);
    // Each of the seven files fetched once, in full; the originals were removed.
    for file in OPENAI_FILES {
        let reqs = server.requests_for(&format!("/124M/{file}"));
        assert_eq!(reqs.len(), 1, "{file}: {reqs:?}");
        assert_eq!(reqs[0].status, 200);
    }
    assert!(!models.join("124M-openai").exists());
    assert!(!models.join(".124M.download").exists());

    // Again: nothing is downloaded.
    let before = server.log().len();
    let again = fetch_model(ModelSize::Small124M, &options(&server, &models)).unwrap();
    assert_eq!(again, dir);
    assert_eq!(server.log().len(), before);

    // Offline, the model is found without the server.
    let mut offline = options(&server, &models);
    offline.offline = true;
    offline.openai_base_url = "http://127.0.0.1:1".into();
    assert_eq!(fetch_model(ModelSize::Small124M, &offline).unwrap(), dir);
}

#[test]
fn keep_original_keeps_openais_files() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(&server, tmp.path());
    opts.keep_original = true;
    let dir = fetch_model(ModelSize::Small124M, &opts).unwrap();
    assert_loadable(&dir, &fx);
    let original = tmp.path().join("124M-openai");
    for file in OPENAI_FILES {
        assert!(original.join(file).is_file(), "{file}");
    }
    assert_eq!(Weights::open(&original).unwrap().layout(), Layout::OpenAi);
}

#[test]
fn a_transfer_cut_off_halfway_resumes_in_the_next_run() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let total = data_len(&fx);
    let half = (total / 2) as usize;
    server.fault(
        DATA,
        Fault::Stall {
            after: half,
            times: 1,
        },
    );

    let mut opts = options(&server, tmp.path());
    opts.retries = 0;
    let err = fetch_model(ModelSize::Small124M, &opts).unwrap_err();
    assert!(
        matches!(err, DownloadError::Transfer { received, .. } if received == half as u64),
        "{err:?}"
    );
    assert_absent(tmp.path());
    let part = tmp
        .path()
        .join(".124M.download/model.ckpt.data-00000-of-00001.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), half as u64);

    let dir = fetch_model(ModelSize::Small124M, &opts).unwrap();
    assert_loadable(&dir, &fx);
    let reqs = server.requests_for(DATA);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    assert_eq!(reqs[1].status, 206);
    // The bytes already there were not fetched again.
    let sent: u64 = reqs.iter().map(|r| r.body_bytes).sum();
    assert_eq!(sent, total);
    // The other files were not fetched twice either.
    assert_eq!(server.requests_for("/124M/encoder.json").len(), 1);
}

#[test]
fn a_stalled_transfer_is_retried_from_where_it_stopped() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let total = data_len(&fx);
    let third = (total / 3) as usize;
    server.fault(
        DATA,
        Fault::Stall {
            after: third,
            times: 1,
        },
    );

    let dir = fetch_model(ModelSize::Small124M, &options(&server, tmp.path())).unwrap();
    assert_loadable(&dir, &fx);
    let reqs = server.requests_for(DATA);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={third}-").as_str())
    );
    assert_eq!(reqs.iter().map(|r| r.body_bytes).sum::<u64>(), total);
}

#[test]
fn a_server_that_ignores_range_restarts_the_file_and_a_complete_part_is_kept() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join(".124M.download");
    std::fs::create_dir_all(&staging).unwrap();
    let data = std::fs::read(fx.openai_dir.join("model.ckpt.data-00000-of-00001")).unwrap();
    let hparams = std::fs::read(fx.openai_dir.join("hparams.json")).unwrap();
    // As an interrupted run leaves them: a prefix of the data file, a whole hparams.json
    // not yet renamed.
    std::fs::write(
        staging.join("model.ckpt.data-00000-of-00001.part"),
        &data[..100],
    )
    .unwrap();
    std::fs::write(staging.join("hparams.json.part"), &hparams).unwrap();
    server.fault(DATA, Fault::IgnoreRange { times: 1 });

    let dir = fetch_model(ModelSize::Small124M, &options(&server, tmp.path())).unwrap();
    assert_loadable(&dir, &fx);
    // The data file was asked from byte 100, got the whole file (200) and started over.
    let reqs = server.requests_for(DATA);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=100-"));
    assert_eq!(reqs[0].status, 200);
    // hparams.json: the server said 416 (nothing after the end), so the part was complete.
    let reqs = server.requests_for("/124M/hparams.json");
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].status, 416);
}

#[test]
fn not_found_is_not_retried() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    server.remove("/124M/model.ckpt.meta");
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch_model(ModelSize::Small124M, &options(&server, tmp.path())).unwrap_err();
    match &err {
        DownloadError::NotFound { url } => assert!(url.ends_with("/124M/model.ckpt.meta"), "{url}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(server.requests_for("/124M/model.ckpt.meta").len(), 1);
    assert_absent(tmp.path());
}

#[test]
fn server_errors_are_retried_then_reported() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let tmp = tempfile::tempdir().unwrap();

    // Always 500: 1 try + 2 retries, then an error naming the status.
    server.fault(
        "/124M/hparams.json",
        Fault::Status {
            status: 500,
            times: 100,
        },
    );
    let err = fetch_model(ModelSize::Small124M, &options(&server, tmp.path())).unwrap_err();
    assert!(
        matches!(err, DownloadError::HttpStatus { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("after 2 retries"), "{err}");
    assert_eq!(server.requests_for("/124M/hparams.json").len(), 3);
    assert_absent(tmp.path());

    // 503 twice, then fine: the fetch succeeds and files already downloaded are not refetched.
    server.fault(
        "/124M/hparams.json",
        Fault::Status {
            status: 503,
            times: 2,
        },
    );
    let dir = fetch_model(ModelSize::Small124M, &options(&server, tmp.path())).unwrap();
    assert_loadable(&dir, &fx);
    assert_eq!(server.requests_for("/124M/hparams.json").len(), 6);
    assert_eq!(server.requests_for("/124M/checkpoint").len(), 1);
}

#[test]
fn a_corrupted_tokenizer_file_is_refused_and_removed() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let mut bad = fx.vocab.clone();
    let last = bad.len() - 2;
    bad[last] ^= 0x20;
    server.put("/124M/vocab.bpe", bad);
    let tmp = tempfile::tempdir().unwrap();

    let err = fetch_model(ModelSize::Small124M, &options(&server, tmp.path())).unwrap_err();
    match &err {
        DownloadError::ChecksumMismatch {
            algorithm,
            expected,
            ..
        } => {
            assert_eq!(*algorithm, "sha256");
            assert_eq!(expected, gpt2_download::VOCAB_BPE_SHA256);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert_absent(tmp.path());
    assert!(!tmp.path().join(".124M.download/vocab.bpe").exists());

    // Fixed on the server: the next run fetches only that file again.
    server.put("/124M/vocab.bpe", fx.vocab.clone());
    let dir = fetch_model(ModelSize::Small124M, &options(&server, tmp.path())).unwrap();
    assert_loadable(&dir, &fx);
    assert_eq!(server.requests_for("/124M/vocab.bpe").len(), 2);
    assert_eq!(server.requests_for(DATA).len(), 1);
}

#[test]
fn a_corrupted_checkpoint_fails_its_crc_and_is_removed() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let mut data = std::fs::read(fx.openai_dir.join("model.ckpt.data-00000-of-00001")).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    server.put(DATA, data);
    let tmp = tempfile::tempdir().unwrap();

    let err = fetch_model(ModelSize::Small124M, &options(&server, tmp.path())).unwrap_err();
    assert!(matches!(err, DownloadError::Weights { .. }), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("crc"), "{err}");
    assert_absent(tmp.path());
    assert!(!tmp
        .path()
        .join(".124M.download/model.ckpt.data-00000-of-00001")
        .exists());
}

#[test]
fn a_refused_connection_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = FetchOptions::new(tmp.path());
    opts.openai_base_url = format!("http://127.0.0.1:{port}");
    opts.progress = false;
    // Default retries: a refused connection must not be retried (nor hang).
    let err = fetch_model(ModelSize::Small124M, &opts).unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("--model DIR") && msg.contains("cargo xtask fetch-models"),
        "{msg}"
    );
    assert_absent(tmp.path());

    // The same through resolve_model (the CLI's path), and for the hub.
    let ropts = ResolveOptions {
        models_dir: Some(tmp.path().to_path_buf()),
        env_models_dir: None,
        local_models_dir: tmp.path().join("none"),
        cache_dir: None,
        offline: false,
        progress: false,
        source: Source::OpenAi,
        openai_base_url: format!("http://127.0.0.1:{port}"),
        hf_endpoint: Some(format!("http://127.0.0.1:{port}")),
    };
    assert!(resolve_model("gpt2", &ropts).unwrap_err().is_unreachable());
    let hub = ResolveOptions {
        source: Source::Hf,
        ..ropts
    };
    let err = resolve_model("gpt2", &hub).unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
}

#[test]
fn two_fetches_of_the_same_model_at_once_take_turns() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    // Slow enough that the two fetches overlap.
    server.fault(DATA, Fault::Delay(Duration::from_millis(300)));
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(&server, tmp.path());
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| fetch_model(ModelSize::Small124M, &opts));
        let b = s.spawn(|| fetch_model(ModelSize::Small124M, &opts));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_loadable(&a, &fx);
    for file in OPENAI_FILES {
        assert_eq!(
            server.requests_for(&format!("/124M/{file}")).len(),
            1,
            "{file}"
        );
    }
}

#[test]
fn resolve_model_downloads_a_missing_name_then_finds_it_offline() {
    let Some(fx) = fixture() else { return };
    let server = openai_server(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let opts = ResolveOptions {
        models_dir: Some(tmp.path().join("flag")),
        env_models_dir: None,
        local_models_dir: tmp.path().join("local"),
        cache_dir: Some(tmp.path().join("cache")),
        offline: false,
        progress: false,
        source: Source::OpenAi,
        openai_base_url: server.base.clone(),
        hf_endpoint: None,
    };
    let dir = resolve_model("gpt2", &opts).unwrap();
    assert_eq!(dir, tmp.path().join("flag/124M"));
    assert_loadable(&dir, &fx);
    let n = server.log().len();
    let offline = ResolveOptions {
        offline: true,
        ..opts.clone()
    };
    assert_eq!(resolve_model("124M", &offline).unwrap(), dir);
    assert_eq!(server.log().len(), n);
}

// ---- the Hugging Face hub ----

fn hub_files(fx: &Fixture) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "config.json".into(),
            std::fs::read(fx.hf_dir.join("config.json")).unwrap(),
        ),
        (
            "model.safetensors".into(),
            std::fs::read(fx.hf_dir.join("model.safetensors")).unwrap(),
        ),
        ("vocab.json".into(), fx.encoder.clone()),
        ("merges.txt".into(), fx.vocab.clone()),
        // Not read by this crate: any bytes do for a transfer test.
        (
            "tokenizer.json".into(),
            br#"{"version":"1.0","model":{"type":"BPE"}}"#.to_vec(),
        ),
        ("README.md".into(), b"not fetched".to_vec()),
    ]
}

#[test]
fn hub_fetch_through_hf_hub_verifies_every_file() {
    let Some(fx) = fixture() else { return };
    let server = Server::start();
    let files = hub_files(&fx);
    server.put_repo("openai-community/gpt2", files.clone());
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(&server, tmp.path());
    opts.source = Source::Hf;

    let dir = fetch_model(ModelSize::Small124M, &opts).unwrap();
    assert_eq!(dir, tmp.path().join("124M"));
    let w = Weights::open(&dir).unwrap();
    w.verify().unwrap();
    assert_eq!(w.config(), Weights::open(&fx.hf_dir).unwrap().config());
    for (name, content) in &files[..5] {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), content, "{name}");
    }
    assert!(!dir.join("README.md").exists());
    assert!(!tmp.path().join(".124M.download-hf").exists());
    // The API was asked at `main` with blobs, the files at the commit it named.
    let api = server.requests_for("/api/models/openai-community/gpt2/revision/main");
    assert_eq!(api.len(), 1);
    assert!(api[0].path.contains("blobs=true"), "{:?}", api[0]);
    let lfs = server.requests_for(&format!(
        "/openai-community/gpt2/resolve/{}/model.safetensors",
        support::COMMIT
    ));
    assert!(!lfs.is_empty());

    // Again: nothing is downloaded.
    let n = server.log().len();
    fetch_model(ModelSize::Small124M, &opts).unwrap();
    assert_eq!(server.log().len(), n);
}

#[test]
fn hub_lfs_file_with_the_wrong_sha256_is_refused() {
    let Some(fx) = fixture() else { return };
    let server = Server::start();
    let files = hub_files(&fx);
    server.put_repo("openai-community/gpt2-medium", files.clone());
    let original = &files[1].1;
    let mut bad = original.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    server.corrupt_cdn(original, bad);
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(&server, tmp.path());
    opts.source = Source::Hf;

    let err = fetch_model(ModelSize::Medium355M, &opts).unwrap_err();
    match &err {
        DownloadError::ChecksumMismatch {
            algorithm,
            expected,
            ..
        } => {
            assert_eq!(*algorithm, "sha256");
            assert_eq!(*expected, support::sha256_hex(original));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(!tmp.path().join("355M").exists());
    assert!(!tmp
        .path()
        .join(".355M.download-hf/hf/model.safetensors")
        .exists());
}

#[test]
fn hub_repo_without_a_needed_file_is_an_error() {
    let Some(fx) = fixture() else { return };
    let server = Server::start();
    let mut files = hub_files(&fx);
    files.retain(|(n, _)| n != "merges.txt");
    server.put_repo("openai-community/gpt2", files);
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(&server, tmp.path());
    opts.source = Source::Hf;
    let err = fetch_model(ModelSize::Small124M, &opts).unwrap_err();
    assert!(matches!(err, DownloadError::Hub { .. }), "{err:?}");
    assert!(err.to_string().contains("merges.txt"), "{err}");
    assert_absent(tmp.path());
}

#[test]
fn hub_files_kept_from_a_failed_run_are_refetched_when_main_has_moved() {
    let Some(fx) = fixture() else { return };
    let server = Server::start();
    let files = hub_files(&fx);
    server.put_repo("openai-community/gpt2", files.clone());
    let cdn = format!("/cdn/{}", support::sha256_hex(&files[1].1));
    server.fault(
        &cdn,
        Fault::Status {
            status: 503,
            times: 100,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(&server, tmp.path());
    opts.source = Source::Hf;
    opts.retries = 0;
    let err = fetch_model(ModelSize::Small124M, &opts).unwrap_err();
    assert!(
        matches!(err, DownloadError::HttpStatus { status: 503, .. }),
        "{err:?}"
    );
    assert_absent(tmp.path());
    // config.json came through and was kept for the next run.
    assert!(tmp
        .path()
        .join(".124M.download-hf/hf/config.json")
        .is_file());

    server.clear_faults();
    let moved = "fedcba9876543210fedcba9876543210fedcba98";
    server.set_commit(moved);
    let dir = fetch_model(ModelSize::Small124M, &opts).unwrap();
    Weights::open(&dir).unwrap().verify().unwrap();
    let config_at = |commit: &str| {
        server
            .requests_for(&format!(
                "/openai-community/gpt2/resolve/{commit}/config.json"
            ))
            .len()
    };
    assert!(config_at(support::COMMIT) >= 1);
    assert!(
        config_at(moved) >= 1,
        "config.json was not fetched again at the new commit"
    );
}
