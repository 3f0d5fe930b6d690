//! 8-bit weight matrices in Q8_0 blocks, and their products with f32 activations.
//!
//! The layout is GGML's `block_q8_0`, byte for byte: each row of `k` weights is cut into
//! blocks of 32; a block is 34 bytes, the scale `d = max|w| / 127` as a little-endian f16
//! and then `q = round(w / d)` as 32 `i8`, so `w ≈ d · q` (1.0625 bytes per weight). The
//! blocks of a GGUF file are therefore used as they lie in the mapped file, with no copy
//! (read by `gpt2_weights::gguf`), and a matrix quantized at load holds the same bytes that
//! `gpt2 convert --dtype q8_0` writes.
//!
//! Products of a few rows (decode) round the activations to blocks of 32 too, as llama.cpp
//! does (with f32 scales here), and multiply-add 8-bit integers, four weight rows per pass
//! over an activation row (AVX-VNNI or AVX-512 VNNI `vpdpbusd`, else AVX2 `vpmaddubsw` +
//! `vpmaddwd`, detected at run time; a portable loop elsewhere): ~1.3x the throughput of
//! widening the weights to f32 in registers. Longer products (prefill) dequantize the matrix
//! once and run an f32 gemm.

use gpt2_weights::q8_0::{
    quantize_rows_into, quantize_transposed_into, quantize_values, Q8Error, TRANSPOSE_TILE,
};
use gpt2_weights::SharedBytes;

use super::mmap::huge_zeroed;
use half::f16;
use rayon::prelude::*;

/// Weights per block.
pub use gpt2_weights::q8_0::BLOCK;

/// Bytes per block: the f16 scale, then [`BLOCK`] `i8` values (GGML's `block_q8_0`).
pub use gpt2_weights::q8_0::BLOCK_BYTES;

/// A `[rows, k]` matrix in Q8_0 blocks along `k` (`k` a multiple of [`BLOCK`]). Cheap to
/// clone (the blocks are shared).
#[derive(Clone)]
pub struct Q8Matrix {
    rows: usize,
    k: usize,
    /// `[rows, k / BLOCK]` blocks of [`BLOCK_BYTES`]: quantized here (in memory, in
    /// transparent huge pages where Linux gives them), or in place in a mapped GGUF file.
    blocks: SharedBytes,
}

impl std::fmt::Debug for Q8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Q8Matrix [{}, {}]{}",
            self.rows,
            self.k,
            if self.is_mapped() { " (mapped)" } else { "" }
        )
    }
}

/// A block's scale.
#[inline]
fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

impl Q8Matrix {
    /// Quantizes `w` `[rows, k]` (row-major).
    ///
    /// # Errors
    /// When a weight is NaN or infinite, or a block's scale overflows f16.
    ///
    /// # Panics
    /// If `k` is not a multiple of [`BLOCK`] or `w.len() != rows·k`.
    pub fn from_rows(w: &[f32], rows: usize, k: usize) -> Result<Self, Q8Error> {
        assert!(
            k.is_multiple_of(BLOCK) && Some(w.len()) == rows.checked_mul(k),
            "bad Q8_0 shape"
        );
        let row_bytes = k / BLOCK * BLOCK_BYTES;
        let mut blocks = huge_zeroed(rows * row_bytes);
        blocks
            .par_chunks_mut(row_bytes.max(1))
            .zip(w.par_chunks(k.max(1)))
            .enumerate()
            .try_for_each(|(r, (b, w))| quantize_rows_into(w, r * k, b))?;
        Ok(Self::owned(rows, k, blocks))
    }

    /// Quantizes `wᵀ` for `w` `[k, n]` (row-major, as `Conv1D` stores it): the result is
    /// `[n, k]`, blocks along `k`.
    ///
    /// # Errors
    /// When a weight is NaN or infinite, or a block's scale overflows f16.
    ///
    /// # Panics
    /// If `k` is not a multiple of [`BLOCK`] or `w.len() != k·n`.
    pub fn from_transposed(w: &[f32], k: usize, n: usize) -> Result<Self, Q8Error> {
        assert!(
            k.is_multiple_of(BLOCK) && Some(w.len()) == k.checked_mul(n),
            "bad Q8_0 shape"
        );
        let row_bytes = k / BLOCK * BLOCK_BYTES;
        let mut blocks = huge_zeroed(n * row_bytes);
        // Tiles of output rows in parallel, each read as a band of w's columns.
        blocks
            .par_chunks_mut((TRANSPOSE_TILE * row_bytes).max(1))
            .enumerate()
            .try_for_each(|(t, b)| quantize_transposed_into(w, k, n, t * TRANSPOSE_TILE, b))?;
        Ok(Self::owned(n, k, blocks))
    }

