//! GGUF files: the container (a reader and a writer of our own) and GPT-2 models in it.
//!
//! # The container
//!
//! A GGUF file (little-endian) is a header — magic `GGUF`, a `u32` version (1–3), the tensor
//! and metadata counts (`u64`; `u32` in version 1) — then the metadata key/value pairs (a
//! string key, a `u32` value type, the value), then one info per tensor (name, `u32` number
//! of dimensions, the dimensions innermost first, `u32` GGML type, `u64` offset into the data
//! section), then padding to `general.alignment` (default 32) and the data section. Strings
//! are a `u64` length (`u32` in version 1) and UTF-8 bytes.
//!
//! [`GgufFile::open`] maps the file and checks all of it before trusting anything: every
//! count and length against the bytes left (a count of 2⁶³ is an error, not an allocation),
//! at most [`MAX_DIMS`] dimensions whose product does not overflow, unique tensor names,
//! offsets aligned, inside the file and not overlapping, a nonzero power-of-two alignment.
//! Tensor data are then handed out in place ([`GgufFile::tensor_bytes`]). [`write()`] writes
//! version 3, alignment 32, in exactly the layout candle's `gguf_file::write` produces.
//!
//! It is written here rather than taken from candle because this crate has no tensor
//! library, and candle's reader panics or allocates without bound on crafted files (it
//! divides by a zero `general.alignment`, trusts counts and lengths).
//!
//! # GPT-2 in GGUF
//!
//! Tensor names follow llama.cpp's GPT-2 convention (`convert_hf_to_gguf.py`), so llama.cpp
//! recognises the files:
//!
//! | GGUF tensor | canonical | stored as (by [`save_gguf`]) |
//! |---|---|---|
//! | `token_embd.weight` | `wte.weight` `[n_vocab, n_embd]` | Q8_0 `[n_vocab, n_embd]` |
//! | `position_embd.weight` | `wpe.weight` | F32 |
//! | `blk.N.attn_norm.{weight,bias}` | `h.N.ln_1` | F32 |
//! | `blk.N.attn_qkv.{weight,bias}` | `h.N.attn.c_attn` `[E, 3E]` | Q8_0 `[3E, E]`, bias F32 |
//! | `blk.N.attn_output.{weight,bias}` | `h.N.attn.c_proj` `[E, E]` | Q8_0 `[E, E]`ᵀ, bias F32 |
//! | `blk.N.ffn_norm.{weight,bias}` | `h.N.ln_2` | F32 |
//! | `blk.N.ffn_up.{weight,bias}` | `h.N.mlp.c_fc` `[E, 4E]` | Q8_0 `[4E, E]`, bias F32 |
//! | `blk.N.ffn_down.{weight,bias}` | `h.N.mlp.c_proj` `[4E, E]` | Q8_0 `[E, 4E]`, bias F32 |
//! | `output_norm.{weight,bias}` | `ln_f` | F32 |
//!
//! Matrices are `[out, in]`, the transpose of Hugging Face's `Conv1D` `[in, out]`: such
//! tensors come out of [`Weights`] with their canonical shape and
//! [`TensorView::transposed`](crate::TensorView::transposed) set, the Q8_0 blocks running
//! along `in`. Any tensor may also be F32 or F16 (or BF16) when reading. `output.weight` is
//! not written (GPT-2's head is tied to `token_embd`); a file that has one opens when it is
//! byte-for-byte `token_embd.weight`.
//!
//! Metadata written: `general.architecture = "gpt2"`, `general.name`, `general.file_type = 7`
//! (`MOSTLY_Q8_0`), `general.quantization_version = 2`, `gpt2.context_length`,
//! `gpt2.embedding_length`, `gpt2.feed_forward_length`, `gpt2.block_count`,
//! `gpt2.attention.head_count`, `gpt2.attention.layer_norm_epsilon`, `gpt2.vocab_size`, and,
//! with a tokenizer of the model's vocabulary size, `tokenizer.ggml.model = "gpt2"`,
//! `tokenizer.ggml.pre = "gpt-2"`, `tokenizer.ggml.tokens`, `tokenizer.ggml.token_type`,
//! `tokenizer.ggml.merges` and the bos/eos ids. When reading, the hyperparameters come from
//! these keys (`n_vocab` from `token_embd.weight`'s rows) and must agree with the tensors.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::cut;
use crate::names::{canonical_to_gguf, expected_shapes, gguf_to_canonical, GgufStored};
use crate::q8_0::{self, BLOCK};
use crate::weights::RawTensor;
use crate::{Config, Dtype, Layout, SharedBytes, Weights, WeightsError};

/// The weight file of a GGUF model directory.
pub const GGUF_FILE: &str = "model.gguf";

/// The GGUF version [`write()`] writes.
pub const GGUF_VERSION: u32 = 3;

/// The data alignment [`write()`] uses, and the default when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The most dimensions a tensor may have (GGML's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// `general.file_type` of a file whose matrices are Q8_0 (llama.cpp's
/// `LLAMA_FTYPE_MOSTLY_Q8_0`).
pub const FILE_TYPE_MOSTLY_Q8_0: u32 = 7;

