//! Products of a few activation rows with a large weight matrix (decode steps), on the CPU.
//!
//! A decode step multiplies one row per sequence by every weight matrix, so its speed is the
//! speed at which the weights stream from memory. Candle's CPU gemm runs such a product as a
//! gemv on one thread and reaches well under the machine's bandwidth; these kernels read each
//! weight once per step for all rows, split the work over the threads (the decode team of
//! `crate::team`), prefetch each weight stream ahead ([`prefetch_distance`]), and accumulate
//! in f32 whatever the weight dtype (f16 weights are widened in registers):
//!
//! - [`x_w`]: `x` `[m, k]` · `W` `[k, n]` (row-major `W`, as `Conv1D` stores it): for one
//!   row, `y[:] += x[i] · W[i, :]` over contiguous rows of `W`; several rows go to the
//!   register tiles of [`tile`](super::tile), where the arithmetic, not the stream, is the
//!   limit.
//! - [`x_et`]: `x` `[m, k]` · `Eᵀ` for `E` `[n, k]` row-major (the tied LM head, `h · wteᵀ`):
//!   `y[r, v] = x[r, :] · E[v, :]`.
//!
//! The inner loops come in one variant per instruction set ([`Isa`]), chosen at run time by
//! the CPU's features: AVX-512 F (16 lanes; f16 widened 16 at a time), AVX2 + FMA + F16C
//! (8 lanes), or a portable loop elsewhere. `GPT2_KERNELS` picks a lower one and
//! `GPT2_PREFETCH` the prefetch distance, to compare them on one machine. The order of the
//! sums differs between variants and from candle's gemm, so results agree to rounding
//! (~1e-6 relative), not bit for bit.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use half::f16;

use super::matrix::Slice;
use crate::error::Result;

/// A weight element the kernels can read: `f32` or `f16`.
pub trait Weight: super::tile::TileWeight + Copy + Send + Sync + 'static {
    /// `acc[j] += Σ_t a[t] · w[t][j]` for the `w` rows given (1 to 8 of them), with the
    /// kernels of [`Isa::selected`].
    ///
    /// # Panics
    /// When more than 4 rows are given, `a` has fewer values than there are rows, or a row
    /// is shorter than `acc` (checked before the vector kernels run).
    fn axpy(acc: &mut [f32], a: &[f32], w: &[&[Self]]) {
        Self::axpy_with(Isa::selected(), acc, a, w)
    }
    /// `Σ_j x[j] · w[j]` over the shorter of the two, with the kernels of [`Isa::selected`].
    fn dot(x: &[f32], w: &[Self]) -> f32 {
        Self::dot_with(Isa::selected(), x, w)
    }
    /// [`Weight::axpy`] with the kernels of `isa`, or of the best variant below it that this
    /// CPU runs.
    ///
    /// # Panics
    /// As [`Weight::axpy`].
    fn axpy_with(isa: Isa, acc: &mut [f32], a: &[f32], w: &[&[Self]]);
    /// [`Weight::dot`] with the kernels of `isa`, or of the best variant below it that this
    /// CPU runs.
    fn dot_with(isa: Isa, x: &[f32], w: &[Self]) -> f32;
    /// `[x · w[0], …, x · w[3]]`, each over the shorter of `x` and that row, with the kernels
    /// of [`Isa::selected`]: four weight streams in flight, and each value of `x` loaded once
    /// for the four.
    fn dot4(x: &[f32], w: [&[Self]; 4]) -> [f32; 4] {
        Self::dot4_with(Isa::selected(), x, w)
    }
    /// [`Weight::dot4`] with the kernels of `isa`, or of the best variant below it that this
    /// CPU runs.
    fn dot4_with(isa: Isa, x: &[f32], w: [&[Self]; 4]) -> [f32; 4];
    /// [`Weight::dot4`] for two activation rows at once, each weight vector loaded once for
    /// both: `[dot4(x[0], w), dot4(x[1], w)]`, bit for bit when the two rows are equally long
    /// (as a batch's are: the same sums in the same order).
    /// `prefetch`: also ask for the rows' lines ahead (the first rows of a batch; the others
    /// find them in cache).
    fn dot4x2_with(isa: Isa, x: [&[f32]; 2], w: [&[Self]; 4], prefetch: bool) -> [[f32; 4]; 2];
}