    fn owned(rows: usize, k: usize, blocks: Vec<u8>) -> Self {
        Self {
            rows,
            k,
            blocks: SharedBytes::from_vec(blocks),
        }
    }

    /// A matrix of `rows` rows of `k` weights from its GGML `block_q8_0` bytes (`rows · k /
    /// 32` blocks of [`BLOCK_BYTES`], row after row). `None` when `k` is not a multiple of
    /// [`BLOCK`] or the length does not match.
    #[cfg(test)]
    pub fn from_blocks(rows: usize, k: usize, blocks: Vec<u8>) -> Option<Self> {
        Self::blocks_fit(rows, k, blocks.len()).then(|| Self::owned(rows, k, blocks))
    }

    /// Like [`from_blocks`](Self::from_blocks), for blocks that stay in a mapped file
    /// (a GGUF model's tensor data): the products read them in place.
    pub fn from_mapped(rows: usize, k: usize, bytes: SharedBytes) -> Option<Self> {
        Self::blocks_fit(rows, k, bytes.len()).then(|| Self {
            rows,
            k,
            blocks: bytes,
        })
    }

    fn blocks_fit(rows: usize, k: usize, len: usize) -> bool {
        k.is_multiple_of(BLOCK)
            && rows
                .checked_mul(k / BLOCK)
                .and_then(|n| n.checked_mul(BLOCK_BYTES))
                == Some(len)
    }

    /// The GGML `block_q8_0` bytes, `[rows, k / 32]` blocks of [`BLOCK_BYTES`].
    #[cfg(test)]
    pub fn blocks(&self) -> &[u8] {
        &self.blocks
    }

    /// Whether the blocks are read in place from a mapped file.
    pub fn is_mapped(&self) -> bool {
        self.blocks.is_mapped()
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (the blocked dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The first block whose f16 scale is NaN or infinite, as `(row, block in the row,
    /// scale)`: such a block dequantizes to NaN or ±inf. Blocks quantized here always have
    /// finite scales; blocks read from a file are checked with this at load (one read of
    /// each block's first cache line, in parallel over rows).
    pub fn first_bad_scale(&self) -> Option<(usize, usize, f32)> {
        let rb = self.row_bytes();
        if rb == 0 {
            return None;
        }
        let bad_in = |row: &[u8]| {
            row.chunks_exact(BLOCK_BYTES)
                .position(|b| !f16::from_le_bytes([b[0], b[1]]).is_finite())
        };
        let r = self
            .blocks
            .par_chunks(rb)
            .position_first(|row| bad_in(row).is_some())?;
        let row = &self.blocks[r * rb..(r + 1) * rb];
        let b = bad_in(row)?;
        Some((r, b, scale(&row[b * BLOCK_BYTES..])))
    }

    fn row_bytes(&self) -> usize {
        self.k / BLOCK * BLOCK_BYTES
    }

    /// Row `r`'s `block_q8_0` bytes (`k / 32` blocks of [`BLOCK_BYTES`]).
    #[cfg(test)]
    pub(crate) fn row_blocks(&self, r: usize) -> &[u8] {
        self.row_range_blocks(r, 1)
    }

    /// The `block_q8_0` bytes of rows `r .. r + count`, one row after the other.
    pub(crate) fn row_range_blocks(&self, r: usize, count: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.blocks[r * rb..(r + count) * rb]
    }

    /// Row `r` as f32 (`d · q`).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let row = &self.blocks[r * rb..(r + 1) * rb];
        for (o, b) in out.chunks_mut(BLOCK).zip(row.chunks_exact(BLOCK_BYTES)) {
            let d = scale(b);
            for (o, &q) in o.iter_mut().zip(&b[2..]) {
                *o = d * q as i8 as f32;
            }
        }
    }

    /// Block `b` of row `r` as f32 (`d · q`). `r < rows`, `b < k / BLOCK`.
    #[inline(always)]
    pub fn block_f32(&self, r: usize, b: usize) -> [f32; BLOCK] {
        let at = r * self.row_bytes() + b * BLOCK_BYTES;
        let block = &self.blocks[at..at + BLOCK_BYTES];
        let d = scale(block);
        std::array::from_fn(|t| d * block[2 + t] as i8 as f32)
    }

    /// The whole matrix as f32 `[rows, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.k];
        out.par_chunks_mut(self.k.max(1))
            .enumerate()
            .for_each(|(r, o)| self.row_f32(r, o));
        out
    }

