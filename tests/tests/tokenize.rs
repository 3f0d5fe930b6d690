//! `gpt2 tokenize` and `gpt2 detokenize`, run as a user would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const ENCODER_JSON: &[u8] = include_bytes!("../../crates/gpt2-tokenizer/data/encoder.json");
const VOCAB_BPE: &[u8] = include_bytes!("../../crates/gpt2-tokenizer/data/vocab.bpe");

/// Runs `gpt2 ARGS` with `stdin` as standard input.
fn gpt2(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(gpt2_tests::gpt2_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gpt2");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("run gpt2")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "gpt2 failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ids_line(output: &Output) -> Vec<u32> {
    let text = stdout(output);
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "{text:?}"
    );
    text.split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect()
}

#[test]
fn tokenize_text_argument() {
    let out = gpt2(&["tokenize", "Hello, world!"], b"");
    assert_eq!(stdout(&out), "15496 11 995 0\n");
}

#[test]
fn tokenize_reads_all_of_stdin_untrimmed() {
    // Leading spaces and the trailing newlines are tokens too (628 is "\n\n").
    let out = gpt2(&["tokenize"], b"  Hello\n\n");
    assert_eq!(ids_line(&out), [220, 18435, 628]);
    // Empty input: an empty line.
    assert_eq!(stdout(&gpt2(&["tokenize"], b"")), "\n");
    assert_eq!(stdout(&gpt2(&["tokenize", ""], b"ignored")), "\n");
}

#[test]
fn tokenize_json_format() {
    let out = gpt2(&["tokenize", "--format", "json", "I'm here"], b"");
    let value: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value, serde_json::json!([40, 1101, 994]));
}

#[test]
fn tokenize_tokens_format() {
    let out = gpt2(&["tokenize", "--format", "tokens", "Hi there\n\té"], b"");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "17250\tHi",
            "612\t there",
            "198\t\\n",
            "197\t\\t",
            "2634\té"
        ]
    );
    // A token that is only part of a character shows its bytes as \xNN.
    let out = gpt2(&["tokenize", "--format", "tokens", "🤗"], b"");
    let text = stdout(&out);
    assert!(text.contains("\\x"), "{text}");
    assert!(text.lines().all(|l| l.split_once('\t').is_some()), "{text}");
}

#[test]
fn tokenize_special_token() {
    let text = "a<|endoftext|>b";
    let plain = ids_line(&gpt2(&["tokenize", text], b""));
    assert!(!plain.contains(&50256));
    assert_eq!(plain.len(), 9);
    let special = ids_line(&gpt2(&["tokenize", "--special", text], b""));
    assert_eq!(special, [64, 50256, 65]);
}