/// What the vector `axpy` kernels read: up to 4 rows, a coefficient for each, and every
/// row at least `acc.len()` long.
#[inline(always)]
fn check_axpy<W>(acc: &[f32], a: &[f32], w: &[&[W]]) {
    assert!(
        w.len() <= 8 && a.len() >= w.len() && w.iter().all(|r| r.len() >= acc.len()),
        "axpy: {} rows (at most 8) of lengths {:?} for {} coefficients and {} outputs",
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
    // The shorter of the two: both cut to it, so that their remainders line up.
    let n = x.len().min(w.len());
    let (x, w) = (&x[..n], &w[..n]);
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

/// The instruction sets the f32/f16 kernels come in, chosen at run time by the CPU's features.
///
/// Every kernel computes the same sums in its own order, so the variants agree to f32
/// rounding (the tests run every variant the CPU has). [`Isa::selected`] is the one the
/// products use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust loops, on any CPU.
    Portable,
    /// AVX2 + FMA + F16C: 8 lanes per instruction.
    Avx2,
    /// AVX-512 F (with the AVX2 set): 16 lanes per instruction, and f16 weights widened 16 at
    /// a time (`vcvtph2ps zmm`).
    Avx512,
}

impl Isa {
    /// Whether this CPU runs the variant (detected at run time; the portable one always).
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The variants this CPU runs, slowest first.
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The variant's name, as `GPT2_KERNELS` takes it: `portable`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The variant the products use: the best this CPU runs, or the one named by the
    /// environment variable `GPT2_KERNELS` (`portable`, `avx2`, `avx512`; for comparing them
    /// on one machine) when this CPU runs it. Decided once per process.
    pub fn selected() -> Isa {
        static SELECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *SELECTED.get_or_init(|| {
            let best = Isa::available().pop().unwrap_or(Isa::Portable);
            std::env::var("GPT2_KERNELS")
                .ok()
                .and_then(|v| {
                    Isa::available()
                        .into_iter()
                        .find(|isa| isa.name() == v.trim())
                })
                .unwrap_or(best)
        })
    }
}

/// How far ahead of each weight stream the kernels prefetch, in bytes: the environment
/// variable `GPT2_PREFETCH` (bytes, for tuning on a new CPU), else 2 KiB. The hardware
/// prefetchers alone leave the decode products short of the memory bandwidth (as for the
/// Q8_0 kernel, see `crate::q8`). Decided once per process.
pub fn prefetch_distance() -> usize {
    static AHEAD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AHEAD.get_or_init(|| {
        std::env::var("GPT2_PREFETCH")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&b| b <= 1 << 16)
            .unwrap_or(2048)
    })
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    //! AVX2 + FMA (+ F16C) and AVX-512 F inner loops. Callers check the features first.
    use half::f16;
    use std::arch::x86_64::*;

    /// 8 f16 weights from `p` as f32 (f32 weights are loaded as they are; the tiles of
    /// `super::tile` load theirs with these too).
    #[inline(always)]
    pub(in crate::cpu) unsafe fn load8_f16(p: *const f16) -> __m256 {
        // SAFETY: the caller passes a pointer to 8 readable values.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    /// 16 f16 weights from `p` as f32 (AVX-512 F).
    #[inline(always)]
    pub(in crate::cpu) unsafe fn load16_f16(p: *const f16) -> __m512 {
        // SAFETY: the caller passes a pointer to 16 readable values.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }

    /// Asks for the cache line at `p` (never faults, so `p` may lie past the end).
    #[inline(always)]
    unsafe fn prefetch<T>(p: *const T) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
        }
    }

    /// The kernels of one instruction set: `$v` the vector type of `$lanes` f32 lanes, and
    /// `$set1`, `$ld`, `$st`, `$fma`, `$zero`, `$add`, `$sum` its broadcast, load, store,
    /// fused multiply-add, zero, add and horizontal sum.
    macro_rules! kernels {
        ($axpy:ident, $dot:ident, $dot4:ident, $dot4x2:ident, $t:ty, $load:ident, $feat:literal, $widen:expr,
         $v:ty, $lanes:literal, $set1:ident, $ld:ident, $st:ident, $fma:ident, $zero:ident,
         $add:ident, $sum:expr) => {
            /// `acc += Σ a[t]·w[t]` (1..=8 rows of `w`, each `acc.len()` long), prefetching
            /// `ahead` bytes ahead of each row.
            #[target_feature(enable = $feat)]
            pub unsafe fn $axpy(acc: &mut [f32], a: &[f32], w: &[&[$t]], ahead: usize) {
                // SAFETY: the caller checked the CPU features; every pointer read is at an index below the
                // lengths the caller checked (see `check_axpy`).
                unsafe {
                    const LINE: usize = 64 / std::mem::size_of::<$t>();
                    const L: usize = $lanes;
                    let ahead = ahead / std::mem::size_of::<$t>();
                    let n = acc.len();
                    let main = n / L * L;
                    let pa = acc.as_mut_ptr();
                    match w.len() {
                        8 => {
                            let c: [$v; 8] = std::array::from_fn(|t| $set1(a[t]));
                            let p: [*const $t; 8] = std::array::from_fn(|t| w[t].as_ptr());
                            let mut j = 0;
                            while j < main {
                                if j % LINE == 0 {
                                    for w in p {
                                        prefetch(w.wrapping_add(j + ahead));
                                    }
                                }
                                let mut s0: $v = $ld(pa.add(j));
                                let mut s1: $v = $zero();
                                s0 = $fma(c[0], $load(p[0].add(j)), s0);
                                s1 = $fma(c[1], $load(p[1].add(j)), s1);
                                s0 = $fma(c[2], $load(p[2].add(j)), s0);
                                s1 = $fma(c[3], $load(p[3].add(j)), s1);
                                s0 = $fma(c[4], $load(p[4].add(j)), s0);
                                s1 = $fma(c[5], $load(p[5].add(j)), s1);
                                s0 = $fma(c[6], $load(p[6].add(j)), s0);
                                s1 = $fma(c[7], $load(p[7].add(j)), s1);
                                $st(pa.add(j), $add(s0, s1));
                                j += L;
                            }
                        }
                        4 => {
                            let (a0, a1, a2, a3) =
                                ($set1(a[0]), $set1(a[1]), $set1(a[2]), $set1(a[3]));
                            let (w0, w1, w2, w3) =
                                (w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr());
                            let mut j = 0;
                            while j < main {
                                if j % LINE == 0 {
                                    for w in [w0, w1, w2, w3] {
                                        prefetch(w.wrapping_add(j + ahead));
                                    }
                                }
                                let mut s: $v = $ld(pa.add(j));
                                s = $fma(a0, $load(w0.add(j)), s);
                                s = $fma(a1, $load(w1.add(j)), s);
                                s = $fma(a2, $load(w2.add(j)), s);
                                s = $fma(a3, $load(w3.add(j)), s);
                                $st(pa.add(j), s);
                                j += L;
                            }
                        }
                        _ => {
                            for (t, row) in w.iter().enumerate() {
                                let at = $set1(a[t]);
                                let pw = row.as_ptr();
                                let mut j = 0;
                                while j < main {
                                    if j % LINE == 0 {
                                        prefetch(pw.wrapping_add(j + ahead));
                                    }
                                    let s = $ld(pa.add(j));
                                    $st(pa.add(j), $fma(at, $load(pw.add(j)), s));
                                    j += L;
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

            /// `Σ x[j]·w[j]` over the shorter of the two, prefetching `ahead` bytes ahead of `w`.
            #[target_feature(enable = $feat)]
            pub unsafe fn $dot(x: &[f32], w: &[$t], ahead: usize) -> f32 {
                // SAFETY: the caller checked the CPU features; every pointer read is below
                // min(x.len(), w.len()).
                unsafe {
                    const LINE: usize = 64 / std::mem::size_of::<$t>();
                    const L: usize = $lanes;
                    let ahead = ahead / std::mem::size_of::<$t>();
                    let n = x.len().min(w.len());
                    let main = n / (4 * L) * (4 * L);
                    let (px, pw) = (x.as_ptr(), w.as_ptr());
                    let (mut s0, mut s1, mut s2, mut s3): ($v, $v, $v, $v) =
                        ($zero(), $zero(), $zero(), $zero());
                    let mut j = 0;
                    while j < main {
                        // 4·L weights: one to four cache lines.
                        let mut l = 0;
                        while l < 4 * L {
                            prefetch(pw.wrapping_add(j + l + ahead));
                            l += LINE;
                        }
                        s0 = $fma($ld(px.add(j)), $load(pw.add(j)), s0);
                        s1 = $fma($ld(px.add(j + L)), $load(pw.add(j + L)), s1);
                        s2 = $fma($ld(px.add(j + 2 * L)), $load(pw.add(j + 2 * L)), s2);
                        s3 = $fma($ld(px.add(j + 3 * L)), $load(pw.add(j + 3 * L)), s3);
                        j += 4 * L;
                    }
                    let s = $add($add(s0, s1), $add(s2, s3));
                    let mut t: f32 = $sum(s);
                    for j in main..n {
                        t += x[j] * $widen(w[j]);
                    }
                    t
                }
            }

            /// `[x·w[0], …, x·w[3]]` over `min(x.len(), w[r].len())` for each row `r`,
            /// prefetching `ahead` bytes ahead of each row.
            #[target_feature(enable = $feat)]
            pub unsafe fn $dot4(x: &[f32], w: [&[$t]; 4], ahead: usize) -> [f32; 4] {
                // SAFETY: the caller checked the CPU features; the vector loop reads below
                // the shortest length of the five, and the tails below each row's own.
                unsafe {
                    const LINE: usize = 64 / std::mem::size_of::<$t>();
                    const L: usize = $lanes;
                    let ahead = ahead / std::mem::size_of::<$t>();
                    let n = w.iter().fold(x.len(), |n, r| n.min(r.len()));
                    let main = n / (2 * L) * (2 * L);
                    let px = x.as_ptr();
                    let p = w.map(|r| r.as_ptr());
                    let mut s: [[$v; 2]; 4] = [[$zero(); 2]; 4];
                    let mut j = 0;
                    while j < main {
                        // 2·L weights of each row: one or two cache lines.
                        let mut l = 0;
                        while l < 2 * L {
                            for p in p {
                                prefetch(p.wrapping_add(j + l + ahead));
                            }
                            l += LINE;
                        }
                        let (x0, x1) = ($ld(px.add(j)), $ld(px.add(j + L)));
                        for r in 0..4 {
                            s[r][0] = $fma(x0, $load(p[r].add(j)), s[r][0]);
                            s[r][1] = $fma(x1, $load(p[r].add(j + L)), s[r][1]);
                        }
                        j += 2 * L;
                    }
                    let mut out = [0f32; 4];
                    for r in 0..4 {
                        let mut t: f32 = $sum($add(s[r][0], s[r][1]));
                        let row = w[r];
                        for j in main..x.len().min(row.len()) {
                            t += x[j] * $widen(row[j]);
                        }
                        out[r] = t;
                    }
                    out
                }
            }

            /// `$dot4` for two rows of `x`, the weights loaded once for both: the vector
            /// loop runs over the shortest of the six operands, then each output's tail to
            /// the shorter of its two; for rows of one length, `$dot4`'s operations per
            /// output, so its bits.
            #[target_feature(enable = $feat)]
            pub unsafe fn $dot4x2(x: [&[f32]; 2], w: [&[$t]; 4], ahead: usize) -> [[f32; 4]; 2] {
                // SAFETY: the caller checked the CPU features; the vector loop reads below
                // the shortest length of the six, and the tails below each pair's own.
                unsafe {
                    const LINE: usize = 64 / std::mem::size_of::<$t>();
                    const L: usize = $lanes;
                    let ahead = ahead / std::mem::size_of::<$t>();
                    let n = w
                        .iter()
                        .fold(x[0].len().min(x[1].len()), |n, r| n.min(r.len()));
                    let main = n / (2 * L) * (2 * L);
                    let px = x.map(|x| x.as_ptr());
                    let p = w.map(|r| r.as_ptr());
                    let mut s: [[[$v; 2]; 4]; 2] = [[[$zero(); 2]; 4]; 2];
                    let mut j = 0;
                    while j < main {
                        if ahead > 0 {
                            let mut l = 0;
                            while l < 2 * L {
                                for p in p {
                                    prefetch(p.wrapping_add(j + l + ahead));
                                }
                                l += LINE;
                            }
                        }
                        let e: [[$v; 2]; 4] = [
                            [$load(p[0].add(j)), $load(p[0].add(j + L))],
                            [$load(p[1].add(j)), $load(p[1].add(j + L))],
                            [$load(p[2].add(j)), $load(p[2].add(j + L))],
                            [$load(p[3].add(j)), $load(p[3].add(j + L))],
                        ];
                        for q in 0..2 {
                            let (x0, x1) = ($ld(px[q].add(j)), $ld(px[q].add(j + L)));
                            for r in 0..4 {
                                s[q][r][0] = $fma(x0, e[r][0], s[q][r][0]);
                                s[q][r][1] = $fma(x1, e[r][1], s[q][r][1]);
                            }
                        }
                        j += 2 * L;
                    }
                    let mut out = [[0f32; 4]; 2];
                    for q in 0..2 {
                        for r in 0..4 {
                            let mut t: f32 = $sum($add(s[q][r][0], s[q][r][1]));
                            let row = w[r];
                            for j in main..x[q].len().min(row.len()) {
                                t += x[q][j] * $widen(row[j]);
                            }
                            out[q][r] = t;
                        }
                    }
                    out
                }
            }
        };
    }

    /// The sum of an AVX register's 8 lanes, as a tree of halves (4 + 4, 2 + 2, 1 + 1) in
    /// registers: a few shuffles and adds, where summing the stored lanes one after another
    /// was a chain of 8 (16) dependent adds per output of the LM head (768 multiply-adds at
    /// 124M). With the two-row head: 16 streams' mean inter-token latency in `gpt2 serve`
    /// 96 → 90 ms (f32, Intel Xeon family 6 model 106; the two-row head alone was level,
    /// and on top of these sums it is worth 93 → 83 ms).
    #[inline(always)]
    unsafe fn sum8(s: __m256) -> f32 {
        // SAFETY: register operations only (AVX, which the callers' features include).
        unsafe {
            let q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
            _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
        }
    }

    /// The sum of an AVX-512 register's 16 lanes, as a tree of halves (see [`sum8`]).
    #[inline(always)]
    unsafe fn sum16(s: __m512) -> f32 {
        // SAFETY: register operations only (AVX-512 F, which the callers' features include).
        unsafe {
            let lo = _mm512_castps512_ps256(s);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s)));
            sum8(_mm256_add_ps(lo, hi))
        }
    }

    /// The kernels of one weight type with 8-lane AVX2 registers.
    macro_rules! avx2_kernels {
        ($axpy:ident, $dot:ident, $dot4:ident, $dot4x2:ident, $t:ty, $load:ident, $widen:expr) => {
            kernels!(
                $axpy,
                $dot,
                $dot4,
                $dot4x2,
                $t,
                $load,
                "avx2,fma,f16c",
                $widen,
                __m256,
                8,
                _mm256_set1_ps,
                _mm256_loadu_ps,
                _mm256_storeu_ps,
                _mm256_fmadd_ps,
                _mm256_setzero_ps,
                _mm256_add_ps,
                |s| sum8(s)
            );
        };
    }

    /// The kernels of one weight type with 16-lane AVX-512 registers.
    macro_rules! avx512_kernels {
        ($axpy:ident, $dot:ident, $dot4:ident, $dot4x2:ident, $t:ty, $load:ident, $widen:expr) => {
            kernels!(
                $axpy,
                $dot,
                $dot4,
                $dot4x2,
                $t,
                $load,
                "avx512f,avx2,fma,f16c",
                $widen,
                __m512,
                16,
                _mm512_set1_ps,
                _mm512_loadu_ps,
                _mm512_storeu_ps,
                _mm512_fmadd_ps,
                _mm512_setzero_ps,
                _mm512_add_ps,
                |s| sum16(s)
            );
        };
    }

    avx2_kernels!(
        axpy8_f32,
        dot8_f32,
        dot4x8_f32,
        dot4x2x8_f32,
        f32,
        _mm256_loadu_ps,
        |w: f32| w
    );
    avx2_kernels!(
        axpy8_f16,
        dot8_f16,
        dot4x8_f16,
        dot4x2x8_f16,
        f16,
        load8_f16,
        |w: f16| w.to_f32()
    );
    avx512_kernels!(
        axpy16_f32,
        dot16_f32,
        dot4x16_f32,
        dot4x2x16_f32,
        f32,
        _mm512_loadu_ps,
        |w: f32| w
    );
    avx512_kernels!(
        axpy16_f16,
        dot16_f16,
        dot4x16_f16,
        dot4x2x16_f16,
        f16,
        load16_f16,
        |w: f16| w.to_f32()
    );

    /// The features found, read once: 1 = AVX2 + FMA + F16C, 2 = AVX-512 F on top of those
    /// (checked at every kernel call, so kept to one load).
    fn level() -> u8 {
        use std::sync::atomic::{AtomicU8, Ordering};
        static LEVEL: AtomicU8 = AtomicU8::new(u8::MAX);
        let l = LEVEL.load(Ordering::Relaxed);
        if l != u8::MAX {
            return l;
        }
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let l = match (avx2, is_x86_feature_detected!("avx512f")) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        LEVEL.store(l, Ordering::Relaxed);
        l
    }

    /// `dst[i] = src[i]` as f32 for `i` below the shorter length, `$lanes` values per
    /// instruction with `$load` and `$store`.
    macro_rules! widen {
        ($name:ident, $feat:literal, $lanes:literal, $load:ident, $store:ident) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(src: &[f16], dst: &mut [f32]) {
                let n = src.len().min(dst.len());
                let main = n / $lanes * $lanes;
                // SAFETY: the caller checked the features; every index is below `n`.
                unsafe {
                    for j in (0..main).step_by($lanes) {
                        $store(dst.as_mut_ptr().add(j), $load(src.as_ptr().add(j)));
                    }
                }
                for (d, s) in dst[main..n].iter_mut().zip(&src[main..n]) {
                    *d = s.to_f32();
                }
            }
        };
    }

    widen!(widen_avx2, "avx2,fma,f16c", 8, load8_f16, _mm256_storeu_ps);
    widen!(
        widen_avx512,
        "avx2,fma,f16c,avx512f",
        16,
        load16_f16,
        _mm512_storeu_ps
    );

    /// AVX2 + FMA + F16C (the 8-lane kernels).
    #[inline]
    pub fn has_avx2() -> bool {
        level() >= 1
    }

    /// AVX-512 F on top of those (the 16-lane kernels).
    #[inline]
    pub fn has_avx512() -> bool {
        level() >= 2
    }
}

/// Runs the widest kernel of the three that `isa` allows and the CPU has: `$wide`
/// (AVX-512), `$narrow` (AVX2), else `$portable`.
macro_rules! pick {
    ($isa:expr, $wide:expr, $narrow:expr, $portable:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if $isa >= Isa::Avx512 && x86::has_avx512() {
                // SAFETY: the kernel's features were detected just above, and it reads only
                // within the slices' lengths (`axpy` after `check_axpy`; `dot` and `dot4`
                // within each operand).
                return unsafe { $wide };
            }
            if $isa >= Isa::Avx2 && x86::has_avx2() {
                // SAFETY: as above.
                return unsafe { $narrow };
            }
        }
        let _ = $isa;
        $portable
    }};
}