    /// `x` `[m, k]` · `selfᵀ` → `[m, rows]` (each output a dot product of `x`'s row with one of
    /// this matrix's rows), f32.
    ///
    /// # Panics
    /// If `x.len() != m·k`.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        let k = self.k;
        assert_eq!(Some(x.len()), m.checked_mul(k), "x is not [m, k]");
        let nb = k / BLOCK;
        let rb = self.row_bytes();
        if m == 0 || self.rows == 0 {
            return vec![0f32; m * self.rows];
        }
        // The activations in blocks of 32 too (as llama.cpp does, with f32 scales here): the
        // products are then 8-bit integer multiply-adds, ~2.5x fewer instructions than
        // widening the weights to f32. Their absolute values are taken once here, not once
        // per row of the matrix.
        let mut xq = vec![0i8; m * k];
        let mut xd = vec![0f32; m * nb];
        for ((q, d), x) in xq.chunks_mut(BLOCK).zip(xd.iter_mut()).zip(x.chunks(BLOCK)) {
            *d = quantize_values(x, q);
        }
        // |q| ≤ 127, so `unsigned_abs` fits an i8 (the kernels read it as u8).
        let ax: Vec<i8> = xq.iter().map(|q| q.unsigned_abs() as i8).collect();
        let dot = dot_kernel();
        let blocks: &[u8] = &self.blocks;
        // Chunks of 64 rows, one task each: `acc` is `[m, len]` for rows `r0 .. r0 + len`,
        // one kernel call per activation row (the chunk's blocks stay in L2 for the next).
        super::gemv::by_column_blocks(m, self.rows, 64, |r0, acc| {
            let len = acc.len() / m;
            let rows = &blocks[r0 * rb..(r0 + len) * rb];
            for (i, acc) in acc.chunks_mut(len).enumerate() {
                let (xq, ax) = (&xq[i * k..(i + 1) * k], &ax[i * k..(i + 1) * k]);
                dot(xq, ax, &xd[i * nb..(i + 1) * nb], rows, acc);
            }
        })
    }
}

/// The dot products of one activation row with `out.len()` Q8_0 rows:
/// `(xq, |xq|, xd, rows, out)` → `out[j] = Σ_b xd[b] · d_j[b] · Σ_{t<32} xq[32b+t] · q_j[32b+t]`,
/// where `rows` holds the rows' `block_q8_0` bytes one after the other. Kernels take four rows
/// per pass, one from each quarter of `rows`: four weight streams in flight, and each
/// activation block loaded once for the four.
type DotFn = fn(&[i8], &[i8], &[f32], &[u8], &mut [f32]);

/// The fastest dot kernel this CPU runs (detected at run time): AVX-VNNI or AVX-512 VNNI
/// (`vpdpbusd`, one instruction for 32 products and their sums in fours), AVX2
/// (`vpmaddubsw` + `vpmaddwd`), or a portable loop.
fn dot_kernel() -> DotFn {
    // Detected once: this runs for every product of a decode step.
    static KERNEL: std::sync::OnceLock<DotFn> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(f) = x86::best() {
                return f;
            }
        }
        dot_q8_portable
    })
}

/// The four rows of pass `j` over `len` rows: one from each quarter (clamped to the last
/// row, which is then computed twice, to the same value).
#[inline(always)]
fn quarter_rows(j: usize, len: usize) -> [usize; 4] {
    let quarter = len.div_ceil(4);
    std::array::from_fn(|p| (p * quarter + j).min(len - 1))
}

