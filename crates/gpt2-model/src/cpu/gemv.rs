//! Products of a few activation rows with a large weight matrix (decode steps), on the CPU.
//!
//! A decode step multiplies one row per sequence by every weight matrix, so its speed is the
//! speed at which the weights stream from memory. Candle's CPU gemm runs such a product as a
//! gemv on one thread and reaches well under the machine's bandwidth; these kernels read each
//! weight once per step for all rows, split the work over the threads (the decode team of
//! `crate::team`), prefetch each weight stream 2 KiB ahead, and accumulate in f32 whatever the
//! weight dtype (f16 weights are widened in registers):
//!
//! - [`x_w`]: `x` `[m, k]` · `W` `[k, n]` (row-major `W`, as `Conv1D` stores it): for each
//!   input `i`, `y[r, :] += x[r, i] · W[i, :]` over contiguous rows of `W`.
//! - [`x_et`]: `x` `[m, k]` · `Eᵀ` for `E` `[n, k]` row-major (the tied LM head, `h · wteᵀ`):
//!   `y[r, v] = x[r, :] · E[v, :]`.
//!
//! On x86-64 with AVX2+FMA (+F16C for f16), detected at run time, the inner loops use those
//! instructions; elsewhere a portable loop computes the same sums. The order of the sums
//! differs from candle's gemm, so results agree to rounding (~1e-6 relative), not bit for bit.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use half::f16;

use super::matrix::Slice;
use crate::error::Result;

/// A weight element the kernels can read: `f32` or `f16`.
pub trait Weight: Copy + Send + Sync + 'static {
    /// `acc[j] += Σ_t a[t] · w[t][j]` for the `w` rows given (1 to 4 of them).
    ///
    /// # Panics
    /// When more than 4 rows are given, `a` has fewer values than there are rows, or a row
    /// is shorter than `acc` (checked before the vector kernels run).
    fn axpy(acc: &mut [f32], a: &[f32], w: &[&[Self]]);
    /// `Σ_j x[j] · w[j]` over the shorter of the two.
    fn dot(x: &[f32], w: &[Self]) -> f32;
}

/// What the vector `axpy` kernels read: up to 4 rows, a coefficient for each, and every
/// row at least `acc.len()` long.
#[inline(always)]
fn check_axpy<W>(acc: &[f32], a: &[f32], w: &[&[W]]) {
    assert!(
        w.len() <= 4 && a.len() >= w.len() && w.iter().all(|r| r.len() >= acc.len()),
        "axpy: {} rows (at most 4) of lengths {:?} for {} coefficients and {} outputs",
        w.len(),
        w.iter().map(|r| r.len()).collect::<Vec<_>>(),
        a.len(),
        acc.len()
    );
}

fn axpy_portable<W: Copy>(acc: &mut [f32], a: &[f32], w: &[&[W]], f: impl Fn(W) -> f32) {
    for (&a, w) in a.iter().zip(w) {
        for (acc, &w) in acc.iter_mut().zip(w.iter()) {
            *acc += a * f(w);
        }
    }
}