/// How deeply arrays may nest in metadata (GGUF files use one level).
const MAX_ARRAY_DEPTH: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7 (one byte, 0 or 1).
    Bool(bool),
    /// Type 8 (UTF-8).
    String(String),
    /// Type 9: elements of one type.
    Array(Vec<Value>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl Value {
    /// The GGUF value type number.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// The type's name (`u32`, `string`, `array`...).
    pub fn type_name(&self) -> &'static str {
        type_name(self.type_id())
    }

    /// The value of a non-negative integer of any integer type.
    ///
    /// ```
    /// use gpt2_weights::gguf::Value;
    /// assert_eq!(Value::I32(7).as_u64(), Some(7));
    /// assert_eq!(Value::I32(-7).as_u64(), None);
    /// assert_eq!(Value::F32(7.0).as_u64(), None);
    /// ```
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The string, for a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short description for messages (`u32 5`, `string "gpt2"`, `array of 3 string`),
    /// quoted strings cut to a few hundred bytes.
    pub fn describe(&self) -> String {
        match self {
            Value::String(s) => format!("string {:?}", cut(s)),
            Value::Array(items) => match items.first() {
                Some(v) => format!("array of {} {}", items.len(), v.type_name()),
                None => "empty array".into(),
            },
            Value::U8(v) => format!("u8 {v}"),
            Value::I8(v) => format!("i8 {v}"),
            Value::U16(v) => format!("u16 {v}"),
            Value::I16(v) => format!("i16 {v}"),
            Value::U32(v) => format!("u32 {v}"),
            Value::I32(v) => format!("i32 {v}"),
            Value::U64(v) => format!("u64 {v}"),
            Value::I64(v) => format!("i64 {v}"),
            Value::F32(v) => format!("f32 {v}"),
            Value::F64(v) => format!("f64 {v}"),
            Value::Bool(v) => format!("bool {v}"),
        }
    }
}

fn type_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

/// The GGML tensor types this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    /// Type 0.
    F32,
    /// Type 1.
    F16,
    /// Type 8: `block_q8_0` (see [`q8_0`]).
    Q8_0,
    /// Type 30.
    BF16,
}

impl GgmlType {
    /// The type for a GGML type number, `None` for the types this crate does not read.
    ///
    /// ```
    /// use gpt2_weights::gguf::GgmlType;
    /// assert_eq!(GgmlType::from_u32(8), Some(GgmlType::Q8_0));
    /// assert_eq!(GgmlType::from_u32(2), None); // Q4_0
    /// ```
    pub fn from_u32(t: u32) -> Option<GgmlType> {
        match t {
            0 => Some(GgmlType::F32),
            1 => Some(GgmlType::F16),
            8 => Some(GgmlType::Q8_0),
            30 => Some(GgmlType::BF16),
            _ => None,
        }
    }

    /// The GGML type number.
    pub fn to_u32(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
        }
    }

    /// Elements per block (32 for Q8_0, else 1): the innermost dimension must be a multiple.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::Q8_0 => q8_0::BLOCK,
            _ => 1,
        }
    }

    /// The corresponding [`Dtype`].
    pub fn dtype(self) -> Dtype {
        match self {
            GgmlType::F32 => Dtype::F32,
            GgmlType::F16 => Dtype::F16,
            GgmlType::Q8_0 => Dtype::Q8_0,
            GgmlType::BF16 => Dtype::BF16,
        }
    }

    /// The bytes `elements` elements take (`None` on overflow or a partial block).
    pub fn byte_len(self, elements: usize) -> Option<usize> {
        self.dtype().byte_len(elements)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ggml_type_name(self.to_u32()))
    }
}

/// GGML's names for its type numbers (for messages).
fn ggml_type_name(t: u32) -> &'static str {
    const NAMES: [&str; 31] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
        "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
        "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
    ];
    NAMES.get(t as usize).copied().unwrap_or("unknown")
}

/// One tensor of a GGUF file, as its header describes it (checked by [`GgufFile::open`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The name in the file (`blk.0.attn_qkv.weight`).
    pub name: String,
    /// The storage type.
    pub ggml_type: GgmlType,
    /// The dimensions, outermost first (`[rows, cols]`; GGML's `ne0` is the last).
    pub dims: Vec<usize>,
    /// The offset of its data from the start of the data section.
    pub offset: u64,
    /// The size of its data in bytes.
    pub byte_len: usize,
}

/// An opened, structurally checked GGUF file: header, metadata and tensor infos parsed, the
/// file memory-mapped (see the module docs for what is checked).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use gpt2_weights::gguf::{self, GgmlType, GgufFile, GgufTensorOut, Value};
/// let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
/// let mut bytes = Vec::new();
/// gguf::write(
///     &mut bytes,
///     &[("general.name", Value::String("demo".into()))],
///     &[GgufTensorOut { name: "t", ggml_type: GgmlType::F32, dims: &[2], data: &data }],
/// )?;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("demo.gguf");
/// std::fs::write(&path, &bytes)?;
/// let file = GgufFile::open(&path)?;
/// assert_eq!(file.version(), 3);
/// assert_eq!(file.metadata("general.name").and_then(Value::as_str), Some("demo"));
/// assert_eq!(file.tensors()[0].dims, vec![2]);
/// assert_eq!(&*file.tensor_bytes("t").unwrap(), &data[..]);
/// # Ok(()) }
/// ```
pub struct GgufFile {
    path: PathBuf,
    bytes: SharedBytes,
    version: u32,
    metadata: Vec<(String, Value)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: usize,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

/// The tokenizer stored in a GGUF file (`tokenizer.ggml.*` of a `gpt2` tokenizer), or to
/// store in one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizerLists {
    /// Token spellings (GPT-2's byte-level characters), by id.
    pub tokens: Vec<String>,
    /// BPE merges in rank order.
    pub merges: Vec<(String, String)>,
    /// The end-of-text id (`tokenizer.ggml.eos_token_id`), if any.
    pub eos: Option<u32>,
}

