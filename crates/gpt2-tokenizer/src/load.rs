//! Reading the vocabulary files of the supported layouts.

use std::collections::HashMap;
use std::path::Path;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::escape::{excerpt, shorten};

/// Which tokenizer files a directory holds.
///
/// [`Layout::detect`] looks for them in this order: OpenAI's release layout, then
/// Hugging Face's `vocab.json` + `merges.txt`, then Hugging Face's `tokenizer.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// OpenAI's release layout (`models/124M/`): `encoder.json` + `vocab.bpe`.
    OpenAi,
    /// Hugging Face's slow-tokenizer files: `vocab.json` + `merges.txt`
    /// (the same formats as `encoder.json` + `vocab.bpe`).
    HfVocabMerges,
    /// Hugging Face's single-file `tokenizer.json` (a BPE model with GPT-2's
    /// byte-level pre-tokenizer).
    HfTokenizerJson,
}

impl Layout {
    /// The file names this layout consists of.
    ///
    /// ```
    /// use gpt2_tokenizer::Layout;
    /// assert_eq!(Layout::OpenAi.files(), &["encoder.json", "vocab.bpe"]);
    /// ```
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Layout::OpenAi => &["encoder.json", "vocab.bpe"],
            Layout::HfVocabMerges => &["vocab.json", "merges.txt"],
            Layout::HfTokenizerJson => &["tokenizer.json"],
        }
    }

    /// Finds out which layout `dir` holds.
    ///
    /// A directory with several layouts (the Hugging Face hub has all three files for
    /// `gpt2`) gets the first of: OpenAI, `vocab.json` + `merges.txt`, `tokenizer.json`.
    ///
    /// # Errors
    /// [`Error::NotADirectory`], [`Error::NoTokenizerFiles`], or
    /// [`Error::IncompleteLayout`] when only one file of a pair is there and no other
    /// layout is complete.
    pub fn detect(dir: &Path) -> Result<Layout> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let has = |name: &str| dir.join(name).is_file();
        let mut incomplete = None;
        for layout in [
            Layout::OpenAi,
            Layout::HfVocabMerges,
            Layout::HfTokenizerJson,
        ] {
            match layout.files() {
                [single] if has(single) => return Ok(layout),
                [first, second] => match (has(first), has(second)) {
                    (true, true) => return Ok(layout),
                    (true, false) => incomplete = incomplete.or(Some((*first, *second))),
                    (false, true) => incomplete = incomplete.or(Some((*second, *first))),
                    (false, false) => {}
                },
                _ => {}
            }
        }
        Err(match incomplete {
            Some((found, missing)) => Error::IncompleteLayout {
                dir: dir.to_path_buf(),
                found,
                missing,
            },
            None => Error::NoTokenizerFiles {
                dir: dir.to_path_buf(),
            },
        })
    }
}

/// A vocabulary: token spelling → id (with the hasher `tokenizers` uses, so that it
/// moves into the BPE model without rehashing).
pub(crate) type VocabMap = HashMap<String, u32, ahash::RandomState>;

/// What the loaders hand to the tokenizer builder.
pub(crate) struct VocabData {
    /// The BPE model's vocabulary: token spelling → id.
    pub vocab: VocabMap,
    /// The merges, by rank (first = applied first).
    pub merges: Vec<(String, String)>,
    /// Tokens a `tokenizer.json` adds outside the BPE model (content, id).
    pub added: Vec<(String, u32)>,
    /// Where the vocabulary came from, for error messages.
    pub source: String,
}

pub(crate) const VOCAB_WHAT: &str =
    "GPT-2 vocabulary (encoder.json / vocab.json: a JSON object of token -> id)";
pub(crate) const MERGES_WHAT: &str =
    "GPT-2 merges file (vocab.bpe / merges.txt: one \"left right\" pair a line)";
pub(crate) const TOKENIZER_JSON_WHAT: &str =
    "GPT-2 tokenizer.json (a BPE model with a ByteLevel pre-tokenizer)";