fn dot_portable<W: Copy>(x: &[f32], w: &[W], f: impl Fn(W) -> f32) -> f32 {
    let mut s = [0f32; 8];
    let mut xc = x.chunks_exact(8);
    let mut wc = w.chunks_exact(8);
    for (x, w) in (&mut xc).zip(&mut wc) {
        for l in 0..8 {
            s[l] += x[l] * f(w[l]);
        }
    }
    let mut t: f32 = s.iter().sum();
    for (&x, &w) in xc.remainder().iter().zip(wc.remainder()) {
        t += x * f(w);
    }
    t
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 + FMA (+ F16C) inner loops. Callers check the features first.
    use half::f16;
    use std::arch::x86_64::*;

    /// 8 weights from `p` as f32.
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> __m256 {
        // SAFETY: the caller passes a pointer to 8 readable values (a prefetch never faults).
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        // SAFETY: the caller passes a pointer to 8 readable values (a prefetch never faults).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    /// How far ahead of a weight stream the kernels prefetch, in bytes: the hardware
    /// prefetchers alone leave the decode products short of the memory bandwidth (as for the
    /// Q8_0 kernel, see `crate::q8`).
    const PREFETCH: usize = 2048;

    /// Asks for the cache line at `p` (never faults, so `p` may lie past the end).
    #[inline(always)]
    unsafe fn prefetch<T>(p: *const T) {
        // SAFETY: the caller passes a pointer to 8 readable values (a prefetch never faults).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
        }
    }

    macro_rules! kernels {
        ($axpy:ident, $dot:ident, $t:ty, $load:ident, $feat:literal, $widen:expr) => {
            /// `acc += Σ a[t]·w[t]` (1..=4 rows of `w`, each `acc.len()` long).
            #[target_feature(enable = $feat)]
            pub unsafe fn $axpy(acc: &mut [f32], a: &[f32], w: &[&[$t]]) {
                // SAFETY: the caller checked the CPU features; every pointer read is at an index below the
                // lengths the caller checked (see `check_axpy`; `dot` reads min(x.len(), w.len())).
                unsafe {
                    const LINE: usize = 64 / std::mem::size_of::<$t>();
                    const AHEAD: usize = PREFETCH / std::mem::size_of::<$t>();
                    let n = acc.len();
                    let main = n / 8 * 8;
                    let pa = acc.as_mut_ptr();
                    match w.len() {
                        4 => {
                            let (a0, a1, a2, a3) = (
                                _mm256_set1_ps(a[0]),
                                _mm256_set1_ps(a[1]),
                                _mm256_set1_ps(a[2]),
                                _mm256_set1_ps(a[3]),
                            );
                            let (w0, w1, w2, w3) =
                                (w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr());
                            let mut j = 0;
                            while j < main {
                                if j % LINE == 0 {
                                    for w in [w0, w1, w2, w3] {
                                        prefetch(w.wrapping_add(j + AHEAD));
                                    }
                                }
                                let mut s = _mm256_loadu_ps(pa.add(j));
                                s = _mm256_fmadd_ps(a0, $load(w0.add(j)), s);
                                s = _mm256_fmadd_ps(a1, $load(w1.add(j)), s);
                                s = _mm256_fmadd_ps(a2, $load(w2.add(j)), s);
                                s = _mm256_fmadd_ps(a3, $load(w3.add(j)), s);
                                _mm256_storeu_ps(pa.add(j), s);
                                j += 8;
                            }
                        }
                        _ => {
                            for (t, row) in w.iter().enumerate() {
                                let at = _mm256_set1_ps(a[t]);
                                let pw = row.as_ptr();
                                let mut j = 0;
                                while j < main {
                                    let s = _mm256_loadu_ps(pa.add(j));
                                    _mm256_storeu_ps(
                                        pa.add(j),
                                        _mm256_fmadd_ps(at, $load(pw.add(j)), s),
                                    );
                                    j += 8;
                                }
                            }
                        }
                    }
                    for (t, row) in w.iter().enumerate() {
                        for j in main..n {
                            acc[j] += a[t] * $widen(row[j]);
                        }
                    }
                }
            }

            /// `Σ x[j]·w[j]`.
            #[target_feature(enable = $feat)]
            pub unsafe fn $dot(x: &[f32], w: &[$t]) -> f32 {
                // SAFETY: the caller checked the CPU features; every pointer read is at an index below the
                // lengths the caller checked (see `check_axpy`; `dot` reads min(x.len(), w.len())).
                unsafe {
                    const LINE: usize = 64 / std::mem::size_of::<$t>();
                    const AHEAD: usize = PREFETCH / std::mem::size_of::<$t>();
                    let n = x.len().min(w.len());
                    let main = n / 32 * 32;
                    let (px, pw) = (x.as_ptr(), w.as_ptr());
                    let mut s0 = _mm256_setzero_ps();
                    let mut s1 = _mm256_setzero_ps();
                    let mut s2 = _mm256_setzero_ps();
                    let mut s3 = _mm256_setzero_ps();
                    let mut j = 0;
                    while j < main {
                        // 32 weights: one or two cache lines.
                        prefetch(pw.wrapping_add(j + AHEAD));
                        if LINE < 32 {
                            prefetch(pw.wrapping_add(j + LINE + AHEAD));
                        }
                        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(j)), $load(pw.add(j)), s0);
                        s1 = _mm256_fmadd_ps(
                            _mm256_loadu_ps(px.add(j + 8)),
                            $load(pw.add(j + 8)),
                            s1,
                        );
                        s2 = _mm256_fmadd_ps(
                            _mm256_loadu_ps(px.add(j + 16)),
                            $load(pw.add(j + 16)),
                            s2,
                        );
                        s3 = _mm256_fmadd_ps(
                            _mm256_loadu_ps(px.add(j + 24)),
                            $load(pw.add(j + 24)),
                            s3,
                        );
                        j += 32;
                    }
                    let s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
                    let mut lanes = [0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), s);
                    let mut t: f32 = lanes.iter().sum();
                    for j in main..n {
                        t += x[j] * $widen(w[j]);
                    }
                    t
                }
            }
        };
    }

    kernels!(axpy_f32, dot_f32, f32, load_f32, "avx2,fma", |w: f32| w);
    kernels!(
        axpy_f16,
        dot_f16,
        f16,
        load_f16,
        "avx2,fma,f16c",
        |w: f16| w.to_f32()
    );

    /// AVX2 + FMA (f32 kernels).
    pub fn has_fma() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// AVX2 + FMA + F16C (f16 kernels).
    pub fn has_f16c() -> bool {
        has_fma() && is_x86_feature_detected!("f16c")
    }
}

