//! OpenAI's TensorFlow v1 checkpoints, read without TensorFlow.
//!
//! # Format notes
//!
//! A checkpoint directory (as released by OpenAI) holds:
//!
//! - `checkpoint`: a text-format `CheckpointState` protobuf; its line
//!   `model_checkpoint_path: "model.ckpt"` gives the *prefix* of the checkpoint files
//!   (relative to the directory, or absolute).
//! - `<prefix>.index`: a table in LevelDB's SSTable format mapping tensor names to
//!   `BundleEntryProto`s (TensorFlow's "tensor bundle"):
//!   - The last 48 bytes are the **footer**: two *block handles* (each a varint64 offset
//!     and a varint64 size) — the metaindex block, then the index block — padded with
//!     zeros to 40 bytes, then the 8-byte magic `0xdb4775248b80fb57` (little-endian).
//!   - Each **block** of `size` bytes is followed by a 5-byte trailer: the compression
//!     type (0 = none, 1 = snappy; TensorFlow writes bundles uncompressed, and only 0 is
//!     accepted here) and the masked crc32c of the block data plus the type byte.
//!   - A block is a sequence of **entries** followed by `num_restarts` little-endian
//!     u32 restart offsets and `num_restarts` itself (u32). An entry is
//!     `varint32 shared, varint32 non_shared, varint32 value_len, key[shared..] (non_shared
//!     bytes), value`: keys are prefix-compressed against the previous key, except at
//!     restart points, where `shared` is 0.
//!   - The **index block**'s values are block handles of the data blocks; the keys of
//!     all data blocks, in order, are the table's sorted, unique keys. (The metaindex
//!     block is empty in tensor bundles.)
//!   - The entry with the empty key `""` is the `BundleHeaderProto`:
//!     `num_shards` (field 1, int32), `endianness` (2, enum LITTLE = 0, BIG = 1),
//!     `version` (3, `VersionDef`). Every other entry is a `BundleEntryProto`: `dtype`
//!     (1, enum: `DT_FLOAT` = 1, `DT_BFLOAT16` = 14, `DT_HALF` = 19), `shape` (2,
//!     `TensorShapeProto`: repeated `dim` (2) with `size` (1, int64); `unknown_rank` (3)),
//!     `shard_id` (3, int32), `offset` (4, int64), `size` (5, int64), `crc32c` (6,
//!     fixed32, masked) and `slices` (7, for partitioned variables: not supported).
//! - `<prefix>.data-NNNNN-of-MMMMM` (N = shard id, M = `num_shards`, both 5 digits):
//!   raw tensor bytes; entry `e`'s tensor is `size` bytes at `offset` in shard
//!   `shard_id`, in the header's byte order (little-endian in every checkpoint written on
//!   x86 or ARM; big-endian bundles are rejected).
//!
//! The **masked crc32c** (LevelDB's and TensorFlow's) of data is
//! `rotate_right(crc32c(data), 15) + 0xa282ead8` (wrapping). TensorFlow checks each
//! tensor's crc on restore; so does [`Weights::tensor`](crate::Weights::tensor), lazily,
//! and [`Weights::verify`](crate::Weights::verify) for all tensors at once.
//!
//! OpenAI's tensor names map to canonical names as `model/wte` → `wte.weight`,
//! `model/h{i}/attn/c_attn/w` → `h.{i}.attn.c_attn.weight`, `g` → `weight`,
//! `b` → `bias`; the `[1, in, out]` weights (a 1×1 convolution's kernel) lose their
//! leading 1 (the bytes are the same).

use std::path::{Path, PathBuf};

use crate::names::openai_to_canonical;
use crate::weights::{Backing, DataFile, RawTensor};
use crate::{Config, Dtype, Layout, Weights, WeightsError};

const FOOTER_LEN: usize = 48;
const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
const BLOCK_TRAILER_LEN: usize = 5;
/// Longest key accepted: tensor names are short, and a bound keeps prefix compression
/// from turning a small malicious file into a huge allocation.
const MAX_KEY_LEN: usize = 1024;
const MASK_DELTA: u32 = 0xa282_ead8;

