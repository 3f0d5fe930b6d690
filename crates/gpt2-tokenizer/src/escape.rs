//! A readable escaping of token bytes.

/// Writes `bytes` readably on one line: valid UTF-8 as text, with `\\`, `\n`, `\r`,
/// `\t` and other invisible characters escaped the way Rust's `escape_debug` does
/// (`\u{…}`), and every byte that is not part of valid UTF-8 as `\xNN`.
///
/// Quotes are not escaped and spaces are kept as they are.
///
/// ```
/// use gpt2_tokenizer::escape_bytes;
///
/// assert_eq!(escape_bytes(b" the"), " the");
/// assert_eq!(escape_bytes(b"\n\t\\"), "\\n\\t\\\\");
/// assert_eq!(escape_bytes("it's \"é\"".as_bytes()), "it's \"é\"");
/// assert_eq!(escape_bytes(b"\xC3"), "\\xC3");
/// assert_eq!(escape_bytes(b"\x00\x7F"), "\\0\\u{7f}");
/// ```
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' | '\'' => out.push(c),
                _ => out.extend(c.escape_debug()),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02X}"));
        }
    }
    out
}

/// The most bytes of an input that [`excerpt`] quotes.
pub const EXCERPT_BYTES: usize = 200;

/// `text` quoted for an error message (as `{:?}` writes it), cut to its first
/// [`EXCERPT_BYTES`] bytes (at a character boundary) when longer, with how long the
/// whole is: an error about a 10 MB line quotes 200 bytes of it, not 10 MB.
///
/// ```
/// use gpt2_tokenizer::excerpt;
///
/// assert_eq!(excerpt("a b"), "\"a b\"");
/// let long = "é".repeat(1000);
/// assert_eq!(excerpt(&long), format!("{:?}... (2000 bytes in all)", "é".repeat(100)));
/// ```
pub fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT_BYTES {
        return format!("{text:?}");
    }
    let mut cut = EXCERPT_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}... ({} bytes in all)", &text[..cut], text.len())
}

/// `message` (an error message that may quote an input, e.g. one of `serde_json`) with its
/// middle cut out when it is longer than `max_bytes`: its start and its end (where such
/// messages often say what was expected, and where) are kept, at character boundaries, and
/// the cut says how many bytes it removed.
///
/// ```
/// use gpt2_tokenizer::shorten_message;
///
/// assert_eq!(shorten_message("short".into(), 400), "short");
/// let message = format!("invalid type: string {:?}, expected u32", "x".repeat(10_000));
/// let short = shorten_message(message, 400);
/// assert!(short.starts_with("invalid type: string \"xxx") && short.ends_with("expected u32"));
/// assert!(short.len() < 450 && short.contains("bytes cut"));
/// ```
pub fn shorten_message(message: String, max_bytes: usize) -> String {
    if message.len() <= max_bytes {
        return message;
    }
    let mut head = max_bytes / 2;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - max_bytes / 2;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} [... {} bytes cut ...] {}",
        &message[..head],
        tail - head,
        &message[tail..]
    )
}

/// [`shorten_message`] at 2 × [`EXCERPT_BYTES`], for the messages of this crate's errors.
pub(crate) fn shorten(message: String) -> String {
    shorten_message(message, 2 * EXCERPT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_keep_their_start_and_end() {
        assert_eq!(shorten("short".into()), "short");
        let message = format!("start {} end", "é".repeat(1000));
        let short = shorten(message.clone());
        assert!(
            short.starts_with("start éé") && short.ends_with("éé end"),
            "{short}"
        );
        assert!(short.contains("bytes cut"), "{short}");
        assert!(short.len() < 2 * EXCERPT_BYTES + 40, "{short}");
    }
}
