//! Loading: the embedded vocabulary, the three file layouts, and bad files.

use std::path::{Path, PathBuf};

use gpt2_tokenizer::{Error, Layout, Tokenizer, END_OF_TEXT, GPT2_VOCAB_SIZE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ENCODER_JSON: &[u8] = include_bytes!("../data/encoder.json");
const VOCAB_BPE: &[u8] = include_bytes!("../data/vocab.bpe");

const SAMPLE: &str =
    "Hello, world! It's 2024: naïve café, 日本語, emoji 👋🏽, code `x += 1;`\n\n  end<|endoftext|>";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn shared_fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    dir.is_dir().then_some(dir)
}

/// Both tokenizers give the same ids (plain and special) and decode them the same.
fn assert_same(a: &Tokenizer, b: &Tokenizer) {
    assert_eq!(a.vocab_size(), b.vocab_size());
    assert_eq!(a.end_of_text(), b.end_of_text());
    assert_eq!(a.encode(SAMPLE).unwrap(), b.encode(SAMPLE).unwrap());
    let special = a.encode_with_special_tokens(SAMPLE).unwrap();
    assert_eq!(special, b.encode_with_special_tokens(SAMPLE).unwrap());
    assert_eq!(special.last(), Some(&END_OF_TEXT));
    assert_eq!(b.decode(&special).unwrap(), SAMPLE);
    for id in [0, 1, 198, 220, 262, 50255, 50256] {
        assert_eq!(a.token_bytes(id).unwrap(), b.token_bytes(id).unwrap());
        assert_eq!(a.token_spelling(id).unwrap(), b.token_spelling(id).unwrap());
    }
}

/// A `tokenizer.json` like Hugging Face writes for `gpt2`, built from the embedded files.
fn tokenizer_json(pair_merges: bool) -> Value {
    let vocab: Value = serde_json::from_slice(ENCODER_JSON).unwrap();
    let merges: Vec<Value> = std::str::from_utf8(VOCAB_BPE)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            if pair_merges {
                let (a, b) = l.split_once(' ').unwrap();
                json!([a, b])
            } else {
                json!(l)
            }
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": true, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    })
}

#[test]
fn embedded_files_are_openais() {
    assert_eq!(
        sha256_hex(ENCODER_JSON),
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    );
    assert_eq!(
        sha256_hex(VOCAB_BPE),
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    );
    let license = include_str!("../data/LICENSE");
    assert!(license.contains("MIT"));
}

#[test]
fn tokenizer_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    let t = Tokenizer::gpt2();
    let ids: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let t = &t;
                scope.spawn(move || t.encode(&format!("thread {i} says hello")).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, ids) in ids.iter().enumerate() {
        assert_eq!(t.decode(ids).unwrap(), format!("thread {i} says hello"));
    }
}

#[test]
fn embedded_tokenizer_basics() {
    let t = Tokenizer::gpt2();
    assert_eq!(t.vocab_size(), GPT2_VOCAB_SIZE);
    assert_eq!(t.end_of_text(), Some(END_OF_TEXT));
    assert_eq!(t.token_spelling(END_OF_TEXT).unwrap(), "<|endoftext|>");
    assert_eq!(t.token_bytes(END_OF_TEXT).unwrap(), b"<|endoftext|>");
    assert_eq!(t.token_id("<|endoftext|>"), Some(END_OF_TEXT));
    assert_eq!(t.token_id("Ġthe"), Some(262));
    assert_eq!(t.token_id("no such token"), None);
    // The 256 byte tokens spell all bytes.
    let mut bytes: Vec<u8> = (0..256)
        .flat_map(|id| t.token_bytes(id).unwrap().to_vec())
        .collect();
    bytes.sort_unstable();
    assert_eq!(bytes, (0..=255u8).collect::<Vec<_>>());
    // Every token decodes to the bytes of its spelling under bytes_to_unicode.
    assert_eq!(t.token_bytes(220).unwrap(), b" ");
    assert_eq!(t.token_bytes(198).unwrap(), b"\n");
}

