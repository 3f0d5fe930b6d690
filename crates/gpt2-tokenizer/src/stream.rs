//! Decoding ids into text as they are generated.

use crate::{Result, Tokenizer};

/// Turns token ids into text one id at a time, emitting only whole characters.
///
/// GPT-2's tokens are byte sequences, and a character of several bytes (an emoji, a
/// CJK character, …) is often split across tokens. [`StreamDecoder::push`] returns the
/// text that is complete so far and holds back an incomplete character (at most three
/// bytes) until a later token completes it. Bytes that can never become valid UTF-8 are
/// replaced by U+FFFD as soon as that is certain, and [`StreamDecoder::finish`]
/// replaces an incomplete character left at the end. All outputs together are always
/// exactly [`Tokenizer::decode`] of all the ids, however they were pushed.
///
/// ```
/// use gpt2_tokenizer::Tokenizer;
///
/// let tokenizer = Tokenizer::gpt2();
/// let ids = tokenizer.encode("Hi 👋")?; // the emoji's 4 bytes span several tokens
/// let mut decoder = tokenizer.stream_decoder();
/// let mut text = String::new();
/// for &id in &ids {
///     text += &decoder.push(id)?; // never half an emoji
/// }
/// text += &decoder.finish();
/// assert_eq!(text, "Hi 👋");
/// # Ok::<(), gpt2_tokenizer::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    /// Bytes received but not yet returned: an incomplete UTF-8 sequence at the end.
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder with nothing pending (same as [`Tokenizer::stream_decoder`]).
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::with_capacity(8),
        }
    }

    /// Adds token `id` and returns the text that is now complete (possibly empty).
    ///
    /// # Errors
    /// [`Error::InvalidId`](crate::Error::InvalidId) for an id outside the vocabulary;
    /// the decoder is then unchanged.
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self.tokenizer.token_bytes(id)?;
        Ok(self.push_bytes(bytes))
    }

    /// Adds raw bytes and returns the text that is now complete (possibly empty).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut consumed = 0;
        for chunk in self.pending.utf8_chunks() {
            out.push_str(chunk.valid());
            consumed += chunk.valid().len();
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            if consumed + invalid.len() == self.pending.len() && is_incomplete(invalid) {
                // The start of a character whose other bytes may still come.
                break;
            }
            out.push(char::REPLACEMENT_CHARACTER);
            consumed += invalid.len();
        }
        self.pending.drain(..consumed);
        out
    }

    /// The bytes held back: the start of a character whose other bytes have not come yet.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Returns what is held back, an incomplete character replaced by U+FFFD (or an
    /// empty string), and resets the decoder for a new sequence.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Whether `bytes` (a maximal invalid subsequence at the end of the input) is the
/// start of a valid character that more bytes could complete.
fn is_incomplete(bytes: &[u8]) -> bool {
    matches!(std::str::from_utf8(bytes), Err(err) if err.error_len().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_and_releases() {
        let tokenizer = Tokenizer::gpt2();
        let mut decoder = tokenizer.stream_decoder();
        assert_eq!(decoder.push_bytes(b"a\xF0\x9F"), "a");
        assert_eq!(decoder.pending(), b"\xF0\x9F");
        assert_eq!(decoder.push_bytes(b"\x91"), "");
        assert_eq!(decoder.push_bytes(b"\x8Bb"), "👋b");
        assert_eq!(decoder.pending(), b"");
        // A lone continuation byte can never complete: replaced at once.
        assert_eq!(decoder.push_bytes(b"\x80"), "\u{FFFD}");
        // An incomplete character interrupted by ASCII.
        assert_eq!(decoder.push_bytes(b"\xE2\x82"), "");
        assert_eq!(decoder.push_bytes(b"x"), "\u{FFFD}x");
        // An incomplete character at the end.
        assert_eq!(decoder.push_bytes(b"\xC3"), "");
        assert_eq!(decoder.finish(), "\u{FFFD}");
        assert_eq!(decoder.finish(), "");
    }

    #[test]
    fn bad_id_leaves_decoder_unchanged() {
        let tokenizer = Tokenizer::gpt2();
        let mut decoder = tokenizer.stream_decoder();
        assert_eq!(decoder.push_bytes(b"\xC3"), "");
        assert!(decoder.push(u32::MAX).is_err());
        assert_eq!(decoder.pending(), b"\xC3");
        assert_eq!(decoder.push_bytes(b"\xA9"), "é");
    }
}
