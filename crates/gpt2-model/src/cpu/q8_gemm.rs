//! The product of many activation rows (a prefill) with a Q8_0 matrix in 8-bit integers.
//!
//! `y = x · Wᵀ` for `x` `[m, k]` f32 and `W` `[n, k]` in Q8_0 blocks. The activations are
//! rounded to blocks of 32 exactly as the decode kernels round them
//! ([`Q8Matrix::matmul_t`]), so each block's dot product is an exact integer sum, and only
//! the order of the f32 sums over blocks differs from a decode step's. The integer products
//! do 64 multiply-adds per instruction (`vpdpbusd` on 512 bits) where an f32 FMA does 16,
//! and they skip dequantizing `W`. CPUs without VNNI dequantize each panel of `W` to f32
//! for an f32 gemm instead (see `gemm::q8_matmul`). On the 124M shape's four block matrices
//! (`examples/q8_rows.rs`, 2 threads, Ice Lake-SP Xeon), 512 rows run at ~180 GMAC/s here
//! against ~100 for the f32 gemm on weights dequantized beforehand; the decode kernel,
//! which reads each row of `W` once per activation row, stays ahead up to ~48 rows.
//!
//! Written here rather than taken from a crate: the `gemm` crate multiplies floats only, and
//! no maintained Rust crate multiplies GGML's `block_q8_0` layout.
//!
//! The layout follows the register tile. Each strip of [`NR`] = 32 rows of `W` (32 output
//! columns) is packed once per call, block by block: eight 128-byte groups, where group
//! `g` holds weights `4g .. 4g + 4` of the block for each of the 32 rows (`vpdpbusd` sums
//! four byte products into each 32-bit lane), then the 32 rows' block sums times −128, then
//! their scales as f32. The packer gathers each group from the 32 rows (two 16-lane
//! gathers). The kernel keeps a tile of [`MR`] = 6 activation rows × 32 columns in
//! registers (12 integer sums for the current block and 12 f32 sums) and, per group,
//! broadcasts four activation bytes against two 64-byte weight vectors.
//!
//! `vpdpbusd` multiplies unsigned bytes by signed ones, so the activations are stored as
//! `q + 128` (1 ..= 255) and each block's integer sum starts at `−128 · Σ w` instead of 0:
//! `Σ (q + 128)·w − 128·Σ w = Σ q·w`, exactly (`|Σ| ≤ 32 · 255 · 127`, far inside i32).
//! Per block, the f32 sum of each output takes `(s as f32 · d_w) · d_x` with one fused
//! multiply-add; a scalar reference does the same operations, and the kernel equals it bit
//! for bit (tested).
//!
//! The kernels need AVX-512 F and VNNI (Intel Ice Lake and later Xeons, AMD Zen 4 and
//! later); elsewhere [`matmul_t`] returns `None`. (AVX2's `vpmaddubsw` saturates 16-bit
//! pair sums, which `255 · 127 · 2` exceeds, so it cannot take the offset activations.)

use rayon::prelude::*;

use super::q8::{Q8Matrix, BLOCK, BLOCK_BYTES};
use gpt2_weights::q8_0::quantize_values;

/// Output columns (rows of `W`) per packed strip: two 16-lane vectors.
pub const NR: usize = 32;

/// Activation rows per register tile.
pub const MR: usize = 6;

/// Groups of four weights in a block.
const GROUPS: usize = BLOCK / 4;

/// Byte offsets inside one packed block of a strip: the weights, the corrections, the scales.
const SUMS_AT: usize = GROUPS * NR * 4;
const SCALES_AT: usize = SUMS_AT + NR * 4;
/// Bytes of one packed block of a strip.
const PACKED_BLOCK: usize = SCALES_AT + NR * 4;

/// The activations rounded to Q8 blocks: `q + 128` as bytes, `[m, k]`, and the f32 scales,
/// `[m, k / BLOCK]`.
pub struct Activations {
    q: Vec<u8>,
    d: Vec<f32>,
    k: usize,
}