fn dot_q8_portable(xq: &[i8], _ax: &[i8], xd: &[f32], rows: &[u8], out: &mut [f32]) {
    let rb = xd.len() * BLOCK_BYTES;
    for (j, o) in out.iter_mut().enumerate() {
        let row = &rows[j * rb..(j + 1) * rb];
        let mut t = 0f32;
        for ((xq, &xd), b) in xq.chunks(BLOCK).zip(xd).zip(row.chunks_exact(BLOCK_BYTES)) {
            let s: i32 = xq
                .iter()
                .zip(&b[2..])
                .map(|(&a, &w)| a as i32 * w as i8 as i32)
                .sum();
            t += xd * scale(b) * s as f32;
        }
        *o = t;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{quarter_rows, BLOCK, BLOCK_BYTES};
    use std::arch::x86_64::*;

    /// How far ahead of each weight stream the kernels prefetch, in bytes.
    const PREFETCH: usize = 2048;

    /// The best kernel for this CPU, `None` without AVX2, FMA and F16C.
    pub fn best() -> Option<super::DotFn> {
        all().pop().map(|(_, f)| f)
    }

    /// Every kernel this CPU has, slowest first.
    pub fn all() -> Vec<(&'static str, super::DotFn)> {
        let mut v: Vec<(&'static str, super::DotFn)> = Vec::new();
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return v;
        }
        v.push(("avx2", |xq, ax, xd, rows, out| {
            // SAFETY: the kernel's features were detected above; it checks the lengths.
            unsafe { dot_avx2(xq, ax, xd, rows, out) }
        }));
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            v.push(("avx512vnni", |xq, ax, xd, rows, out| {
                // SAFETY: the kernel's features were detected above; it checks the lengths.
                unsafe { dot_avx512vnni(xq, ax, xd, rows, out) }
            }));
        }
        if is_x86_feature_detected!("avxvnni") {
            v.push(("avxvnni", |xq, ax, xd, rows, out| {
                // SAFETY: the kernel's features were detected above; it checks the lengths.
                unsafe { dot_avxvnni(xq, ax, xd, rows, out) }
            }));
        }
        v
    }

    /// The kernel for one CPU; `$sum` turns |x| (u8) and w·sign(x) (i8) into 8 i32 sums of
    /// four products each.
    macro_rules! dot_rows {
        ($name:ident, $feat:literal, $sum:expr) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(xq: &[i8], ax: &[i8], xd: &[f32], rows: &[u8], out: &mut [f32]) {
                // SAFETY: the caller checked the CPU features; the asserts below bound every pointer read,
                // and `quarter_rows` keeps each row index below `out.len()`.
                unsafe {
                    let nb = xd.len();
                    let rb = nb * BLOCK_BYTES;
                    let len = out.len();
                    assert!(xq.len() >= nb * BLOCK && ax.len() >= nb * BLOCK);
                    assert!(rows.len() >= len * rb);
                    for j in 0..len.div_ceil(4) {
                        let r = quarter_rows(j, len);
                        let q: [*const u8; 4] = r.map(|r| rows.as_ptr().add(r * rb));
                        let mut acc = [_mm256_setzero_ps(); 4];
                        for b in 0..nb {
                            let x =
                                _mm256_loadu_si256(xq.as_ptr().add(b * BLOCK) as *const __m256i);
                            let a =
                                _mm256_loadu_si256(ax.as_ptr().add(b * BLOCK) as *const __m256i);
                            let p: [*const u8; 4] = q.map(|q| q.add(b * BLOCK_BYTES));
                            // Ask for each stream's bytes 2 KiB ahead: the hardware prefetchers
                            // alone leave four streams per core well short of the memory
                            // bandwidth (see the README's "What makes it fast").
                            // A prefetch never faults, so running past the end is harmless.
                            for p in p {
                                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH) as *const i8);
                            }
                            // The four rows' f16 scales, widened at once, times x's scale.
                            let h = p.map(|p| p.cast::<i16>().read_unaligned());
                            let d = _mm_mul_ps(
                                _mm_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], 0, 0, 0, 0)),
                                _mm_set1_ps(*xd.get_unchecked(b)),
                            );
                            let d: [f32; 4] = std::mem::transmute(d);
                            for t in 0..4 {
                                let w = _mm256_loadu_si256(p[t].add(2) as *const __m256i);
                                // x·w = |x| · (w·sign(x)); |x|, |w| ≤ 127.
                                let s = $sum(a, _mm256_sign_epi8(w, x));
                                acc[t] = _mm256_fmadd_ps(
                                    _mm256_set1_ps(d[t]),
                                    _mm256_cvtepi32_ps(s),
                                    acc[t],
                                );
                            }
                        }
                        // Horizontal sums of the four accumulators at once.
                        let h01 = _mm256_hadd_ps(acc[0], acc[1]);
                        let h23 = _mm256_hadd_ps(acc[2], acc[3]);
                        let h = _mm256_hadd_ps(h01, h23); // per 128-bit half: [r0, r1, r2, r3]
                        let t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
                        let y: [f32; 4] = std::mem::transmute(t);
                        for (r, y) in r.into_iter().zip(y) {
                            *out.get_unchecked_mut(r) = y;
                        }
                    }
                }
            }
        };
    }

    dot_rows!(dot_avx2, "avx2,fma,f16c", |a, sw| _mm256_madd_epi16(
        _mm256_maddubs_epi16(a, sw),
        _mm256_set1_epi16(1)
    ));
    dot_rows!(dot_avxvnni, "avx2,fma,f16c,avxvnni", |a, sw| {
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, sw)
    });
    dot_rows!(
        dot_avx512vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        |a, sw| { _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, sw) }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    /// `x` rounded to blocks of 32 with f32 scales, as `matmul_t` rounds activations:
    /// `(q, |q|, d, d·q)`.
    fn round_activations(x: &[f32]) -> (Vec<i8>, Vec<i8>, Vec<f32>, Vec<f32>) {
        let mut q = vec![0i8; x.len()];
        let d: Vec<f32> = q
            .chunks_mut(BLOCK)
            .zip(x.chunks(BLOCK))
            .map(|(q, x)| quantize_values(x, q))
            .collect();
        let back = q
            .iter()
            .enumerate()
            .map(|(i, &q)| d[i / BLOCK] * q as f32)
            .collect();
        let ax = q.iter().map(|v| v.unsigned_abs() as i8).collect();
        (q, ax, d, back)
    }

    #[test]
    fn quantization_error_is_within_half_a_step_and_the_f16_scale_rounding() {
        let (rows, k) = (5, 96);
        let w = values(rows * k, 1);
        let q = Q8Matrix::from_rows(&w, rows, k).expect("finite");
        assert_eq!(q.blocks().len(), rows * k / BLOCK * BLOCK_BYTES);
        let back = q.dequantize();
        for (b, (w, d)) in w.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
            let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let step = amax / 127.0;
            // Half a step, plus up to 127 times the f16 rounding of the step (2⁻¹¹ relative).
            let bound = step * (0.5 + 127.0 / 2048.0) + 1e-6;
            for (a, c) in w.iter().zip(d) {
                assert!((a - c).abs() <= bound, "block {b}: {a} vs {c}");
            }
        }
        // An all-zero block stays zero.
        let z = Q8Matrix::from_rows(&[0.0; 32], 1, 32).expect("finite");
        assert_eq!(z.dequantize(), vec![0.0; 32]);
        assert_eq!(z.blocks(), &[0u8; 34][..]);
    }

    #[test]
    fn nan_infinite_and_huge_weights_are_errors_not_zeros() {
        let mut w = values(64 * 2, 7);
        w[77] = f32::NAN;
        assert!(matches!(
            Q8Matrix::from_rows(&w, 2, 64),
            Err(Q8Error::NonFinite { index: 77, value }) if value.is_nan()
        ));
        // wᵀ of a [64, 2] matrix: element 77 is row 38, column 1.
        assert!(matches!(
            Q8Matrix::from_transposed(&w, 64, 2),
            Err(Q8Error::NonFinite { index: 77, .. })
        ));
        w[77] = f32::INFINITY;
        assert!(matches!(
            Q8Matrix::from_rows(&w, 2, 64),
            Err(Q8Error::NonFinite { index: 77, .. })
        ));
        w[77] = 1e30;
        assert!(matches!(
            Q8Matrix::from_rows(&w, 2, 64),
            Err(Q8Error::ScaleOverflow { .. })
        ));
    }

    #[test]
    fn products_refuse_mismatched_lengths() {
        let q = Q8Matrix::from_rows(&values(64, 1), 2, 32).expect("finite");
        assert!(std::panic::catch_unwind(|| q.matmul_t(&[1.0; 31], 1)).is_err());
        assert!(std::panic::catch_unwind(|| q.matmul_t(&[], 1usize << 62)).is_err());
        assert!(std::panic::catch_unwind(|| Q8Matrix::from_rows(&[1.0; 31], 1, 31)).is_err());
        assert!(Q8Matrix::from_blocks(1, 32, vec![0; 33]).is_none());
    }

    #[test]
    fn blocks_are_ggml_block_q8_0() {
        // 32 weights −1.27 … 1.27 around 0: d = 0.01, q = −127 … 127 step 8ish.
        let w: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) / 15.5 * 1.27).collect();
        let q = Q8Matrix::from_rows(&w, 1, 32).expect("finite");
        let b = q.blocks();
        assert_eq!(b.len(), 34);
        assert_eq!(&b[..2], &f16::from_f32(0.01).to_le_bytes());
        assert_eq!(b[2] as i8, -127);
        assert_eq!(b[33] as i8, 127);
        // The same bytes give the same matrix back.
        let again = Q8Matrix::from_blocks(1, 32, b.to_vec()).expect("fits");
        assert_eq!(again.dequantize(), q.dequantize());
        assert!(Q8Matrix::from_blocks(2, 32, b.to_vec()).is_none());
    }

    #[test]
    fn blocks_and_rows_dequantize_alike() {
        let (rows, k) = (5, 96);
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 13) % 41) as f32 / 9.0 - 2.0)
            .collect();
        let q = Q8Matrix::from_rows(&w, rows, k).expect("finite");
        let mut row = vec![0f32; k];
        for r in 0..rows {
            q.row_f32(r, &mut row);
            for b in 0..k / BLOCK {
                assert_eq!(
                    q.block_f32(r, b),
                    row[b * BLOCK..(b + 1) * BLOCK],
                    "{r} {b}"
                );
            }
        }
    }

    #[test]
    fn transposed_equals_rows_of_the_transpose() {
        let (k, n) = (64, 37);
        let w = values(k * n, 2);
        let mut wt = vec![0f32; n * k];
        for i in 0..k {
            for o in 0..n {
                wt[o * k + i] = w[i * n + o];
            }
        }
        let a = Q8Matrix::from_transposed(&w, k, n).expect("finite");
        let b = Q8Matrix::from_rows(&wt, n, k).expect("finite");
        assert_eq!((a.rows(), a.k()), (n, k));
        assert_eq!(a.blocks(), b.blocks());
    }

    #[test]
    fn products_match_the_dequantized_operands() {
        let (rows, k) = (130, 160);
        let q = Q8Matrix::from_rows(&values(rows * k, 3), rows, k).expect("finite");
        let deq = q.dequantize();
        for m in [1, 3] {
            let x = values(m * k, 4 + m as u32);
            // The kernel rounds x to blocks too: compare with both operands rounded.
            let (_, _, _, xr) = round_activations(&x);
            let y = q.matmul_t(&x, m);
            for i in 0..m {
                for r in 0..rows {
                    let want: f64 = (0..k)
                        .map(|t| xr[i * k + t] as f64 * deq[r * k + t] as f64)
                        .sum();
                    assert!((y[i * rows + r] as f64 - want).abs() < 1e-3, "{i} {r}");
                    // And within the rounding of x (half a step per element) of the exact
                    // product.
                    let exact: f64 = (0..k)
                        .map(|t| x[i * k + t] as f64 * deq[r * k + t] as f64)
                        .sum();
                    let bound: f64 = (0..k)
                        .map(|t| {
                            let b = (i * k + t) / BLOCK * BLOCK;
                            let amax = x[b..b + BLOCK].iter().fold(0f32, |a, v| a.max(v.abs()));
                            deq[r * k + t].abs() as f64 * amax as f64 / 254.0
                        })
                        .sum();
                    let err = (y[i * rows + r] as f64 - exact).abs();
                    assert!(err <= bound + 1e-3, "{i} {r}: {err} > {bound}");
                }
            }
            // Every kernel this CPU has gives the portable loop's numbers, on 1 to 7 rows
            // (passes with clamped rows included).
            let (xq, ax, xd, _) = round_activations(&x[..k]);
            let rb = k / BLOCK * BLOCK_BYTES;
            for len in 1..8 {
                let r0 = 100;
                let rows_bytes = &q.blocks()[r0 * rb..(r0 + len) * rb];
                let mut p = vec![0f32; len];
                dot_q8_portable(&xq, &ax, &xd, rows_bytes, &mut p);
                for (j, p) in p.iter().enumerate() {
                    assert!((p - y[r0 + j]).abs() < 1e-4);
                }
                #[cfg(target_arch = "x86_64")]
                for (name, dot) in x86::all() {
                    let mut d = vec![f32::NAN; len];
                    dot(&xq, &ax, &xd, rows_bytes, &mut d);
                    for (p, d) in p.iter().zip(&d) {
                        assert!((p - d).abs() < 1e-4, "{name}, {len} rows: {d} vs {p}");
                    }
                }
            }
        }
    }
}
