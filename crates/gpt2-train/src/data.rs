//! Training data: text files encoded with GPT-2's BPE, or nanoGPT's `.bin` files of token ids,
//! joined into one stream of ids.
//!
//! Each file is one document. Between consecutive files comes one `<|endoftext|>` (50256);
//! none at the start or the end. A file whose name ends in `.bin` holds little-endian u16 ids
//! (nanoGPT's `prepare.py` format) and is taken as is. Large texts are encoded on every
//! thread of rayon's pool, cut where GPT-2's pre-tokenizer splits anyway (see
//! [`encode_parallel`]), so the ids are those of encoding the whole text at once.

use std::path::{Path, PathBuf};

use gpt2_tokenizer::{Tokenizer, END_OF_TEXT};
use rayon::prelude::*;

use crate::error::{Result, TrainError};

/// Texts at least this long are encoded in parallel pieces of about this size.
const PIECE_BYTES: usize = 1 << 20;

/// Reads and encodes every file, joined by one `<|endoftext|>` between consecutive files.
/// `n_vocab` bounds the ids of `.bin` files. `progress` is called with (bytes done, bytes in
/// all) as text is encoded.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.bin"));
/// std::fs::write(&a, "Hello world")?;
/// std::fs::write(&b, [1u8, 0, 2, 0])?; // ids 1, 2
/// let tok = gpt2_tokenizer::Tokenizer::gpt2();
/// let ids = gpt2_train::data::read_tokens(&[a, b], &tok, 50257, &mut |_, _| {})?;
/// assert_eq!(ids, [15496, 995, 50256, 1, 2]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// A file that is missing, empty, not UTF-8 (text), of odd length or with an id out of
/// range (`.bin`).
pub fn read_tokens(
    paths: &[PathBuf],
    tokenizer: &Tokenizer,
    n_vocab: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u32>> {
    let mut total = 0u64;
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| TrainError::io(path, e))?;
        if meta.len() == 0 {
            return Err(TrainError::EmptyFile { path: path.clone() });
        }
        total += meta.len();
    }
    let mut ids = Vec::new();
    let mut done = 0u64;
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            ids.push(END_OF_TEXT);
        }
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        if bytes.is_empty() {
            return Err(TrainError::EmptyFile { path: path.clone() });
        }
        if is_bin(path) {
            ids.extend(read_bin(path, &bytes, n_vocab)?);
        } else {
            let text = std::str::from_utf8(&bytes).map_err(|e| TrainError::NotUtf8 {
                path: path.clone(),
                offset: e.valid_up_to(),
            })?;
            ids.extend(encode_parallel(tokenizer, text)?);
        }
        done += bytes.len() as u64;
        progress(done, total);
    }
    Ok(ids)
}

/// Whether `path` names a `.bin` file of token ids.
fn is_bin(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "bin")
}

/// The u16 ids of a `.bin` file, checked against the vocabulary.
fn read_bin(path: &Path, bytes: &[u8], n_vocab: usize) -> Result<Vec<u32>> {
    if !bytes.len().is_multiple_of(2) {
        return Err(TrainError::OddBin {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        });
    }
    let ids: Vec<u32> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect();
    if let Some((index, &id)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= n_vocab)
    {
        return Err(TrainError::TokenOutOfRange {
            path: path.to_path_buf(),
            id,
            index,
            n_vocab,
        });
    }
    Ok(ids)
}

/// Encodes `text` as [`Tokenizer::encode`] does, in pieces on every thread.
///
/// The text is cut only just before a space that follows a letter and precedes a letter
/// (`…a| b…`): GPT-2's pre-tokenizer always splits there (a run of letters ends at the space,
/// and ` b…` starts the next word), and no pattern looks across such a point, so the pieces'
/// ids joined are the whole text's ids.
///
/// ```
/// let tok = gpt2_tokenizer::Tokenizer::gpt2();
/// let text = "The quick brown fox. ".repeat(100);
/// assert_eq!(gpt2_train::data::encode_parallel(&tok, &text)?, tok.encode(&text)?);
/// # Ok::<(), gpt2_train::TrainError>(())
/// ```
pub fn encode_parallel(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let pieces = split_for_encoding(text, PIECE_BYTES);
    let encoded: Vec<Vec<u32>> = pieces
        .par_iter()
        .map(|p| tokenizer.encode(p))
        .collect::<std::result::Result<_, _>>()?;
    Ok(encoded.concat())
}

/// `text` cut into pieces of about `size` bytes at safe points (see [`encode_parallel`]).
fn split_for_encoding(text: &str, size: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    while text.len() - start > size {
        let mut cut = None;
        let mut prev: Option<char> = None;
        // Look for a safe point from `start + size` on.
        let from = (start + size..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        let mut it = text[from..].char_indices().peekable();
        while let Some((i, c)) = it.next() {
            if c == ' ' {
                if let (Some(p), Some(&(_, n))) = (prev, it.peek()) {
                    if p.is_alphabetic() && n.is_alphabetic() {
                        cut = Some(from + i);
                        break;
                    }
                }
            }
            prev = Some(c);
        }
        match cut {
            Some(c) if c > start => {
                pieces.push(&text[start..c]);
                start = c;
            }
            _ => break,
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// Splits `ids` into training and validation tokens: the last `fraction` of them (rounded
/// down) are held out.
///
/// ```
/// let (train, val) = gpt2_train::data::split_validation((0..10).collect(), 0.3);
/// assert_eq!((train.len(), val), (7, vec![7, 8, 9]));
/// ```
pub fn split_validation(mut ids: Vec<u32>, fraction: f64) -> (Vec<u32>, Vec<u32>) {
    let held = ((ids.len() as f64) * fraction.clamp(0.0, 1.0)).floor() as usize;
    let val = ids.split_off(ids.len() - held);
    (ids, val)
}

/// A 64-bit FNV-1a hash of the ids: checkpoints record it, so that resuming on other data is
/// refused.
///
/// ```
/// assert_ne!(gpt2_train::data::fingerprint(&[1, 2]), gpt2_train::data::fingerprint(&[2, 1]));
/// ```
pub fn fingerprint(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_text_and_encode_the_same() -> Result<()> {
        let tok = Tokenizer::gpt2();
        let text =
            "Hello there, world!  Numbers 123 and   spaces\n\nnew lines it's done. ".repeat(50);
        let pieces = split_for_encoding(&text, 100);
        assert!(pieces.len() > 10);
        assert_eq!(pieces.concat(), text);
        let joined: Vec<u32> = pieces
            .iter()
            .map(|p| tok.encode(p))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .concat();
        assert_eq!(joined, tok.encode(&text)?);
        Ok(())
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tok = Tokenizer::gpt2();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).expect("write");
            p
        };
        let read = |p: PathBuf| read_tokens(&[p], &tok, 50257, &mut |_, _| {});
        assert!(matches!(
            read(write("e.txt", b"")),
            Err(TrainError::EmptyFile { .. })
        ));
        assert!(matches!(
            read(write("u.txt", b"ab\xff")),
            Err(TrainError::NotUtf8 { offset: 2, .. })
        ));
        assert!(matches!(
            read(write("o.bin", b"abc")),
            Err(TrainError::OddBin { len: 3, .. })
        ));
        assert!(matches!(
            read(write("r.bin", &[0xff, 0xff])),
            Err(TrainError::TokenOutOfRange { id: 65535, .. })
        ));
        assert!(matches!(
            read(dir.path().join("missing.txt")),
            Err(TrainError::Io { .. })
        ));
    }
}