/// The kernels of one weight type, per [`Isa`]. A variant the CPU does not run falls back to
/// the next one it does (so no call can reach an instruction the CPU lacks).
macro_rules! weight_impl {
    ($t:ty, $axpy8:ident, $dot8:ident, $dot4x8:ident, $dot4x2x8:ident, $axpy16:ident,
     $dot16:ident, $dot4x16:ident, $dot4x2x16:ident, $widen:expr) => {
        impl Weight for $t {
            fn axpy_with(isa: Isa, acc: &mut [f32], a: &[f32], w: &[&[$t]]) {
                check_axpy(acc, a, w);
                pick!(
                    isa,
                    x86::$axpy16(acc, a, w, prefetch_distance()),
                    x86::$axpy8(acc, a, w, prefetch_distance()),
                    axpy_portable(acc, a, w, $widen)
                )
            }

            fn dot_with(isa: Isa, x: &[f32], w: &[$t]) -> f32 {
                pick!(
                    isa,
                    x86::$dot16(x, w, prefetch_distance()),
                    x86::$dot8(x, w, prefetch_distance()),
                    dot_portable(x, w, $widen)
                )
            }

            fn dot4_with(isa: Isa, x: &[f32], w: [&[$t]; 4]) -> [f32; 4] {
                pick!(
                    isa,
                    x86::$dot4x16(x, w, prefetch_distance()),
                    x86::$dot4x8(x, w, prefetch_distance()),
                    w.map(|w| dot_portable(x, w, $widen))
                )
            }

            fn dot4x2_with(
                isa: Isa,
                x: [&[f32]; 2],
                w: [&[$t]; 4],
                prefetch: bool,
            ) -> [[f32; 4]; 2] {
                let ahead = if prefetch { prefetch_distance() } else { 0 };
                pick!(
                    isa,
                    x86::$dot4x2x16(x, w, ahead),
                    x86::$dot4x2x8(x, w, ahead),
                    x.map(|x| w.map(|w| dot_portable(x, w, $widen)))
                )
            }
        }
    };
}

