//! `gpt2 generate`, run as a binary on the committed fixture model (fixtures/tiny: random weights,
//! n_ctx 32) and checked against its transformers reference.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use gpt2_tests::{gpt2, reference, root, tiny};

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// `gpt2 generate -m fixtures/tiny/hf ARGS`, expecting success.
fn generate(args: &[&str]) -> Output {
    let model = tiny();
    let mut all = vec!["generate", "-m", model.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = gpt2(&all);
    assert!(
        out.status.success(),
        "gpt2 {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The JSON objects printed by `--format json` (one per line).
fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn json_greedy_ids_equal_the_reference() {
    let reference = reference();
    for prompt in reference["prompts"].as_array().unwrap() {
        let ids = ids_of(&prompt["ids"]);
        let want = ids_of(&prompt["greedy"]["ids"]);
        // Ask for 20: longer prompts must stop where the reference did (the context is full).
        let out = generate(&[
            "--greedy",
            "-n",
            "20",
            "--ignore-eos",
            "--format",
            "json",
            "--prompt-ids",
            &csv(&ids),
        ]);
        let objects = json_lines(&out);
        assert_eq!(objects.len(), 1);
        let obj = &objects[0];
        assert_eq!(ids_of(&obj["prompt_ids"]), ids);
        assert_eq!(ids_of(&obj["ids"]), want, "prompt {}", prompt["name"]);
        assert_eq!(obj["finish_reason"], "length");
        assert_eq!(obj["text"], prompt["greedy"]["text"]);
    }
}

#[test]
fn text_prompt_streams_the_reference_continuation() {
    let reference = reference();
    let p = &reference["prompts"][0];
    let out = generate(&["--greedy", "-n", "20", p["text"].as_str().unwrap()]);
    assert_eq!(
        stdout(&out),
        format!("{}\n", p["greedy"]["text"].as_str().unwrap())
    );
    assert_eq!(stderr(&out), "");
    // --echo prints the prompt first.
    let out = generate(&[
        "--greedy",
        "-n",
        "20",
        "--echo",
        p["text"].as_str().unwrap(),
    ]);
    assert_eq!(
        stdout(&out),
        format!("{}\n", p["greedy"]["full_text"].as_str().unwrap())
    );
}

#[test]
fn empty_prompt_starts_from_endoftext() {
    let reference = reference();
    let p = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["text"] == "")
        .unwrap();
    let out = generate(&[
        "--greedy",
        "-n",
        "20",
        "--ignore-eos",
        "--format",
        "json",
        "",
    ]);
    let obj = &json_lines(&out)[0];
    assert_eq!(ids_of(&obj["prompt_ids"]), vec![50256]);
    assert_eq!(ids_of(&obj["ids"]), ids_of(&p["greedy"]["ids"]));
}

#[test]
fn prompt_from_stdin() {
    let mut child = Command::new(gpt2_tests::gpt2_bin())
        .args(["generate", "-m", tiny().to_str().unwrap()])
        .args(["--greedy", "-n", "3", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"The").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ids_of(&json_lines(&out)[0]["prompt_ids"]), vec![464]);
}

#[test]
fn same_seed_same_text_different_seeds_differ() {
    let run = |seed: &str| stdout(&generate(&["--seed", seed, "-n", "20", "The"]));
    let a = run("7");
    assert_eq!(a, run("7"));
    assert_ne!(a, run("8"));
    // With filters too.
    let run = |seed: &str| {
        stdout(&generate(&[
            "--seed",
            seed,
            "-n",
            "20",
            "--temperature",
            "0.8",
            "--top-k",
            "40",
            "--top-p",
            "0.9",
            "--min-p",
            "0.01",
            "--repetition-penalty",
            "1.3",
            "The",
        ]))
    };
    assert_eq!(run("1"), run("1"));
    assert_ne!(run("1"), run("2"));
    // The thread count does not change the draws.
    let run = |threads: &str| {
        stdout(&generate(&[
            "--seed",
            "9",
            "-n",
            "20",
            "--threads",
            threads,
            "The",
        ]))
    };
    assert_eq!(run("1"), run("2"));
}

#[test]
fn num_samples_are_independent_and_reproducible() {
    let out = generate(&[
        "--seed",
        "3",
        "-n",
        "12",
        "--num-samples",
        "3",
        "--format",
        "json",
        "The",
    ]);
    let objects = json_lines(&out);
    assert_eq!(objects.len(), 3);
    assert_ne!(objects[0]["ids"], objects[1]["ids"]);
    assert_ne!(objects[1]["ids"], objects[2]["ids"]);
    for o in &objects {
        assert_eq!(o["seed"], 3);
    }
    // The first sample is the single run with that seed.
    let single = generate(&["--seed", "3", "-n", "12", "--format", "json", "The"]);
    assert_eq!(json_lines(&single)[0]["ids"], objects[0]["ids"]);
    // Text format: one header per sample.
    let out = generate(&["--seed", "3", "-n", "4", "--num-samples", "2", "The"]);
    assert_eq!(stdout(&out).matches("--- sample ").count(), 2);
}

/// softmax of row `row` of `logits.<index>` in the reference safetensors.
fn reference_probs(index: usize, row: usize) -> Vec<f64> {
    let bytes = std::fs::read(root().join("fixtures/tiny/reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(&format!("logits.{index}")).unwrap();
    let vocab = t.shape()[1];
    let data = &t.data()[row * vocab * 4..(row + 1) * vocab * 4];
    let logits: Vec<f64> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    logits.iter().map(|l| (l - max).exp() / sum).collect()
}

#[test]
fn show_probs_match_softmax_of_the_reference_logits() {
    let reference = reference();
    for (index, prompt) in reference["prompts"].as_array().unwrap().iter().enumerate() {
        let ids = ids_of(&prompt["ids"]);
        let out = generate(&[
            "--greedy",
            "-n",
            "1",
            "--show-probs",
            "8",
            "--format",
            "json",
            "--prompt-ids",
            &csv(&ids),
        ]);
        let obj = &json_lines(&out)[0];
        let step = &obj["steps"][0];
        let top = step["top"].as_array().unwrap();
        assert_eq!(top.len(), 8);
        let want = reference_probs(index, ids.len() - 1);
        let mut sum = 0.0;
        let mut previous = f64::INFINITY;
        for c in top {
            let id = c["id"].as_u64().unwrap() as usize;
            let p = c["prob"].as_f64().unwrap();
            assert!(
                (p - want[id]).abs() < 1e-5,
                "token {id}: {p} vs {}",
                want[id]
            );
            assert!(p <= previous, "not sorted");
            previous = p;
            sum += p;
        }
        assert!(sum <= 1.0 + 1e-6);
        // The top candidates are the reference's most likely tokens.
        let mut order: Vec<usize> = (0..want.len()).collect();
        order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
        assert_eq!(top[0]["id"].as_u64().unwrap() as usize, order[0]);
        assert_eq!(step["id"], top[0]["id"]);
        assert!((step["prob"].as_f64().unwrap() - want[order[0]]).abs() < 1e-5);
    }
    // Text format: a readable table on stderr, the text alone on stdout.
    let out = generate(&["--seed", "1", "-n", "3", "--show-probs", "4", "The"]);
    let err = stderr(&out);
    assert_eq!(err.matches("step ").count(), 3, "{err}");
    assert!(err.contains("model p") && err.contains("sample p"), "{err}");
    assert!(!stdout(&out).contains("step "));
}

#[test]
fn stop_strings_end_the_text_and_are_not_printed() {
    let reference = reference();
    let p = &reference["prompts"][0];
    let prompt = p["text"].as_str().unwrap();
    let full = p["greedy"]["text"].as_str().unwrap(); // "Gay careless meats meats ..."
    for stop in [" meats", "less me", "s m"] {
        let out = generate(&[
            "--greedy", "-n", "20", "--stop", stop, "--format", "json", prompt,
        ]);
        let obj = &json_lines(&out)[0];
        let want = &full[..full.find(stop).unwrap()];
        assert_eq!(obj["text"], want, "--stop {stop:?}");
        assert_eq!(obj["finish_reason"], "stop");
        let out = generate(&["--greedy", "-n", "20", "--stop", stop, prompt]);
        assert_eq!(stdout(&out), format!("{want}\n"));
    }
    // Several stops: the earliest wins; one that never appears changes nothing.
    let out = generate(&[
        "--greedy", "-n", "20", "--stop", "meats", "--stop", "care", "--stop", "zebra", "--format",
        "json", prompt,
    ]);
    assert_eq!(json_lines(&out)[0]["text"], "Gay ");
    // Escapes: a stop string with a newline.
    let out = generate(&[
        "--greedy", "-n", "5", "--stop", "\\n", "--format", "json", prompt,
    ]);
    assert_eq!(json_lines(&out)[0]["finish_reason"], "length");
}

/// A copy of the tiny model whose next token is always <|endoftext|>: ln_f's gain is zeroed and
/// its bias points along wte[50256], which is made much longer than every other row.
fn eos_model(dir: &Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let src = tiny();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let mut data = view.data().to_vec();
        let n_embd = *shape.last().unwrap();
        let set = |data: &mut Vec<u8>, i: usize, v: f32| {
            data[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes())
        };
        match name.as_str() {
            "ln_f.weight" => (0..n_embd).for_each(|i| set(&mut data, i, 0.0)),
            "ln_f.bias" => {
                (0..n_embd).for_each(|i| set(&mut data, i, if i == 0 { 1.0 } else { 0.0 }))
            }
            "wte.weight" => {
                let row = 50256 * n_embd;
                (0..n_embd).for_each(|i| set(&mut data, row + i, if i == 0 { 100.0 } else { 0.0 }));
            }
            _ => {}
        }
        tensors.push((name, shape, data));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn stops_at_endoftext_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    eos_model(dir.path());
    let model = dir.path().to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate", "-m", model, "--seed", "5", "-n", "4", "--format", "json",
        ];
        args.extend_from_slice(extra);
        args.push("The");
        let out = gpt2(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        json_lines(&out).remove(0)
    };
    let obj = run(&["--greedy"]);
    assert_eq!(ids_of(&obj["ids"]), vec![50256]);
    assert_eq!(obj["text"], "");
    assert_eq!(obj["finish_reason"], "eos");
    let obj = run(&["--temperature", "1"]); // p(eos) ≈ 1 in this model
    assert_eq!(obj["finish_reason"], "eos");
    let obj = run(&["--greedy", "--ignore-eos"]);
    assert_eq!(ids_of(&obj["ids"]), vec![50256; 4]);
    assert_eq!(obj["text"], "<|endoftext|>".repeat(4));
    assert_eq!(obj["finish_reason"], "length");
}

#[test]
fn stats_on_stderr_and_in_json() {
    let out = generate(&["--greedy", "-n", "5", "--stats", "The"]);
    let err = stderr(&out);
    for word in [
        "load:",
        "prefill: 1 prompt tokens",
        "decode:  5 tokens",
        "tok/s",
    ] {
        assert!(err.contains(word), "{word:?} not in {err}");
    }
    let out = generate(&["--greedy", "-n", "5", "--stats", "--format", "json", "The"]);
    let stats = &json_lines(&out)[0]["stats"];
    for key in [
        "load_ms",
        "prompt_tokens",
        "prefill_tok_per_s",
        "generated_tokens",
        "decode_tok_per_s",
    ] {
        assert!(stats[key].is_number(), "{key} missing in {stats}");
    }
    assert_eq!(stats["prompt_tokens"], 1);
    assert_eq!(stats["generated_tokens"], 5);
    // Without --stats nothing goes to stderr.
    assert_eq!(stderr(&generate(&["--greedy", "-n", "2", "The"])), "");
}

#[test]
fn f16_and_threads_run() {
    let out = generate(&[
        "--greedy",
        "-n",
        "5",
        "--dtype",
        "f16",
        "--threads",
        "1",
        "--format",
        "json",
        "The",
    ]);
    assert_eq!(ids_of(&json_lines(&out)[0]["ids"]).len(), 5);
}

/// Runs with `args`, expecting a usage error (exit code 2) whose message contains `needle`.
fn assert_usage_error(args: &[&str], needle: &str) {
    let model = tiny();
    let mut all = vec!["generate", "-m", model.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = gpt2(&all);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
    assert!(err.contains(needle), "{all:?}: {needle:?} not in {err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn invalid_options_are_usage_errors_with_their_message() {
    assert_usage_error(&["--top-p", "1.5", "x"], "--top-p: top-p must be in (0, 1]");
    assert_usage_error(
        &["--top-p", "0", "x"],
        "top-p must be in (0, 1] (a probability mass), got 0",
    );
    assert_usage_error(&["--top-k", "0", "x"], "--top-k: top-k must be at least 1");
    assert_usage_error(
        &["--temperature", "-1", "x"],
        "--temperature: temperature must be a finite number > 0",
    );
    assert_usage_error(
        &["--temperature", "inf", "x"],
        "temperature must be a finite number",
    );
    assert_usage_error(
        &["--temperature", "NaN", "x"],
        "temperature must be a finite number",
    );
    assert_usage_error(&["--min-p", "1.5", "x"], "--min-p: min-p must be in [0, 1]");
    assert_usage_error(
        &["--min-p", "-0.5", "x"],
        "--min-p: min-p must be in [0, 1]",
    );
    assert_usage_error(&["--top-p", "-1", "x"], "--top-p: top-p must be in (0, 1]");
    assert_usage_error(
        &["--repetition-penalty", "0", "x"],
        "--repetition-penalty: repetition penalty must be",
    );
    assert_usage_error(&["--repetition-window", "0", "x"], "--repetition-window");
    assert_usage_error(
        &["--num-samples", "0", "x"],
        "--num-samples must be at least 1",
    );
    assert_usage_error(&["--threads", "0", "x"], "--threads must be at least 1");
    assert_usage_error(
        &["--stop", "", "x"],
        "--stop: a stop string cannot be empty",
    );
    assert_usage_error(&["--prompt-ids", "1,x"], "expected token ids");
    assert_usage_error(
        &["--prompt-ids", "50257"],
        "token id 50257 (at index 0) is out of range",
    );
    assert_usage_error(
        &["--greedy", "--temperature", "0.5", "x"],
        "cannot be used with",
    );
    assert_usage_error(&["--format", "xml", "x"], "invalid value 'xml'");
    assert_usage_error(&["--dtype", "bf16", "x"], "invalid value 'bf16'");
    assert_usage_error(&["--context-overflow", "wrap", "x"], "invalid value 'wrap'");
    assert_usage_error(&["-n", "-3", "x"], "'-3'");
    // The model argument.
    let out = gpt2(&["generate", "-m", "./no/such/dir", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = gpt2(&["generate", "-m", "gpt5", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("124M"), "{}", stderr(&out));
}

#[test]
fn overlong_prompt_is_a_context_error_naming_what_fits() {
    let ids: Vec<u32> = (0..40).map(|i| 100 + i).collect();
    assert_usage_error(
        &["--prompt-ids", &csv(&ids)],
        "the prompt is 40 tokens but the model's context holds at most 32",
    );
    // Sliding: the last 32 tokens are kept.
    let out = generate(&[
        "--context-overflow",
        "slide",
        "--greedy",
        "-n",
        "3",
        "--format",
        "json",
        "--prompt-ids",
        &csv(&ids),
    ]);
    let obj = &json_lines(&out)[0];
    assert_eq!(ids_of(&obj["prompt_ids"]), ids[8..]);
    assert_eq!(ids_of(&obj["ids"]).len(), 3);
    // A full context ends generation with "length" (30 + 2 = 32).
    let out = generate(&[
        "--greedy",
        "-n",
        "10",
        "--format",
        "json",
        "--prompt-ids",
        &csv(&ids[..30]),
    ]);
    let obj = &json_lines(&out)[0];
    assert_eq!(ids_of(&obj["ids"]).len(), 2);
    assert_eq!(obj["finish_reason"], "length");
}

#[test]
fn closed_stdout_ends_quietly() {
    // `gpt2 generate ... | head -c 10`: read 10 bytes, close the pipe, the process must exit 0
    // with nothing on stderr.
    let mut child = Command::new(gpt2_tests::gpt2_bin())
        .args(["generate", "-m", tiny().to_str().unwrap()])
        .args([
            "--seed",
            "1",
            "-n",
            "100000",
            "--context-overflow",
            "slide",
            "--ignore-eos",
            "The",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}, stderr {err:?}");
    assert_eq!(err, "");
}

#[test]
fn shared_reference_model_cross_check() {
    // The shared gpt2-tiny (n_ctx 128, with tokenizer files) beside the checkout, when present.
    let Some(shared) = gpt2_tests::shared_fixture("gpt2-tiny") else {
        return;
    };
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(shared.join("reference.json")).unwrap())
            .unwrap();
    let model = shared.join("hf");
    for p in reference["prompts"].as_array().unwrap() {
        // The text prompt goes through the model directory's own tokenizer files.
        let out = gpt2(&[
            "generate",
            "-m",
            model.to_str().unwrap(),
            "--greedy",
            "-n",
            "20",
            "--ignore-eos",
            "--format",
            "json",
            p["text"].as_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let obj = &json_lines(&out)[0];
        assert_eq!(ids_of(&obj["prompt_ids"]), ids_of(&p["ids"]));
        assert_eq!(ids_of(&obj["ids"]), ids_of(&p["greedy"]["ids"]));
    }
}