fn invalid(source: &str, what: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidFile {
        source_name: source.to_string(),
        what,
        reason: reason.into(),
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A vocabulary JSON object whose keys are unique: one that names a token twice is ambiguous
/// (serde_json would keep the last id silently), so it is refused.
fn unique_vocab<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<VocabMap, D::Error> {
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = VocabMap;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object of token -> id")
        }
        fn visit_map<A: de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<VocabMap, A::Error> {
            let mut vocab = VocabMap::with_capacity_and_hasher(
                map.size_hint().unwrap_or(0).min(1 << 20),
                Default::default(),
            );
            while let Some((token, id)) = map.next_entry::<String, u32>()? {
                match vocab.entry(token) {
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(id);
                    }
                    std::collections::hash_map::Entry::Occupied(first) => {
                        return Err(de::Error::custom(format!(
                            "token {} appears twice (ids {} and {id}): which one is meant is \
                             ambiguous",
                            excerpt(first.key()),
                            first.get()
                        )));
                    }
                }
            }
            Ok(vocab)
        }
    }
    d.deserialize_map(Unique)
}

/// `Option<VocabMap>` with [`unique_vocab`], for `#[serde(deserialize_with)]`.
fn unique_vocab_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<VocabMap>, D::Error> {
    unique_vocab(d).map(Some)
}

/// Parses `encoder.json` / `vocab.json`.
pub(crate) fn parse_vocab_json(bytes: &[u8], source: &str) -> Result<VocabMap> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let vocab = unique_vocab(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| invalid(source, VOCAB_WHAT, shorten(e.to_string())))?;
    if vocab.is_empty() {
        return Err(invalid(source, VOCAB_WHAT, "it has no tokens"));
    }
    Ok(vocab)
}

/// Parses `vocab.bpe` / `merges.txt`: an optional `#version` line, then one merge a line.
pub(crate) fn parse_merges(bytes: &[u8], source: &str) -> Result<Vec<(String, String)>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| invalid(source, MERGES_WHAT, format!("it is not UTF-8 text ({e})")))?;
    let mut merges = Vec::with_capacity(text.len() / 9);
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || (index == 0 && line.starts_with("#version")) {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(left), Some(right), None) if !left.is_empty() && !right.is_empty() => {
                merges.push((left.to_string(), right.to_string()))
            }
            _ => {
                return Err(invalid(
                    source,
                    MERGES_WHAT,
                    format!(
                        "line {} is {}, expected two tokens separated by one space",
                        index + 1,
                        excerpt(line)
                    ),
                ))
            }
        }
    }
    Ok(merges)
}

/// The parts of a `tokenizer.json` that matter here (unknown fields are ignored).
#[derive(Deserialize)]
#[serde(expecting = "a JSON object (a Hugging Face tokenizer.json)")]
struct TokenizerFile {
    #[serde(default)]
    added_tokens: Vec<AddedTokenFile>,
    #[serde(default)]
    normalizer: Option<Value>,
    #[serde(default)]
    pre_tokenizer: Option<Value>,
    #[serde(default)]
    model: Option<ModelFile>,
}

#[derive(Deserialize)]
struct AddedTokenFile {
    id: u32,
    content: String,
}

#[derive(Deserialize)]
struct ModelFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    dropout: Option<Value>,
    #[serde(default)]
    unk_token: Option<Value>,
    #[serde(default)]
    continuing_subword_prefix: Option<Value>,
    #[serde(default)]
    end_of_word_suffix: Option<Value>,
    #[serde(default)]
    byte_fallback: Option<Value>,
    #[serde(default)]
    ignore_merges: Option<Value>,
    #[serde(default, deserialize_with = "unique_vocab_opt")]
    vocab: Option<VocabMap>,
    #[serde(default)]
    merges: Option<Vec<Merge>>,
}

