//! Property tests: round trips, no panics, and the streaming decoder.

use std::sync::OnceLock;

use gpt2_tokenizer::{Tokenizer, END_OF_TEXT};
use proptest::prelude::*;

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(Tokenizer::gpt2)
}

/// Pieces that exercise every branch of GPT-2's pattern and of UTF-8.
const FRAGMENTS: &[&str] = &[
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'S",
    "'",
    "''",
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\r\n",
    "\t",
    "\u{b}",
    "\u{c}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{3000}",
    "\u{1680}",
    "\u{180e}",
    "\u{200b}",
    "\u{feff}",
    "a",
    "Z",
    "hello",
    " world",
    "ü",
    "é",
    "e\u{301}",
    "ß",
    "日本",
    "한국어",
    "עברית",
    "عربى",
    "ไทย",
    "Ω",
    "1",
    "42",
    " 2024",
    "½",
    "²",
    "٣",
    "Ⅻ",
    "!",
    "?!",
    "...",
    "--",
    " (",
    ")",
    "{}",
    "<|endoftext|>",
    "<|",
    "|>",
    "👋",
    "👋🏽",
    "👨‍👩‍👧",
    "🇫🇷",
    "\u{10ffff}",
    "\u{e000}",
    "\u{0}",
    "\u{1f}",
    "\u{7f}",
    "x\u{300}\u{301}",
    "\u{a7ce}",
    "\u{10940}",
];

fn fragment_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..40,
    )
    .prop_map(|pieces| pieces.concat())
}

/// Multi-byte tokens that are not valid UTF-8 on their own.
const PARTIAL_TOKENS: &[u32] = &[
    8008, 11737, 12859, 13945, 18796, 20998, 28156, 32391, 33176, 33768, 36596, 42062, 46349,
    46479, 47490, 47947,
];

/// Ids biased towards tokens that hold part of a multi-byte character.
fn id_sequence() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(
        prop_oneof![
            // The 256 single-byte tokens, including lone UTF-8 lead and continuation bytes.
            3 => 0u32..256,
            // Multi-byte tokens that are not valid UTF-8 on their own: pieces of CJK
            // characters and emoji such as b"\xe9\xbe", b"\x84\xa2", b"\xa9\xb6\xe6".
            2 => prop::sample::select(PARTIAL_TOKENS),
            // Anything, including <|endoftext|>.
            2 => 0u32..50257,
        ],
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_round_trip(text in any::<String>()) {
        let t = tokenizer();
        let ids = t.encode(&text).unwrap();
        prop_assert_eq!(t.decode(&ids).unwrap(), text.clone());
        prop_assert_eq!(t.decode_bytes(&ids).unwrap(), text.as_bytes().to_vec());
        prop_assert!(ids.iter().all(|&id| id < END_OF_TEXT));
        let special = t.encode_with_special_tokens(&text).unwrap();
        prop_assert_eq!(t.decode(&special).unwrap(), text);
    }

    #[test]
    fn fragment_strings_round_trip(text in fragment_text()) {
        let t = tokenizer();
        let ids = t.encode(&text).unwrap();
        prop_assert_eq!(t.decode(&ids).unwrap(), text.clone());
        prop_assert!(!ids.contains(&END_OF_TEXT));
        let special = t.encode_with_special_tokens(&text).unwrap();
        prop_assert_eq!(t.decode(&special).unwrap(), text.clone());
        prop_assert_eq!(
            special.iter().filter(|&&id| id == END_OF_TEXT).count(),
            text.matches("<|endoftext|>").count()
        );
    }

    #[test]
    fn encoding_is_a_concatenation_of_token_bytes(text in fragment_text()) {
        // Every id is a real token and the tokens spell the text in order.
        let t = tokenizer();
        let ids = t.encode(&text).unwrap();
        let mut spelled = Vec::new();
        for &id in &ids {
            let bytes = t.token_bytes(id).unwrap();
            prop_assert!(!bytes.is_empty());
            spelled.extend_from_slice(bytes);
        }
        prop_assert_eq!(spelled, text.into_bytes());
    }

    #[test]
    fn stream_decoder_equals_decode(ids in id_sequence()) {
        let t = tokenizer();
        let mut decoder = t.stream_decoder();
        let mut streamed = String::new();
        for &id in &ids {
            let piece = decoder.push(id).unwrap();
            streamed.push_str(&piece);
            // Never more than an incomplete character is held back.
            prop_assert!(decoder.pending().len() <= 3);
        }
        streamed.push_str(&decoder.finish());
        prop_assert_eq!(streamed, t.decode(&ids).unwrap());
        prop_assert!(decoder.pending().is_empty());
    }

    #[test]
    fn stream_decoder_equals_lossy_for_any_byte_split(
        bytes in prop::collection::vec(
            prop_oneof![any::<u8>(), 0x80u8..0xC0, 0xC0u8..0xF8], 0..64),
        cuts in prop::collection::vec(0usize..64, 0..10),
    ) {
        let t = tokenizer();
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= bytes.len()).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut decoder = t.stream_decoder();
        let mut streamed = String::new();
        for window in cuts.windows(2) {
            streamed.push_str(&decoder.push_bytes(&bytes[window[0]..window[1]]));
        }
        streamed.push_str(&decoder.finish());
        prop_assert_eq!(streamed, String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn streaming_an_encoding_gives_back_the_text(text in fragment_text()) {
        let t = tokenizer();
        let ids = t.encode(&text).unwrap();
        let mut decoder = t.stream_decoder();
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&decoder.push(id).unwrap());
            // What has been returned is always a prefix of the text.
            prop_assert!(text.starts_with(&streamed));
        }
        streamed.push_str(&decoder.finish());
        prop_assert_eq!(streamed, text);
    }
}

#[test]
fn partial_tokens_are_not_utf8_alone() {
    let t = tokenizer();
    for &id in PARTIAL_TOKENS {
        let bytes = t.token_bytes(id).unwrap();
        assert!(
            bytes.len() > 1 && std::str::from_utf8(bytes).is_err(),
            "{id}"
        );
    }
}

#[test]
fn long_whitespace_runs_and_long_words() {
    // Long runs stress the look-ahead `\s+(?!\S)` and BPE on long pieces.
    let t = tokenizer();
    for text in [
        format!("{}a", " ".repeat(200_000)),
        format!("a{}", "\n".repeat(100_000)),
        format!("x{}y", " \t".repeat(50_000)),
        "a".repeat(100_000),
        "🙂".repeat(20_000),
        format!("{}!", "1".repeat(50_000)),
    ] {
        let ids = t.encode(&text).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text);
    }
    // A run of n spaces before a word: n-1 spaces, then " a" (as OpenAI's regex).
    let ids = t.encode(&format!("{}a", " ".repeat(1000))).unwrap();
    assert_eq!(t.decode(&ids[..ids.len() - 1]).unwrap(), " ".repeat(999));
    assert_eq!(ids.last(), Some(&257)); // " a"
}

#[test]
fn long_text_is_encoded_like_its_pieces() {
    // Long text goes through the pipeline in chunks; the ids must equal the ids of
    // the lines encoded one by one (a newline after a printable character always
    // ends a piece of GPT-2's pattern).
    let t = tokenizer();
    let line = "The quick brown fox jumps over the lazy dog; it's 42 (naïve) 👋.";
    let text = format!("{line}\n").repeat(5000);
    let ids = t.encode(&text).unwrap();
    let one = t.encode(&format!("{line}\n")).unwrap();
    assert_eq!(ids.len(), one.len() * 5000);
    assert!(ids.chunks(one.len()).all(|chunk| chunk == one.as_slice()));
}