#[test]
fn out_of_range_ids_are_errors() {
    let t = Tokenizer::gpt2();
    for id in [50257, 60000, u32::MAX] {
        assert!(
            matches!(t.decode(&[1, id]), Err(Error::InvalidId { id: i, vocab_size: 50257 }) if i == id)
        );
        assert!(t.decode_bytes(&[id]).is_err());
        assert!(t.token_bytes(id).is_err());
        assert!(t.token_spelling(id).is_err());
        assert!(t.token_display(id).is_err());
        assert!(t.stream_decoder().push(id).is_err());
    }
    let message = t.decode(&[50257]).unwrap_err().to_string();
    assert!(
        message.contains("50257") && message.contains("0 to 50256"),
        "{message}"
    );
}

#[test]
fn openai_layout() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "encoder.json", ENCODER_JSON);
    write(dir.path(), "vocab.bpe", VOCAB_BPE);
    assert_eq!(Layout::detect(dir.path()).unwrap(), Layout::OpenAi);
    assert_same(
        &Tokenizer::gpt2(),
        &Tokenizer::from_dir(dir.path()).unwrap(),
    );
}

#[test]
fn hf_vocab_merges_layout() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vocab.json", ENCODER_JSON);
    write(dir.path(), "merges.txt", VOCAB_BPE);
    assert_eq!(Layout::detect(dir.path()).unwrap(), Layout::HfVocabMerges);
    assert_same(
        &Tokenizer::gpt2(),
        &Tokenizer::from_dir(dir.path()).unwrap(),
    );
    // Explicit file names work as well.
    let t = Tokenizer::from_vocab_and_merges_files(
        dir.path().join("vocab.json"),
        dir.path().join("merges.txt"),
    )
    .unwrap();
    assert_same(&Tokenizer::gpt2(), &t);
}

#[test]
fn hf_tokenizer_json_layout_both_merge_formats() {
    for pair_merges in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let json = serde_json::to_vec(&tokenizer_json(pair_merges)).unwrap();
        write(dir.path(), "tokenizer.json", &json);
        assert_eq!(Layout::detect(dir.path()).unwrap(), Layout::HfTokenizerJson);
        assert_same(
            &Tokenizer::gpt2(),
            &Tokenizer::from_dir(dir.path()).unwrap(),
        );
    }
}

#[test]
fn crlf_merges_and_missing_version_line_are_accepted() {
    let text = std::str::from_utf8(VOCAB_BPE).unwrap();
    let crlf = text.replace('\n', "\r\n");
    let no_version = text.split_once('\n').unwrap().1;
    for merges in [crlf.as_str(), no_version] {
        let t = Tokenizer::from_vocab_and_merges_bytes(ENCODER_JSON, merges.as_bytes(), "v", "m")
            .unwrap();
        assert_same(&Tokenizer::gpt2(), &t);
    }
}

#[test]
fn shared_fixture_layouts() {
    let Some(shared) = shared_fixtures() else {
        eprintln!("note: ../shared/fixtures is absent; skipped");
        return;
    };
    let gpt2 = Tokenizer::gpt2();
    let openai = shared.join("gpt2-tiny/openai");
    let hf = shared.join("gpt2-tiny/hf");
    if openai.join("encoder.json").is_file() {
        assert_eq!(Layout::detect(&openai).unwrap(), Layout::OpenAi);
        assert_same(&gpt2, &Tokenizer::from_dir(&openai).unwrap());
    }
    if hf.join("tokenizer.json").is_file() {
        // The hub layout has all three files; vocab.json + merges.txt wins.
        assert_eq!(Layout::detect(&hf).unwrap(), Layout::HfVocabMerges);
        assert_same(&gpt2, &Tokenizer::from_dir(&hf).unwrap());
        let t = Tokenizer::from_tokenizer_json(hf.join("tokenizer.json")).unwrap();
        assert_same(&gpt2, &t);
        let t = Tokenizer::from_dir_with_layout(&hf, Layout::HfTokenizerJson).unwrap();
        assert_same(&gpt2, &t);
    }
}