/// One merge, written `"left right"` (older files) or `["left", "right"]` (newer).
struct Merge(String, String);

impl<'de> Deserialize<'de> for Merge {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Merge, D::Error> {
        struct MergeVisitor;

        impl<'de> Visitor<'de> for MergeVisitor {
            type Value = Merge;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a merge: \"left right\" or [\"left\", \"right\"]")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Merge, E> {
                let mut parts = s.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => {
                        Ok(Merge(l.to_string(), r.to_string()))
                    }
                    _ => Err(E::custom(format!(
                        "invalid merge {}, expected \"left right\" or [\"left\", \"right\"]",
                        excerpt(s)
                    ))),
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge, A::Error> {
                let left: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let right: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some()
                    || left.is_empty()
                    || right.is_empty()
                {
                    return Err(de::Error::invalid_value(de::Unexpected::Seq, &self));
                }
                Ok(Merge(left, right))
            }
        }

        deserializer.deserialize_any(MergeVisitor)
    }
}

/// Parses a Hugging Face `tokenizer.json`, accepting only what GPT-2's pipeline does.
pub(crate) fn parse_tokenizer_json(bytes: &[u8], source: &str) -> Result<VocabData> {
    let bad = |reason: String| invalid(source, TOKENIZER_JSON_WHAT, reason);
    let file: TokenizerFile =
        serde_json::from_slice(bytes).map_err(|e| bad(shorten(e.to_string())))?;

    // normalizer: none.
    match &file.normalizer {
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(bad(format!(
                "it has a normalizer ({}); GPT-2 uses none",
                short(other)
            )))
        }
    }
    // pre_tokenizer: ByteLevel without a prefix space, with GPT-2's regex.
    match &file.pre_tokenizer {
        Some(Value::Object(pre))
            if pre.get("type").and_then(Value::as_str) == Some("ByteLevel")
                && pre.get("add_prefix_space").and_then(Value::as_bool) != Some(true)
                && pre.get("use_regex").and_then(Value::as_bool) != Some(false) => {}
        other => {
            return Err(bad(format!(
                "its pre_tokenizer is {}; expected {{\"type\": \"ByteLevel\", \
                 \"add_prefix_space\": false, \"use_regex\": true}}",
                other.as_ref().map_or("missing".to_string(), short)
            )))
        }
    }

    let model = file
        .model
        .ok_or_else(|| bad("it has no \"model\" object".into()))?;
    match model.kind.as_deref() {
        Some("BPE") | None => {}
        Some(other) => {
            return Err(bad(format!(
                "its model is {}, expected \"BPE\"",
                excerpt(other)
            )))
        }
    }
    let unused = |value: &Option<Value>| match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    };
    for (key, value) in [
        ("dropout", &model.dropout),
        ("unk_token", &model.unk_token),
        (
            "continuing_subword_prefix",
            &model.continuing_subword_prefix,
        ),
        ("end_of_word_suffix", &model.end_of_word_suffix),
        ("byte_fallback", &model.byte_fallback),
        ("ignore_merges", &model.ignore_merges),
    ] {
        if !unused(value) {
            return Err(bad(format!(
                "its BPE model sets {key:?}, which GPT-2 does not use"
            )));
        }
    }

    let vocab = model
        .vocab
        .ok_or_else(|| bad("its model has no \"vocab\" object".into()))?;
    if vocab.is_empty() {
        return Err(bad("its vocabulary has no tokens".into()));
    }
    let merges = model
        .merges
        .ok_or_else(|| bad("its model has no \"merges\" array".into()))?
        .into_iter()
        .map(|Merge(left, right)| (left, right))
        .collect();
    let added = file
        .added_tokens
        .into_iter()
        .map(|token| (token.content, token.id))
        .collect();

    Ok(VocabData {
        vocab,
        merges,
        added,
        source: source.to_string(),
    })
}

/// A JSON value, shortened for an error message.
fn short(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 120 {
        let mut cut = 117;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}