/// A reader over the file's bytes that refuses to run past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Version 1 stores counts and lengths as u32.
    v1: bool,
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> WeightsError {
        WeightsError::format(self.path.display(), message)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], WeightsError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: {} needs {n} bytes at offset {}, but the file has {} bytes",
                what(),
                self.pos,
                self.bytes.len()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(
        &mut self,
        what: &dyn Fn() -> String,
    ) -> Result<[u8; N], WeightsError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, WeightsError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, WeightsError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or length: u32 in version 1, u64 after.
    fn count(&mut self, what: &dyn Fn() -> String) -> Result<u64, WeightsError> {
        if self.v1 {
            Ok(self.u32(what)?.into())
        } else {
            self.u64(what)
        }
    }

    /// `count` items of at least `min_size` bytes each must fit in what is left.
    fn check_fits(
        &self,
        count: u64,
        min_size: usize,
        what: &dyn Fn() -> String,
    ) -> Result<usize, WeightsError> {
        let fits = usize::try_from(count).ok().filter(|&c| {
            c.checked_mul(min_size)
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or_else(|| {
            self.err(format!(
                "{}: {count} items of at least {min_size} bytes each cannot fit in the {} bytes \
                 left (offset {})",
                what(),
                self.remaining(),
                self.pos
            ))
        })
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, WeightsError> {
        let len = self.count(&|| format!("the length of {}", what()))?;
        let len = self.check_fits(len, 1, &|| format!("the length of {}", what()))?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            self.err(format!(
                "{} at offset {at} is not UTF-8: {:?}",
                what(),
                cut(&String::from_utf8_lossy(bytes))
            ))
        })
    }

    /// The fewest bytes a value of type `t` takes (for bounding array lengths).
    fn min_size(&self, t: u32) -> usize {
        let len = if self.v1 { 4 } else { 8 };
        match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => len,
            9 => 4 + len,
            _ => 8,
        }
    }

    fn value(&mut self, t: u32, depth: usize, key: &str) -> Result<Value, WeightsError> {
        let what = || format!("metadata `{}`", cut(key));
        Ok(match t {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(self.array::<1>(&what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{}: bool byte {b}, expected 0 or 1", what()))),
            },
            8 => Value::String(self.string(&what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!(
                        "{}: arrays nested more than {MAX_ARRAY_DEPTH} deep",
                        what()
                    )));
                }
                let elem = self.u32(&|| format!("the element type of {}", what()))?;
                if elem > 12 {
                    return Err(self.err(format!(
                        "{}: unknown array element type {elem} (expected 0..=12)",
                        what()
                    )));
                }
                let n = self.count(&|| format!("the length of {}", what()))?;
                let n = self.check_fits(n, self.min_size(elem), &|| {
                    format!("the length of {}", what())
                })?;
                let mut items = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1, key)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(self.err(format!(
                    "{}: unknown value type {other} (expected 0..=12)",
                    what()
                )))
            }
        })
    }
}

impl GgufFile {
    /// Maps and parses a GGUF file, checking its whole structure (see the module docs).
    ///
    /// # Errors
    /// [`WeightsError::Io`] when it cannot be read; [`WeightsError::Format`] for anything
    /// malformed (naming the file, the key or tensor, and what was expected);
    /// [`WeightsError::Metadata`] for a bad `general.alignment`;
    /// [`WeightsError::Unsupported`] for a tensor type this crate does not read.
    pub fn open(path: &Path) -> Result<GgufFile, WeightsError> {
        let bytes = SharedBytes::map_file(path)?;
        Self::from_bytes(bytes, path)
    }