/// LevelDB / TensorFlow crc masking.
pub fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask_crc`].
pub fn unmask_crc(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// `BundleHeaderProto`: the entry with the empty key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHeader {
    /// Number of `.data-NNNNN-of-MMMMM` shards.
    pub num_shards: u32,
    /// 0 = little-endian, 1 = big-endian.
    pub endianness: u32,
}

/// `BundleEntryProto`: where one tensor is and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEntry {
    /// TensorFlow `DataType` number (`DT_FLOAT` = 1, `DT_HALF` = 19, ...).
    pub dtype: u32,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Which data shard holds the bytes.
    pub shard_id: u32,
    /// Byte offset in that shard.
    pub offset: u64,
    /// Byte length.
    pub size: u64,
    /// Unmasked crc32c of the bytes.
    pub crc32c: u32,
}

impl BundleEntry {
    /// The crate's [`Dtype`] for this entry, or TensorFlow's name for an unsupported one.
    pub fn dtype(&self) -> Result<Dtype, String> {
        match self.dtype {
            1 => Ok(Dtype::F32),
            19 => Ok(Dtype::F16),
            14 => Ok(Dtype::BF16),
            n => Err(dtype_name(n)),
        }
    }
}

fn dtype_name(n: u32) -> String {
    let name = match n {
        0 => "DT_INVALID",
        2 => "DT_DOUBLE",
        3 => "DT_INT32",
        4 => "DT_UINT8",
        5 => "DT_INT16",
        6 => "DT_INT8",
        7 => "DT_STRING",
        9 => "DT_INT64",
        10 => "DT_BOOL",
        _ => "",
    };
    if name.is_empty() {
        format!("TensorFlow DataType {n}")
    } else {
        format!("{name} ({n})")
    }
}

/// A parsed `.index` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointIndex {
    /// The header entry.
    pub header: BundleHeader,
    /// Every tensor entry, sorted by name.
    pub entries: Vec<(String, BundleEntry)>,
}

/// Parses a TensorFlow tensor-bundle `.index` file (see the module docs for the format).
///
/// Every length and offset is bounds-checked; any malformed input is an error, never a
/// panic. This is what the `index` fuzz target runs.
///
/// ```
/// let err = gpt2_weights::tf::parse_index(b"not an index").unwrap_err();
/// assert!(err.to_string().contains("too short"), "{err}");
/// ```
pub fn parse_index(bytes: &[u8]) -> Result<CheckpointIndex, WeightsError> {
    parse_index_inner(bytes, true).map_err(|m| WeightsError::format("<index>", m))
}

/// [`parse_index`] without checking the blocks' checksums, so that a fuzzer's mutations
/// reach the block and protobuf parsers instead of stopping at the checksum. Not for
/// real files.
#[doc(hidden)]
pub fn parse_index_unchecked(bytes: &[u8]) -> Result<CheckpointIndex, WeightsError> {
    parse_index_inner(bytes, false).map_err(|m| WeightsError::format("<index>", m))
}

