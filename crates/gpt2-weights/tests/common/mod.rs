//! Helpers shared by the integration tests: locating fixtures.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `fixtures/<rel>`: the committed fixtures (always present in a clone).
pub fn fixtures(rel: &str) -> PathBuf {
    repo_root().join("fixtures").join(rel)
}

/// `../shared/fixtures/<rel>` beside the checkout, if present.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = repo_root().join("../shared/fixtures").join(rel);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "note: {} absent; skipping the part of this test that uses it",
            p.display()
        );
        None
    }
}

/// Copies a fixture directory into a new temporary directory (as `<tmp>/model`).
pub fn copy_dir(from: &std::path::Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("model");
    std::fs::create_dir(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    (tmp, to)
}

/// Every file under `dir`, recursively, relative to it, sorted.
pub fn list_tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Serializes an index back into TensorFlow's format: uncompressed blocks, one
/// restart point per entry, a single data block.
pub fn index_bytes(index: &gpt2_weights::tf::CheckpointIndex) -> Vec<u8> {
    index_bytes_with(index, usize::MAX, 1)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_varint(n: u64, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        varint(n << 3, out);
        varint(v, out);
    }
}

/// A block with prefix-compressed keys and a restart point every `restart_interval`.
fn block(entries: &[(Vec<u8>, Vec<u8>)], restart_interval: usize) -> Vec<u8> {
    let mut b = Vec::new();
    let mut restarts = Vec::new();
    let mut prev: &[u8] = &[];
    for (i, (k, v)) in entries.iter().enumerate() {
        let shared = if i % restart_interval == 0 {
            restarts.push(b.len() as u32);
            0
        } else {
            prev.iter().zip(k).take_while(|(a, b)| a == b).count()
        };
        varint(shared as u64, &mut b);
        varint((k.len() - shared) as u64, &mut b);
        varint(v.len() as u64, &mut b);
        b.extend_from_slice(&k[shared..]);
        b.extend_from_slice(v);
        prev = k;
    }
    if restarts.is_empty() {
        restarts.push(0);
    }
    for r in &restarts {
        b.extend_from_slice(&r.to_le_bytes());
    }
    b.extend_from_slice(&(restarts.len() as u32).to_le_bytes());
    b
}

/// Appends a block and its trailer; returns its handle (offset, size).
pub fn write_block(file: &mut Vec<u8>, data: &[u8]) -> (u64, u64) {
    let off = file.len() as u64;
    file.extend_from_slice(data);
    file.push(0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(data), &[0]);
    file.extend_from_slice(&gpt2_weights::tf::mask_crc(crc).to_le_bytes());
    (off, data.len() as u64)
}

/// The (key, value) entries of an index: header first, then one per tensor.
pub fn index_entries(index: &gpt2_weights::tf::CheckpointIndex) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut header = Vec::new();
    field_varint(1, index.header.num_shards.into(), &mut header);
    field_varint(2, index.header.endianness.into(), &mut header);
    entries.push((Vec::new(), header));
    for (name, e) in &index.entries {
        let mut m = Vec::new();
        field_varint(1, e.dtype.into(), &mut m);
        let mut shape = Vec::new();
        for &d in &e.shape {
            let mut dim = Vec::new();
            field_varint(1, d, &mut dim);
            varint(2 << 3 | 2, &mut shape);
            varint(dim.len() as u64, &mut shape);
            shape.extend_from_slice(&dim);
        }
        varint(2 << 3 | 2, &mut m);
        varint(shape.len() as u64, &mut m);
        m.extend_from_slice(&shape);
        field_varint(3, e.shard_id.into(), &mut m);
        field_varint(4, e.offset, &mut m);
        field_varint(5, e.size, &mut m);
        varint(6 << 3 | 5, &mut m);
        m.extend_from_slice(&gpt2_weights::tf::mask_crc(e.crc32c).to_le_bytes());
        entries.push((name.as_bytes().to_vec(), m));
    }
    entries
}

/// Data blocks of `per_block` entries each, then the metaindex, index block and footer.
pub fn index_bytes_with(
    index: &gpt2_weights::tf::CheckpointIndex,
    per_block: usize,
    restart_interval: usize,
) -> Vec<u8> {
    let entries = index_entries(index);
    let mut file = Vec::new();
    let mut index_block = Vec::new();
    for chunk in entries.chunks(per_block.min(entries.len()).max(1)) {
        let (off, size) = write_block(&mut file, &block(chunk, restart_interval));
        let mut handle = Vec::new();
        varint(off, &mut handle);
        varint(size, &mut handle);
        index_block.push((chunk[chunk.len() - 1].0.clone(), handle));
    }
    finish(file, &index_block)
}

/// Appends the metaindex, the index block (separator key -> handle bytes) and the footer.
pub fn finish(file: Vec<u8>, index_block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    finish_with_index_size(file, index_block, None)
}

/// [`finish`], with the footer claiming `index_size` bytes for the index block when given
/// (a crafted size; the block written is the real one).
pub fn finish_with_index_size(
    mut file: Vec<u8>,
    index_block: &[(Vec<u8>, Vec<u8>)],
    index_size: Option<u64>,
) -> Vec<u8> {
    let meta = write_block(&mut file, &block(&[], 1));
    let ib = write_block(&mut file, &block(index_block, 1));
    let mut footer = Vec::new();
    varint(meta.0, &mut footer);
    varint(meta.1, &mut footer);
    varint(ib.0, &mut footer);
    varint(index_size.unwrap_or(ib.1), &mut footer);
    footer.resize(40, 0);
    footer.extend_from_slice(&0xdb47_7524_8b80_fb57u64.to_le_bytes());
    file.extend_from_slice(&footer);
    file
}

/// A block handle's bytes.
pub fn handle_bytes(off: u64, size: u64) -> Vec<u8> {
    let mut h = Vec::new();
    varint(off, &mut h);
    varint(size, &mut h);
    h
}

/// A block of `entries`, one restart point each.
pub fn index_bytes_block(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    block(entries, 1)
}