    /// Parses a GGUF file held in `bytes` (`path` names it in errors), as
    /// [`open`](Self::open) does.
    pub fn from_bytes(bytes: SharedBytes, path: &Path) -> Result<GgufFile, WeightsError> {
        let data: &[u8] = &bytes;
        let fmt_err = |m: String| WeightsError::format(path.display(), m);
        match data.get(..4) {
            Some(b"GGUF") => {}
            Some(b"FUGG") => {
                return Err(fmt_err(
                    "magic `FUGG`: a byte-swapped (big-endian) GGUF file; only little-endian \
                     GGUF files are read"
                        .into(),
                ))
            }
            Some(m) => {
                return Err(fmt_err(format!(
                    "not a GGUF file: magic {m:02x?}, expected `GGUF` (47 47 55 46)"
                )))
            }
            None => {
                return Err(fmt_err(format!(
                    "not a GGUF file: {} bytes, shorter than the 4-byte magic `GGUF`",
                    data.len()
                )))
            }
        }
        let mut r = Reader {
            bytes: data,
            pos: 4,
            path,
            v1: false,
        };
        let version = r.u32(&|| "the version".into())?;
        match version {
            1..=3 => {}
            v if (1..=3).contains(&v.swap_bytes()) => {
                return Err(fmt_err(format!(
                    "version {v:#010x} is a byte-swapped {}: a big-endian GGUF file; only \
                     little-endian GGUF files are read",
                    v.swap_bytes()
                )))
            }
            v => {
                return Err(WeightsError::Unsupported {
                    file: path.display().to_string(),
                    message: format!("GGUF version {v}; expected 1, 2 or 3"),
                })
            }
        }
        r.v1 = version == 1;
        let len = if r.v1 { 4 } else { 8 };
        let n_tensors = r.count(&|| "the tensor count".into())?;
        let n_kv = r.count(&|| "the metadata count".into())?;
        // A key/value pair is at least a key length, a type and one byte; a tensor info at
        // least a name length, n_dims, type and offset.
        let n_kv = r.check_fits(n_kv, len + 4 + 1, &|| "the metadata count".into())?;
        let n_tensors = r.check_fits(n_tensors, len + 4 + 4 + 8, &|| "the tensor count".into())?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut metadata_index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = r.string(&|| format!("the key of metadata entry {i}"))?;
            let t = r.u32(&|| format!("the type of metadata `{}`", cut(&key)))?;
            let value = r.value(t, 0, &key)?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(fmt_err(format!(
                    "metadata key `{}` appears twice",
                    cut(&key)
                )));
            }
            metadata.push((key, value));
        }
        let alignment = match metadata_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = &metadata[i].1;
                match v.as_u64() {
                    Some(a) if a.is_power_of_two() && a <= 1 << 30 => a,
                    _ => {
                        return Err(WeightsError::metadata(
                            path,
                            "general.alignment",
                            "a nonzero power of two (at most 2^30)",
                            v.describe(),
                        ))
                    }
                }
            }
        };

        let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = r.string(&|| format!("the name of tensor {i}"))?;
            let shown = cut(&name);
            let what = || format!("the info of tensor `{shown}`");
            let n_dims = r.u32(&what)?;
            if n_dims as usize > MAX_DIMS {
                return Err(fmt_err(format!(
                    "tensor `{shown}` has {n_dims} dimensions; at most {MAX_DIMS}"
                )));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = r.count(&what)?;
                let d = usize::try_from(d).map_err(|_| {
                    fmt_err(format!(
                        "tensor `{shown}`: dimension {d} does not fit in memory"
                    ))
                })?;
                ne.push(d);
            }
            let t = r.u32(&what)?;
            let offset = r.u64(&what)?;
            let ggml_type = GgmlType::from_u32(t).ok_or_else(|| WeightsError::Unsupported {
                file: path.display().to_string(),
                message: format!(
                    "tensor `{shown}` has GGML type {t} ({}); this reader supports F32, F16, \
                     BF16 and Q8_0",
                    ggml_type_name(t)
                ),
            })?;
            let dims: Vec<usize> = ne.iter().rev().copied().collect();
            let elements = ne.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let ne0 = ne.first().copied().unwrap_or(1);
            if !ne0.is_multiple_of(ggml_type.block_size()) {
                return Err(fmt_err(format!(
                    "tensor `{shown}` {ggml_type} {dims:?}: rows of {ne0} are not whole blocks \
                     of {}",
                    ggml_type.block_size()
                )));
            }
            let byte_len = elements
                .and_then(|n| ggml_type.byte_len(n))
                .filter(|&b| b <= data.len())
                .ok_or_else(|| {
                    fmt_err(format!(
                        "tensor `{shown}` {ggml_type} {dims:?} needs more bytes than the file's {}",
                        data.len()
                    ))
                })?;
            if offset % alignment != 0 {
                return Err(fmt_err(format!(
                    "tensor `{shown}`: offset {offset} is not a multiple of the alignment \
                     {alignment}"
                )));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(fmt_err(format!("tensor name `{shown}` appears twice")));
            }
            tensors.push(GgufTensorInfo {
                name,
                ggml_type,
                dims,
                offset,
                byte_len,
            });
        }
        // The data section starts at the next multiple of the alignment.
        let data_offset = (r.pos as u64)
            .checked_next_multiple_of(alignment)
            .and_then(|d| usize::try_from(d).ok())
            .ok_or_else(|| fmt_err("the data section's offset overflows".into()))?;
        let mut by_offset: Vec<&GgufTensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| (t.offset, t.byte_len));
        let mut prev: Option<(&GgufTensorInfo, u64)> = None;
        for t in by_offset {
            let end = (data_offset as u64)
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.byte_len as u64));
            match end {
                Some(end) if end <= data.len() as u64 => {}
                _ => {
                    return Err(fmt_err(format!(
                        "truncated: tensor `{}` needs bytes {}..{} (data section at {data_offset} \
                         + offset {} + {} bytes), but the file has {} bytes",
                        cut(&t.name),
                        data_offset as u128 + t.offset as u128,
                        data_offset as u128 + t.offset as u128 + t.byte_len as u128,
                        t.offset,
                        t.byte_len,
                        data.len()
                    )))
                }
            }
            if let Some((p, p_end)) = prev {
                if t.offset < p_end {
                    return Err(fmt_err(format!(
                        "tensors `{}` (data offsets {}..{p_end}) and `{}` (from {}) overlap",
                        cut(&p.name),
                        p.offset,
                        cut(&t.name),
                        t.offset
                    )));
                }
            }
            prev = Some((t, t.offset + t.byte_len as u64));
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The GGUF version (1, 2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset as u64
    }

    /// A metadata value by key.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Every metadata entry, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// `general.name`, when it is a string.
    pub fn name(&self) -> Option<&str> {
        self.metadata("general.name").and_then(Value::as_str)
    }

    /// The tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// One tensor's info by its name in the file.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's data, in place in the mapped file (checked at open to lie inside it).
    pub fn tensor_bytes(&self, name: &str) -> Option<SharedBytes> {
        let t = self.tensor(name)?;
        let start = self
            .data_offset
            .checked_add(usize::try_from(t.offset).ok()?)?;
        self.bytes.slice(start, t.byte_len)
    }

    /// The whole file's bytes.
    pub(crate) fn bytes(&self) -> &SharedBytes {
        &self.bytes
    }

    /// The tokenizer stored in the file: `Some` when it has `tokenizer.ggml.tokens` and
    /// `tokenizer.ggml.merges`, checked: `tokenizer.ggml.model` must be `"gpt2"`, the lists
    /// arrays of strings, each merge two tokens separated by one space, the eos id (when
    /// present) a valid token id.
    ///
    /// # Errors
    /// [`WeightsError::Metadata`] naming the key and what was expected.
    pub fn tokenizer_lists(&self) -> Result<Option<TokenizerLists>, WeightsError> {
        let (Some(tokens), Some(merges)) = (
            self.metadata("tokenizer.ggml.tokens"),
            self.metadata("tokenizer.ggml.merges"),
        ) else {
            return Ok(None);
        };
        let bad = |key: &str, expected: &str, found: String| {
            WeightsError::metadata(&self.path, key, expected, found)
        };
        match self.metadata("tokenizer.ggml.model") {
            Some(Value::String(m)) if m == "gpt2" => {}
            other => {
                let found = other.map_or("nothing".into(), Value::describe);
                return Err(bad("tokenizer.ggml.model", "string \"gpt2\"", found));
            }
        }
        let strings = |key: &str, v: &Value| -> Result<Vec<String>, WeightsError> {
            let expected = "an array of strings";
            let Value::Array(items) = v else {
                return Err(bad(key, expected, v.describe()));
            };
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(
                        key,
                        expected,
                        format!("an array holding {}", other.describe()),
                    )),
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens", tokens)?;
        let merges = strings("tokenizer.ggml.merges", merges)?
            .into_iter()
            .map(|m| match m.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok((a.to_string(), b.to_string()))
                }
                _ => Err(bad(
                    "tokenizer.ggml.merges",
                    "merges of two tokens separated by one space",
                    format!("{:?}", cut(&m)),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let eos = match self.metadata("tokenizer.ggml.eos_token_id") {
            None => None,
            Some(v) => match v.as_u64().and_then(|e| u32::try_from(e).ok()) {
                Some(e) if (e as usize) < tokens.len() => Some(e),
                _ => {
                    return Err(bad(
                        "tokenizer.ggml.eos_token_id",
                        &format!("a token id below {}", tokens.len()),
                        v.describe(),
                    ))
                }
            },
        };
        Ok(Some(TokenizerLists {
            tokens,
            merges,
            eos,
        }))
    }
}

/// One tensor for [`write()`].
#[derive(Debug, Clone, Copy)]
pub struct GgufTensorOut<'a> {
    /// The name in the file.
    pub name: &'a str,
    /// The storage type.
    pub ggml_type: GgmlType,
    /// The dimensions, outermost first (written innermost first, as GGUF stores them).
    pub dims: &'a [usize],
    /// The data: exactly `ggml_type.byte_len(product of dims)` bytes.
    pub data: &'a [u8],
}

