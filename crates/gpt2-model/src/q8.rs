//! 8-bit weight matrices in Q8_0 blocks, and their products with f32 activations.
//!
//! The layout is GGML's Q8_0 in spirit: each row of `k` weights is cut into blocks of 32; a
//! block stores `d = max|w| / 127` and `q = round(w / d)` as 32 `i8`, so `w ≈ d · q`. Here
//! the int8 values and the (f32) scales live in two arrays (1.125 bytes per weight).
//!
//! Products of a few rows (decode) round the activations to Q8_0 blocks too, as llama.cpp
//! does, and multiply-add 8-bit integers, four weight rows per pass over an activation row
//! (AVX-VNNI or AVX-512 VNNI `vpdpbusd`, else AVX2 `vpmaddubsw` + `vpmaddwd`, detected at run
//! time; a portable loop elsewhere): ~1.3x the throughput of widening the weights to f32 in
//! registers, for a max logit difference of 0.31 instead of 0.21 on the shared gpt2-tiny
//! fixture (f32 scales). Longer products (prefill) dequantize the matrix once and run an f32
//! gemm.

use rayon::prelude::*;

/// Weights per block.
pub const BLOCK: usize = 32;

/// A `[rows, k]` matrix in Q8_0 blocks along `k` (`k` a multiple of [`BLOCK`]).
#[derive(Clone)]
pub struct Q8Matrix {
    rows: usize,
    k: usize,
    /// `[rows, k]`.
    qs: Vec<i8>,
    /// `[rows, k / BLOCK]`.
    scales: Vec<f32>,
}

impl std::fmt::Debug for Q8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Matrix [{}, {}]", self.rows, self.k)
    }
}

/// `len` zeroed bytes for a matrix's int8 values, in transparent huge pages where Linux
/// gives them (`MADV_HUGEPAGE` before the first write): the decode kernel streams the
/// matrix, and 2 MiB pages let the hardware prefetchers run on (4 KiB pages stop them at
/// every page boundary) and spare the TLB. Only a hint: elsewhere, or when refused, these are
/// ordinary pages.
pub(crate) fn huge_zeroed(len: usize) -> Vec<i8> {
    // calloc-style: a large zeroed allocation is fresh, untouched memory, so the advice
    // applies to the page faults of the writes that follow.
    let v = vec![0i8; len];
    crate::model::advise(bytemuck::cast_slice(&v), crate::model::Advice::HugePage);
    v
}