fn parse_index_inner(bytes: &[u8], check_blocks: bool) -> Result<CheckpointIndex, String> {
    if bytes.len() < FOOTER_LEN {
        return Err(format!(
            "too short for a TensorFlow checkpoint index: {} bytes, the footer alone is {FOOTER_LEN}",
            bytes.len()
        ));
    }
    let footer = &bytes[bytes.len() - FOOTER_LEN..];
    let magic = u64::from_le_bytes(read_array(footer, 40)?);
    if magic != MAGIC {
        return Err(format!(
            "not a TensorFlow checkpoint index: footer magic is {magic:#018x}, expected {MAGIC:#018x}"
        ));
    }
    let mut p = 0;
    let _metaindex = read_handle(&footer[..40], &mut p)?;
    let index_handle = read_handle(&footer[..40], &mut p)?;
    let index_block = read_block(bytes, index_handle, "index block", check_blocks)?;

    let mut header = None;
    let mut entries = Vec::new();
    let mut last_key: Option<Vec<u8>> = None;
    let mut next_block = 0u64;
    for (_, handle_bytes) in block_entries(index_block, "index block")? {
        let mut q = 0;
        let handle = read_handle(&handle_bytes, &mut q)?;
        // Data blocks are written one after another; requiring that keeps the work
        // linear in the file size whatever the index block says.
        if handle.offset < next_block {
            return Err(format!(
                "data block at offset {} overlaps the previous block (which ends at {next_block})",
                handle.offset
            ));
        }
        next_block = handle
            .offset
            .saturating_add(handle.size)
            .saturating_add(BLOCK_TRAILER_LEN as u64);
        let block = read_block(bytes, handle, "data block", check_blocks)?;
        for (key, value) in block_entries(block, "data block")? {
            if let Some(prev) = &last_key {
                if key <= *prev {
                    return Err(format!(
                        "keys out of order: `{}` after `{}`",
                        String::from_utf8_lossy(&key),
                        String::from_utf8_lossy(prev)
                    ));
                }
            }
            if key.is_empty() {
                header = Some(parse_header(&value)?);
            } else {
                let name = String::from_utf8(key.clone())
                    .map_err(|_| "a tensor name is not valid UTF-8".to_string())?;
                let entry = parse_entry(&value).map_err(|m| format!("entry `{name}`: {m}"))?;
                entries.push((name, entry));
            }
            last_key = Some(key);
        }
    }
    let header = header.ok_or("no header entry (the empty key) in the index")?;
    if header.num_shards == 0 {
        return Err("header says num_shards = 0".into());
    }
    for (name, e) in &entries {
        if e.shard_id >= header.num_shards {
            return Err(format!(
                "entry `{name}`: shard_id {} but the header says num_shards = {}",
                e.shard_id, header.num_shards
            ));
        }
    }
    Ok(CheckpointIndex { header, entries })
}

fn read_array<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], String> {
    at.checked_add(N)
        .and_then(|end| b.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("unexpected end of data at byte {at}"))
}

fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        if i == 9 && byte > 1 {
            return Err("varint overflows 64 bits".into());
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn read_varint32(b: &[u8], pos: &mut usize) -> Result<usize, String> {
    let v = read_varint(b, pos)?;
    u32::try_from(v)
        .map(|v| v as usize)
        .map_err(|_| format!("value {v} does not fit 32 bits"))
}

#[derive(Clone, Copy)]
struct Handle {
    offset: u64,
    size: u64,
}

fn read_handle(b: &[u8], pos: &mut usize) -> Result<Handle, String> {
    Ok(Handle {
        offset: read_varint(b, pos)?,
        size: read_varint(b, pos)?,
    })
}

fn read_block<'a>(file: &'a [u8], h: Handle, what: &str, check: bool) -> Result<&'a [u8], String> {
    let out_of_range = || {
        format!(
            "{what} at offset {} size {} (+{BLOCK_TRAILER_LEN} trailer) lies outside the \
             {}-byte file (truncated index?)",
            h.offset,
            h.size,
            file.len()
        )
    };
    let start = usize::try_from(h.offset).map_err(|_| out_of_range())?;
    let size = usize::try_from(h.size).map_err(|_| out_of_range())?;
    let end = start
        .checked_add(size)
        .and_then(|e| e.checked_add(BLOCK_TRAILER_LEN))
        .filter(|&e| e <= file.len())
        .ok_or_else(out_of_range)?;
    let data = &file[start..start + size];
    let kind = file[start + size];
    let stored = u32::from_le_bytes(read_array(file, start + size + 1)?);
    debug_assert_eq!(start + size + BLOCK_TRAILER_LEN, end);
    let crc = crc32c::crc32c_append(crc32c::crc32c(data), &[kind]);
    if check && unmask_crc(stored) != crc {
        return Err(format!(
            "{what} at offset {start}: block checksum mismatch (stored {:#010x}, computed {crc:#010x}); \
             the index is corrupted",
            unmask_crc(stored)
        ));
    }
    if kind != 0 {
        return Err(format!(
            "{what} at offset {start} is compressed (type {kind}{}); TensorFlow writes checkpoint \
             indexes uncompressed and only uncompressed blocks are supported",
            if kind == 1 { ", snappy" } else { "" }
        ));
    }
    Ok(data)
}

