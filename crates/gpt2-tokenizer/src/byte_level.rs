//! GPT-2's reversible byte → unicode table (`bytes_to_unicode` in OpenAI's `encoder.py`).
//!
//! BPE vocabularies are stored as text, so every byte gets a printable stand-in
//! character: the printable Latin-1 bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for
//! themselves and the other 68 bytes are mapped, in order, to U+0100, U+0101, …
//! (so a space, byte 0x20, is written `Ġ` = U+0120).

/// Whether `byte` is one of the 188 bytes that stand for themselves.
const fn is_printable(byte: u8) -> bool {
    matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The stand-in character of every byte, indexed by the byte.
pub(crate) const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    let mut byte = 0usize;
    while byte < 256 {
        let code = if is_printable(byte as u8) {
            byte as u32
        } else {
            let code = next;
            next += 1;
            code
        };
        // All codes are below 0x144, far from the surrogate range.
        table[byte] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        byte += 1;
    }
    table
};

/// A lookup table from stand-in characters below U+0144 to bytes (`u16::MAX` = none).
pub(crate) struct CharToByte([u16; 0x144]);

impl CharToByte {
    pub(crate) fn new() -> Self {
        let mut table = [u16::MAX; 0x144];
        for (byte, &c) in BYTE_TO_CHAR.iter().enumerate() {
            table[c as usize] = byte as u16;
        }
        CharToByte(table)
    }

    /// The byte a character stands for, if it is one of the 256 stand-ins.
    pub(crate) fn get(&self, c: char) -> Option<u8> {
        match self.0.get(c as usize) {
            Some(&b) if b <= 0xFF => Some(b as u8),
            _ => None,
        }
    }
}

/// Appends the bytes a vocabulary token stands for to `out`.
///
/// Characters outside the table (which a byte-level vocabulary only has in added
/// tokens) stand for their own UTF-8 encoding, as in Hugging Face's ByteLevel decoder.
pub(crate) fn token_to_bytes(table: &CharToByte, token: &str, out: &mut Vec<u8>) {
    for c in token.chars() {
        match table.get(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection_like_openai() {
        let table = CharToByte::new();
        let mut seen = std::collections::HashSet::new();
        for byte in 0..=255u8 {
            let c = BYTE_TO_CHAR[byte as usize];
            assert!(seen.insert(c));
            assert_eq!(table.get(c), Some(byte));
        }
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[0xAD], '\u{143}');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(table.get('\u{144}'), None);
        assert_eq!(table.get(' '), None);
    }
}