weight_impl!(
    f32,
    axpy8_f32,
    dot8_f32,
    dot4x8_f32,
    dot4x2x8_f32,
    axpy16_f32,
    dot16_f32,
    dot4x16_f32,
    dot4x2x16_f32,
    |w: f32| w
);
weight_impl!(
    f16,
    axpy8_f16,
    dot8_f16,
    dot4x8_f16,
    dot4x2x8_f16,
    axpy16_f16,
    dot16_f16,
    dot4x16_f16,
    dot4x2x16_f16,
    f16::to_f32
);

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

/// `x` `[m, k]` (row-major) · `w` `[k, n]` (row-major) → `[m, n]` row-major f32: one row
/// as a weight stream, several with [`tile::x_w`](super::tile::x_w).
///
/// # Panics
/// If `x.len() != m·k` or `w.len() != k·n` (the callers pass tensors' own shapes).
pub fn x_w<W: Weight>(x: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f32> {
    assert_eq!(Some(x.len()), m.checked_mul(k), "x is not [m, k]");
    assert_eq!(Some(w.len()), k.checked_mul(n), "w is not [k, n]");
    if m == 1 {
        return x_w_one_row(x, k, w, n);
    }
    super::tile::x_w(x, m, k, w, n)
}

/// [`x_w`] for one row: each task takes a band of whole rows of `w` (one contiguous
/// stretch of memory, which the hardware prefetchers follow better than the column blocks'
/// short segments: ~10% more bandwidth for f16 here) and the bands' partial sums are added.
/// A band is read as eight sequential streams, one per eighth of it: against eight adjacent
/// rows at a time, 124M decode went from 80 to 94 tok/s in f16 and from 49 to 54 in f32
/// (Intel Xeon with AMX, 2 vCPUs, interleaved medians).
/// There are about eight bands per thread, handed out as the threads come free, so that a
/// thread slowed down (by another guest on a shared host) does not hold the others up: with
/// one band per thread the caller spent ~6% of a 2-thread f16 decode waiting for its helper
/// at the ends of products, with four ~3%, with sixteen ~2% (perf).
fn x_w_one_row<W: Weight>(x: &[f32], k: usize, w: &[W], n: usize) -> Vec<f32> {
    let threads = rayon::current_num_threads().max(1);
    let bands = if threads == 1 { 1 } else { 8 * threads };
    let band = (k.div_ceil(bands).div_ceil(8) * 8).max(8);
    // One partial sum per band, `[bands, n]`.
    let mut partial = vec![0f32; k.div_ceil(band) * n];
    super::team::for_each_chunk_mut(&mut partial, n, |b, acc| {
        let (i0, i1) = (b * band, ((b + 1) * band).min(k));
        // Eight rows at a time, one from each eighth of the band: eight sequential streams
        // through the band (rows one after the other would be eight streams of one row
        // each, a few KiB, which the hardware prefetchers barely start on before they end).
        let eighth = (i1 - i0).div_ceil(8);
        for s in 0..eighth {
            let mut rows: [&[W]; 8] = [&w[..0]; 8];
            let mut a = [0f32; 8];
            let mut t = 0;
            for d in 0..8 {
                let r = i0 + d * eighth + s;
                if r < i1 {
                    rows[t] = &w[r * n..(r + 1) * n];
                    a[t] = x[r];
                    t += 1;
                }
            }
            W::axpy(acc, &a[..t], &rows[..t]);
        }
    });
    let mut bands = partial.chunks(n.max(1));
    let mut out = bands.next().map_or_else(|| vec![0f32; n], <[f32]>::to_vec);
    // The other bands added four at a time, with the same vector kernel.
    let rest: Vec<&[f32]> = bands.collect();
    for group in rest.chunks(4) {
        f32::axpy(&mut out, &[1.0; 4][..group.len()], group);
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
            // Four rows at a time, one from each quarter of the chunk: four sequential
            // streams in flight per thread instead of one (measured ~1.5x the bandwidth
            // here), and each value of `x` loaded once for the four. The last pass clamps to
            // the chunk's last row, which is then computed twice, to the same value.
            let quarter = len.div_ceil(4);
            for j in 0..quarter {
                let jj: [usize; 4] = std::array::from_fn(|part| (part * quarter + j).min(len - 1));
                let y = W::dot4(x, jj.map(|jj| &e[(v0 + jj) * k..(v0 + jj + 1) * k]));
                for (jj, y) in jj.into_iter().zip(y) {
                    acc[jj] = y;
                }
            }
            return;
        }
        // Several rows: each weight row once, for every activation row, four weight rows at
        // a time and two activation rows per load of them, with the same operations per
        // output as the one-row kernel (each output's sum is then the same, bit for bit, as
        // the one-row product's: a sequence decoded in a batch gets the logits it gets
        // alone). Only the first pair prefetches; the rest find the four rows in cache.
        let isa = Isa::selected();
        let row = |r: usize| &x[r * k..(r + 1) * k];
        for j in (0..len).step_by(4) {
            let jj: [usize; 4] = std::array::from_fn(|d| (j + d).min(len - 1));
            let rows = jj.map(|jj| &e[(v0 + jj) * k..(v0 + jj + 1) * k]);
            for r in (0..m - 1).step_by(2) {
                let y = W::dot4x2_with(isa, [row(r), row(r + 1)], rows, r == 0);
                for (q, y) in y.into_iter().enumerate() {
                    for (&jj, y) in jj.iter().zip(y) {
                        acc[(r + q) * len + jj] = y;
                    }
                }
            }
            if m % 2 == 1 {
                let y = W::dot4_with(isa, row(m - 1), rows);
                for (jj, y) in jj.into_iter().zip(y) {
                    acc[(m - 1) * len + jj] = y;
                }
            }
        }
    })
}

