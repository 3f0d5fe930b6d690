//! GPT-2's byte-level BPE tokenizer, byte-exact with OpenAI's `encoder.py`.
//!
//! GPT-2 splits text with OpenAI's pattern
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! writes the bytes of every piece as printable stand-in characters (`bytes_to_unicode`:
//! a space is `Ġ`), and applies BPE merges by rank to each piece. GPT-2's vocabulary
//! (`encoder.json` + `vocab.bpe`, MIT licensed, see `data/LICENSE`) is embedded, so
//! [`Tokenizer::gpt2`] needs no files; other GPT-2-style vocabularies load from
//! OpenAI's or Hugging Face's file layouts ([`Tokenizer::from_dir`]).
//!
//! ```
//! use gpt2_tokenizer::Tokenizer;
//!
//! let tokenizer = Tokenizer::gpt2();
//! let ids = tokenizer.encode("Hello, world!")?;
//! assert_eq!(ids, [15496, 11, 995, 0]);
//! assert_eq!(tokenizer.decode(&ids)?, "Hello, world!");
//! # Ok::<(), gpt2_tokenizer::Error>(())
//! ```
//!
//! # How it is built
//!
//! The BPE model is the one of Hugging Face's [`tokenizers`] crate (vocabulary, merges
//! by rank, word cache). The split is this crate's own: `tokenizers`' ByteLevel
//! pre-tokenizer runs the pattern on `fancy-regex` and tracks offsets byte by byte,
//! which made it the bottleneck (about 4 MB/s); here the pattern runs on the `regex`
//! crate's engine with the look-ahead applied by hand, about five times faster
//! overall. The unit tests check that it splits exactly like `tokenizers`' ByteLevel
//! pre-tokenizer on arbitrary text. Repeated pieces in one call reuse their ids.
//!
//! # Exactness
//!
//! Encoding matches OpenAI's `encoder.py` id for id (checked on the 256 reference
//! cases and 3000 random texts in `tests/data`), including its treatment of the text
//! `<|endoftext|>` as ordinary text (use [`Tokenizer::encode_with_special_tokens`] to
//! get the special token [`END_OF_TEXT`]). Decoding replaces invalid UTF-8 like Python's
//! `bytes.decode("utf-8", errors="replace")`: one U+FFFD per maximal invalid
//! subsequence.
//!
//! Pieces of the split longer than [`MAX_PIECE_CHARS`] characters are encoded in
//! chunks, which keeps time and memory linear; runs of one repeated character still get
//! OpenAI's ids, other such pieces may differ next to a chunk boundary (see there).
//!
//! One caveat is inherent to regular expressions: which characters count as letters
//! (`\p{L}`) and numbers (`\p{N}`) depends on the Unicode version of the regex engine.
//! The `regex` crate's tables (used here, and by `fancy-regex`) follow **Unicode
//! 16.0**, like `tiktoken` and the Python `tokenizers` package. OpenAI's `encoder.py`
//! with a current Python `regex` module uses Unicode 17.0, so the two differ only on
//! text containing letters or digits first assigned in Unicode 17.0 (September 2025;
//! e.g. U+A7CE, U+10940, U+16EA0, CJK Extension J). `\s` is Unicode's `White_Space`
//! in both.
//!
//! # Streaming
//!
//! A generated token may end in the middle of a multi-byte character;
//! [`StreamDecoder`] turns ids into text as they arrive, holding back an incomplete
//! character until the next token completes it.

#![warn(missing_docs)]

mod byte_level;
mod error;
mod escape;
mod load;
mod pretokenize;
mod stream;

use std::collections::HashMap;
use std::path::Path;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::Model;

pub use error::{Error, Result};
pub use escape::{escape_bytes, excerpt, shorten_message, EXCERPT_BYTES};
pub use load::Layout;
pub use stream::StreamDecoder;

use byte_level::{CharToByte, BYTE_TO_CHAR};
use load::VocabData;
use pretokenize::Splitter;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctest;

/// The id of GPT-2's only special token, `<|endoftext|>`.
pub const END_OF_TEXT: u32 = 50256;

/// The text of GPT-2's end-of-text token.
pub const END_OF_TEXT_TEXT: &str = "<|endoftext|>";

/// The number of tokens in GPT-2's vocabulary (50,000 merges + 256 bytes + `<|endoftext|>`).
pub const GPT2_VOCAB_SIZE: usize = 50257;

/// The longest piece of GPT-2's pre-tokenization split, in characters, that is encoded
/// as one BPE word (65,536).
///
/// A longer piece, which only pathological text has (64 K letters, digits,
/// punctuation characters or spaces in a row, e.g. `aaaa…`), is cut into chunks, each
/// a BPE word of its own: chunks of exactly `MAX_PIECE_CHARS / 2` characters are taken
/// from its front while more than `MAX_PIECE_CHARS` characters remain, and the rest
/// (more than `MAX_PIECE_CHARS / 2`, at most `MAX_PIECE_CHARS` characters) is the last
/// chunk. This keeps encoding linear in time and memory: BPE on one word of `n`
/// characters holds about 50 bytes per byte of it (`tokenizers`' symbols, merge queue
/// and tokens; 100 MB of `a` needed more than 1.6 GB), and OpenAI's `encoder.py`
/// takes time quadratic in `n`.
///
/// The ids of such a piece are the ids of its chunks back to back. They are always a
/// valid encoding (decoding gives the text back). For a run of one repeated character
/// they are exactly OpenAI's: BPE turns such a run into a repeating token (of 64
/// characters at most in GPT-2's vocabulary) whose length divides 32,768, followed by
/// a tail that depends only on the run's last hundred or so characters, which all stay
/// in the last chunk (the tests check every ASCII character and a set of multi-byte
/// ones). For other pieces this long, the ids around the chunk boundaries can differ
/// from what `encoder.py` would give.
pub const MAX_PIECE_CHARS: usize = 1 << 16;

/// How many distinct pieces one encode call remembers the ids of (see
/// [`Tokenizer::encode`]); the others go through the BPE model again, so that the
/// memory of the table stays bounded.
const SEEN_PIECES_CAP: usize = 1 << 16;

/// GPT-2's `encoder.json`, embedded.
const EMBEDDED_ENCODER_JSON: &[u8] = include_bytes!("../data/encoder.json");
/// GPT-2's `vocab.bpe`, embedded.
const EMBEDDED_VOCAB_BPE: &[u8] = include_bytes!("../data/vocab.bpe");

/// A GPT-2 byte-level BPE tokenizer.
///
/// Build it with [`Tokenizer::gpt2`] (GPT-2's own vocabulary, embedded) or load
/// another vocabulary with [`Tokenizer::from_dir`] and friends. It is cheap to share
/// (`&Tokenizer` is `Send + Sync`; encoding takes `&self`).
///
/// ```
/// use gpt2_tokenizer::{Tokenizer, END_OF_TEXT};
///
/// let tokenizer = Tokenizer::gpt2();
/// assert_eq!(tokenizer.vocab_size(), 50257);
/// assert_eq!(tokenizer.end_of_text(), Some(END_OF_TEXT));
/// assert_eq!(tokenizer.encode(" the")?, [262]);
/// assert_eq!(tokenizer.token_bytes(262)?, b" the");
/// # Ok::<(), gpt2_tokenizer::Error>(())
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    /// The BPE model of `tokenizers` (vocabulary, merges by rank, word cache).
    bpe: BPE,
    /// GPT-2's pre-tokenization split (the byte-level pre-tokenizer's pattern).
    splitter: Splitter,
    /// The id of the token of each single byte.
    byte_ids: [u32; 256],
    /// The bytes of every token, back to back: token `i` is `bytes[ends[i-1]..ends[i]]`.
    bytes: Vec<u8>,
    /// The vocabulary spellings of every token, back to back, indexed by `ends` like `bytes`.
    spellings: String,
    /// End offsets into `bytes` and `spellings` (pairs), one per id.
    ends: Vec<(u32, u32)>,
    /// The id of `<|endoftext|>`, when the vocabulary has it.
    end_of_text: Option<u32>,
    /// The merges by rank, as the ids of the two tokens merged.
    merges: Vec<(u32, u32)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("end_of_text", &self.end_of_text)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// GPT-2's tokenizer with its vocabulary embedded in this crate: no files, no network.
    ///
    /// The embedded `encoder.json` and `vocab.bpe` are OpenAI's (sha256 `196139…6783`
    /// and `1ce166…adc5`); this is the tokenizer of every released GPT-2 model
    /// (124M, 355M, 774M, 1558M).
    ///
    /// ```
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// assert_eq!(tokenizer.encode("GPT-2")?, [38, 11571, 12, 17]);
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    pub fn gpt2() -> Tokenizer {
        match Self::from_vocab_and_merges_bytes(
            EMBEDDED_ENCODER_JSON,
            EMBEDDED_VOCAB_BPE,
            "embedded encoder.json",
            "embedded vocab.bpe",
        ) {
            Ok(tokenizer) => tokenizer,
            // The embedded files are fixed and checked by the tests.
            Err(err) => unreachable!("the embedded GPT-2 vocabulary is invalid: {err}"),
        }
    }

    /// Loads the tokenizer files in `dir`, whichever supported layout they are in
    /// (see [`Layout::detect`]): OpenAI's `encoder.json` + `vocab.bpe`, or Hugging
    /// Face's `vocab.json` + `merges.txt` or `tokenizer.json`.
    ///
    /// ```no_run
    /// let tokenizer = gpt2_tokenizer::Tokenizer::from_dir("models/124M")?;
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// When no layout is there (the error names the files looked for), a file cannot
    /// be read, or its content is not a GPT-2 byte-level BPE vocabulary.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        Self::from_dir_with_layout(dir, Layout::detect(dir)?)
    }

    /// Loads the files of the given `layout` from `dir`.
    ///
    /// # Errors
    /// As [`Tokenizer::from_dir`].
    pub fn from_dir_with_layout(dir: impl AsRef<Path>, layout: Layout) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        match layout {
            Layout::OpenAi | Layout::HfVocabMerges => {
                let files = layout.files();
                Self::from_vocab_and_merges_files(dir.join(files[0]), dir.join(files[1]))
            }
            Layout::HfTokenizerJson => Self::from_tokenizer_json(dir.join("tokenizer.json")),
        }
    }

    /// Loads a vocabulary file and a merges file: OpenAI's `encoder.json` + `vocab.bpe`,
    /// or Hugging Face's `vocab.json` + `merges.txt` (the same two formats).
    ///
    /// # Errors
    /// When a file cannot be read or is not a valid GPT-2 vocabulary / merges file.
    pub fn from_vocab_and_merges_files(
        vocab: impl AsRef<Path>,
        merges: impl AsRef<Path>,
    ) -> Result<Tokenizer> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        Self::from_vocab_and_merges_bytes(
            &load::read_file(vocab)?,
            &load::read_file(merges)?,
            &vocab.display().to_string(),
            &merges.display().to_string(),
        )
    }

    /// Builds a tokenizer from the contents of a vocabulary file (a JSON object
    /// mapping token spellings to ids) and a merges file; `vocab_name` and
    /// `merges_name` name them in error messages.
    ///
    /// ```
    /// use gpt2_tokenizer::Tokenizer;
    ///
    /// // A toy vocabulary: the 256 byte tokens plus one merge, "a" + "b" -> "ab".
    /// let mut vocab = serde_json::Map::new();
    /// for byte in 0..=255u8 {
    ///     let spelling = Tokenizer::gpt2().token_spelling(u32::from(byte))?.to_string();
    ///     vocab.insert(spelling, (vocab.len() as u32).into());
    /// }
    /// vocab.insert("ab".into(), 256.into());
    /// let vocab = serde_json::to_vec(&vocab).unwrap();
    /// let tokenizer =
    ///     Tokenizer::from_vocab_and_merges_bytes(&vocab, b"#version: 0.2\na b\n", "vocab", "merges")?;
    /// assert_eq!(tokenizer.vocab_size(), 257);
    /// assert_eq!(tokenizer.encode("abc")?.len(), 2);
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// When either content is not a valid GPT-2 vocabulary / merges file.
    pub fn from_vocab_and_merges_bytes(
        vocab: &[u8],
        merges: &[u8],
        vocab_name: &str,
        merges_name: &str,
    ) -> Result<Tokenizer> {
        let data = VocabData {
            vocab: load::parse_vocab_json(vocab, vocab_name)?,
            merges: load::parse_merges(merges, merges_name)?,
            added: Vec::new(),
            source: vocab_name.to_string(),
        };
        Self::build(data, merges_name)
    }

    /// The token spellings in id order and the merges by rank: what
    /// [`from_tokens_and_merges`](Self::from_tokens_and_merges) takes back (the form GGUF
    /// files store).
    ///
    /// ```
    /// let (tokens, merges) = gpt2_tokenizer::Tokenizer::gpt2().tokens_and_merges();
    /// assert_eq!((tokens.len(), merges.len()), (50257, 50000));
    /// assert_eq!(tokens[262], "Ġthe");
    /// ```
    pub fn tokens_and_merges(&self) -> (Vec<String>, Vec<(String, String)>) {
        let tokens = (0..self.vocab_size() as u32)
            .map(|id| self.token_spelling(id).unwrap_or_default().to_string())
            .collect();
        let merges = self
            .merges()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        (tokens, merges)
    }

    /// Builds a tokenizer from its token spellings (token `i` is `tokens[i]`, spelled as in
    /// `vocab.json`, e.g. `"Ġthe"`) and its merges by rank (`("Ġ", "t")`): the form GGUF files
    /// store (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`). `source_name` names them in
    /// error messages.
    ///
    /// ```
    /// use gpt2_tokenizer::Tokenizer;
    /// let gpt2 = Tokenizer::gpt2();
    /// let (tokens, merges) = gpt2.tokens_and_merges();
    /// let copy = Tokenizer::from_tokens_and_merges(tokens, merges, "lists")?;
    /// assert_eq!(copy.encode("Hello, world")?, gpt2.encode("Hello, world")?);
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// When a spelling repeats, the tokens do not spell every byte, or a merge names a token
    /// that is not in the list.
    pub fn from_tokens_and_merges(
        tokens: Vec<String>,
        merges: Vec<(String, String)>,
        source_name: &str,
    ) -> Result<Tokenizer> {
        let n = tokens.len();
        let mut vocab = load::VocabMap::with_capacity_and_hasher(n, Default::default());
        for (id, token) in tokens.into_iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| Error::InvalidFile {
                source_name: source_name.to_string(),
                what: load::VOCAB_WHAT,
                reason: "it has more than 2^32 tokens".into(),
            })?;
            if let Some(other) = vocab.insert(token, id) {
                return Err(Error::InvalidFile {
                    source_name: source_name.to_string(),
                    what: load::VOCAB_WHAT,
                    reason: format!("tokens {other} and {id} have the same spelling"),
                });
            }
        }
        let data = VocabData {
            vocab,
            merges,
            added: Vec::new(),
            source: source_name.to_string(),
        };
        Self::build(data, source_name)
    }

    /// Loads a Hugging Face `tokenizer.json` holding a BPE model with GPT-2's
    /// byte-level pre-tokenizer (no normalizer, no prefix space). Its added tokens
    /// (`<|endoftext|>`) are kept.
    ///
    /// # Errors
    /// When the file cannot be read or does not describe a GPT-2 byte-level BPE
    /// tokenizer (the message says which part differs).
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let data = load::parse_tokenizer_json(&load::read_file(path)?, &name)?;
        Self::build(data, &name)
    }

    /// Checks the vocabulary and builds the tables and the BPE model.
    fn build(data: VocabData, merges_source: &str) -> Result<Tokenizer> {
        let VocabData {
            vocab,
            merges,
            added,
            source,
        } = data;
        let bad = |what: &'static str, reason: String| Error::InvalidFile {
            source_name: source.clone(),
            what,
            reason,
        };

        // Added tokens (tokenizer.json) may repeat vocabulary entries or add new ids.
        let mut extra: Vec<(&str, u32)> = Vec::new();
        for (content, id) in &added {
            let existing = vocab.get(content.as_str()).copied().or_else(|| {
                extra
                    .iter()
                    .find(|(token, _)| token == content)
                    .map(|&(_, id)| id)
            });
            match existing {
                Some(existing) if existing == *id => {}
                Some(existing) => {
                    return Err(bad(
                        load::TOKENIZER_JSON_WHAT,
                        format!(
                            "added token {} has id {id} but the vocabulary gives it {existing}",
                            excerpt(content)
                        ),
                    ))
                }
                None => extra.push((content, *id)),
            }
        }

        // Every id from 0 to n-1 must have exactly one spelling.
        let n = vocab.len() + extra.len();
        let mut spelling_of: Vec<Option<&str>> = vec![None; n];
        let entries = vocab.iter().map(|(token, &id)| (token.as_str(), id));
        for (token, id) in entries.chain(extra.iter().copied()) {
            let slot = spelling_of.get_mut(id as usize).ok_or_else(|| {
                bad(
                    load::VOCAB_WHAT,
                    format!(
                        "token {} has id {id}, but with {n} tokens the ids must be 0 to {}",
                        excerpt(token),
                        n - 1
                    ),
                )
            })?;
            if let Some(other) = slot.replace(token) {
                return Err(bad(
                    load::VOCAB_WHAT,
                    format!(
                        "id {id} is given to both {} and {}",
                        excerpt(other),
                        excerpt(token)
                    ),
                ));
            }
        }
        let end_of_text = vocab.get(END_OF_TEXT_TEXT).copied().or_else(|| {
            extra
                .iter()
                .find(|(token, _)| *token == END_OF_TEXT_TEXT)
                .map(|&(_, id)| id)
        });

        // Byte-level BPE must be able to spell every byte on its own; without
        // that the `tokenizers` BPE would silently drop such bytes.
        let mut byte_ids = [0u32; 256];
        for (byte, c) in BYTE_TO_CHAR.iter().enumerate() {
            let mut buf = [0u8; 4];
            if let Some(&id) = vocab.get(&*c.encode_utf8(&mut buf)) {
                byte_ids[byte] = id;
            } else {
                return Err(bad(
                    load::VOCAB_WHAT,
                    format!(
                        "it has no token for byte 0x{byte:02X} (spelled {c:?}); a GPT-2 \
                         byte-level vocabulary has one for each of the 256 bytes"
                    ),
                ));
            }
        }

        let table = CharToByte::new();
        let mut bytes = Vec::with_capacity(n * 8);
        let mut spellings = String::with_capacity(n * 8);
        let mut ends = Vec::with_capacity(n);
        for token in spelling_of.iter().flatten() {
            byte_level::token_to_bytes(&table, token, &mut bytes);
            spellings.push_str(token);
            let (b, s) = (u32::try_from(bytes.len()), u32::try_from(spellings.len()));
            match (b, s) {
                (Ok(b), Ok(s)) => ends.push((b, s)),
                _ => return Err(bad(load::VOCAB_WHAT, "it is larger than 4 GiB".into())),
            }
        }
        drop(spelling_of);
        drop(extra);

        // (A merge of tokens outside the vocabulary fails in the BPE builder below.)
        let merge_ids: Vec<(u32, u32)> = merges
            .iter()
            .filter_map(|(a, b)| Some((*vocab.get(a.as_str())?, *vocab.get(b.as_str())?)))
            .collect();
        let vocab: Vocab = vocab.into();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::InvalidFile {
                source_name: merges_source.to_string(),
                what: load::MERGES_WHAT,
                reason: escape::shorten(e.to_string()),
            })?;

        Ok(Tokenizer {
            bpe,
            splitter: Splitter::new(),
            byte_ids,
            bytes,
            spellings,
            ends,
            end_of_text,
            merges: merge_ids,
        })
    }

    /// The number of tokens in the vocabulary (50257 for GPT-2); valid ids are
    /// `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.ends.len()
    }

    /// The id of `<|endoftext|>` in this vocabulary ([`END_OF_TEXT`] for GPT-2), if it
    /// has one.
    pub fn end_of_text(&self) -> Option<u32> {
        self.end_of_text
    }

    /// Encodes text into token ids exactly like OpenAI's `encoder.py`.
    ///
    /// `<|endoftext|>` in the text is ordinary text here, as in OpenAI's encoder; see
    /// [`Tokenizer::encode_with_special_tokens`].
    ///
    /// ```
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// assert_eq!(tokenizer.encode("I'm here")?, [40, 1101, 994]);
    /// assert_eq!(tokenizer.encode("<|endoftext|>")?, [27, 91, 437, 1659, 5239, 91, 29]);
    /// assert!(tokenizer.encode("")?.is_empty());
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Encode`] if the `tokenizers` pipeline reports an error (it does not for
    /// a validated vocabulary; the variant exists so that no input can cause a panic).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        self.encode_into(text, &mut ids)?;
        Ok(ids)
    }

    /// Like [`Tokenizer::encode`], but the literal text `<|endoftext|>` becomes the
    /// special token ([`END_OF_TEXT`] in GPT-2), as `tiktoken`'s
    /// `encode(text, allowed_special="all")` does. Without an `<|endoftext|>` token in
    /// the vocabulary this is the same as [`Tokenizer::encode`].
    ///
    /// ```
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// let ids = tokenizer.encode_with_special_tokens("Hi<|endoftext|> there")?;
    /// assert_eq!(ids, [17250, 50256, 612]);
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let Some(eot) = self.end_of_text else {
            return self.encode(text);
        };
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        let mut pieces = text.split(END_OF_TEXT_TEXT);
        if let Some(first) = pieces.next() {
            self.encode_into(first, &mut ids)?;
        }
        for piece in pieces {
            ids.push(eot);
            self.encode_into(piece, &mut ids)?;
        }
        Ok(ids)
    }

    /// Encodes `text` and appends the ids to `ids`.
    ///
    /// Each piece of GPT-2's split (cut into chunks of at most [`MAX_PIECE_CHARS`]
    /// characters, see [`piece_chunks`]) goes through the BPE model of `tokenizers`,
    /// written in GPT-2's stand-in characters. The ids of the first
    /// [`SEEN_PIECES_CAP`] distinct pieces are remembered as ranges of `ids` and copied
    /// when a piece repeats, which skips the model's own cache and its allocations.
    fn encode_into(&self, text: &str, ids: &mut Vec<u32>) -> Result<()> {
        let mut seen: HashMap<&str, (usize, usize), ahash::RandomState> = HashMap::default();
        let mut spelled = String::new();
        for piece in self.splitter.pieces(text) {
            if let [byte] = piece.as_bytes() {
                ids.push(self.byte_ids[usize::from(*byte)]);
                continue;
            }
            for chunk in piece_chunks(piece) {
                if let Some(&(start, end)) = seen.get(chunk) {
                    ids.extend_from_within(start..end);
                    continue;
                }
                spelled.clear();
                spelled.extend(chunk.bytes().map(|b| BYTE_TO_CHAR[usize::from(b)]));
                let tokens = self
                    .bpe
                    .tokenize(&spelled)
                    .map_err(|e| Error::Encode(escape::shorten(e.to_string())))?;
                let start = ids.len();
                ids.extend(tokens.iter().map(|token| token.id));
                if seen.len() < SEEN_PIECES_CAP {
                    seen.insert(chunk, (start, ids.len()));
                }
            }
            // A long piece's scratch space is not kept for the next one.
            if spelled.capacity() > 4096 {
                spelled = String::new();
            }
        }
        Ok(())
    }

    /// Decodes ids into text; byte sequences that are not valid UTF-8 become U+FFFD
    /// exactly as in OpenAI's decoder (`errors="replace"`).
    ///
    /// ```
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// assert_eq!(tokenizer.decode(&[15496, 995])?, "Hello world");
    /// // "é" is two bytes, 127 is the token of its first byte 0xC3 alone.
    /// assert_eq!(tokenizer.decode(&[127])?, "\u{FFFD}");
    /// assert!(tokenizer.decode(&[50257]).is_err());
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidId`] for an id outside `0..vocab_size()`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        })
    }

    /// Decodes ids into the raw bytes they stand for (the bytes of the tokens, back to
    /// back), without any UTF-8 check.
    ///
    /// ```
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// assert_eq!(tokenizer.decode_bytes(&[15496, 995])?, b"Hello world");
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidId`] for an id outside `0..vocab_size()`.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// The bytes token `id` stands for (e.g. `b" the"` for 262). A single token need
    /// not be valid UTF-8: a character may be split across tokens.
    ///
    /// # Errors
    /// [`Error::InvalidId`] for an id outside `0..vocab_size()`.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        let (start, end) = self.range(id)?;
        Ok(&self.bytes[start.0..end.0])
    }

    /// How the vocabulary spells token `id`, with GPT-2's stand-in characters for
    /// bytes (e.g. `"Ġthe"` for 262: `Ġ` stands for the space).
    ///
    /// ```
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// assert_eq!(tokenizer.token_spelling(262)?, "Ġthe");
    /// assert_eq!(tokenizer.token_id("Ġthe"), Some(262));
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidId`] for an id outside `0..vocab_size()`.
    pub fn token_spelling(&self, id: u32) -> Result<&str> {
        let (start, end) = self.range(id)?;
        Ok(&self.spellings[start.1..end.1])
    }

    /// The merges of the BPE model by rank (the first is applied first), as the vocabulary
    /// spellings of the two tokens merged: the lines of `merges.txt` / `vocab.bpe`.
    ///
    /// ```
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// assert_eq!(tokenizer.merges().len(), 50000);
    /// assert_eq!(tokenizer.merges().next(), Some(("Ġ", "t")));
    /// ```
    pub fn merges(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.merges.iter().map(|&(a, b)| {
            // The ids come from the vocabulary, so both are in range.
            (
                self.token_spelling(a).unwrap_or_default(),
                self.token_spelling(b).unwrap_or_default(),
            )
        })
    }

    /// The id of the token with vocabulary spelling `spelling` (see
    /// [`Tokenizer::token_spelling`]), if there is one.
    pub fn token_id(&self, spelling: &str) -> Option<u32> {
        self.bpe.token_to_id(spelling).or_else(|| {
            // Added tokens (from a tokenizer.json) are not in the BPE model.
            (0..self.vocab_size() as u32).find(|&id| {
                self.token_spelling(id)
                    .is_ok_and(|candidate| candidate == spelling)
            })
        })
    }

    /// A readable, escaped form of token `id`'s bytes, for listings such as
    /// `gpt2 tokenize --format tokens` (see [`escape_bytes`]).
    ///
    /// ```
    /// let tokenizer = gpt2_tokenizer::Tokenizer::gpt2();
    /// assert_eq!(tokenizer.token_display(198)?, "\\n");
    /// assert_eq!(tokenizer.token_display(127)?, "\\xC3");
    /// # Ok::<(), gpt2_tokenizer::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidId`] for an id outside `0..vocab_size()`.
    pub fn token_display(&self, id: u32) -> Result<String> {
        Ok(escape_bytes(self.token_bytes(id)?))
    }

    /// A streaming decoder over this tokenizer (see [`StreamDecoder`]).
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Start and end offsets of token `id` in `bytes` and `spellings`.
    fn range(&self, id: u32) -> Result<((usize, usize), (usize, usize))> {
        let index = id as usize;
        let end = self.ends.get(index).ok_or(Error::InvalidId {
            id,
            vocab_size: self.vocab_size(),
        })?;
        let start = match index {
            0 => (0, 0),
            _ => self.ends[index - 1],
        };
        Ok((
            (start.0 as usize, start.1 as usize),
            (end.0 as usize, end.1 as usize),
        ))
    }
}

