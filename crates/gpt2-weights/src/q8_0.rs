//! Q8_0: GGML's `block_q8_0`, the 8-bit block format of GGUF files.
//!
//! A row of `k` weights (`k` a multiple of [`BLOCK`]) is cut into blocks of 32. A block is
//! [`BLOCK_BYTES`] = 34 bytes: the scale `d = max|w| / 127` as a little-endian f16, then
//! `q = round(w / d)` as 32 `i8` (ties to even, computed with the f32 `d`, as GGML's
//! `quantize_row_q8_0` does), so `w ≈ d · q` (1.0625 bytes per weight).
//!
//! ```
//! use gpt2_weights::q8_0::{dequantize, quantize_rows, BLOCK_BYTES};
//! let w: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 10.0).collect();
//! let blocks = quantize_rows(&w, 1, 64)?;
//! assert_eq!(blocks.len(), 2 * BLOCK_BYTES);
//! let back = dequantize(&blocks, 1, 64);
//! for (a, b) in w.iter().zip(&back) {
//!     assert!((a - b).abs() <= 3.2 / 127.0 / 2.0 * 1.01);
//! }
//! # Ok::<(), gpt2_weights::q8_0::Q8Error>(())
//! ```

use half::f16;

/// Weights per block.
pub const BLOCK: usize = 32;

/// Bytes per block: the f16 scale, then [`BLOCK`] `i8` values.
pub const BLOCK_BYTES: usize = 34;

/// The largest finite f16, the largest block scale Q8_0 can store.
const F16_MAX: f32 = 65504.0;

/// Why weights cannot be quantized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Q8Error {
    /// A weight is NaN or infinite.
    #[error("weight {index} is {value}: Q8_0 needs finite weights")]
    NonFinite {
        /// Its index in the input.
        index: usize,
        /// The weight.
        value: f32,
    },
    /// A block's scale `max|w| / 127` is larger than f16 can hold (65504).
    #[error(
        "a block of weights reaches {amax:e} (weights {start}..{}), too large for Q8_0's f16 \
         scale (max |w| at most 65504 · 127)", start + BLOCK
    )]
    ScaleOverflow {
        /// The block's `max |w|`.
        amax: f32,
        /// The index in the input of the block's first weight.
        start: usize,
    },
    /// The input does not have the size the shape says, or the blocked dimension is not a
    /// multiple of [`BLOCK`].
    #[error("bad Q8_0 shape: {0}")]
    Shape(String),
}

/// `q = round(w / d)` (ties to even, clamped to ±127) for `d = max|w| / 127`, computed in f32;
/// returns `d`. No checks: NaN and infinities give meaningless results (see
/// [`quantize_block`], which refuses them). The model's kernels round activations with it.
///
/// ```
/// let mut q = [0i8; 4];
/// let d = gpt2_weights::q8_0::quantize_values(&[1.27, -0.635, 0.0, 0.01], &mut q);
/// assert_eq!(d, 1.27 / 127.0);
/// assert_eq!(q, [127, -64, 0, 1]);
/// ```
#[inline]
pub fn quantize_values(w: &[f32], q: &mut [i8]) -> f32 {
    let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    // Round to nearest (ties to even) by adding and subtracting 1.5·2²³: exact for |v| ≤ 2²²,
    // and it vectorizes where `f32::round` is a libm call on baseline x86-64.
    const MAGIC: f32 = 12_582_912.0;
    for (q, &w) in q.iter_mut().zip(w) {
        let v = (w * inv).clamp(-127.0, 127.0);
        *q = ((v + MAGIC) - MAGIC) as i8;
    }
    d
}

/// Quantizes [`BLOCK`] weights into one block of [`BLOCK_BYTES`] (`out`), bit for bit as
/// GGML does: the `q` from the f32 scale ([`quantize_values`]), the scale stored as f16.
/// Allocates nothing.
///
/// ```
/// use gpt2_weights::q8_0::quantize_block;
/// let w: Vec<f32> = (0..32).map(|i| -1.27 + i as f32 * (2.54 / 31.0)).collect();
/// let mut block = [0u8; 34];
/// quantize_block(&w, &mut block)?;
/// assert_eq!(half::f16::from_le_bytes([block[0], block[1]]), half::f16::from_f32(0.01));
/// assert_eq!(block[2] as i8, -127);
/// assert_eq!(block[33] as i8, 127);
/// let mut bad = w.clone();
/// bad[3] = f32::NAN;
/// assert!(quantize_block(&bad, &mut block).is_err());
/// # Ok::<(), gpt2_weights::q8_0::Q8Error>(())
/// ```
///
/// # Errors
/// [`Q8Error::NonFinite`] for a NaN or infinite weight (`index` within the block),
/// [`Q8Error::ScaleOverflow`] when `max|w| / 127 > 65504`, [`Q8Error::Shape`] when `w` is not
/// 32 weights or `out` not 34 bytes. `out` is unspecified after an error.
#[inline]
pub fn quantize_block(w: &[f32], out: &mut [u8]) -> Result<(), Q8Error> {
    if w.len() != BLOCK || out.len() != BLOCK_BYTES {
        return Err(Q8Error::Shape(format!(
            "a block is {BLOCK} weights into {BLOCK_BYTES} bytes, given {} weights and {} bytes",
            w.len(),
            out.len()
        )));
    }
    if !w.iter().all(|v| v.is_finite()) {
        let index = w.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Q8Error::NonFinite {
            index,
            value: w[index],
        });
    }
    let mut q = [0i8; BLOCK];
    let d = quantize_values(w, &mut q);
    if d > F16_MAX {
        return Err(Q8Error::ScaleOverflow {
            amax: w.iter().fold(0f32, |m, v| m.max(v.abs())),
            start: 0,
        });
    }
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, q) in out[2..].iter_mut().zip(q) {
        *o = q as u8;
    }
    Ok(())
}