/// `dst[i] = src[i]` widened to f32, for `i` below the shorter length, with the widest
/// conversion of [`Isa::selected`] (16 or 8 halves per instruction; a value at a time on
/// other CPUs). Exact: every f16 is an f32.
///
/// ```
/// # #[cfg(feature = "unstable-kernels")] {
/// use gpt2_model::cpu::gemv::widen_f16;
/// let src: Vec<half::f16> = (0..19).map(|i| half::f16::from_f32(i as f32 * 0.5)).collect();
/// let mut dst = vec![0f32; 19];
/// widen_f16(&src, &mut dst);
/// assert_eq!(dst[18], 9.0);
/// # }
/// ```
pub fn widen_f16(src: &[f16], dst: &mut [f32]) {
    widen_f16_with(Isa::selected(), src, dst)
}

/// [`widen_f16`] with the conversion of `isa`, or of the best variant below it that this CPU
/// runs.
fn widen_f16_with(isa: Isa, src: &[f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa >= Isa::Avx512 && x86::has_avx512() {
            // SAFETY: the CPU has AVX-512 F (and the AVX2 set), checked just above.
            return unsafe { x86::widen_avx512(src, dst) };
        }
        if isa >= Isa::Avx2 && x86::has_avx2() {
            // SAFETY: the CPU has AVX2, FMA and F16C, checked just above.
            return unsafe { x86::widen_avx2(src, dst) };
        }
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
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
/// dtype (f32 activations with f16 weights give f32), with `bias` (`[n]`) added to every
/// row when given (see [`output`]).
pub fn matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    with_weight_values(w, |w, kind, k, n| matmul_slice(x, w, kind, k, n, bias))
}

/// `f(values, layout, k, n)` on the values of `w` `[k, n]`, read in place, when it is a CPU
/// f32/f16 tensor stored row-major ([`Layout::RowMajor`]) or as the transpose of a row-major
/// `[n, k]` one ([`Layout::Transposed`], e.g. `wteᵀ`); `None` for any other tensor.
pub fn with_weight_values<T>(
    w: &Tensor,
    f: impl FnOnce(Slice<'_>, Layout, usize, usize) -> Result<Option<T>>,
) -> Result<Option<T>> {
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
    f(w, kind, k, n)
}

/// `f` on `x`'s values as f32, row-major: its own storage when `x` is a contiguous f32 CPU
/// tensor (a prefill's activations are megabytes, copied once per product otherwise), else a
/// converted copy.
pub fn with_f32_values<T>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    if x.dtype() == DType::F32 && x.is_contiguous() {
        let (storage, layout) = x.storage_and_layout();
        if let Storage::Cpu(CpuStorage::F32(v)) = &*storage {
            let start = layout.start_offset();
            if let Some(xs) = v.get(start..start + x.elem_count()) {
                return f(xs);
            }
        }
    }
    let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    f(&xs)
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
    bias: Option<&Tensor>,
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
    let out = with_f32_values(x, |xs| {
        Ok(match w {
            Slice::F32(w) => run(layout, xs, m, k, w, n),
            Slice::F16(w) => run(layout, xs, m, k, w, n),
        })
    })?;
    Ok(Some(output(out, (m, n), x.dtype(), x.device(), bias)?))
}

/// The f32 values of a product, `[m, n]` row-major, as a tensor of `dtype` on `device`, plus
/// `bias` (`[n]`) on every row. An f32 CPU bias outside any gradient graph is added to the
/// values before they become a tensor (one pass over them, where a tensor op would allocate
/// and dispatch: 48 of them per decode step at 124M); any other goes through candle's
/// broadcast add. The sums are the same either way: `(x · W) + b` in f32.
pub fn output(
    mut out: Vec<f32>,
    (m, n): (usize, usize),
    dtype: DType,
    device: &candle_core::Device,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let added = match bias {
        Some(b) if dtype == DType::F32 => add_rows(&mut out, n, b),
        _ => false,
    };
    let y = Tensor::from_vec(out, (m, n), device)?;
    let y = if dtype == DType::F32 {
        y
    } else {
        y.to_dtype(dtype)?
    };
    match bias {
        Some(_) if added => Ok(y),
        _ => add_bias(y, bias),
    }
}

/// `y + bias` (broadcast over the rows) with candle's ops; `y` itself without a bias.
pub fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// `out[r·n + j] += b[j]` for a contiguous f32 CPU vector `b` of `n` values that records no
/// backward op; `false` (and `out` untouched) for any other.
fn add_rows(out: &mut [f32], n: usize, b: &Tensor) -> bool {
    if b.dims() != [n] || b.track_op() || !out.len().is_multiple_of(n.max(1)) {
        return false;
    }
    let (storage, layout) = b.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(v)) = &*storage else {
        return false;
    };
    let start = layout.start_offset();
    let Some(b) = v.get(start..start + n).filter(|_| layout.is_contiguous()) else {
        return false;
    };
    for row in out.chunks_mut(n.max(1)) {
        for (o, b) in row.iter_mut().zip(b) {
            *o += b;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{naive, values};
    use std::panic::catch_unwind;

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
        // Rows shorter than the output, too few coefficients, more than eight rows.
        for (a, rows) in [
            (vec![1f32], vec![&short[..]]),
            (vec![], vec![&x[..]]),
            (vec![1f32; 9], vec![&x[..]; 9]),
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
    fn every_widening_variant_gives_the_exact_values() {
        // Every f16 bit pattern, NaNs included (compared as bits), at an odd length and
        // offset so that the vector loops leave a remainder.
        let src: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for isa in Isa::available() {
            for (start, len) in [(0, src.len()), (3, 37), (1, 0)] {
                let s = &src[start..start + len];
                let mut dst = vec![0f32; len + 5];
                widen_f16_with(isa, s, &mut dst);
                for (h, d) in s.iter().zip(&dst) {
                    assert_eq!(h.to_f32().to_bits(), d.to_bits(), "{isa:?} {h:?}");
                }
                // Nothing written past the shorter length.
                assert!(dst[len..].iter().all(|&v| v == 0.0), "{isa:?}");
            }
        }
    }

    #[test]
    fn every_kernel_variant_this_cpu_runs_gives_the_same_sums() {
        let isas = Isa::available();
        assert_eq!(isas[0], Isa::Portable);
        assert!(isas.contains(&Isa::selected()));
        // Lengths with every kind of tail (not a multiple of 8, 16 or 64), and the model's.
        for n in (1..=70).chain([127, 768, 1000, 3072]) {
            let x = values(n, 7);
            let w = values(8 * n, 8);
            let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let want32 = f32::dot_with(Isa::Portable, &x, &w[..n]);
            let want16 = f16::dot_with(Isa::Portable, &x, &w16[..n]);
            let rows32: Vec<&[f32]> = w.chunks(n).collect();
            let rows16: Vec<&[f16]> = w16.chunks(n).collect();
            for &isa in &isas {
                // f32 rounding of sums in different orders, relative to their size.
                let near = |got: f32, want: f32| {
                    (got - want).abs() <= 1e-5 * (n as f32).sqrt() * (1.0 + want.abs())
                };
                let got = f32::dot_with(isa, &x, &w[..n]);
                assert!(
                    near(got, want32),
                    "{isa:?} f32 dot n={n}: {got} vs {want32}"
                );
                let got = f16::dot_with(isa, &x, &w16[..n]);
                assert!(
                    near(got, want16),
                    "{isa:?} f16 dot n={n}: {got} vs {want16}"
                );
                // Four rows at once, one of them shorter than `x`.
                let short = n - n / 3;
                let r32: [&[f32]; 4] = [rows32[0], &rows32[1][..short], rows32[2], rows32[3]];
                let r16: [&[f16]; 4] = [rows16[0], &rows16[1][..short], rows16[2], rows16[3]];
                let (got32, got16) = (f32::dot4_with(isa, &x, r32), f16::dot4_with(isa, &x, r16));
                for r in 0..4 {
                    let want = f32::dot_with(Isa::Portable, &x, r32[r]);
                    assert!(
                        near(got32[r], want),
                        "{isa:?} f32 dot4 n={n} row {r}: {} vs {want}",
                        got32[r]
                    );
                    let want = f16::dot_with(Isa::Portable, &x, r16[r]);
                    assert!(
                        near(got16[r], want),
                        "{isa:?} f16 dot4 n={n} row {r}: {} vs {want}",
                        got16[r]
                    );
                }
                // Two activation rows at once: dot4's bits for each.
                let x2 = values(n, 10);
                let pair32 = f32::dot4x2_with(isa, [&x, &x2], r32, true);
                let pair16 = f16::dot4x2_with(isa, [&x2, &x], r16, false);
                assert_eq!(
                    pair32,
                    [got32, f32::dot4_with(isa, &x2, r32)],
                    "{isa:?} n={n}"
                );
                assert_eq!(
                    pair16,
                    [f16::dot4_with(isa, &x2, r16), got16],
                    "{isa:?} n={n}"
                );
                for t in 1..=8 {
                    let a = &x[..t.min(n)];
                    if a.len() < t {
                        continue;
                    }
                    let base = values(n, 9);
                    let (mut want, mut got) = (base.clone(), base.clone());
                    f32::axpy_with(Isa::Portable, &mut want, a, &rows32[..t]);
                    f32::axpy_with(isa, &mut got, a, &rows32[..t]);
                    close(&got, &want, 1e-5);
                    let (mut want, mut got) = (base.clone(), base);
                    f16::axpy_with(Isa::Portable, &mut want, a, &rows16[..t]);
                    f16::axpy_with(isa, &mut got, a, &rows16[..t]);
                    close(&got, &want, 1e-5);
                }
            }
        }
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
