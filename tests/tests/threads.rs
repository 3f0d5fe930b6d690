//! `--threads`: bounded by the machine, and threads that cannot start are an error.

use std::process::{Command, Output, Stdio};

fn gpt2(args: &[&str]) -> Command {
    let mut command = Command::new(gpt2_tests::gpt2_bin());
    command.args(args).stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> (Output, String) {
    let out = command.output().expect("run gpt2");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

#[test]
fn thread_counts_beyond_four_per_cpu_are_usage_errors() {
    let model = gpt2_tests::tiny();
    let model = model.to_str().expect("utf-8 path");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = (4 * cpus).to_string();
    let over = (4 * cpus + 1).to_string();
    for threads in ["5000", "1000000", over.as_str(), "99999999999999999999999"] {
        for input in [
            &["generate", "x"][..],
            &["score", "x"],
            &[
                "logits",
                "--prompt",
                "x",
                "--out",
                "never-written.safetensors",
            ],
        ] {
            let command = input[0];
            let mut args = vec![command, "-m", model, "--threads", threads];
            args.extend_from_slice(&input[1..]);
            let (out, err) = run(&mut gpt2(&args));
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} --threads {threads}: {err}"
            );
            assert!(err.contains("--threads"), "{err}");
            assert!(!err.contains("panicked"), "{err}");
            if threads != "99999999999999999999999" {
                assert!(err.contains(&format!("at most {max}")), "{err}");
            }
        }
    }
    // The bound itself is accepted.
    let (out, err) = run(&mut gpt2(&[
        "generate",
        "-m",
        model,
        "--threads",
        &max,
        "-n",
        "2",
        "--greedy",
        "x",
    ]));
    assert!(out.status.success(), "{err}");
}

/// Rayon's threads cannot be created when each needs a stack of 1 TiB under an 8 GB
/// address-space limit: that is an error saying so, not a panic.
#[cfg(unix)]
#[test]
fn threads_that_cannot_start_are_an_error() {
    let model = gpt2_tests::tiny();
    let script = format!(
        "ulimit -v 8000000 && exec '{}' generate -m '{}' --threads 2 -n 2 --greedy x",
        gpt2_tests::gpt2_bin().display(),
        model.display()
    );
    let (out, err) = run(Command::new("sh")
        .args(["-c", &script])
        .env("RUST_MIN_STACK", (1u64 << 40).to_string())
        .stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start 2 CPU threads"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty());
}
