//! GPT-2's pre-tokenization split, fast and exact.
//!
//! OpenAI's pattern is
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! Its look-ahead `(?!\S)` needs a backtracking engine; `tokenizers`' ByteLevel
//! pre-tokenizer runs it on `fancy-regex`, which (with the per-byte offset bookkeeping
//! of `tokenizers`' normalized strings) makes pre-tokenization the slowest part of
//! encoding. The split here runs the same pattern without the look-ahead alternative on
//! the `regex` crate's engine (`regex-automata`, anchored at each piece; same Unicode
//! tables as `fancy-regex`) and applies the
//! look-ahead by hand:
//!
//! * a match that ends in whitespace comes from `\s+` (every other alternative ends in
//!   a non-space), and covers a whole run of whitespace (`\s+` is greedy);
//! * where the run reaches the end of the text, or is one character long, `\s+(?!\S)`
//!   / `\s+` give the same piece;
//! * otherwise the run is followed by a non-space, so `\s+(?!\S)` backtracks by one
//!   character: the piece is the run without its last character, and matching goes on
//!   from that character (which may then start `" word"`, `" 42"`, `" !"`, or stand
//!   alone).
//!
//! The unit tests check this against `tokenizers`' own ByteLevel pre-tokenizer on
//! arbitrary text.

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};

/// The pattern without `\s+(?!\S)`; see the module docs.
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// Splits text into GPT-2's pre-tokenization pieces.
#[derive(Debug, Clone)]
pub(crate) struct Splitter {
    regex: Regex,
}

impl Splitter {
    pub(crate) fn new() -> Splitter {
        match Regex::new(PATTERN) {
            Ok(regex) => Splitter { regex },
            // A fixed pattern that the unit tests compile.
            Err(err) => unreachable!("GPT-2's split pattern does not compile: {err}"),
        }
    }

    /// The pieces of `text`, in order; together they are exactly `text`.
    pub(crate) fn pieces<'s, 't>(&'s self, text: &'t str) -> Pieces<'s, 't> {
        Pieces {
            regex: &self.regex,
            text,
            pos: 0,
        }
    }
}

/// Iterator over the pieces of a text (see [`Splitter::pieces`]).
pub(crate) struct Pieces<'s, 't> {
    regex: &'s Regex,
    text: &'t str,
    pos: usize,
}

impl<'t> Iterator for Pieces<'_, 't> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        let text = self.text;
        let start = self.pos;
        if start >= text.len() {
            return None;
        }
        // Every character matches some alternative, so pieces are back to back and
        // each search is anchored where the last piece ended. (Were there no match,
        // the character would become a piece of its own.)
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        let mut end = match self.regex.search(&input) {
            Some(m) if m.end() > start => m.end(),
            _ => start + text[start..].chars().next().map_or(1, char::len_utf8),
        };
        if end < text.len() {
            let piece = &text[start..end];
            let mut chars = piece.char_indices().rev();
            if let (Some((last_at, last)), Some(_)) = (chars.next(), chars.next()) {
                if last.is_whitespace() {
                    // A whitespace run of 2+ characters followed by a non-space.
                    end = start + last_at;
                }
            }
        }
        self.pos = end;
        Some(&text[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    /// The pieces `tokenizers`' ByteLevel pre-tokenizer (fancy-regex) makes, as byte ranges.
    fn reference_pieces(text: &str) -> Vec<(usize, usize)> {
        let mut pre = PreTokenizedString::from(text);
        ByteLevel::new(false, false, true)
            .pre_tokenize(&mut pre)
            .unwrap();
        pre.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(_, offsets, _)| offsets)
            .collect()
    }

    fn our_pieces(text: &str) -> Vec<(usize, usize)> {
        let splitter = Splitter::new();
        let mut at = 0;
        splitter
            .pieces(text)
            .map(|piece| {
                let range = (at, at + piece.len());
                at += piece.len();
                range
            })
            .collect()
    }

    #[test]
    fn whitespace_class_is_char_is_whitespace() {
        // The hand-applied look-ahead relies on `\s` == `char::is_whitespace`; both are
        // Unicode's White_Space, the same 25 characters as `\s` in Python's `regex`.
        let python_regex_whitespace = [
            0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
            0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F,
            0x3000,
        ];
        let ours: Vec<u32> = (0..=0x10FFFFu32)
            .filter(|&code| char::from_u32(code).is_some_and(char::is_whitespace))
            .collect();
        assert_eq!(ours, python_regex_whitespace);
        let space = Regex::new(r"^\s$").unwrap();
        for code in 0..=0x10FFFFu32 {
            if let Some(c) = char::from_u32(code) {
                let mut buf = [0u8; 4];
                assert_eq!(
                    space.is_match(&*c.encode_utf8(&mut buf)),
                    c.is_whitespace(),
                    "U+{code:04X}"
                );
            }
        }
    }

    #[test]
    fn examples() {
        fn pieces(text: &str) -> Vec<&str> {
            Splitter::new().pieces(text).collect()
        }
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(pieces("a  b"), ["a", " ", " b"]);
        assert_eq!(pieces("a \n b"), ["a", " \n", " b"]);
        assert_eq!(pieces("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(pieces("a   "), ["a", "   "]);
        assert_eq!(pieces("  !!"), [" ", " !!"]);
        assert_eq!(pieces("I'm  's"), ["I", "'m", " ", " '", "s"]);
        assert_eq!(pieces("x\t1"), ["x", "\t", "1"]);
        assert_eq!(pieces(""), Vec::<&str>::new());
    }

    #[test]
    fn matches_tokenizers_byte_level_on_tricky_text() {
        for text in [
            "Hello  world\n\n\tfoo   bar \u{a0}\u{3000}x 's 'S ''ll  12 345\u{2028}\r\n end  ",
            "   ",
            " \n ",
            "a\u{85}\u{85}b",
            "\u{180e}\u{200b}\u{feff} a",
            "'s's 's",
        ] {
            assert_eq!(our_pieces(text), reference_pieces(text), "{text:?}");
        }
    }

    const FRAGMENTS: &[&str] = &[
        " ", "  ", "\n", "\t", "\r\n", "\u{a0}", "\u{85}", "\u{2028}", "\u{3000}", "\u{1680}",
        "\u{b}", "\u{c}", "\u{1c}", "a", "Ab", "é", "日本", "'", "'s", "'ll", "'re", "'d", "'M",
        "1", "23", "½", "!", "?.", "👋", "\u{301}", "\u{0}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn matches_tokenizers_byte_level(pieces in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
                1 => any::<char>().prop_map(|c| c.to_string()),
            ],
            0..30,
        )) {
            let text = pieces.concat();
            prop_assert_eq!(our_pieces(&text), reference_pieces(&text));
        }

        #[test]
        fn matches_tokenizers_byte_level_any_string(text in any::<String>()) {
            prop_assert_eq!(our_pieces(&text), reference_pieces(&text));
        }
    }
}