impl Weight for f32 {
    fn axpy(acc: &mut [f32], a: &[f32], w: &[&[f32]]) {
        check_axpy(acc, a, w);
        #[cfg(target_arch = "x86_64")]
        if x86::has_fma() {
            // SAFETY: the CPU has the features the kernel was compiled for; every row of `w`
            // is at least `acc.len()` long and `a` has a value per row (`check_axpy`).
            return unsafe { x86::axpy_f32(acc, a, w) };
        }
        axpy_portable(acc, a, w, |w| w)
    }

    fn dot(x: &[f32], w: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if x86::has_fma() {
            // SAFETY: the features were detected; the kernel reads min(x.len(), w.len())
            // elements of each.
            return unsafe { x86::dot_f32(x, w) };
        }
        dot_portable(x, w, |w| w)
    }
}

impl Weight for f16 {
    fn axpy(acc: &mut [f32], a: &[f32], w: &[&[f16]]) {
        check_axpy(acc, a, w);
        #[cfg(target_arch = "x86_64")]
        if x86::has_f16c() {
            // SAFETY: the features were detected, and the lengths checked (`check_axpy`).
            return unsafe { x86::axpy_f16(acc, a, w) };
        }
        axpy_portable(acc, a, w, f16::to_f32)
    }

    fn dot(x: &[f32], w: &[f16]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if x86::has_f16c() {
            // SAFETY: the features were detected; the kernel reads min(x.len(), w.len())
            // elements of each.
            return unsafe { x86::dot_f16(x, w) };
        }
        dot_portable(x, w, f16::to_f32)
    }
}

/// Column blocks: one or two per thread, multiples of 16 columns.
fn blocks(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let block = n.div_ceil(threads).div_ceil(16) * 16;
    block.max(16)
}

