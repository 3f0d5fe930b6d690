//! Exactness against OpenAI's `encoder.py` on the tokenizer cases.
//!
//! `tests/data/cases.jsonl` is a committed copy of the shared reference cases (256
//! texts: prose, code, man pages, whitespace, many scripts, emoji, numbers, 10k-char
//! lines, the literal `<|endoftext|>`, …) with the ids OpenAI's `encoder.py` gives.
//! When `../shared/fixtures/tokenizer/cases.jsonl` (beside the repository) exists, its
//! cases are checked too.
//!
//! Five cases contain letters first assigned in Unicode 17.0; their ground truth
//! (`ids`) follows the Unicode 17.0 tables of Python's `regex` module, while this
//! crate's regex engine (fancy-regex on the `regex` crate's tables) is at Unicode 16.0
//! and must give `ids_with_unicode_16_tables`, exactly like HF tokenizers and tiktoken.

use std::path::{Path, PathBuf};

use gpt2_tokenizer::{Tokenizer, END_OF_TEXT};
use serde_json::Value;

struct Case {
    id: String,
    text: String,
    ids: Vec<u32>,
    ids_unicode_16: Option<Vec<u32>>,
}

fn ids_of(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("ids array")
        .iter()
        .map(|v| u32::try_from(v.as_u64().expect("id number")).expect("u32 id"))
        .collect()
}

fn read_cases(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).expect("read cases.jsonl");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let case: Value = serde_json::from_str(line).expect("a JSON case");
            Case {
                id: case["id"].as_str().expect("id").to_string(),
                text: case["text"].as_str().expect("text").to_string(),
                ids: ids_of(&case["ids"]),
                ids_unicode_16: case.get("ids_with_unicode_16_tables").map(ids_of),
            }
        })
        .collect()
}

fn committed_cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cases.jsonl")
}

fn shared_cases() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/tokenizer/cases.jsonl");
    path.is_file().then_some(path)
}

/// Checks every case; returns how many there were and how many are
/// Unicode-version-sensitive.
fn check_cases(tokenizer: &Tokenizer, path: &Path) -> (usize, usize) {
    let cases = read_cases(path);
    let mut failures = Vec::new();
    let mut unicode_sensitive = 0;
    for case in &cases {
        let expected = match &case.ids_unicode_16 {
            Some(ids) => {
                unicode_sensitive += 1;
                ids
            }
            None => &case.ids,
        };
        let got = tokenizer.encode(&case.text).expect("encode");
        if &got != expected {
            failures.push(format!(
                "{}: text {:?}\n  expected {:?}\n  got      {:?}",
                case.id,
                case.text.chars().take(80).collect::<String>(),
                expected,
                got
            ));
            continue;
        }
        // Both the ground truth and our ids decode back to the text.
        assert_eq!(
            tokenizer.decode(&case.ids).unwrap(),
            case.text,
            "{}",
            case.id
        );
        assert_eq!(tokenizer.decode(&got).unwrap(), case.text, "{}", case.id);
        // No case contains the special token as a token.
        assert!(!got.contains(&END_OF_TEXT), "{}", case.id);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    (cases.len(), unicode_sensitive)
}

#[test]
fn committed_cases_match_openai_encoder() {
    let (n, unicode_sensitive) = check_cases(&Tokenizer::gpt2(), &committed_cases());
    assert_eq!((n, unicode_sensitive), (256, 5));
}

#[test]
fn random_cases_match_openai_encoder() {
    // 3000 random texts (see tests/data/make_random_cases.py) with the ids of OpenAI's
    // encoder.py algorithm.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/random_cases.jsonl");
    let (n, unicode_sensitive) = check_cases(&Tokenizer::gpt2(), &path);
    assert_eq!((n, unicode_sensitive), (3000, 0));
}

#[test]
fn shared_cases_match_openai_encoder() {
    match shared_cases() {
        Some(path) => {
            let (n, _) = check_cases(&Tokenizer::gpt2(), &path);
            assert!(n > 0);
        }
        None => eprintln!("note: ../shared/fixtures/tokenizer/cases.jsonl is absent; skipped"),
    }
}

#[test]
fn unicode_17_letters_are_not_letters_to_this_engine() {
    // E.g. U+A7CE (a Latin letter new in Unicode 17.0) is not \p{L} with Unicode 16
    // tables, so `[^\s\p{L}\p{N}]+` takes it together with the "'" of the "'s" after it.
    let cases = read_cases(&committed_cases());
    let sensitive: Vec<&Case> = cases
        .iter()
        .filter(|c| c.ids_unicode_16.is_some())
        .collect();
    let tokenizer = Tokenizer::gpt2();
    for case in sensitive {
        let got = tokenizer.encode(&case.text).unwrap();
        assert_ne!(
            got, case.ids,
            "{}: engine now has Unicode 17 tables; update the docs",
            case.id
        );
        assert_eq!(Some(&got), case.ids_unicode_16.as_ref(), "{}", case.id);
    }
}

#[test]
fn special_token_text_is_plain_text_by_default() {
    let tokenizer = Tokenizer::gpt2();
    let cases = read_cases(&committed_cases());
    let with_special: Vec<&Case> = cases
        .iter()
        .filter(|c| c.text.contains("<|endoftext|>"))
        .collect();
    assert!(!with_special.is_empty());
    for case in with_special {
        assert_eq!(
            tokenizer.encode(&case.text).unwrap(),
            case.ids,
            "{}",
            case.id
        );
        // With special tokens on, each occurrence is 50256 and the text between the
        // occurrences is encoded on its own.
        let special = tokenizer.encode_with_special_tokens(&case.text).unwrap();
        let mut expected = Vec::new();
        for (i, piece) in case.text.split("<|endoftext|>").enumerate() {
            if i > 0 {
                expected.push(END_OF_TEXT);
            }
            expected.extend(tokenizer.encode(piece).unwrap());
        }
        assert_eq!(special, expected, "{}", case.id);
        assert_eq!(
            tokenizer.decode(&special).unwrap(),
            case.text,
            "{}",
            case.id
        );
    }
}

#[test]
fn invalid_utf8_is_replaced_like_python() {
    // tests/data/replace_cases.jsonl: random adversarial byte strings with Python's
    // bytes.decode("utf-8", errors="replace") (see make_replace_cases.py).
    let tokenizer = Tokenizer::gpt2();
    let mut byte_token = [0u32; 256];
    for id in 0..tokenizer.vocab_size() as u32 {
        if let [byte] = tokenizer.token_bytes(id).unwrap() {
            byte_token[usize::from(*byte)] = id;
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/replace_cases.jsonl");
    let cases = std::fs::read_to_string(path).unwrap();
    let mut n = 0;
    for line in cases.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let hex = case["bytes"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let expected = case["text"].as_str().unwrap();
        let ids: Vec<u32> = bytes.iter().map(|&b| byte_token[usize::from(b)]).collect();
        assert_eq!(tokenizer.decode_bytes(&ids).unwrap(), bytes);
        assert_eq!(tokenizer.decode(&ids).unwrap(), expected, "bytes {hex}");
        let mut decoder = tokenizer.stream_decoder();
        let mut streamed = String::new();
        for &id in &ids {
            streamed += &decoder.push(id).unwrap();
        }
        streamed += &decoder.finish();
        assert_eq!(streamed, expected, "streamed bytes {hex}");
        n += 1;
    }
    assert_eq!(n, 500);
}