impl Activations {
    /// Rounds `x` `[m, k]` (`k` a multiple of [`BLOCK`]) to blocks of 32, as the decode
    /// kernels do, in parallel over rows.
    ///
    /// # Panics
    /// If `k` is not a multiple of [`BLOCK`] or `x.len()` not a multiple of `k`.
    pub fn quantize(x: &[f32], k: usize) -> Self {
        assert!(k > 0 && k.is_multiple_of(BLOCK) && x.len().is_multiple_of(k));
        let nb = k / BLOCK;
        let mut q = vec![0u8; x.len()];
        let mut d = vec![0f32; x.len() / BLOCK];
        q.par_chunks_mut(k)
            .zip(d.par_chunks_mut(nb))
            .zip(x.par_chunks(k))
            .for_each(|((q, d), x)| {
                let mut qi = [0i8; BLOCK];
                for ((q, d), x) in q.chunks_mut(BLOCK).zip(d.iter_mut()).zip(x.chunks(BLOCK)) {
                    *d = quantize_values(x, &mut qi);
                    for (q, &v) in q.iter_mut().zip(&qi) {
                        *q = (v as u8) ^ 0x80;
                    }
                }
            });
        Self { q, d, k }
    }

    fn rows(&self) -> usize {
        self.q.len() / self.k
    }
}

/// How many rows of `w` strip `s` holds (`NR`, fewer in the last strip).
fn strip_rows(w: &Q8Matrix, s: usize) -> usize {
    NR.min(w.rows().saturating_sub(s * NR))
}

/// Strip `s` of `w` (rows `s·NR ..`, zero past the last row) packed for the kernel into
/// `out`, `k / BLOCK` packed blocks: the layout in scalar code, which the packing kernels
/// equal byte for byte (tested).
#[cfg(test)]
fn pack_strip(w: &Q8Matrix, s: usize, out: &mut [u8]) {
    let nb = w.k() / BLOCK;
    debug_assert_eq!(out.len(), nb * PACKED_BLOCK);
    let cols = strip_rows(w, s);
    if cols < NR {
        out.fill(0);
    }
    for c in 0..cols {
        let row = w.row_blocks(s * NR + c);
        for (block, o) in row
            .chunks_exact(BLOCK_BYTES)
            .zip(out.chunks_exact_mut(PACKED_BLOCK))
        {
            let q = &block[2..];
            for g in 0..GROUPS {
                let at = (g * NR + c) * 4;
                o[at..at + 4].copy_from_slice(&q[g * 4..g * 4 + 4]);
            }
            let sum: i32 = q.iter().map(|&v| v as i8 as i32).sum();
            o[SUMS_AT + c * 4..SUMS_AT + c * 4 + 4].copy_from_slice(&(-128 * sum).to_le_bytes());
            let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
            o[SCALES_AT + c * 4..SCALES_AT + c * 4 + 4].copy_from_slice(&d.to_le_bytes());
        }
    }
}

/// One tile: `rows` (1 ..= [`MR`]) activation rows `q` `[rows, k]` with scales `d`
/// `[rows, k / BLOCK]`, times a packed strip, into `y` (row `r`'s `cols` outputs at
/// `y[r·n ..]`, `cols ≤ NR`). The kernels check the slice lengths before reading.
type TileFn =
    fn(q: &[u8], d: &[f32], strip: &[u8], rows: usize, y: &mut [f32], n: usize, cols: usize);

/// Packs one strip: `(w, s, out)`, the bytes of the scalar `pack_strip` (tested against it).
type PackFn = fn(w: &Q8Matrix, s: usize, out: &mut [u8]);

/// The kernels for this CPU, `None` without AVX-512 F and VNNI.
fn kernels() -> Option<(TileFn, PackFn)> {
    static KERNELS: std::sync::OnceLock<Option<(TileFn, PackFn)>> = std::sync::OnceLock::new();
    *KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
                return Some((
                    |q, d, strip, rows, y, n, cols| {
                        // SAFETY: the kernel's features were detected above; it checks the
                        // lengths.
                        unsafe { x86::tile_avx512vnni(q, d, strip, rows, y, n, cols) }
                    },
                    |w, s, out| {
                        let cols = strip_rows(w, s);
                        let rows = w.row_range_blocks(s * NR, cols);
                        // SAFETY: as above.
                        unsafe { x86::pack_avx512vnni(rows, w.k() / BLOCK, cols, out) }
                    },
                ));
            }
        }
        None
    })
}