/// Dequantizes one block of [`BLOCK_BYTES`] into [`BLOCK`] values (`d · q`).
///
/// ```
/// let mut block = vec![0x00, 0x38]; // scale 0.5
/// block.extend([2u8; 32]);
/// let mut out = [0f32; 32];
/// gpt2_weights::q8_0::dequantize_block(&block, &mut out);
/// assert_eq!(out, [1.0; 32]);
/// ```
///
/// # Panics
/// If `block` is shorter than [`BLOCK_BYTES`] (only its first 34 bytes are read; `out` takes
/// at most 32 values).
#[inline]
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    for (o, &q) in out.iter_mut().zip(&block[2..BLOCK_BYTES]) {
        *o = d * f32::from(q as i8);
    }
}

/// Names the failing weight's position in the whole input.
fn at(e: Q8Error, start: usize) -> Q8Error {
    match e {
        Q8Error::NonFinite { index, value } => Q8Error::NonFinite {
            index: start + index,
            value,
        },
        Q8Error::ScaleOverflow { amax, .. } => Q8Error::ScaleOverflow { amax, start },
        other => other,
    }
}

fn blocked_len(rows: usize, k: usize, given: usize) -> Result<usize, Q8Error> {
    if !k.is_multiple_of(BLOCK) {
        return Err(Q8Error::Shape(format!(
            "rows of {k} weights are not a whole number of {BLOCK}-weight blocks"
        )));
    }
    match rows.checked_mul(k) {
        Some(n) if n == given => Ok(n / BLOCK * BLOCK_BYTES),
        _ => Err(Q8Error::Shape(format!(
            "{given} weights given for {rows} rows of {k}"
        ))),
    }
}

/// Quantizes `w` `[rows, k]` (row-major) into `rows · k / 32` blocks, row after row (blocks
/// along `k`).
///
/// # Errors
/// [`Q8Error::Shape`] when `k` is not a multiple of 32 or `w.len() != rows · k`; the errors
/// of [`quantize_block`], with the index in `w`.
pub fn quantize_rows(w: &[f32], rows: usize, k: usize) -> Result<Vec<u8>, Q8Error> {
    let mut out = vec![0u8; blocked_len(rows, k, w.len())?];
    quantize_rows_into(w, 0, &mut out)?;
    Ok(out)
}

/// Quantizes consecutive blocks of 32 weights `w` into `out` (`w.len() / 32` blocks): a
/// piece of [`quantize_rows`], for callers that quantize a matrix in parallel pieces. Error
/// indices are `first +` the index in `w`.
///
/// # Errors
/// [`Q8Error::Shape`] when `w` is not whole blocks or `out` has not their size; the errors of
/// [`quantize_block`].
pub fn quantize_rows_into(w: &[f32], first: usize, out: &mut [u8]) -> Result<(), Q8Error> {
    if !w.len().is_multiple_of(BLOCK) || w.len() / BLOCK * BLOCK_BYTES != out.len() {
        return Err(Q8Error::Shape(format!(
            "{} weights into {} bytes of blocks",
            w.len(),
            out.len()
        )));
    }
    for (i, (b, w)) in out
        .chunks_exact_mut(BLOCK_BYTES)
        .zip(w.chunks_exact(BLOCK))
        .enumerate()
    {
        quantize_block(w, b).map_err(|e| at(e, first + i * BLOCK))?;
    }
    Ok(())
}

/// Output rows per tile of [`quantize_transposed`]: it reads `w[i, o0..o0 + 16]`
/// (contiguous) for every `i`.
pub const TRANSPOSE_TILE: usize = 16;