fn quantize_block(w: &[f32], q: &mut [i8]) -> f32 {
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

impl Q8Matrix {
    /// Quantizes `w` `[rows, k]` (row-major).
    ///
    /// # Panics
    /// If `k` is not a multiple of [`BLOCK`] or `w.len() != rows·k`.
    pub fn from_rows(w: &[f32], rows: usize, k: usize) -> Self {
        assert!(
            k.is_multiple_of(BLOCK) && w.len() == rows * k,
            "bad Q8_0 shape"
        );
        let mut qs = huge_zeroed(rows * k);
        let mut scales = vec![0f32; rows * k / BLOCK];
        qs.par_chunks_mut(k)
            .zip(scales.par_chunks_mut(k / BLOCK))
            .zip(w.par_chunks(k))
            .for_each(|((q, s), w)| {
                for ((q, s), w) in q.chunks_mut(BLOCK).zip(s.iter_mut()).zip(w.chunks(BLOCK)) {
                    *s = quantize_block(w, q);
                }
            });
        Self {
            rows,
            k,
            qs,
            scales,
        }
    }

    /// Quantizes `wᵀ` for `w` `[k, n]` (row-major, as `Conv1D` stores it): the result is
    /// `[n, k]`, blocks along `k`.
    ///
    /// # Panics
    /// If `k` is not a multiple of [`BLOCK`] or `w.len() != k·n`.
    pub fn from_transposed(w: &[f32], k: usize, n: usize) -> Self {
        assert!(
            k.is_multiple_of(BLOCK) && w.len() == k * n,
            "bad Q8_0 shape"
        );
        let mut qs = huge_zeroed(n * k);
        let mut scales = vec![0f32; n * k / BLOCK];
        // 16 output rows at a time: read w[i, o0..o0+16] (contiguous) for every i.
        const T: usize = 16;
        qs.par_chunks_mut(T * k)
            .zip(scales.par_chunks_mut(T * k / BLOCK))
            .enumerate()
            .for_each(|(t, (q, s))| {
                let o0 = t * T;
                let nt = q.len() / k;
                let mut rows = vec![0f32; nt * k];
                for i in 0..k {
                    for (j, &v) in w[i * n + o0..i * n + o0 + nt].iter().enumerate() {
                        rows[j * k + i] = v;
                    }
                }
                for ((q, s), w) in q
                    .chunks_mut(BLOCK)
                    .zip(s.iter_mut())
                    .zip(rows.chunks(BLOCK))
                {
                    *s = quantize_block(w, q);
                }
            });
        Self {
            rows: n,
            k,
            qs,
            scales,
        }
    }

    /// A matrix from its parts: `qs` `[rows, k]` int8 values and `scales` `[rows, k / 32]`,
    /// so that weight `(r, c)` is `scales[r·k/32 + c/32] · qs[r·k + c]`. `None` when `k` is
    /// not a multiple of [`BLOCK`] or the lengths do not match `rows` and `k`.
    ///
    /// ```
    /// use gpt2_model::q8::Q8Matrix;
    /// let q = Q8Matrix::from_parts(1, 32, vec![2; 32], vec![0.5]).unwrap();
    /// assert_eq!(q.dequantize(), vec![1.0; 32]);
    /// assert!(Q8Matrix::from_parts(1, 30, vec![2; 30], vec![0.5]).is_none());
    /// ```
    pub fn from_parts(rows: usize, k: usize, qs: Vec<i8>, scales: Vec<f32>) -> Option<Self> {
        let ok = k.is_multiple_of(BLOCK)
            && rows.checked_mul(k) == Some(qs.len())
            && scales.len() == qs.len() / BLOCK;
        ok.then_some(Self {
            rows,
            k,
            qs,
            scales,
        })
    }

    /// This matrix with every block scale rounded to the nearest f16 (ties to even), as
    /// GGML's `block_q8_0` stores it; the int8 values are kept. A model read from a GGUF file
    /// holds exactly these numbers (see [`crate::gguf`]).
    ///
    /// ```
    /// use gpt2_model::q8::Q8Matrix;
    /// let w: Vec<f32> = (0..32).map(|i| i as f32 / 10.0).collect();
    /// let q = Q8Matrix::from_rows(&w, 1, 32).with_f16_scales();
    /// assert_eq!(q.scales()[0], half::f16::from_f32(3.1 / 127.0).to_f32());
    /// ```
    pub fn with_f16_scales(mut self) -> Self {
        for s in &mut self.scales {
            *s = half::f16::from_f32(*s).to_f32();
        }
        self
    }

    /// The int8 values, `[rows, k]` row-major.
    pub fn qs(&self) -> &[i8] {
        &self.qs
    }

    /// The block scales, `[rows, k / 32]` row-major.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (the blocked dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `r` as f32 (`d · q`).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let q = &self.qs[r * self.k..(r + 1) * self.k];
        let s = &self.scales[r * self.k / BLOCK..(r + 1) * self.k / BLOCK];
        for ((o, q), &d) in out.chunks_mut(BLOCK).zip(q.chunks(BLOCK)).zip(s) {
            for (o, &q) in o.iter_mut().zip(q) {
                *o = d * q as f32;
            }
        }
    }

    /// The whole matrix as f32 `[rows, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.k];
        out.par_chunks_mut(self.k)
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
        assert_eq!(x.len(), m * k, "x is not [m, k]");
        let nb = k / BLOCK;
        let mut out = vec![0f32; m * self.rows];
        // The activations in Q8_0 blocks too (as llama.cpp does): the products are then 8-bit
        // integer multiply-adds, ~2.5x fewer instructions than widening the weights to f32.
        // Their absolute values are taken once here, not once per row of the matrix.
        let mut xq = vec![0i8; m * k];
        let mut xd = vec![0f32; m * nb];
        for ((q, d), x) in xq.chunks_mut(BLOCK).zip(xd.iter_mut()).zip(x.chunks(BLOCK)) {
            *d = quantize_block(x, q);
        }
        // |q| ≤ 127, so `unsigned_abs` fits an i8 (the kernels read it as u8).
        let ax: Vec<i8> = xq.iter().map(|q| q.unsigned_abs() as i8).collect();
        let dot = dot_kernel();
        const CH: usize = 64;
        let parts: Vec<(usize, Vec<f32>)> = (0..self.rows.div_ceil(CH))
            .into_par_iter()
            .map(|c| {
                let r0 = c * CH;
                let len = CH.min(self.rows - r0);
                let mut acc = vec![0f32; m * len];
                // Four rows at a time, one from each quarter of the chunk: four weight streams
                // in flight, and each activation block loaded once for the four.
                let quarter = len.div_ceil(4);
                for j in 0..quarter {
                    let rows: [usize; 4] = std::array::from_fn(|p| (p * quarter + j).min(len - 1));
                    let q: [&[i8]; 4] = rows.map(|jj| &self.qs[(r0 + jj) * k..(r0 + jj + 1) * k]);
                    let sc: [&[f32]; 4] =
                        rows.map(|jj| &self.scales[(r0 + jj) * nb..(r0 + jj + 1) * nb]);
                    for i in 0..m {
                        let (xq, ax) = (&xq[i * k..(i + 1) * k], &ax[i * k..(i + 1) * k]);
                        let y = dot(xq, ax, &xd[i * nb..(i + 1) * nb], q, sc);
                        // Rows past the end were clamped to the last one: same value.
                        for (p, &jj) in rows.iter().enumerate() {
                            acc[i * len + jj] = y[p];
                        }
                    }
                }
                (r0, acc)
            })
            .collect();
        let n = self.rows;
        for (r0, acc) in parts {
            let len = acc.len() / m.max(1);
            for i in 0..m {
                out[i * n + r0..i * n + r0 + len].copy_from_slice(&acc[i * len..(i + 1) * len]);
            }
        }
        out
    }
}

