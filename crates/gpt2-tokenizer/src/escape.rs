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
