//! `gpt2 score`, run as a binary on the committed fixture model (fixtures/tiny, n_ctx 32) and
//! checked against the transformers reference log-probs.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use gpt2_tests::{reference, tiny};

fn csv(v: &Value) -> String {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn score(args: &[&str]) -> Output {
    Command::new(gpt2_tests::gpt2_bin())
        .args(["score", "-m", tiny().to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn logprobs_match_the_reference() {
    let reference = reference();
    let mut checked = 0;
    for p in reference["prompts"].as_array().unwrap() {
        let ids = csv(&p["ids"]);
        if let Some(want) = p["logprob"]["sum"].as_f64() {
            let got = json(&score(&["--format", "json", "--ids", &ids]));
            assert!((got["logprob"].as_f64().unwrap() - want).abs() < 1e-3);
            assert_eq!(got["n_scored"], p["logprob"]["n_targets"]);
            let ppl = p["logprob"]["perplexity"].as_f64().unwrap();
            assert!((got["perplexity"].as_f64().unwrap() / ppl - 1.0).abs() < 1e-3);
            // Per-token log-probs: the first token has none.
            let tokens = got["tokens"].as_array().unwrap();
            assert!(tokens[0]["logprob"].is_null());
            for (t, w) in tokens[1..]
                .iter()
                .zip(p["logprob"]["per_token"].as_array().unwrap())
            {
                assert!((t["logprob"].as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-4);
            }
            checked += 1;
        }
        if let Some(want) = p["logprob_with_bos"]["sum"].as_f64() {
            let got = json(&score(&["--bos", "--format", "json", "--ids", &ids]));
            assert!((got["logprob"].as_f64().unwrap() - want).abs() < 1e-3);
            assert_eq!(got["n_scored"], p["logprob_with_bos"]["n_targets"]);
            checked += 1;
        }
    }
    assert!(checked >= 6);
}

#[test]
fn text_from_argument_and_stdin() {
    let reference = reference();
    let p = &reference["prompts"][0];
    let text = p["text"].as_str().unwrap();
    let out = score(&[text]);
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    let ppl = p["logprob"]["perplexity"].as_f64().unwrap();
    let line = shown
        .lines()
        .find(|l| l.starts_with("perplexity:"))
        .unwrap();
    let got: f64 = line["perplexity:".len()..].trim().parse().unwrap();
    assert!((got / ppl - 1.0).abs() < 1e-3, "{shown}");
    assert!(shown.contains("tokens:     10 (9 scored)"), "{shown}");

    let mut child = Command::new(gpt2_tests::gpt2_bin())
        .args(["score", "-m", tiny().to_str().unwrap(), "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let got = json(&child.wait_with_output().unwrap());
    assert!(
        (got["logprob"].as_f64().unwrap() - p["logprob"]["sum"].as_f64().unwrap()).abs() < 1e-3
    );
}

#[test]
fn long_text_uses_a_sliding_window() {
    // 3 reference prompts back to back: 51 tokens, n_ctx 32.
    let reference = reference();
    let mut ids = Vec::new();
    for i in [0, 2, 4] {
        ids.extend(
            reference["prompts"][i]["ids"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let ids = csv(&Value::Array(ids));
    let n = ids.split(',').count();
    assert!(n > 32);
    let got = json(&score(&[
        "--format", "json", "--stride", "8", "--ids", &ids,
    ]));
    assert_eq!(got["n_scored"], n - 1);
    assert_eq!(got["windows"], 4); // [0, 32), [8, 40), [16, 48), [24, 51)

    // The default stride (n_ctx / 2 = 16) scores every token once too.
    let got = json(&score(&["--format", "json", "--ids", &ids]));
    assert_eq!(got["n_scored"], n - 1);
    // The first 32 tokens are scored as in one pass: the same as scoring them alone.
    let first: String = ids.split(',').take(32).collect::<Vec<_>>().join(",");
    let alone = json(&score(&["--format", "json", "--ids", &first]));
    for j in 1..32 {
        assert_eq!(got["tokens"][j]["logprob"], alone["tokens"][j]["logprob"]);
    }
}

#[test]
fn bad_input_is_a_usage_error() {
    for (args, needle) in [
        (
            vec!["--stride", "0", "x y"],
            "the stride must be between 1 and the model's context length 32, got 0",
        ),
        (vec!["--stride", "33", "x y"], "got 33"),
        (vec![""], "nothing to score"),
        (vec!["--ids", "50257"], "out of range"),
        (vec!["--format", "yaml", "x"], "invalid value 'yaml'"),
    ] {
        let out = score(&args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
    // One token, no --bos: nothing scored, but not an error.
    let got = json(&score(&["--format", "json", "The"]));
    assert_eq!(got["n_scored"], 0);
    assert!(got["perplexity"].is_null());
}