/// `piece` cut into the chunks that are BPE words of their own (see
/// [`MAX_PIECE_CHARS`]): a piece of at most `MAX_PIECE_CHARS` characters is its only chunk.
fn piece_chunks(piece: &str) -> impl Iterator<Item = &str> {
    const CHUNK: usize = MAX_PIECE_CHARS / 2;
    let mut rest = piece;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // A character is at least one byte, so a short piece needs no counting.
        let mut cut = rest.len();
        if rest.len() > MAX_PIECE_CHARS {
            let mut starts = rest.char_indices().map(|(at, _)| at);
            // Where character CHUNK starts, if there are more than 2 * CHUNK characters.
            if let Some(at) = starts.nth(CHUNK) {
                if starts.nth(CHUNK - 1).is_some() {
                    cut = at;
                }
            }
        }
        let (chunk, tail) = rest.split_at(cut);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids of `text` with every piece encoded as one BPE word, however long.
    fn unchunked(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for piece in tokenizer.splitter.pieces(text) {
            let spelled: String = piece
                .bytes()
                .map(|b| BYTE_TO_CHAR[usize::from(b)])
                .collect();
            let tokens = tokenizer.bpe.tokenize(&spelled).unwrap();
            ids.extend(tokens.iter().map(|token| token.id));
        }
        ids
    }

    #[test]
    fn chunks_are_whole_characters_and_the_last_is_long() {
        let half = MAX_PIECE_CHARS / 2;
        for (n, want) in [
            (MAX_PIECE_CHARS, vec![MAX_PIECE_CHARS]),
            (MAX_PIECE_CHARS + 1, vec![half, half + 1]),
            (2 * MAX_PIECE_CHARS + 3, vec![half, half, half, half + 3]),
        ] {
            let text = "é".repeat(n);
            let chunks: Vec<&str> = piece_chunks(&text).collect();
            let lengths: Vec<usize> = chunks.iter().map(|c| c.chars().count()).collect();
            assert_eq!(lengths, want, "{n}");
            assert_eq!(chunks.concat(), text);
        }
        assert_eq!(piece_chunks("ab").collect::<Vec<_>>(), ["ab"]);
        assert_eq!(piece_chunks("").count(), 0);
    }

    #[test]
    fn runs_of_one_character_encode_exactly_despite_chunking() {
        let tokenizer = Tokenizer::gpt2();
        let multi_byte = [
            'é', 'ß', '日', 'ー', '½', '—', '👋', '\u{a0}', '\u{3000}', '\u{301}',
        ];
        let chars = (0..=0x7Fu8).map(char::from).chain(multi_byte);
        for c in chars {
            for n in [MAX_PIECE_CHARS + 1, 2 * MAX_PIECE_CHARS + 777] {
                let text: String = std::iter::repeat_n(c, n).collect();
                let (got, want) = (
                    tokenizer.encode(&text).unwrap(),
                    unchunked(&tokenizer, &text),
                );
                // (Not assert_eq: a failure would print 10^4 ids.)
                assert!(
                    got == want,
                    "{n} x {c:?}: {} ids, {} expected",
                    got.len(),
                    want.len()
                );
            }
        }
    }
}