/// Whether this CPU runs the integer product ([`matmul_t`] returns `Some`).
#[cfg(any(test, feature = "unstable-kernels"))]
pub fn available() -> bool {
    kernels().is_some()
}

/// `x` `[m, k]` · `wᵀ` → `[m, w.rows()]` f32 with the activations rounded to Q8 blocks and
/// integer block products, on rayon's threads. `None` when this CPU has no integer kernel
/// (see the module docs) or a row is over 64 MiB of blocks.
///
/// # Panics
/// If `x.len() != m · w.k()`.
pub fn matmul_t(w: &Q8Matrix, x: &[f32], m: usize) -> Option<Vec<f32>> {
    let kernels = kernels()?;
    let (k, n) = (w.k(), w.rows());
    assert_eq!(Some(x.len()), m.checked_mul(k), "x is not [m, k]");
    if m == 0 || n == 0 || k == 0 {
        return Some(vec![0f32; m * n]);
    }
    // The packer gathers with 32-bit row offsets.
    if i32::try_from(NR * (k / BLOCK) * BLOCK_BYTES).is_err() {
        return None;
    }
    let a = Activations::quantize(x, k);
    Some(product(&a, w, kernels))
}

/// The product of quantized activations with `w`, with one tile kernel and one packer.
fn product(a: &Activations, w: &Q8Matrix, (kernel, pack): (TileFn, PackFn)) -> Vec<f32> {
    let (k, n, m) = (a.k, w.rows(), a.rows());
    let nb = k / BLOCK;
    let strip_bytes = nb * PACKED_BLOCK;
    let strips = n.div_ceil(NR);
    let mut packed = vec![0u8; strips * strip_bytes];
    packed
        .par_chunks_mut(strip_bytes)
        .enumerate()
        .for_each(|(s, out)| pack(w, s, out));
    // Bands of rows, one task each (about two per thread, whole tiles): a band's rows and
    // one packed strip at a time stay in L2 while the band's tiles sweep the strip.
    let threads = rayon::current_num_threads().max(1);
    let band = m.div_ceil(2 * threads).div_ceil(MR).clamp(1, 64 / MR) * MR;
    let mut y = vec![0f32; m * n];
    y.par_chunks_mut(band * n).enumerate().for_each(|(t, y)| {
        let r0 = t * band;
        let rows = y.len() / n;
        for (s, strip) in packed.chunks_exact(strip_bytes).enumerate() {
            let (c0, cols) = (s * NR, NR.min(n - s * NR));
            for i in (0..rows).step_by(MR) {
                let tile = MR.min(rows - i);
                let r = r0 + i;
                kernel(
                    &a.q[r * k..(r + tile) * k],
                    &a.d[r * nb..(r + tile) * nb],
                    strip,
                    tile,
                    &mut y[i * n + c0..],
                    n,
                    cols,
                );
            }
        }
    });
    y
}