#[test]
fn layout_priority() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tokenizer.json", b"{}");
    assert_eq!(Layout::detect(dir.path()).unwrap(), Layout::HfTokenizerJson);
    write(dir.path(), "vocab.json", ENCODER_JSON);
    write(dir.path(), "merges.txt", VOCAB_BPE);
    assert_eq!(Layout::detect(dir.path()).unwrap(), Layout::HfVocabMerges);
    write(dir.path(), "encoder.json", ENCODER_JSON);
    write(dir.path(), "vocab.bpe", VOCAB_BPE);
    assert_eq!(Layout::detect(dir.path()).unwrap(), Layout::OpenAi);
    // A half pair does not hide a complete layout.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "encoder.json", ENCODER_JSON);
    write(dir.path(), "tokenizer.json", b"{}");
    assert_eq!(Layout::detect(dir.path()).unwrap(), Layout::HfTokenizerJson);
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NoTokenizerFiles { .. }));
    let message = err.to_string();
    for name in [
        "encoder.json",
        "vocab.bpe",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
    ] {
        assert!(message.contains(name), "{message}");
    }

    write(dir.path(), "encoder.json", ENCODER_JSON);
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(
        err,
        Error::IncompleteLayout {
            found: "encoder.json",
            missing: "vocab.bpe",
            ..
        }
    ));
    assert!(err.to_string().contains("vocab.bpe"));

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "merges.txt", VOCAB_BPE);
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(
        err,
        Error::IncompleteLayout {
            found: "merges.txt",
            missing: "vocab.json",
            ..
        }
    ));

    let file = write(dir.path(), "plain.txt", b"x");
    assert!(matches!(
        Tokenizer::from_dir(&file),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        Tokenizer::from_dir(dir.path().join("nope")),
        Err(Error::NotADirectory { .. })
    ));
    let err = Tokenizer::from_vocab_and_merges_files(dir.path().join("a.json"), &file).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("a.json"));
}

/// The error message for a vocabulary/merges pair.
fn load_error(vocab: &[u8], merges: &[u8]) -> String {
    let err = Tokenizer::from_vocab_and_merges_bytes(vocab, merges, "VOCAB", "MERGES").unwrap_err();
    assert!(matches!(err, Error::InvalidFile { .. }), "{err:?}");
    err.to_string()
}

fn vocab_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut vocab: serde_json::Map<String, Value> = serde_json::from_slice(ENCODER_JSON).unwrap();
    edit(&mut vocab);
    serde_json::to_vec(&vocab).unwrap()
}

#[test]
fn bad_vocabularies() {
    let m = load_error(b"[1, 2]", VOCAB_BPE);
    assert!(m.contains("VOCAB"), "{m}");
    let m = load_error(b"{\"a\": -1}", VOCAB_BPE);
    assert!(m.contains("VOCAB"), "{m}");
    let m = load_error(b"{}", VOCAB_BPE);
    assert!(m.contains("no tokens"), "{m}");
    let m = load_error(b"not json", VOCAB_BPE);
    assert!(m.contains("VOCAB"), "{m}");
    // An id past the end.
    let m = load_error(
        &vocab_with(|v| {
            v.insert("<|endoftext|>".into(), json!(70000));
        }),
        VOCAB_BPE,
    );
    assert!(m.contains("70000"), "{m}");
    // Two tokens with one id (and so a gap).
    let m = load_error(
        &vocab_with(|v| {
            v.insert("<|endoftext|>".into(), json!(5));
        }),
        VOCAB_BPE,
    );
    assert!(m.contains("id 5"), "{m}");
    // A byte without its token: "Ġ" (the space) removed, ids shifted to stay dense.
    let m = load_error(
        &vocab_with(|v| {
            let id = v.remove("Ġ").unwrap();
            let last = v.remove("<|endoftext|>").unwrap();
            let _ = last;
            // Move the highest token into the hole so the ids stay 0..n-1.
            let top = v
                .iter()
                .find(|(_, i)| i.as_u64() == Some(50255))
                .map(|(k, _)| k.clone())
                .unwrap();
            v.insert(top, id);
        }),
        VOCAB_BPE,
    );
    assert!(m.contains("0x20"), "{m}");
    // A token named twice in the JSON text (ids 5 and 0): ambiguous, refused.
    let twice = String::from_utf8(ENCODER_JSON.to_vec())
        .unwrap()
        .replacen('{', "{\"!\": 5, ", 1);
    let m = load_error(twice.as_bytes(), VOCAB_BPE);
    assert!(m.contains("\"!\" appears twice (ids 5 and 0)"), "{m}");
}

