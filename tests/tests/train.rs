//! `gpt2 train` end to end: a model trained from scratch that `gpt2 generate` loads, a run
//! stopped with --stop-after (or Ctrl-C) and resumed that ends as one uninterrupted run does,
//! bit for bit, and bad input refused with exit code 2 and nothing written in --out.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gpt2_tests::{gpt2, gpt2_bin, tiny};

/// Some English text (this repository's README) as a data file in `dir`.
fn text_file(dir: &Path, bytes: usize) -> PathBuf {
    let readme = std::fs::read_to_string(gpt2_tests::root().join("README.md")).expect("README");
    let mut end = bytes.min(readme.len());
    while !readme.is_char_boundary(end) {
        end -= 1;
    }
    let path = dir.join("data.txt");
    std::fs::write(&path, &readme[..end]).expect("write data");
    path
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_model_trained_from_scratch_generates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = text_file(dir.path(), 8000);
    let out = dir.path().join("scratch");
    let log = dir.path().join("log.jsonl");
    let run = gpt2(&[
        "train",
        "--n-layer",
        "1",
        "--n-embd",
        "16",
        "--n-head",
        "2",
        "--n-ctx",
        "16",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--warmup-steps",
        "1",
        "--val-fraction",
        "0.2",
        "--eval-every",
        "2",
        "--sample-every",
        "2",
        "--log-json",
        s(&log),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("step     4/4 | loss"), "{err}");
    assert!(
        err.contains("validation loss") && err.contains("sample:"),
        "{err}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let steps: Vec<_> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
    let evals: Vec<_> = lines
        .iter()
        .filter(|l| l.get("val_loss").is_some())
        .collect();
    assert_eq!(steps.len(), 4);
    assert_eq!(evals.len(), 2);
    for (i, l) in steps.iter().enumerate() {
        assert_eq!(l["step"], i);
        for k in ["loss", "lr", "grad_norm", "tokens_per_s"] {
            assert!(l[k].as_f64().is_some_and(f64::is_finite), "{k} in {l}");
        }
    }
    let generated = gpt2(&["generate", "-m", s(&out), "-n", "5", "--seed", "1", "Hello"]);
    assert!(generated.status.success(), "{}", stderr(&generated));
}

#[test]
fn stop_after_then_resume_ends_as_one_run_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = text_file(dir.path(), 6000);
    let common = |out: &Path| -> Vec<String> {
        [
            "train",
            "--init",
            s(&tiny()),
            "--data",
            s(&data),
            "--out",
            s(out),
            "--steps",
            "6",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--grad-accum",
            "2",
            "--warmup-steps",
            "2",
            "--lr",
            "2e-3",
            "--sample-every",
            "0",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = gpt2(&refs);
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let whole = dir.path().join("whole");
    run(common(&whole));
    let parts = dir.path().join("parts");
    let mut first = common(&parts);
    first.extend(["--stop-after".into(), "3".into()]);
    let err = stderr(&run(first));
    assert!(err.contains("stopping after step 3"), "{err}");
    let state = std::fs::read_to_string(parts.join("trainer_state.json")).expect("state");
    assert!(state.contains("\"step\": 3"), "{state}");
    // A resumed run keeps its settings: another weight decay is refused, and nothing changes.
    let mut other = common(&parts);
    other.splice(1..3, ["--resume".to_string(), s(&parts).to_string()]);
    other.extend(["--weight-decay".into(), "0.05".into()]);
    let refs: Vec<&str> = other.iter().map(String::as_str).collect();
    let refused = gpt2(&refs);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("keeps the settings"),
        "{}",
        stderr(&refused)
    );
    let unchanged = std::fs::read_to_string(parts.join("trainer_state.json")).expect("state");
    assert_eq!(unchanged, state);
    // The same command, with --resume in place of --init.
    let mut resumed = common(&parts);
    resumed.splice(1..3, ["--resume".to_string(), s(&parts).to_string()]);
    let err = stderr(&run(resumed));
    assert!(
        err.contains("resuming after step 3") && err.contains("step     6/6"),
        "{err}"
    );
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (a, b) = (
            std::fs::read(whole.join(file)).expect("whole"),
            std::fs::read(parts.join(file)).expect("parts"),
        );
        assert!(a == b, "{file} differs between the two runs");
    }
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = text_file(dir.path(), 6000);
    let out = dir.path().join("run");
    let log = dir.path().join("log.jsonl");
    let mut child = Command::new(gpt2_bin())
        .args([
            "train",
            "--init",
            s(&tiny()),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--steps",
            "100000",
            "--batch-size",
            "1",
            "--seq-len",
            "8",
            "--log-json",
            s(&log),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no steps logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let state = std::fs::read_to_string(out.join("trainer_state.json")).expect("checkpoint");
    let state: serde_json::Value = serde_json::from_str(&state).expect("JSON");
    assert!(state["step"].as_u64().is_some_and(|s| s >= 2), "{state}");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = text_file(dir.path(), 3000);
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").expect("write");
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Just a few words.").expect("write");
    let not_ckpt = tiny();
    let out = dir.path().join("out");
    let (d, e, sh, o) = (s(&data), s(&empty), s(&short), s(&out));
    let t = s(&not_ckpt);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--init", t, "--data", "missing.txt"], "missing.txt"),
        (vec!["--init", t, "--data", e], "is empty"),
        (vec!["--init", t, "--data", sh], "fewer than one window"),
        (
            vec!["--init", t, "--data", d, "--seq-len", "64"],
            "n_ctx = 32",
        ),
        (
            vec!["--init", t, "--data", d, "--batch-size", "0"],
            "--batch-size",
        ),
        (vec!["--init", t, "--data", d, "--steps", "0"], "--steps"),
        (vec!["--init", t, "--data", d, "--lr", "-1"], "--lr"),
        (vec!["--init", t, "--data", d, "--lr", "0"], "--lr"),
        (
            vec!["--init", t, "--data", d, "--weight-decay", "-0.1"],
            "--weight-decay",
        ),
        (vec!["--init", t, "--data", d, "--beta2", "1.5"], "--beta2"),
        (
            vec!["--init", t, "--data", d, "--val-fraction", "1.5"],
            "--val-fraction",
        ),
        (vec!["--init", t, "--data", d, "--batch-size", "-2"], "-2"),
        (vec!["--resume", t, "--data", d], "not a checkpoint"),
        (vec!["--data", d], "--init MODEL"),
        (
            vec![
                "--n-layer",
                "1",
                "--n-embd",
                "10",
                "--n-head",
                "3",
                "--n-ctx",
                "8",
                "--data",
                d,
            ],
            "n_head",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["train", "--out", o, "--steps", "2"];
        all.extend(&args);
        // The later --steps wins where a case gives its own.
        let run = gpt2(&all);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.symlink_metadata().is_err(), "{args:?} wrote {o}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["data.txt", "empty.txt", "short.txt"], "{args:?}");
    }
    // An existing --out is refused unless it is the run being resumed.
    std::fs::create_dir(&out).expect("mkdir");
    let run = gpt2(&["train", "--init", t, "--data", d, "--out", o]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("already exists"));
}