/// An `[m, n]` f32 product computed by column blocks of `block` columns, one parallel task
/// each (on the decode team, see `crate::team`): `fill(c0, acc)` writes the block starting
/// at column `c0` into `acc`, `[m, len]` row-major. One row is written in place; several are
/// computed block-major and then scattered.
pub(crate) fn by_column_blocks(
    m: usize,
    n: usize,
    block: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    if out.is_empty() {
        return out;
    }
    let block = block.max(1);
    if m == 1 {
        super::team::for_each_chunk_mut(&mut out, block, |b, acc| fill(b * block, acc));
        return out;
    }
    let mut scratch = vec![0f32; m * n];
    super::team::for_each_chunk_mut(&mut scratch, block * m, |b, acc| fill(b * block, acc));
    for (b, acc) in scratch.chunks(block * m).enumerate() {
        let (c0, len) = (b * block, acc.len() / m);
        for r in 0..m {
            out[r * n + c0..r * n + c0 + len].copy_from_slice(&acc[r * len..(r + 1) * len]);
        }
    }
    out
}

/// `x` `[m, k]` (row-major) · `w` `[k, n]` (row-major) → `[m, n]` row-major f32.
///
/// # Panics
/// If `x.len() != m·k` or `w.len() != k·n` (the callers pass tensors' own shapes).
pub fn x_w<W: Weight>(x: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f32> {
    assert_eq!(Some(x.len()), m.checked_mul(k), "x is not [m, k]");
    assert_eq!(Some(w.len()), k.checked_mul(n), "w is not [k, n]");
    if m == 1 {
        return x_w_one_row(x, k, w, n);
    }
    by_column_blocks(m, n, blocks(n), |c0, acc| {
        let len = acc.len() / m;
        let mut i = 0;
        while i < k {
            let t = (k - i).min(4);
            let rows: [&[W]; 4] = std::array::from_fn(|d| {
                let r = i + d.min(t - 1);
                &w[r * n + c0..r * n + c0 + len]
            });
            for r in 0..m {
                let a = &x[r * k + i..r * k + i + t];
                W::axpy(&mut acc[r * len..(r + 1) * len], a, &rows[..t]);
            }
            i += t;
        }
    })
}

/// [`x_w`] for one row: each thread takes a band of whole rows of `w` (one contiguous
/// stretch of memory, which the hardware prefetchers follow better than the column blocks'
/// short segments: ~10% more bandwidth for f16 here) and the bands' partial sums are added.
fn x_w_one_row<W: Weight>(x: &[f32], k: usize, w: &[W], n: usize) -> Vec<f32> {
    let threads = rayon::current_num_threads().max(1);
    let band = (k.div_ceil(threads).div_ceil(4) * 4).max(4);
    // One partial sum per band, `[bands, n]`.
    let mut partial = vec![0f32; k.div_ceil(band) * n];
    super::team::for_each_chunk_mut(&mut partial, n, |b, acc| {
        let (i0, i1) = (b * band, ((b + 1) * band).min(k));
        let mut i = i0;
        while i < i1 {
            let t = (i1 - i).min(4);
            let rows: [&[W]; 4] = std::array::from_fn(|d| {
                let r = i + d.min(t - 1);
                &w[r * n..(r + 1) * n]
            });
            W::axpy(acc, &x[i..i + t], &rows[..t]);
            i += t;
        }
    });
    let mut bands = partial.chunks(n.max(1));
    let mut out = bands.next().map_or_else(|| vec![0f32; n], <[f32]>::to_vec);
    for b in bands {
        for (o, v) in out.iter_mut().zip(b) {
            *o += v;
        }
    }
    out
}

/// `x` `[m, k]` · `eᵀ` for `e` `[n, k]` (row-major) → `[m, n]` row-major f32.
///
/// # Panics
/// If `x.len() != m·k` or `e.len() != n·k`.
pub fn x_et<W: Weight>(x: &[f32], m: usize, k: usize, e: &[W], n: usize) -> Vec<f32> {
    assert_eq!(Some(x.len()), m.checked_mul(k), "x is not [m, k]");
    assert_eq!(Some(e.len()), n.checked_mul(k), "e is not [n, k]");
    const CHUNK: usize = 256;
    by_column_blocks(m, n, CHUNK, |v0, acc| {
        let len = acc.len() / m;
        if m == 1 {
            // Rows are visited round-robin over the four quarters of each chunk: four
            // sequential streams in flight per thread instead of one (measured ~1.5x the
            // bandwidth here).
            let quarter = len.div_ceil(4);
            for j in 0..quarter {
                for part in 0..4 {
                    let jj = part * quarter + j;
                    if jj < len {
                        let v = v0 + jj;
                        acc[jj] = W::dot(x, &e[v * k..(v + 1) * k]);
                    }
                }
            }
            return;
        }
        // Several rows: each weight row once, for every activation row.
        for j in 0..len {
            let row = &e[(v0 + j) * k..(v0 + j + 1) * k];
            for r in 0..m {
                acc[r * len + j] = W::dot(&x[r * k..(r + 1) * k], row);
            }
        }
    })
}

/// At most this many activation rows go through these kernels; more rows are a real gemm
/// (candle's, which reuses each weight tile from cache for many rows): the crossover point,
/// measured at the 124M shape with 2 threads (the kernels win for a 32-token prefill, the
/// gemm for 512 rows).
pub const MAX_ROWS: usize = 64;

/// Which layout of the weight operand of `x · w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `w` `[k, n]` row-major.
    RowMajor,
    /// `w` is `eᵀ` for `e` `[n, k]` row-major.
    Transposed,
}