#[test]
fn tokenize_rejects_invalid_utf8_stdin() {
    let out = gpt2(&["tokenize"], b"ok \xFF\xFE bad");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("UTF-8") && err.contains("offset 3") && err.contains("0xFF"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[cfg(unix)]
#[test]
fn tokenize_rejects_invalid_utf8_argument() {
    use std::os::unix::ffi::OsStrExt;
    let output = Command::new(gpt2_tests::gpt2_bin())
        .arg("tokenize")
        .arg(std::ffi::OsStr::from_bytes(b"a\xFFb"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("UTF-8"), "{}", stderr(&output));
}

#[test]
fn tokenize_bad_format_is_a_usage_error() {
    let out = gpt2(&["tokenize", "--format", "xml", "hi"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ids"), "{}", stderr(&out));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn vocab_directory() {
    let text = "Vocabulary from files: naïve 日本 👋";
    let embedded = ids_line(&gpt2(&["tokenize", text], b""));
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "encoder.json", ENCODER_JSON);
    write(dir.path(), "vocab.bpe", VOCAB_BPE);
    let dir_arg = dir.path().to_str().unwrap();
    let from_dir = ids_line(&gpt2(&["tokenize", "--vocab", dir_arg, text], b""));
    assert_eq!(from_dir, embedded);
    let ids: Vec<String> = embedded.iter().map(u32::to_string).collect();
    let mut args = vec!["detokenize", "--vocab", dir_arg];
    args.extend(ids.iter().map(String::as_str));
    assert_eq!(stdout(&gpt2(&args, b"")), text);
}

#[test]
fn missing_vocab_directory_is_a_runtime_error_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    for args in [
        vec!["tokenize", "--vocab", dir_arg, "hi"],
        vec!["detokenize", "--vocab", dir_arg, "1"],
    ] {
        let out = gpt2(&args, b"");
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains("encoder.json") && err.contains("tokenizer.json"),
            "{err}"
        );
    }
}

#[test]
fn detokenize_arguments_and_stdin() {
    assert_eq!(
        stdout(&gpt2(&["detokenize", "15496", "11", "995", "0"], b"")),
        "Hello, world!"
    );
    assert_eq!(
        stdout(&gpt2(&["detokenize", "15496,11", "995,0"], b"")),
        "Hello, world!"
    );
    assert_eq!(
        stdout(&gpt2(&["detokenize"], b"15496, 11\n995 0\n")),
        "Hello, world!"
    );
    assert_eq!(
        stdout(&gpt2(&["detokenize"], b"[15496, 11, 995, 0]\n")),
        "Hello, world!"
    );
    assert_eq!(stdout(&gpt2(&["detokenize"], b"")), "");
}

#[test]
fn detokenize_invalid_utf8_is_replaced_unless_bytes() {
    // 127 is the token of byte 0xC3 alone.
    let out = gpt2(&["detokenize", "64", "127"], b"");
    assert_eq!(stdout(&out), "a\u{FFFD}");
    let out = gpt2(&["detokenize", "--bytes", "64", "127"], b"");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"a\xC3");
}

#[test]
fn detokenize_bad_ids_are_usage_errors() {
    for (args, stdin, needle) in [
        (vec!["detokenize", "1", "50257"], &b""[..], "50257"),
        (vec!["detokenize", "1", "x"], b"", "\"x\""),
        (vec!["detokenize"], b"1 2 99999999999", "99999999999"),
        (vec!["detokenize"], b"[1, 2", "]"),
    ] {
        let out = gpt2(&args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn round_trip_through_both_commands() {
    let text = "  Round trip: \"quotes\", tabs\t, CRLF\r\n, emoji 👋🏽, <|endoftext|> and 's 'll\n\n";
    for format in ["ids", "json"] {
        let ids = stdout(&gpt2(&["tokenize", "--format", format], text.as_bytes()));
        let back = gpt2(&["detokenize"], ids.as_bytes());
        assert_eq!(stdout(&back), text, "{format}");
        let ids = stdout(&gpt2(
            &["tokenize", "--special", "--format", format],
            text.as_bytes(),
        ));
        assert!(ids.contains("50256"));
        assert_eq!(
            stdout(&gpt2(&["detokenize"], ids.as_bytes())),
            text,
            "{format}"
        );
    }
}

#[test]
fn help_has_examples() {
    for command in ["tokenize", "detokenize"] {
        let help = stdout(&gpt2(&[command, "--help"], b""));
        assert!(help.contains("Examples:"), "{help}");
        assert!(help.contains("--vocab"), "{help}");
        assert!(help.contains("Exit status"), "{help}");
    }
}

#[test]
fn errors_about_huge_inputs_quote_only_a_little_of_them() {
    let huge = "x".repeat(10 << 20);
    // A 10 MB "id" on stdin.
    let out = gpt2(&["detokenize"], huge.as_bytes());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}", &err[..err.len().min(300)]);
    assert!(err.len() < 1500, "a {}-byte message", err.len());
    assert!(
        err.contains("not a token id") && err.contains("bytes in all"),
        "{err}"
    );

    // A 10 MB line in merges.txt and a 10 MB token in vocab.json of a --vocab directory.
    let dir = tempfile::tempdir().unwrap();
    let data = gpt2_tests::root().join("crates/gpt2-tokenizer/data");
    std::fs::copy(data.join("encoder.json"), dir.path().join("vocab.json")).unwrap();
    std::fs::write(
        dir.path().join("merges.txt"),
        format!("#version: 0.2\n{huge}\n"),
    )
    .unwrap();
    let vocab = dir.path().to_str().unwrap();
    let out = gpt2(&["tokenize", "--vocab", vocab, "hi"], b"");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.len() < 1500, "a {}-byte message", err.len());
    assert!(
        err.contains("line 2") && err.contains("bytes in all"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("vocab.json"),
        format!("{{\"{huge}\": 70000}}"),
    )
    .unwrap();
    let out = gpt2(&["tokenize", "--vocab", vocab, "hi"], b"");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.len() < 1500, "a {}-byte message", err.len());

    // A 100 KiB command-line argument in a clap error.
    let arg = "y".repeat(100 << 10);
    let out = gpt2(&["generate", "--top-k", &arg, "x"], b"");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.len() < 1500, "a {}-byte message", err.len());
    assert!(
        err.contains("--top-k") && err.contains("bytes cut"),
        "{err}"
    );
}