/// Quantizes `wᵀ` for `w` `[k, n]` (row-major, as a `Conv1D` weight `[in, out]` is stored):
/// the blocks of the `[n, k]` matrix, blocks along `k` (what GGUF stores for `Conv1D`
/// weights).
///
/// ```
/// use gpt2_weights::q8_0::{dequantize, quantize_rows, quantize_transposed};
/// let w: Vec<f32> = (0..32 * 3).map(|i| i as f32).collect(); // [32, 3]
/// let t: Vec<f32> = (0..3).flat_map(|o| (0..32).map(move |i| (i * 3 + o) as f32)).collect();
/// assert_eq!(quantize_transposed(&w, 32, 3)?, quantize_rows(&t, 3, 32)?);
/// # Ok::<(), gpt2_weights::q8_0::Q8Error>(())
/// ```
///
/// # Errors
/// As [`quantize_rows`] (`k` must be a multiple of 32); indices are into `w`.
pub fn quantize_transposed(w: &[f32], k: usize, n: usize) -> Result<Vec<u8>, Q8Error> {
    let mut out = vec![0u8; blocked_len(n, k, w.len())?];
    let tile = TRANSPOSE_TILE * (k / BLOCK * BLOCK_BYTES);
    for (t, b) in out.chunks_mut(tile.max(1)).enumerate() {
        quantize_transposed_into(w, k, n, t * TRANSPOSE_TILE, b)?;
    }
    Ok(out)
}

/// Quantizes rows `o0 .. o0 + out.len() / (k / 32 · 34)` of `wᵀ` (for `w` `[k, n]`) into
/// `out`: one tile of [`quantize_transposed`], for callers that quantize tiles in parallel.
///
/// # Errors
/// [`Q8Error::Shape`] when the sizes do not fit; the errors of [`quantize_block`], with the
/// index in `w`.
pub fn quantize_transposed_into(
    w: &[f32],
    k: usize,
    n: usize,
    o0: usize,
    out: &mut [u8],
) -> Result<(), Q8Error> {
    blocked_len(n, k, w.len())?;
    let row_bytes = k / BLOCK * BLOCK_BYTES;
    let nt = out.len() / row_bytes.max(1);
    if row_bytes == 0 || !out.len().is_multiple_of(row_bytes) || o0 + nt > n {
        return Err(Q8Error::Shape(format!(
            "{} bytes of blocks for rows {o0}.. of a [{n}, {k}] matrix",
            out.len()
        )));
    }
    let mut rows = vec![0f32; nt * k];
    for i in 0..k {
        for (j, &v) in w[i * n + o0..i * n + o0 + nt].iter().enumerate() {
            rows[j * k + i] = v;
        }
    }
    for (bi, (b, r)) in out
        .chunks_exact_mut(BLOCK_BYTES)
        .zip(rows.chunks_exact(BLOCK))
        .enumerate()
    {
        quantize_block(r, b).map_err(|e| {
            // Weight j·k + i of the tile is w[i, o0 + j].
            let first = bi * BLOCK;
            let (j, i) = (first / k, first % k);
            match at(e, 0) {
                Q8Error::NonFinite { index, value } => Q8Error::NonFinite {
                    index: (i + index) * n + o0 + j,
                    value,
                },
                Q8Error::ScaleOverflow { amax, .. } => Q8Error::ScaleOverflow {
                    amax,
                    start: i * n + o0 + j,
                },
                other => other,
            }
        })?;
    }
    Ok(())
}

/// Dequantizes `rows` rows of `k` weights from their blocks (row after row) into `[rows, k]`
/// f32, row-major.
///
/// # Panics
/// If `k` is not a multiple of 32 or `blocks.len() != rows · k / 32 · 34` (views handed out by
/// [`Weights`](crate::Weights) are checked when opened).
pub fn dequantize(blocks: &[u8], rows: usize, k: usize) -> Vec<f32> {
    let n = rows.checked_mul(k).expect("Q8_0 shape overflows");
    assert!(
        k.is_multiple_of(BLOCK) && blocks.len() == n / BLOCK * BLOCK_BYTES,
        "Q8_0 blocks do not match [{rows}, {k}]"
    );
    let mut out = vec![0f32; n];
    for (o, b) in out
        .chunks_exact_mut(BLOCK)
        .zip(blocks.chunks_exact(BLOCK_BYTES))
    {
        dequantize_block(b, o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_error_indices_point_into_w() {
        let (k, n) = (64, 20);
        let mut w = vec![0.5f32; k * n];
        w[37 * n + 17] = f32::INFINITY;
        match quantize_transposed(&w, k, n) {
            Err(Q8Error::NonFinite { index, .. }) => assert_eq!(index, 37 * n + 17),
            other => panic!("{other:?}"),
        }
        let mut w = vec![0.5f32; k * n];
        w[5 * n + 3] = 1e8;
        match quantize_transposed(&w, k, n) {
            Err(Q8Error::ScaleOverflow { amax, start }) => {
                assert_eq!(amax, 1e8);
                assert_eq!(start, 3); // block of row 3 (output 3), weights 0..32 along k
            }
            other => panic!("{other:?}"),
        }
    }
}