/// Counts the bytes written.
struct Counting<'a, W: Write> {
    w: &'a mut W,
    pos: u64,
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
    fn string(&mut self, s: &str) -> io::Result<()> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }
    fn pad(&mut self) -> io::Result<()> {
        let n = self.pos.next_multiple_of(DEFAULT_ALIGNMENT) - self.pos;
        self.put(&[0u8; DEFAULT_ALIGNMENT as usize][..n as usize])
    }
    fn value(&mut self, v: &Value) -> io::Result<()> {
        match v {
            Value::U8(x) => self.put(&[*x]),
            Value::I8(x) => self.put(&x.to_le_bytes()),
            Value::U16(x) => self.put(&x.to_le_bytes()),
            Value::I16(x) => self.put(&x.to_le_bytes()),
            Value::U32(x) => self.put(&x.to_le_bytes()),
            Value::I32(x) => self.put(&x.to_le_bytes()),
            Value::F32(x) => self.put(&x.to_le_bytes()),
            Value::Bool(x) => self.put(&[u8::from(*x)]),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                // An empty array's element type does not matter; candle writes u32.
                let t = items.first().map_or(4, Value::type_id);
                if items.iter().any(|i| i.type_id() != t) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a GGUF array holds values of one type",
                    ));
                }
                self.put(&t.to_le_bytes())?;
                self.put(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|i| self.value(i))
            }
            Value::U64(x) => self.put(&x.to_le_bytes()),
            Value::I64(x) => self.put(&x.to_le_bytes()),
            Value::F64(x) => self.put(&x.to_le_bytes()),
        }
    }
}

fn padded(len: usize) -> u64 {
    (len as u64).next_multiple_of(DEFAULT_ALIGNMENT)
}