/// Four dot products of Q8_0 rows with one activation row: `(xq, |xq|, xd, q, s)` →
/// `[Σ_b xd[b] · s[r][b] · Σ_{t<32} xq[32b+t] · q[r][32b+t] for r in 0..4]`.
type DotFn = fn(&[i8], &[i8], &[f32], [&[i8]; 4], [&[f32]; 4]) -> [f32; 4];

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

fn dot_q8_portable(xq: &[i8], _ax: &[i8], xd: &[f32], q: [&[i8]; 4], s: [&[f32]; 4]) -> [f32; 4] {
    std::array::from_fn(|r| {
        let mut t = 0f32;
        for (((xq, &xd), q), &d) in xq.chunks(BLOCK).zip(xd).zip(q[r].chunks(BLOCK)).zip(s[r]) {
            let b: i32 = xq.iter().zip(q).map(|(&a, &b)| a as i32 * b as i32).sum();
            t += xd * d * b as f32;
        }
        t
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    type Rows<'a> = [&'a [i8]; 4];
    type Scales<'a> = [&'a [f32]; 4];

    /// The best kernel for this CPU, `None` without AVX2 + FMA.
    pub fn best() -> Option<super::DotFn> {
        all().pop().map(|(_, f)| f)
    }

    /// Every kernel this CPU has, slowest first.
    pub fn all() -> Vec<(&'static str, super::DotFn)> {
        let mut v: Vec<(&'static str, super::DotFn)> = Vec::new();
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return v;
        }
        // SAFETY (each closure): the features the kernel is compiled for were just detected,
        // and the kernels check the slice lengths before reading.
        v.push(("avx2", |xq, ax, xd, q, s| unsafe {
            dot_avx2(xq, ax, xd, q, s)
        }));
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            v.push(("avx512vnni", |xq, ax, xd, q, s| unsafe {
                dot_avx512vnni(xq, ax, xd, q, s)
            }));
        }
        if is_x86_feature_detected!("avxvnni") {
            v.push(("avxvnni", |xq, ax, xd, q, s| unsafe {
                dot_avxvnni(xq, ax, xd, q, s)
            }));
        }
        v
    }

    /// Four dot products; `$sum` turns |x| (u8) and w·sign(x) (i8) into 8 i32 sums of four
    /// products each.
    macro_rules! dot4 {
        ($name:ident, $feat:literal, $sum:expr) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(
                xq: &[i8],
                ax: &[i8],
                xd: &[f32],
                q: Rows<'_>,
                s: Scales<'_>,
            ) -> [f32; 4] {
                let nb = xd.len();
                assert!(xq.len() >= nb * 32 && ax.len() >= nb * 32);
                assert!(q.iter().all(|q| q.len() >= nb * 32) && s.iter().all(|s| s.len() >= nb));
                let mut acc = [_mm256_setzero_ps(); 4];
                for b in 0..nb {
                    let x = _mm256_loadu_si256(xq.as_ptr().add(b * 32) as *const __m256i);
                    let a = _mm256_loadu_si256(ax.as_ptr().add(b * 32) as *const __m256i);
                    let xdb = *xd.get_unchecked(b);
                    for r in 0..4 {
                        let w = _mm256_loadu_si256(q[r].as_ptr().add(b * 32) as *const __m256i);
                        // x·w = |x| · (w·sign(x)); |x|, |w| ≤ 127.
                        let p = $sum(a, _mm256_sign_epi8(w, x));
                        let d = _mm256_set1_ps(xdb * *s[r].get_unchecked(b));
                        acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r]);
                    }
                }
                // Horizontal sums of the four accumulators at once.
                let h01 = _mm256_hadd_ps(acc[0], acc[1]);
                let h23 = _mm256_hadd_ps(acc[2], acc[3]);
                let h = _mm256_hadd_ps(h01, h23); // per 128-bit half: [r0, r1, r2, r3]
                let t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
                let mut out = [0f32; 4];
                _mm_storeu_ps(out.as_mut_ptr(), t);
                out
            }
        };
    }

    dot4!(dot_avx2, "avx2,fma", |a, sw| _mm256_madd_epi16(
        _mm256_maddubs_epi16(a, sw),
        _mm256_set1_epi16(1)
    ));
    dot4!(dot_avxvnni, "avx2,fma,avxvnni", |a, sw| {
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, sw)
    });
    dot4!(dot_avx512vnni, "avx2,fma,avx512vnni,avx512vl", |a, sw| {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, sw)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    #[test]
    fn quantization_error_is_within_half_a_step() {
        let (rows, k) = (5, 96);
        let w = values(rows * k, 1);
        let q = Q8Matrix::from_rows(&w, rows, k);
        let back = q.dequantize();
        for (b, (w, d)) in w.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
            let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, c) in w.iter().zip(d) {
                assert!(
                    (a - c).abs() <= amax / 127.0 / 2.0 + 1e-6,
                    "block {b}: {a} vs {c}"
                );
            }
        }
        // An all-zero block stays zero.
        let z = Q8Matrix::from_rows(&[0.0; 32], 1, 32);
        assert_eq!(z.dequantize(), vec![0.0; 32]);
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
        let a = Q8Matrix::from_transposed(&w, k, n);
        let b = Q8Matrix::from_rows(&wt, n, k);
        assert_eq!(a.qs, b.qs);
        assert_eq!(a.scales, b.scales);
    }

    #[test]
    fn products_match_the_dequantized_operands() {
        let (rows, k) = (130, 160);
        let q = Q8Matrix::from_rows(&values(rows * k, 3), rows, k);
        let deq = q.dequantize();
        for m in [1, 3] {
            let x = values(m * k, 4 + m as u32);
            // The kernel rounds x to Q8_0 blocks too: compare with both operands rounded.
            let xr = Q8Matrix::from_rows(&x, m, k).dequantize();
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
            let xq = Q8Matrix::from_rows(&x[..k], 1, k);
            let ax: Vec<i8> = xq.qs.iter().map(|v| v.unsigned_abs() as i8).collect();
            let rows: [usize; 4] = [0, 7, 129, 3];
            let wq = rows.map(|r| &q.qs[r * k..(r + 1) * k]);
            let ws = rows.map(|r| &q.scales[r * k / BLOCK..(r + 1) * k / BLOCK]);
            let p = dot_q8_portable(&xq.qs, &ax, &xq.scales, wq, ws);
            for (r, p) in rows.iter().zip(p) {
                assert!((p - y[*r]).abs() < 1e-4);
            }
            #[cfg(target_arch = "x86_64")]
            for (name, dot) in x86::all() {
                let d = dot(&xq.qs, &ax, &xq.scales, wq, ws);
                for (p, d) in p.iter().zip(d) {
                    assert!((p - d).abs() < 1e-4, "{name}: {d} vs {p}");
                }
            }
        }
    }
}