/// `x` `[m, k]` · `w` `[k, n]` with these kernels when they apply: CPU tensors, f32 or f16
/// weights, `m ≤ MAX_ROWS`, and `w` either row-major or the transpose of a row-major
/// matrix. `None` when they do not (the caller runs candle's matmul). The result has `x`'s
/// dtype (f32 activations with f16 weights give f32).
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (k, n) = w.dims2()?;
    if !w.device().is_cpu() || !matches!(w.dtype(), DType::F32 | DType::F16) {
        return Ok(None);
    }
    let (storage, layout) = w.storage_and_layout();
    let start = layout.start_offset();
    let kind = if layout.is_contiguous() {
        Layout::RowMajor
    } else if layout.stride() == [1, k] {
        Layout::Transposed
    } else {
        return Ok(None);
    };
    let w = match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => Slice::F32(&v[start..start + k * n]),
        Storage::Cpu(CpuStorage::F16(v)) => Slice::F16(&v[start..start + k * n]),
        _ => return Ok(None),
    };
    matmul_slice(x, w, kind, k, n)
}

/// [`matmul`] on borrowed weights: `w` holds `[k, n]` row-major values
/// ([`Layout::RowMajor`]) or `[n, k]` row-major ones standing for their transpose
/// ([`Layout::Transposed`]). `None` when `x` is not a CPU tensor of at most [`MAX_ROWS`]
/// f32/f16 rows of length `k`.
///
/// # Panics
/// If `w` does not hold `k·n` values.
pub fn matmul_slice(
    x: &Tensor,
    w: Slice<'_>,
    layout: Layout,
    k: usize,
    n: usize,
) -> Result<Option<Tensor>> {
    let (m, k2) = x.dims2()?;
    if !x.device().is_cpu()
        || m == 0
        || m > MAX_ROWS
        || k != k2
        || !matches!(x.dtype(), DType::F32 | DType::F16)
    {
        return Ok(None);
    }
    let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    fn run<W: Weight>(
        layout: Layout,
        xs: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        n: usize,
    ) -> Vec<f32> {
        match layout {
            Layout::RowMajor => x_w(xs, m, k, w, n),
            Layout::Transposed => x_et(xs, m, k, w, n),
        }
    }
    let out = match w {
        Slice::F32(w) => run(layout, &xs, m, k, w, n),
        Slice::F16(w) => run(layout, &xs, m, k, w, n),
    };
    let y = Tensor::from_vec(out, (m, n), x.device())?;
    Ok(Some(if x.dtype() == DType::F32 {
        y
    } else {
        y.to_dtype(x.dtype())?
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;
    use std::panic::catch_unwind;

    fn naive(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for i in 0..k {
                for j in 0..n {
                    y[r * n + j] += x[r * k + i] as f64 * w[i * n + j] as f64;
                }
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!((a - b).abs() <= tol, "element {i}: {a} vs {b}");
        }
    }

    #[test]
    fn x_w_matches_the_definition() {
        // Odd sizes: k not a multiple of 4, n not a multiple of 8 or 16.
        for (m, k, n) in [
            (1, 7, 5),
            (1, 37, 203),
            (3, 50, 130),
            (16, 9, 33),
            (2, 64, 512),
        ] {
            let x = values(m * k, 1);
            let w = values(k * n, 2);
            let want = naive(&x, m, k, &w, n);
            close(&x_w(&x, m, k, &w, n), &want, 1e-4);
            let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let w16_as_f32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
            close(
                &x_w(&x, m, k, &w16, n),
                &naive(&x, m, k, &w16_as_f32, n),
                1e-4,
            );
        }
    }

    #[test]
    fn x_et_matches_the_definition() {
        for (m, k, n) in [(1, 7, 5), (1, 40, 600), (4, 33, 300), (16, 64, 17)] {
            let x = values(m * k, 3);
            let e = values(n * k, 4);
            // eᵀ as a [k, n] matrix.
            let mut et = vec![0f32; k * n];
            for v in 0..n {
                for i in 0..k {
                    et[i * n + v] = e[v * k + i];
                }
            }
            close(&x_et(&x, m, k, &e, n), &naive(&x, m, k, &et, n), 1e-4);
            let e16: Vec<f16> = e.iter().map(|&v| f16::from_f32(v)).collect();
            let et16: Vec<f32> = (0..k * n)
                .map(|idx| e16[(idx % n) * k + idx / n].to_f32())
                .collect();
            close(&x_et(&x, m, k, &e16, n), &naive(&x, m, k, &et16, n), 1e-4);
        }
    }

    #[test]
    fn kernels_refuse_mismatched_lengths() {
        let (acc, short, x) = (vec![0f32; 64], vec![1f32; 8], vec![1f32; 64]);
        // Rows shorter than the output, too few coefficients, more than four rows.
        for (a, rows) in [
            (vec![1f32], vec![&short[..]]),
            (vec![], vec![&x[..]]),
            (vec![1f32; 5], vec![&x[..]; 5]),
        ] {
            let mut acc32 = acc.clone();
            assert!(catch_unwind(move || f32::axpy(&mut acc32, &a, &rows)).is_err());
        }
        let short16 = vec![f16::ONE; 8];
        let mut acc16 = acc.clone();
        assert!(catch_unwind(move || f16::axpy(&mut acc16, &[1.0], &[&short16])).is_err());
        // dot reads the shorter of the two.
        assert_eq!(f32::dot(&x, &short), 8.0);
        assert_eq!(f16::dot(&short, &[f16::ONE; 64]), 8.0);
        // x_w / x_et: lengths that are not the shapes, or shapes whose product wraps.
        let big = 1usize << 32;
        assert!(catch_unwind(|| x_w(&x, 1, 64, &short, 2)).is_err());
        assert!(catch_unwind(|| x_w::<f32>(&[], big, big, &[], 0)).is_err());
        assert!(catch_unwind(|| x_et(&x, 1, 64, &short, 2)).is_err());
        assert!(catch_unwind(|| x_et::<f32>(&[], 0, big, &[], big)).is_err());
    }

    #[test]
    fn portable_kernels_match() {
        let x = values(37, 5);
        let w = values(37, 6);
        let d: f32 = x.iter().zip(&w).map(|(a, b)| a * b).sum();
        assert!((dot_portable(&x, &w, |v| v) - d).abs() < 1e-4);
        assert!((f32::dot(&x, &w) - d).abs() < 1e-4);
        let mut acc = vec![0.5f32; 37];
        let mut acc2 = acc.clone();
        axpy_portable(&mut acc, &[2.0, -1.0], &[&w, &x], |v| v);
        f32::axpy(&mut acc2, &[2.0, -1.0], &[&w, &x]);
        close(&acc, &acc2, 1e-5);
    }
}