/// What the kernels compute, in scalar code with the same f32 operations in the same
/// order: for tests.
#[cfg(test)]
fn reference(a: &Activations, w: &Q8Matrix) -> Vec<f32> {
    let (k, n, m) = (a.k, w.rows(), a.rows());
    let nb = k / BLOCK;
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let row = w.row_blocks(j);
            let mut acc = 0f32;
            for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
                let x = &a.q[i * k + b * BLOCK..i * k + (b + 1) * BLOCK];
                let s: i32 = x
                    .iter()
                    .zip(&block[2..])
                    .map(|(&x, &w)| (x ^ 0x80) as i8 as i32 * w as i8 as i32)
                    .sum();
                let dw = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                acc = (s as f32 * dw).mul_add(a.d[i * nb + b], acc);
            }
            y[i * n + j] = acc;
        }
    }
    y
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, BLOCK_BYTES, GROUPS, MR, NR, PACKED_BLOCK, SCALES_AT, SUMS_AT};
    use std::arch::x86_64::*;

    /// The masks of a strip's first `cols` lanes in its two 16-lane vectors.
    fn lane_masks(cols: usize) -> (u16, u16) {
        let mask = if cols >= NR {
            u32::MAX
        } else {
            (1u32 << cols) - 1
        };
        (mask as u16, (mask >> 16) as u16)
    }

    /// [`super::TileFn`] for AVX-512 F + VNNI: the tile's row count chosen at compile time.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn tile_avx512vnni(
        q: &[u8],
        d: &[f32],
        strip: &[u8],
        rows: usize,
        y: &mut [f32],
        n: usize,
        cols: usize,
    ) {
        let nb = d.len() / rows.max(1);
        let k = nb * BLOCK;
        assert!((1..=MR).contains(&rows) && cols <= NR && cols <= n);
        assert!(q.len() == rows * k && d.len() == rows * nb);
        assert!(strip.len() >= nb * PACKED_BLOCK);
        assert!(y.len() >= (rows - 1) * n + cols);
        // SAFETY: the features are the caller's promise; the asserts above bound every read
        // (rows · k activation bytes, nb packed blocks) and write (`cols` values of each of
        // `rows` rows, `n` apart).
        unsafe {
            match rows {
                1 => tile::<1>(q, d, strip, nb, y, n, cols),
                2 => tile::<2>(q, d, strip, nb, y, n, cols),
                3 => tile::<3>(q, d, strip, nb, y, n, cols),
                4 => tile::<4>(q, d, strip, nb, y, n, cols),
                5 => tile::<5>(q, d, strip, nb, y, n, cols),
                _ => tile::<6>(q, d, strip, nb, y, n, cols),
            }
        }
    }

    /// [`super::PackFn`]'s work for AVX-512 F + VNNI: `rows` holds the strip's `cols`
    /// (1 ..= [`NR`]) rows of `nb` blocks each; lanes past `cols` are zero. Each group is
    /// two 16-lane gathers (one 4-byte piece of each row), the block sums are `vpdpbusd`
    /// against ones, and the scales are gathered and widened from f16.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn pack_avx512vnni(rows: &[u8], nb: usize, cols: usize, out: &mut [u8]) {
        let rb = nb * BLOCK_BYTES;
        assert!((1..=NR).contains(&cols) && rows.len() == cols * rb);
        assert!(out.len() == nb * PACKED_BLOCK);
        // Row offsets as i32 ([`super::matmul_t`] takes no longer rows).
        assert!(i32::try_from(NR * rb).is_ok());
        let stride = rb as i32;
        let (k0, k1) = lane_masks(cols);
        // SAFETY: the features are the caller's promise. A gather reads four bytes at
        // `rows + c·rb + b·34 + o` for the rows `c < cols` its mask keeps, with
        // `o + 4 ≤ 34`: inside `rows`. The stores stay inside `out` (asserted above).
        unsafe {
            let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let idx0 = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride));
            let idx1 = _mm512_add_epi32(idx0, _mm512_set1_epi32(16 * stride));
            let ones = _mm512_set1_epi8(1);
            let zero = _mm512_setzero_si512();
            let gather = |k, idx, p: *const u8| {
                _mm512_mask_i32gather_epi32::<1>(zero, k, idx, p as *const i32)
            };
            for b in 0..nb {
                let block = rows.as_ptr().add(b * BLOCK_BYTES);
                let o = out.as_mut_ptr().add(b * PACKED_BLOCK);
                let (mut s0, mut s1) = (zero, zero);
                for g in 0..GROUPS {
                    let p = block.add(2 + 4 * g);
                    let (w0, w1) = (gather(k0, idx0, p), gather(k1, idx1, p));
                    _mm512_storeu_si512(o.add(g * NR * 4) as *mut _, w0);
                    _mm512_storeu_si512(o.add(g * NR * 4 + 64) as *mut _, w1);
                    s0 = _mm512_dpbusd_epi32(s0, ones, w0);
                    s1 = _mm512_dpbusd_epi32(s1, ones, w1);
                }
                let minus128 = _mm512_set1_epi32(-128);
                _mm512_storeu_si512(o.add(SUMS_AT) as *mut _, _mm512_mullo_epi32(s0, minus128));
                _mm512_storeu_si512(
                    o.add(SUMS_AT + 64) as *mut _,
                    _mm512_mullo_epi32(s1, minus128),
                );
                // The f16 scale is each block's first two bytes: the low half of the lane.
                let d0 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(gather(k0, idx0, block)));
                let d1 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(gather(k1, idx1, block)));
                _mm512_storeu_ps(o.add(SCALES_AT) as *mut f32, d0);
                _mm512_storeu_ps(o.add(SCALES_AT + 64) as *mut f32, d1);
            }
        }
    }

    /// # Safety
    /// AVX-512 F + VNNI; the bounds checked by [`tile_avx512vnni`] with `rows == R`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn tile<const R: usize>(
        q: &[u8],
        d: &[f32],
        strip: &[u8],
        nb: usize,
        y: &mut [f32],
        n: usize,
        cols: usize,
    ) {
        let k = nb * BLOCK;
        let (q, d, p) = (q.as_ptr(), d.as_ptr(), strip.as_ptr());
        // SAFETY: see `tile_avx512vnni`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for b in 0..nb {
                let blk = p.add(b * PACKED_BLOCK);
                // Each block's integer sums start at −128 · Σ w (see the module docs).
                let c0 = _mm512_loadu_si512(blk.add(SUMS_AT) as *const _);
                let c1 = _mm512_loadu_si512(blk.add(SUMS_AT + 64) as *const _);
                let mut s = [[c0, c1]; R];
                for g in 0..GROUPS {
                    let w0 = _mm512_loadu_si512(blk.add(g * NR * 4) as *const _);
                    let w1 = _mm512_loadu_si512(blk.add(g * NR * 4 + 64) as *const _);
                    for (r, s) in s.iter_mut().enumerate() {
                        let x = q
                            .add(r * k + b * BLOCK + g * 4)
                            .cast::<i32>()
                            .read_unaligned();
                        let x = _mm512_set1_epi32(x);
                        s[0] = _mm512_dpbusd_epi32(s[0], x, w0);
                        s[1] = _mm512_dpbusd_epi32(s[1], x, w1);
                    }
                }
                let d0 = _mm512_loadu_ps(blk.add(SCALES_AT) as *const f32);
                let d1 = _mm512_loadu_ps(blk.add(SCALES_AT + 64) as *const f32);
                for (r, (acc, s)) in acc.iter_mut().zip(&s).enumerate() {
                    let dx = _mm512_set1_ps(*d.add(r * nb + b));
                    acc[0] =
                        _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s[0]), d0), dx, acc[0]);
                    acc[1] =
                        _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s[1]), d1), dx, acc[1]);
                }
            }
            // The first `cols` of the 32 columns, row by row.
            let (m0, m1) = lane_masks(cols);
            for (r, acc) in acc.iter().enumerate() {
                let out = y.as_mut_ptr().add(r * n);
                _mm512_mask_storeu_ps(out, m0, acc[0]);
                _mm512_mask_storeu_ps(out.add(16), m1, acc[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    #[test]
    fn packing_puts_four_weights_per_lane_then_sums_then_scales() {
        let (n, k) = (3, 64);
        let w = Q8Matrix::from_rows(&values(n * k, 3), n, k).expect("finite");
        let nb = k / BLOCK;
        let mut out = vec![7u8; nb * PACKED_BLOCK];
        pack_strip(&w, 0, &mut out);
        for c in 0..NR {
            for b in 0..nb {
                let o = &out[b * PACKED_BLOCK..];
                let lane = |at: usize| {
                    i32::from_le_bytes(o[at + c * 4..at + c * 4 + 4].try_into().unwrap())
                };
                if c >= n {
                    // Past the last row: zero weights, sums and scales.
                    assert!((0..GROUPS).all(|g| lane(g * NR * 4) == 0));
                    assert_eq!((lane(SUMS_AT), lane(SCALES_AT)), (0, 0));
                    continue;
                }
                let block = &w.row_blocks(c)[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
                for g in 0..GROUPS {
                    let at = g * NR * 4 + c * 4;
                    assert_eq!(o[at..at + 4], block[2 + g * 4..6 + g * 4]);
                }
                let sum: i32 = block[2..].iter().map(|&v| v as i8 as i32).sum();
                assert_eq!(lane(SUMS_AT), -128 * sum);
                let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                assert_eq!(f32::from_bits(lane(SCALES_AT) as u32), d);
            }
        }
    }

    #[test]
    fn the_packing_kernel_writes_the_same_bytes() {
        let Some((_, pack)) = kernels() else {
            return;
        };
        // A full strip, a partial one, one row; one and several blocks.
        for (n, k) in [(64, 32), (70, 96), (1, 64), (33, 128)] {
            let w = Q8Matrix::from_rows(&values(n * k, n as u32 + 7), n, k).expect("finite");
            let bytes = k / BLOCK * PACKED_BLOCK;
            for s in 0..n.div_ceil(NR) {
                let (mut want, mut got) = (vec![0u8; bytes], vec![0xa5u8; bytes]);
                pack_strip(&w, s, &mut want);
                pack(&w, s, &mut got);
                assert!(got == want, "[{n}, {k}], strip {s}");
            }
        }
    }

    #[test]
    fn the_reference_is_the_dot_product_of_the_rounded_operands() {
        let (m, n, k) = (3, 5, 96);
        let x = values(m * k, 5);
        let w = Q8Matrix::from_rows(&values(n * k, 6), n, k).expect("finite");
        let a = Activations::quantize(&x, k);
        let wf = w.dequantize();
        let y = reference(&a, &w);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|t| {
                        let xq = (a.q[i * k + t] ^ 0x80) as i8 as f64
                            * a.d[i * k / BLOCK + t / BLOCK] as f64;
                        xq * wf[j * k + t] as f64
                    })
                    .sum();
                let got = y[i * n + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{i},{j}: {got} vs {want}"
                );
            }
        }
        // And it is close to the unrounded product (the activations' rounding dominates).
        for i in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k).map(|t| x[i * k + t] * wf[j * k + t]).sum();
                assert!((y[i * n + j] - exact).abs() < 0.05 * (1.0 + exact.abs()));
            }
        }
    }

    #[test]
    fn the_kernel_equals_the_reference_bit_for_bit_at_every_tile_and_strip_edge() {
        let Some(kernels) = kernels() else {
            eprintln!("no AVX-512 VNNI here: only the reference is tested");
            return;
        };
        // Rows 1 .. 2·MR + 1 (every tile height, bands), columns with and without a
        // partial strip, several blocks.
        for (m, n, k) in [
            (1, 32, 32),
            (5, 33, 64),
            (13, 70, 96),
            (7, 16, 128),
            (64, 96, 64),
        ] {
            let x = values(m * k, m as u32);
            let w = Q8Matrix::from_rows(&values(n * k, n as u32 + 1), n, k).expect("finite");
            let a = Activations::quantize(&x, k);
            let want = reference(&a, &w);
            let got = product(&a, &w, kernels);
            assert_eq!(got.len(), want.len());
            for (t, (g, e)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "[{m}, {k}] · [{n}, {k}]ᵀ at {t}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn products_of_extreme_blocks_do_not_overflow() {
        let Some(kernels) = kernels() else {
            return;
        };
        // Every activation and weight at ±127 (the largest integer sums), zero blocks, and
        // a NaN-free mix.
        let (m, n, k) = (7, 40, 64);
        let mut x = vec![1.0f32; m * k];
        let mut wv = vec![-1.0f32; n * k];
        x[k..2 * k].fill(0.0);
        wv[..k].fill(0.0);
        for (i, v) in x.iter_mut().enumerate().skip(2 * k) {
            *v = if i % 3 == 0 { -1.0 } else { 1.0 };
        }
        let w = Q8Matrix::from_rows(&wv, n, k).expect("finite");
        let a = Activations::quantize(&x, k);
        let got = product(&a, &w, kernels);
        assert_eq!(got, reference(&a, &w));
        // 64 products of 1 · −1 (through f16 scales), and a zero row.
        assert!((got[1] + 64.0).abs() < 0.05, "{}", got[1]);
        assert_eq!(got[n + 1], 0.0);
        assert_eq!(got[0], 0.0);
    }
}