/// The (key, value) entries of a block, with prefix compression undone.
/// A block entry: (key, value).
type KeyValue = (Vec<u8>, Vec<u8>);

fn block_entries(block: &[u8], what: &str) -> Result<Vec<KeyValue>, String> {
    let bad = |m: String| format!("{what}: {m}");
    if block.len() < 4 {
        return Err(bad(format!("{} bytes, too short for a block", block.len())));
    }
    let num_restarts = u32::from_le_bytes(read_array(block, block.len() - 4)?) as usize;
    let restarts_start = num_restarts
        .checked_mul(4)
        .and_then(|r| (block.len() - 4).checked_sub(r))
        .ok_or_else(|| {
            bad(format!(
                "{num_restarts} restart points do not fit the block"
            ))
        })?;
    if num_restarts == 0 {
        return Err(bad("no restart points".into()));
    }
    let mut restarts = Vec::with_capacity(num_restarts);
    for k in 0..num_restarts {
        let r = u32::from_le_bytes(read_array(block, restarts_start + 4 * k)?) as usize;
        if r > restarts_start || restarts.last().is_some_and(|&prev| r <= prev) {
            return Err(bad(format!(
                "restart point {k} at {r} is out of order or out of range"
            )));
        }
        restarts.push(r);
    }
    if restarts[0] != 0 {
        return Err(bad(format!(
            "first restart point is {}, expected 0",
            restarts[0]
        )));
    }
    let body = &block[..restarts_start];
    let mut out = Vec::new();
    let mut key: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut next_restart = 0;
    while pos < body.len() {
        let at_restart = restarts.get(next_restart) == Some(&pos);
        if at_restart {
            next_restart += 1;
        }
        let shared = read_varint32(body, &mut pos).map_err(&bad)?;
        let non_shared = read_varint32(body, &mut pos).map_err(&bad)?;
        let value_len = read_varint32(body, &mut pos).map_err(&bad)?;
        if at_restart && shared != 0 {
            return Err(bad(format!(
                "entry at restart point {pos} shares {shared} key bytes"
            )));
        }
        if shared > key.len() {
            return Err(bad(format!(
                "entry shares {shared} bytes with a previous key of {} bytes",
                key.len()
            )));
        }
        if shared + non_shared > MAX_KEY_LEN {
            return Err(bad(format!("key longer than {MAX_KEY_LEN} bytes")));
        }
        let key_end = pos
            .checked_add(non_shared)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("key runs past the end of the block".into()))?;
        key.truncate(shared);
        key.extend_from_slice(&body[pos..key_end]);
        let value_end = key_end
            .checked_add(value_len)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("value runs past the end of the block".into()))?;
        out.push((key.clone(), body[key_end..value_end].to_vec()));
        pos = value_end;
    }
    // (An empty block, like a bundle's metaindex, has one restart point at 0.)
    if next_restart != restarts.len() && !(body.is_empty() && restarts == [0]) {
        return Err(bad("a restart point does not start an entry".into()));
    }
    Ok(out)
}