/// Writes a GGUF version 3 file (alignment 32, little-endian) to `w`: the header, `metadata`
/// in order, the tensor infos in order, then each tensor's data padded to 32 bytes — the same
/// bytes as candle's `gguf_file::write` with the version set to 3.
///
/// # Errors
/// The writer's errors; [`io::ErrorKind::InvalidInput`] when a tensor's data do not have the
/// size its type and dimensions give, it has more than [`MAX_DIMS`] dimensions, or an array
/// mixes value types. (Nothing is checked after writing has begun, so check first when `w` is
/// a file: [`save_gguf`] writes to a temporary file.)
pub fn write<W: Write>(
    w: &mut W,
    metadata: &[(&str, Value)],
    tensors: &[GgufTensorOut<'_>],
) -> io::Result<()> {
    for t in tensors {
        let want = t
            .dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| t.ggml_type.byte_len(n));
        let ne0 = t.dims.last().copied().unwrap_or(1);
        if want != Some(t.data.len())
            || t.dims.len() > MAX_DIMS
            || !ne0.is_multiple_of(t.ggml_type.block_size())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tensor `{}`: {} bytes of {} do not make dims {:?}",
                    cut(t.name),
                    t.data.len(),
                    t.ggml_type,
                    t.dims
                ),
            ));
        }
    }
    let mut c = Counting { w, pos: 0 };
    c.put(b"GGUF")?;
    c.put(&GGUF_VERSION.to_le_bytes())?;
    c.put(&(tensors.len() as u64).to_le_bytes())?;
    c.put(&(metadata.len() as u64).to_le_bytes())?;
    for (k, v) in metadata {
        c.string(k)?;
        c.put(&v.type_id().to_le_bytes())?;
        c.value(v)?;
    }
    let mut offset = 0u64;
    for t in tensors {
        c.string(t.name)?;
        c.put(&(t.dims.len() as u32).to_le_bytes())?;
        for &d in t.dims.iter().rev() {
            c.put(&(d as u64).to_le_bytes())?;
        }
        c.put(&t.ggml_type.to_u32().to_le_bytes())?;
        c.put(&offset.to_le_bytes())?;
        offset += padded(t.data.len());
    }
    c.pad()?;
    for t in tensors {
        c.put(t.data)?;
        c.pad()?;
    }
    c.w.flush()
}

/// What [`save_gguf`] and [`convert_to_gguf`] write besides the weights.
#[derive(Debug, Clone, Default)]
pub struct GgufOptions {
    /// `general.name` (e.g. the source directory's name).
    pub name: String,
    /// The tokenizer to store (`tokenizer.ggml.*`); left out when `None` or when its number
    /// of tokens differs from the model's `n_vocab`.
    pub tokenizer: Option<TokenizerLists>,
}

fn u32_value(v: usize) -> Value {
    Value::U32(u32::try_from(v).unwrap_or(u32::MAX))
}

/// The metadata of a Q8_0 GGUF file for `config`.
fn metadata(config: &Config, opts: &GgufOptions) -> Vec<(&'static str, Value)> {
    let mut md = vec![
        ("general.architecture", Value::String("gpt2".into())),
        ("general.name", Value::String(opts.name.clone())),
        ("general.file_type", Value::U32(FILE_TYPE_MOSTLY_Q8_0)),
        ("general.quantization_version", Value::U32(2)),
        ("gpt2.context_length", u32_value(config.n_ctx)),
        ("gpt2.embedding_length", u32_value(config.n_embd)),
        ("gpt2.feed_forward_length", u32_value(4 * config.n_embd)),
        ("gpt2.block_count", u32_value(config.n_layer)),
        ("gpt2.attention.head_count", u32_value(config.n_head)),
        (
            "gpt2.attention.layer_norm_epsilon",
            Value::F32(config.layer_norm_epsilon as f32),
        ),
        ("gpt2.vocab_size", u32_value(config.n_vocab)),
    ];
    if let Some(tok) = opts
        .tokenizer
        .as_ref()
        .filter(|t| t.tokens.len() == config.n_vocab)
    {
        let tokens = tok
            .tokens
            .iter()
            .map(|t| Value::String(t.clone()))
            .collect();
        // llama_token_type: 1 normal, 3 control.
        let types = (0..tok.tokens.len())
            .map(|id| Value::I32(if Some(id as u32) == tok.eos { 3 } else { 1 }))
            .collect();
        let merges = tok
            .merges
            .iter()
            .map(|(a, b)| Value::String(format!("{a} {b}")))
            .collect();
        md.push(("tokenizer.ggml.model", Value::String("gpt2".into())));
        md.push(("tokenizer.ggml.pre", Value::String("gpt-2".into())));
        md.push(("tokenizer.ggml.tokens", Value::Array(tokens)));
        md.push(("tokenizer.ggml.token_type", Value::Array(types)));
        md.push(("tokenizer.ggml.merges", Value::Array(merges)));
        if let Some(eos) = tok.eos {
            md.push(("tokenizer.ggml.bos_token_id", Value::U32(eos)));
            md.push(("tokenizer.ggml.eos_token_id", Value::U32(eos)));
        }
    }
    md
}

fn check_q8_0_width(config: &Config) -> Result<(), WeightsError> {
    if !config.n_embd.is_multiple_of(BLOCK) {
        return Err(WeightsError::InvalidConfig {
            file: None,
            message: format!(
                "n_embd must be a multiple of {BLOCK} for Q8_0 weights, found {}",
                config.n_embd
            ),
        });
    }
    Ok(())
}