#[test]
fn bad_merges() {
    let m = load_error(ENCODER_JSON, b"#version: 0.2\nG t x\n");
    assert!(m.contains("MERGES") && m.contains("line 2"), "{m}");
    let m = load_error(ENCODER_JSON, b"#version: 0.2\nsingle\n");
    assert!(m.contains("line 2"), "{m}");
    let m = load_error(ENCODER_JSON, b"\xFF\xFE");
    assert!(m.contains("UTF-8"), "{m}");
    // Merges whose tokens (or their concatenation) are not in the vocabulary.
    let m = load_error(ENCODER_JSON, "#version: 0.2\nĠ zzzzq\n".as_bytes());
    assert!(m.contains("MERGES") && m.contains("zzzzq"), "{m}");
}

fn tokenizer_json_error(edit: impl FnOnce(&mut Value)) -> String {
    let mut json = tokenizer_json(false);
    edit(&mut json);
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "tokenizer.json",
        &serde_json::to_vec(&json).unwrap(),
    );
    let err = Tokenizer::from_tokenizer_json(&path).unwrap_err();
    assert!(matches!(err, Error::InvalidFile { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("tokenizer.json"), "{message}");
    message
}

#[test]
fn bad_tokenizer_json() {
    let m = tokenizer_json_error(|j| j["normalizer"] = json!({"type": "NFC"}));
    assert!(m.contains("normalizer"), "{m}");
    let m = tokenizer_json_error(|j| j["pre_tokenizer"]["add_prefix_space"] = json!(true));
    assert!(m.contains("pre_tokenizer"), "{m}");
    let m = tokenizer_json_error(|j| j["pre_tokenizer"] = json!({"type": "Whitespace"}));
    assert!(m.contains("Whitespace"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["type"] = json!("WordPiece"));
    assert!(m.contains("WordPiece"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["dropout"] = json!(0.1));
    assert!(m.contains("dropout"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["continuing_subword_prefix"] = json!("##"));
    assert!(m.contains("continuing_subword_prefix"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["merges"][3] = json!(42));
    assert!(m.contains("expected a merge"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["merges"][3] = json!("a b c"));
    assert!(m.contains("a b c"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["merges"][3] = json!(["a"]));
    assert!(m.contains("expected a merge"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["byte_fallback"] = json!(true));
    assert!(m.contains("byte_fallback"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["vocab"]["!"] = json!("zero"));
    assert!(m.contains("u32"), "{m}");
    let m = tokenizer_json_error(|j| j["added_tokens"][0]["id"] = json!(7));
    assert!(m.contains("<|endoftext|>"), "{m}");
    let m = tokenizer_json_error(|j| {
        j["added_tokens"][0]
            .as_object_mut()
            .unwrap()
            .remove("content");
    });
    assert!(m.contains("content"), "{m}");
    let m = tokenizer_json_error(|j| {
        j["model"].as_object_mut().unwrap().remove("vocab");
    });
    assert!(m.contains("vocab"), "{m}");
    // A token named twice in the vocabulary's JSON text.
    let mut json = tokenizer_json(false);
    json["model"]["vocab"] = json!({"PLACEHOLDER": 0});
    let text = serde_json::to_string(&json)
        .unwrap()
        .replace("\"PLACEHOLDER\":0", "\"a\":0,\"a\":1");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "tokenizer.json", text.as_bytes());
    let m = Tokenizer::from_tokenizer_json(&path)
        .unwrap_err()
        .to_string();
    assert!(m.contains("appears twice"), "{m}");
    let m = tokenizer_json_error(|j| *j = json!("text"));
    assert!(m.contains("object"), "{m}");
}

#[test]
fn tokenizer_json_added_tokens_extend_the_vocabulary() {
    let mut json = tokenizer_json(false);
    // A model vocabulary without <|endoftext|>: it comes from added_tokens only.
    json["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .remove("<|endoftext|>");
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "tokenizer.json",
        &serde_json::to_vec(&json).unwrap(),
    );
    let t = Tokenizer::from_tokenizer_json(&path).unwrap();
    assert_same(&Tokenizer::gpt2(), &t);
    assert_eq!(t.token_id("<|endoftext|>"), Some(END_OF_TEXT));
}

#[test]
fn vocabulary_without_end_of_text() {
    let vocab = vocab_with(|v| {
        v.remove("<|endoftext|>");
    });
    let t = Tokenizer::from_vocab_and_merges_bytes(&vocab, VOCAB_BPE, "v", "m").unwrap();
    assert_eq!(t.vocab_size(), 50256);
    assert_eq!(t.end_of_text(), None);
    let text = "a<|endoftext|>b";
    assert_eq!(
        t.encode_with_special_tokens(text).unwrap(),
        t.encode(text).unwrap()
    );
    assert!(t.decode(&[50256]).is_err());
}

/// An error message about a huge input is short, and says how long the input was.
fn assert_brief(message: &str) {
    assert!(
        message.len() < 1500,
        "a {}-byte error message: {}...",
        message.len(),
        &message[..300]
    );
}

#[test]
fn errors_quote_only_the_start_of_huge_inputs() {
    let huge = "x".repeat(10 << 20);

    // A 10 MB line in vocab.bpe / merges.txt, read from files.
    let dir = tempfile::tempdir().unwrap();
    let vocab = write(dir.path(), "vocab.json", ENCODER_JSON);
    let merges = write(
        dir.path(),
        "merges.txt",
        format!("#version: 0.2\nĠ t\n{huge}\n").as_bytes(),
    );
    let m = Tokenizer::from_vocab_and_merges_files(&vocab, &merges)
        .unwrap_err()
        .to_string();
    assert_brief(&m);
    assert!(m.contains("merges.txt") && m.contains("line 3"), "{m}");
    assert!(m.contains("10485760 bytes in all"), "{m}");
    let m = load_error(ENCODER_JSON, format!("{huge} {huge}\n").as_bytes());
    assert_brief(&m);
    // A merge of a huge token that is not in the vocabulary.
    let m = load_error(ENCODER_JSON, format!("Ġ {huge}\n").as_bytes());
    assert_brief(&m);
    assert!(m.contains("xxxx"), "{m}");

    // A huge token in encoder.json: with an id out of range, with an id that is not a number.
    let m = load_error(
        &vocab_with(|v| {
            v.insert(huge.clone(), json!(70000));
        }),
        VOCAB_BPE,
    );
    assert_brief(&m);
    assert!(m.contains("70000") && m.contains("bytes in all"), "{m}");
    let m = load_error(
        &vocab_with(|v| {
            v.insert("!".into(), json!(huge));
        }),
        VOCAB_BPE,
    );
    assert_brief(&m);
    assert!(m.contains("VOCAB") && m.contains("u32"), "{m}");
    let m = load_error(format!("{{\"{huge}").as_bytes(), VOCAB_BPE);
    assert_brief(&m);

    // tokenizer.json: a huge merge, a huge model type.
    let m = tokenizer_json_error(|j| j["model"]["merges"][3] = json!(huge));
    assert_brief(&m);
    assert!(m.contains("bytes in all"), "{m}");
    let m = tokenizer_json_error(|j| j["model"]["type"] = json!(huge));
    assert_brief(&m);
    assert!(m.contains("bytes in all"), "{m}");
}