/// One protobuf field value.
enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Calls `f(field_number, value)` for each field of a protobuf message.
fn for_each_field<'a>(
    msg: &'a [u8],
    mut f: impl FnMut(u64, Field<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut pos = 0;
    while pos < msg.len() {
        let tag = read_varint(msg, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        if number == 0 {
            return Err("protobuf field number 0".into());
        }
        let value = match wire {
            0 => Field::Varint(read_varint(msg, &mut pos)?),
            1 => {
                read_array::<8>(msg, pos)?;
                pos += 8;
                Field::Fixed64
            }
            2 => {
                let len = read_varint(msg, &mut pos)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|&e| e <= msg.len())
                    .ok_or("protobuf length-delimited field runs past the end")?;
                let b = &msg[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            5 => {
                let v = u32::from_le_bytes(read_array(msg, pos)?);
                pos += 4;
                Field::Fixed32(v)
            }
            w => return Err(format!("unsupported protobuf wire type {w}")),
        };
        f(number, value)?;
    }
    Ok(())
}

fn wrong_type(field: &str) -> String {
    format!("field `{field}` has the wrong wire type")
}

/// An int32 field: protobuf sign-extends negative values to 64 bits.
fn int32(v: u64, field: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("`{field}` = {} is out of range", v as i64))
}

fn int64(v: u64, field: &str) -> Result<u64, String> {
    if (v as i64) < 0 {
        Err(format!("`{field}` = {} is negative", v as i64))
    } else {
        Ok(v)
    }
}

fn parse_header(msg: &[u8]) -> Result<BundleHeader, String> {
    let mut h = BundleHeader {
        num_shards: 0,
        endianness: 0,
    };
    for_each_field(msg, |n, v| {
        match (n, v) {
            (1, Field::Varint(x)) => h.num_shards = int32(x, "num_shards")?,
            (2, Field::Varint(x)) => h.endianness = int32(x, "endianness")?,
            (1, _) => return Err(wrong_type("num_shards")),
            (2, _) => return Err(wrong_type("endianness")),
            _ => {} // version (3) and unknown fields
        }
        Ok(())
    })
    .map_err(|m| format!("header entry: {m}"))?;
    Ok(h)
}

fn parse_entry(msg: &[u8]) -> Result<BundleEntry, String> {
    let mut e = BundleEntry {
        dtype: 0,
        shape: Vec::new(),
        shard_id: 0,
        offset: 0,
        size: 0,
        crc32c: 0,
    };
    let mut has_crc = false;
    for_each_field(msg, |n, v| {
        match (n, v) {
            (1, Field::Varint(x)) => e.dtype = int32(x, "dtype")?,
            (2, Field::Bytes(b)) => e.shape = parse_shape(b)?,
            (3, Field::Varint(x)) => e.shard_id = int32(x, "shard_id")?,
            (4, Field::Varint(x)) => e.offset = int64(x, "offset")?,
            (5, Field::Varint(x)) => e.size = int64(x, "size")?,
            (6, Field::Fixed32(x)) => {
                e.crc32c = unmask_crc(x);
                has_crc = true;
            }
            (7, _) => {
                return Err(
                    "partitioned (sliced) variables are not supported; GPT-2 checkpoints have none"
                        .into(),
                )
            }
            (1..=6, _) => return Err(format!("field {n} has the wrong wire type")),
            _ => {}
        }
        Ok(())
    })?;
    if !has_crc {
        return Err("no crc32c".into());
    }
    Ok(e)
}

fn parse_shape(msg: &[u8]) -> Result<Vec<u64>, String> {
    let mut dims = Vec::new();
    for_each_field(msg, |n, v| {
        match (n, v) {
            (2, Field::Bytes(dim)) => {
                let mut size = 0;
                for_each_field(dim, |n, v| {
                    match (n, v) {
                        (1, Field::Varint(x)) => {
                            size = int64(x, "dim.size").map_err(|_| {
                                "a dimension of unknown size (-1) in a saved tensor".to_string()
                            })?
                        }
                        (1, _) => return Err(wrong_type("dim.size")),
                        _ => {} // name
                    }
                    Ok(())
                })?;
                dims.push(size);
            }
            (3, Field::Varint(0)) => {}
            (3, Field::Varint(_)) => return Err("shape of unknown rank".into()),
            (2 | 3, _) => return Err(format!("shape field {n} has the wrong wire type")),
            _ => {}
        }
        Ok(())
    })
    .map_err(|m| format!("shape: {m}"))?;
    Ok(dims)
}

/// Reads the checkpoint prefix from a `checkpoint` file's `model_checkpoint_path`.
fn checkpoint_prefix(dir: &Path) -> Result<PathBuf, WeightsError> {
    let path = dir.join("checkpoint");
    if !path.is_file() {
        return Err(WeightsError::MissingFile {
            path,
            needed_for: "the name of the TensorFlow checkpoint (its `model_checkpoint_path`)"
                .into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| WeightsError::io(&path, e))?;
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("model_checkpoint_path:"))
        .ok_or_else(|| {
            WeightsError::format(
                path.display(),
                "no `model_checkpoint_path: \"...\"` line (expected a text-format CheckpointState)",
            )
        })?;
    let name = unquote(value.trim()).ok_or_else(|| {
        WeightsError::format(
            path.display(),
            format!(
                "model_checkpoint_path must be a quoted string, found {}",
                value.trim()
            ),
        )
    })?;
    if name.is_empty() {
        return Err(WeightsError::format(
            path.display(),
            "model_checkpoint_path is empty",
        ));
    }
    let p = Path::new(&name);
    if p.is_absolute() {
        // Checkpoints written elsewhere record absolute paths; use the file beside
        // `checkpoint` when the recorded one is not there (as when a release is copied).
        if p.with_extension_suffix(".index").is_file() {
            return Ok(p.to_path_buf());
        }
        if let Some(base) = p.file_name() {
            return Ok(dir.join(base));
        }
    }
    Ok(dir.join(p))
}

trait WithSuffix {
    fn with_extension_suffix(&self, suffix: &str) -> PathBuf;
}

impl WithSuffix for Path {
    fn with_extension_suffix(&self, suffix: &str) -> PathBuf {
        let mut s = self.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }
}

/// A text-format protobuf string: double quotes, C escapes `\" \\ \' \n \t`.
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c @ ('"' | '\\' | '\'') => out.push(c),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn shard_path(prefix: &Path, shard: u32, num_shards: u32) -> PathBuf {
    prefix.with_extension_suffix(&format!(".data-{shard:05}-of-{num_shards:05}"))
}

pub(crate) fn open(dir: &Path) -> Result<Weights, WeightsError> {
    let hparams = dir.join("hparams.json");
    if !hparams.is_file() {
        return Err(WeightsError::MissingFile {
            path: hparams,
            needed_for: "the hyperparameters of an OpenAI model directory".into(),
        });
    }
    let config = Config::from_hparams_json(&hparams)?;
    let prefix = checkpoint_prefix(dir)?;
    let index_path = prefix.with_extension_suffix(".index");
    if !index_path.is_file() {
        return Err(WeightsError::MissingFile {
            path: index_path,
            needed_for: "the checkpoint's tensor index (named by `checkpoint`)".into(),
        });
    }
    let index_bytes = std::fs::read(&index_path).map_err(|e| WeightsError::io(&index_path, e))?;
    let index = parse_index_inner(&index_bytes, true)
        .map_err(|m| WeightsError::format(index_path.display(), m))?;
    let mut files = Vec::new();
    for shard in 0..index.header.num_shards {
        let path = shard_path(&prefix, shard, index.header.num_shards);
        if !path.is_file() {
            return Err(WeightsError::MissingFile {
                path,
                needed_for: format!(
                    "data shard {shard} of the {} listed in {}",
                    index.header.num_shards,
                    index_path.display()
                ),
            });
        }
        files.push(DataFile::map(&path)?);
    }
    build(dir, &index_path, config, index, files)
}

fn build(
    dir: &Path,
    index_path: &Path,
    config: Config,
    index: CheckpointIndex,
    files: Vec<DataFile>,
) -> Result<Weights, WeightsError> {
    if index.header.endianness != 0 {
        return Err(WeightsError::Unsupported {
            file: index_path.display().to_string(),
            message: "big-endian checkpoint (only little-endian bundles are supported)".into(),
        });
    }
    let mut raw = Vec::with_capacity(index.entries.len());
    for (name, e) in index.entries {
        let canonical = openai_to_canonical(&name);
        let mut shape: Vec<usize> = e
            .shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        // A 1x1 conv kernel [1, in, out] is HF's Conv1D weight [in, out].
        if name.ends_with("/w") && shape.len() == 3 && shape[0] == 1 {
            shape.remove(0);
        }
        let too_big = || {
            WeightsError::format(
                index_path.display(),
                format!(
                    "tensor `{name}`: offset {} / size {} do not fit in memory",
                    e.offset, e.size
                ),
            )
        };
        raw.push(RawTensor {
            dtype: e.dtype(),
            canonical,
            shape,
            transposed: false,
            file: e.shard_id as usize,
            start: usize::try_from(e.offset).map_err(|_| too_big())?,
            len: usize::try_from(e.size).map_err(|_| too_big())?,
            crc32c: Some(e.crc32c),
            stored_name: name,
        });
    }
    Weights::assemble(dir, Layout::OpenAi, config, files, raw)
}

/// Opens a checkpoint held in memory (`index` bytes and data shards), as
/// [`Weights::open`](crate::Weights::open) would from files; for fuzzing.
#[doc(hidden)]
pub fn open_from_bytes(
    config: Config,
    index: &[u8],
    shards: Vec<Vec<u8>>,
) -> Result<Weights, WeightsError> {
    open_from_parsed(config, parse_index(index)?, shards)
}

/// [`open_from_bytes`] with an index already parsed (e.g. by [`parse_index_unchecked`]).
#[doc(hidden)]
pub fn open_from_parsed(
    config: Config,
    index: CheckpointIndex,
    shards: Vec<Vec<u8>>,
) -> Result<Weights, WeightsError> {
    config.validate()?;
    if index.header.num_shards as usize != shards.len() {
        return Err(WeightsError::format(
            "<index>",
            format!(
                "num_shards = {} but {} shards given",
                index.header.num_shards,
                shards.len()
            ),
        ));
    }
    let files = shards
        .into_iter()
        .enumerate()
        .map(|(i, b)| DataFile {
            path: PathBuf::from(format!("<shard {i}>")),
            bytes: std::sync::Arc::new(Backing::Owned(b)),
        })
        .collect();
    build(
        Path::new("<memory>"),
        Path::new("<index>"),
        config,
        index,
        files,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_mask_roundtrip() {
        for c in [0u32, 1, 0xdead_beef, u32::MAX] {
            assert_eq!(unmask_crc(mask_crc(c)), c);
        }
        // LevelDB's reference: Mask(crc) != crc, and Mask(Mask(crc)) != crc.
        assert_ne!(mask_crc(0x1234), 0x1234);
        assert_ne!(mask_crc(mask_crc(0x1234)), 0x1234);
    }

    #[test]
    fn varints() {
        let mut p = 0;
        assert_eq!(read_varint(&[0xac, 0x02], &mut p), Ok(300));
        assert_eq!(p, 2);
        let mut p = 0;
        assert!(read_varint(&[0x80, 0x80], &mut p).is_err());
        let mut p = 0;
        assert!(read_varint(&[0xff; 11], &mut p).is_err());
        let mut p = 0;
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint(&max, &mut p), Ok(u64::MAX));
    }

    #[test]
    fn unquote_strings() {
        assert_eq!(unquote(r#""model.ckpt""#).as_deref(), Some("model.ckpt"));
        assert_eq!(unquote(r#""a\"b""#).as_deref(), Some("a\"b"));
        assert_eq!(unquote("model.ckpt"), None);
    }
}