/// Writes `weights` as a Q8_0 GGUF model to `w`; `path` names the file in errors.
fn write_model<W: Write>(
    weights: &Weights,
    opts: &GgufOptions,
    w: &mut W,
    path: &Path,
) -> Result<(), WeightsError> {
    let config = weights.config();
    config.validate()?;
    check_q8_0_width(config)?;
    let md = metadata(config, opts);
    let mut stored = Vec::new();
    for (canonical, shape) in expected_shapes(config) {
        let Some((name, how)) = canonical_to_gguf(&canonical) else {
            continue;
        };
        let values = weights.tensor(&canonical)?.to_f32_vec();
        let quantize_err = |source| WeightsError::Quantize {
            file: path.to_path_buf(),
            tensor: canonical.clone(),
            source,
        };
        let (ggml_type, dims, data) = match how {
            GgufStored::Embedding => (
                GgmlType::Q8_0,
                shape.clone(),
                q8_0::quantize_rows(&values, shape[0], shape[1]).map_err(quantize_err)?,
            ),
            // [in, out] → [out, in].
            GgufStored::Conv1D => (
                GgmlType::Q8_0,
                vec![shape[1], shape[0]],
                q8_0::quantize_transposed(&values, shape[0], shape[1]).map_err(quantize_err)?,
            ),
            GgufStored::F32 => (
                GgmlType::F32,
                shape.clone(),
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        };
        stored.push((name, ggml_type, dims, data));
    }
    let out: Vec<GgufTensorOut<'_>> = stored
        .iter()
        .map(|(name, ggml_type, dims, data)| GgufTensorOut {
            name,
            ggml_type: *ggml_type,
            dims,
            data,
        })
        .collect();
    write(w, &md, &out).map_err(|e| WeightsError::io(path, e))
}

/// Writes `weights` (any layout and storage type, read as f32) as a Q8_0 GGUF file at
/// `path` (see the module docs for the tensors and metadata), atomically: into a temporary
/// file created exclusively beside it, flushed to disk, then renamed into place without
/// replacing anything (a symlink at `path` is never followed). `path` must not exist and
/// `n_embd` must be a multiple of 32.
///
/// ```
/// use std::borrow::Cow;
/// use gpt2_weights::gguf::{save_gguf, GgufOptions};
/// use gpt2_weights::{expected_tensors, save_hf, Config, Dtype, Layout, TensorView, Weights};
/// let config = Config { n_vocab: 8, n_ctx: 4, n_embd: 32, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let tensors: Vec<(String, TensorView)> = expected_tensors(&config)
///     .into_iter()
///     .map(|(name, shape)| {
///         let n: usize = shape.iter().product();
///         let data = (0..n).flat_map(|i| (i as f32 / n as f32).to_le_bytes()).collect();
///         (name, TensorView { dtype: Dtype::F32, shape, transposed: false, data: Cow::Owned(data) })
///     })
///     .collect();
/// let dir = tempfile::tempdir()?;
/// save_hf(&dir.path().join("f32"), &config, &tensors)?;
/// let path = dir.path().join("tiny.gguf");
/// save_gguf(&Weights::open(&dir.path().join("f32"))?, &path, &GgufOptions::default())?;
/// let w = Weights::open(&path)?;
/// assert_eq!((w.layout(), w.config()), (Layout::Gguf, &config));
/// assert_eq!(w.tensor("h.0.mlp.c_fc.weight")?.dtype, Dtype::Q8_0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`WeightsError::DestinationExists`]; [`WeightsError::Quantize`] naming a tensor with a NaN,
/// infinite or too large weight; [`WeightsError::InvalidConfig`]; I/O errors. Nothing is left
/// at `path` on any error.
pub fn save_gguf(weights: &Weights, path: &Path, opts: &GgufOptions) -> Result<(), WeightsError> {
    if path.symlink_metadata().is_ok() {
        return Err(WeightsError::DestinationExists(path.to_path_buf()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".gguf.partial-")
        .tempfile_in(&parent)
        .map_err(|e| WeightsError::io(&parent, e))?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        write_model(weights, opts, &mut w, path)?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| WeightsError::io(path, e))?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            WeightsError::DestinationExists(path.to_path_buf())
        } else {
            WeightsError::io(path, e.error)
        }
    })?;
    Ok(())
}

/// Converts a model of any layout into a GGUF model directory at `to`: `model.gguf` (Q8_0
/// matrices, see the module docs), `config.json`, and the tokenizer files
/// [`convert`](crate::convert) copies. Written atomically with
/// [`save_dir_with`](crate::save_dir_with) (nothing at `to` on any error); `to` must not
/// exist and `n_embd` must be a multiple of 32 (checked before anything is written).
///
/// The stored tokenizer is `opts.tokenizer`, or else the source's own when the source is a
/// GGUF file that has one.
///
/// ```no_run
/// use gpt2_weights::gguf::{convert_to_gguf, GgufOptions};
/// let opts = GgufOptions { name: "124M".into(), tokenizer: None };
/// convert_to_gguf("models/124M".as_ref(), "models/124M-q8_0".as_ref(), &opts)?;
/// # Ok::<(), gpt2_weights::WeightsError>(())
/// ```
///
/// # Errors
/// As [`save_gguf`], and those of opening `from`.
pub fn convert_to_gguf(from: &Path, to: &Path, opts: &GgufOptions) -> Result<(), WeightsError> {
    if to.symlink_metadata().is_ok() {
        return Err(WeightsError::DestinationExists(to.to_path_buf()));
    }
    let weights = Weights::open(from)?;
    let config = *weights.config();
    config.validate()?;
    check_q8_0_width(&config)?;
    let mut opts = opts.clone();
    if opts.tokenizer.is_none() {
        if let Some(file) = weights.gguf() {
            opts.tokenizer = file.tokenizer_lists()?;
        }
    }
    let files = crate::tokenizer_files(from, weights.layout());
    crate::save_dir_with(to, &config, &files, &[GGUF_FILE], |tmp| {
        let path = tmp.join(GGUF_FILE);
        let file = File::create_new(&path).map_err(|e| WeightsError::io(&path, e))?;
        let mut w = BufWriter::new(file);
        write_model(&weights, &opts, &mut w, &path)?;
        Ok::<_, WeightsError>(vec![path])
    })
}

