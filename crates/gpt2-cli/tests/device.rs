//! `--device`: the CPU always works; a GPU missing from this build is a clear runtime error; a
//! malformed value is a usage error. (These stay beside the binary: they depend on the
//! cargo features it was built with. The end-to-end suites are in the workspace's `tests/`.)

use std::process::{Command, Output, Stdio};

use std::path::PathBuf;

/// The committed random-weight fixture model.
fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny/hf")
}

fn generate(device: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt2"))
        .args([
            "generate", "--greedy", "-n", "3", "--format", "json", "--device", device,
        ])
        .arg("--model")
        .arg(tiny())
        .arg("The")
        .stdin(Stdio::null())
        .output()
        .expect("run gpt2")
}

#[test]
fn cpu_runs() {
    let out = generate("cpu");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    let out = generate("cuda:0");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn malformed_devices_are_usage_errors() {
    for bad in ["gpu", "cuda:x", "cpu:1", ""] {
        let out = generate(bad);
        assert_eq!(out.status.code(), Some(2), "--device {bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--device"), "{err}");
    }
}