/// The GGUF file to open for `path`: `path` itself when it is a file named `*.gguf`, or
/// `path/model.gguf` when `path` is a directory that has one.
///
/// ```
/// use gpt2_weights::gguf::find_gguf;
/// let dir = tempfile::tempdir()?;
/// assert_eq!(find_gguf(dir.path()), None);
/// std::fs::write(dir.path().join("model.gguf"), b"")?;
/// assert_eq!(find_gguf(dir.path()), Some(dir.path().join("model.gguf")));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn find_gguf(path: &Path) -> Option<PathBuf> {
    let is_gguf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if path.is_file() && is_gguf {
        return Some(path.to_path_buf());
    }
    let inside = path.join(GGUF_FILE);
    (path.is_dir() && inside.is_file()).then_some(inside)
}

/// Opens a GGUF model: `path` is what the caller gave ([`Weights::dir`]), `file` the GGUF
/// file.
pub(crate) fn open_weights(path: &Path, file: &Path) -> Result<Weights, WeightsError> {
    let gguf = GgufFile::open(file)?;
    let config = config_of(&gguf)?;
    let mut raw = Vec::with_capacity(gguf.tensors().len());
    let data_offset = gguf.data_offset;
    for t in gguf.tensors() {
        let mapped = gguf_to_canonical(&t.name);
        let transposed = mapped
            .as_ref()
            .is_some_and(|(_, h)| *h == GgufStored::Conv1D);
        let shape = if transposed {
            t.dims.iter().rev().copied().collect()
        } else {
            t.dims.clone()
        };
        raw.push(RawTensor {
            stored_name: t.name.clone(),
            canonical: mapped.map(|(c, _)| c),
            dtype: Ok(t.ggml_type.dtype()),
            shape,
            transposed,
            file: 0,
            // In range: checked at open.
            start: data_offset + t.offset as usize,
            len: t.byte_len,
            crc32c: None,
        });
    }
    if let Some(tok) = gguf.tokenizer_lists()? {
        if tok.tokens.len() != config.n_vocab {
            return Err(WeightsError::metadata(
                file,
                "tokenizer.ggml.tokens",
                format!(
                    "n_vocab = {} tokens (the rows of token_embd.weight)",
                    config.n_vocab
                ),
                format!("{} tokens", tok.tokens.len()),
            ));
        }
    }
    let data = crate::weights::DataFile::from_shared(file, gguf.bytes());
    let mut weights = Weights::assemble(path, Layout::Gguf, config, vec![data], raw)?;
    weights.set_gguf(gguf);
    Ok(weights)
}

/// The hyperparameters from a GPT-2 GGUF file's metadata (`n_vocab` from
/// `token_embd.weight`), checked against each other.
fn config_of(gguf: &GgufFile) -> Result<Config, WeightsError> {
    let path = gguf.path();
    let found = |key: &str| gguf.metadata(key).map_or("nothing".into(), Value::describe);
    match gguf.metadata("general.architecture") {
        Some(Value::String(a)) if a == "gpt2" => {}
        _ => {
            return Err(WeightsError::metadata(
                path,
                "general.architecture",
                "string \"gpt2\"",
                found("general.architecture"),
            ))
        }
    }
    let uint = |key: &str| -> Result<usize, WeightsError> {
        gguf.metadata(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| WeightsError::metadata(path, key, "a non-negative integer", found(key)))
    };
    let eps_key = "gpt2.attention.layer_norm_epsilon";
    let layer_norm_epsilon = match gguf.metadata(eps_key) {
        // The shortest decimal that reads back as this f32 (1e-5, not 9.99999974e-6).
        Some(Value::F32(v)) => v.to_string().parse().unwrap_or(f64::from(*v)),
        Some(Value::F64(v)) => *v,
        _ => {
            return Err(WeightsError::metadata(
                path,
                eps_key,
                "an f32 or f64",
                found(eps_key),
            ))
        }
    };
    let vocab_key = "gpt2.vocab_size";
    let n_vocab = match gguf.tensor("token_embd.weight") {
        Some(t) => {
            let rows = t.dims.first().copied().unwrap_or(0);
            if gguf.metadata(vocab_key).is_some() && uint(vocab_key)? != rows {
                return Err(WeightsError::metadata(
                    path,
                    vocab_key,
                    format!("{rows} (the rows of token_embd.weight {:?})", t.dims),
                    found(vocab_key),
                ));
            }
            rows
        }
        None => uint(vocab_key).map_err(|_| {
            WeightsError::format(
                path.display(),
                "no tensor `token_embd.weight` (GPT-2's token embedding, which gives n_vocab)",
            )
        })?,
    };
    let config = Config {
        n_vocab,
        n_ctx: uint("gpt2.context_length")?,
        n_embd: uint("gpt2.embedding_length")?,
        n_head: uint("gpt2.attention.head_count")?,
        n_layer: uint("gpt2.block_count")?,
        layer_norm_epsilon,
    };
    config.validate().map_err(|e| match e {
        WeightsError::InvalidConfig {
            file: None,
            message,
        } => WeightsError::InvalidConfig {
            file: Some(path.to_path_buf()),
            message,
        },
        other => other,
    })?;
    let ff_key = "gpt2.feed_forward_length";
    let ff = uint(ff_key)?;
    if Some(ff) != config.n_embd.checked_mul(4) {
        return Err(WeightsError::metadata(
            path,
            ff_key,
            format!("4 · n_embd = {} (GPT-2's MLP)", 4 * config.n_embd),
            found(ff_key),
        ));
    }
    Ok(config)
}
