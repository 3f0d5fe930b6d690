//! `x` `[m, k]` · `W` `[k, n]` for several activation rows (a batched decode step, a prompt
//! chunk, a short prefill) with register tiles.
//!
//! One row is a weight stream ([`gemv`](super::gemv)'s one-row kernel); with more rows
//! each weight read from memory can serve every row, and the product becomes a matter of
//! arithmetic. The multi-row `axpy` path did that arithmetic through memory (each output row
//! loaded and stored again for every four weight rows) and ran at ~35 GFLOP/s on two cores.
//! Here a tile of up to [`TILE_ROWS`] output rows × one strip of columns stays in vector
//! registers while `i` runs over a block of [`K_BLOCK`] rows of `W`:
//!
//! ```text
//! for each block of K_BLOCK rows of W (the strip's rows stay in L1 for every row tile)
//!   for each strip of columns (4 vectors: 64 f32 lanes with AVX-512, 2 with AVX2)
//!     for each tile of up to TILE_ROWS rows of x
//!       acc[r, strip] += Σ_i x[r, i] · W[i, strip]        (registers, one FMA per lane)
//! ```
//!
//! Each output is summed over `i` in increasing order, one fused multiply-add at a time,
//! whatever `m` and whichever tile holds the row: a row's result does not depend on the other
//! rows in the batch. Column blocks of the output are shared out over the decode team.
//! Variants per [`Isa`] as for the other kernels (AVX-512 F, AVX2 + FMA + F16C, portable),
//! chosen at run time; f16 weights are widened in registers.

use half::f16;

use super::gemv::{by_column_blocks, prefetch_distance, Isa};

/// The most activation rows one tile holds in registers (with AVX-512, 6 rows × 4 vectors
/// = 24 accumulators of the 32 registers; with AVX2, 6 × 2 = 12 of 16).
pub const TILE_ROWS: usize = 6;

/// Rows of `W` per pass over a strip: 128 rows of a 64-lane f32 strip are 32 KiB, which
/// stay in L1 while every row tile reads them (64 and 256 measured alike, within the noise).
pub const K_BLOCK: usize = 128;

/// A weight element the tile kernels read: `f32` or `f16`.
pub trait TileWeight: Copy + Send + Sync + 'static {
    /// `acc[r·lda + j] += Σ_{i < kk} x[r·ldx + i] · w[i·ldw + j]` for `r < rows`,
    /// `j < cols`, with the kernels of `isa` (or the best variant below it this CPU runs);
    /// the sum over `i` in increasing order. `prefetch`: also ask for the strip's rows
    /// `prefetch_distance()` bytes' worth of rows ahead, and at least 8 rows (the first row
    /// tile of a strip; the distance is not tuned).
    ///
    /// # Panics
    /// When a slice is too short for the shapes given, `rows > TILE_ROWS`, or `cols` is more
    /// than a strip ([`strip`]).
    #[allow(clippy::too_many_arguments)]
    fn tile_with(
        isa: Isa,
        x: &[f32],
        ldx: usize,
        w: &[Self],
        ldw: usize,
        kk: usize,
        acc: &mut [f32],
        lda: usize,
        rows: usize,
        cols: usize,
        prefetch: bool,
    );
}

/// Vector lanes of `isa`'s kernels (1 for the portable loop).
fn lanes(isa: Isa) -> usize {
    match effective(isa) {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Portable => 1,
    }
}

/// Columns in one strip of `isa`'s tile: 4 AVX-512 vectors, 2 AVX2 vectors, or 16.
pub fn strip(isa: Isa) -> usize {
    match effective(isa) {
        Isa::Avx512 => 64,
        Isa::Avx2 => 16,
        Isa::Portable => 16,
    }
}

/// `isa`, or the best variant below it that this CPU runs.
fn effective(isa: Isa) -> Isa {
    [Isa::Avx512, Isa::Avx2]
        .into_iter()
        .find(|&a| a <= isa && a.is_supported())
        .unwrap_or(Isa::Portable)
}

/// `x` `[m, k]` · `w` `[k, n]` (both row-major) → `[m, n]` row-major f32, with the tiles of
/// [`Isa::selected`].
///
/// ```
/// # #[cfg(feature = "unstable-kernels")] {
/// use gpt2_model::cpu::tile::x_w;
/// // [2, 3] · [3, 2]
/// let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let w = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
/// assert_eq!(x_w(&x, 2, 3, &w, 2), [4.0, 5.0, 10.0, 11.0]);
/// # }
/// ```
///
/// # Panics
/// If `x.len() != m·k` or `w.len() != k·n`.
pub fn x_w<W: TileWeight>(x: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f32> {
    x_w_with(Isa::selected(), x, m, k, w, n)
}

/// [`x_w`] with the tiles of `isa` (or of the best variant below it that this CPU runs).
///
/// # Panics
/// As [`x_w`].
pub fn x_w_with<W: TileWeight>(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
) -> Vec<f32> {
    assert_eq!(Some(x.len()), m.checked_mul(k), "x is not [m, k]");
    assert_eq!(Some(w.len()), k.checked_mul(n), "w is not [k, n]");
    let isa = effective(isa);
    let strip = strip(isa);
    // About two column blocks per thread, whole strips each: the team hands them out as
    // threads come free.
    let threads = rayon::current_num_threads().max(1);
    let strips = n.div_ceil(strip);
    let block = strips.div_ceil(2 * threads).max(1) * strip;
    by_column_blocks(m, n, block, |c0, acc| {
        let len = acc.len() / m.max(1);
        for kb in (0..k).step_by(K_BLOCK) {
            let kk = (k - kb).min(K_BLOCK);
            for j in (0..len).step_by(strip) {
                let cols = (len - j).min(strip);
                for r in (0..m).step_by(TILE_ROWS) {
                    let rows = (m - r).min(TILE_ROWS);
                    W::tile_with(
                        isa,
                        &x[r * k + kb..],
                        k,
                        &w[kb * n + c0 + j..],
                        n,
                        kk,
                        &mut acc[r * len + j..],
                        len,
                        rows,
                        cols,
                        r == 0,
                    );
                }
            }
        }
    })
}

/// Checks that the slices hold what a `rows × cols` tile over `kk` rows of `w` reads and
/// writes (before any unsafe code runs).
#[allow(clippy::too_many_arguments)]
fn check_tile(
    x: usize,
    ldx: usize,
    w: usize,
    ldw: usize,
    kk: usize,
    acc: usize,
    lda: usize,
    rows: usize,
    cols: usize,
    strip: usize,
) {
    let need = |ld: usize, lines: usize, width: usize| {
        lines.checked_sub(1).map_or(Some(0), |l| {
            l.checked_mul(ld).and_then(|v| v.checked_add(width))
        })
    };
    let ok = rows <= TILE_ROWS
        && cols <= strip
        && need(ldx, rows, kk).is_some_and(|v| v <= x)
        && need(ldw, kk, cols).is_some_and(|v| v <= w)
        && need(lda, rows, cols).is_some_and(|v| v <= acc);
    assert!(
        ok,
        "tile: {rows}×{cols} over {kk} rows (x {x} values, stride {ldx}; w {w}, stride {ldw}; \
         acc {acc}, stride {lda}; at most {TILE_ROWS} rows and {strip} columns)"
    );
}

/// The portable tile: the same sums, a value at a time.
#[allow(clippy::too_many_arguments)]
fn tile_portable<W: Copy>(
    x: &[f32],
    ldx: usize,
    w: &[W],
    ldw: usize,
    kk: usize,
    acc: &mut [f32],
    lda: usize,
    rows: usize,
    cols: usize,
    f: impl Fn(W) -> f32,
) {
    for r in 0..rows {
        for j in 0..cols {
            let mut s = acc[r * lda + j];
            for i in 0..kk {
                s += x[r * ldx + i] * f(w[i * ldw + j]);
            }
            acc[r * lda + j] = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 and AVX2 tiles. Callers check the CPU features and the slice lengths.
    use crate::cpu::gemv::x86::{load16_f16, load8_f16};
    use half::f16;
    use std::arch::x86_64::*;

    /// One tile kernel: `R` rows × `V` vectors of `$lanes` lanes, `acc += x · w` over `kk`
    /// rows of `w`; `ahead` rows ahead of each row of `w` read, its cache lines are asked for
    /// (0: none).
    macro_rules! tile {
        ($name:ident, $t:ty, $feat:literal, $v:ty, $lanes:literal, $load:ident, $ld:ident,
         $st:ident, $set1:ident, $fma:ident, $zero:ident) => {
            #[target_feature(enable = $feat)]
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name<const R: usize, const V: usize>(
                x: *const f32,
                ldx: usize,
                w: *const $t,
                ldw: usize,
                kk: usize,
                acc: *mut f32,
                lda: usize,
                ahead: usize,
            ) {
                // SAFETY: the caller checked the features and that `x` holds R rows of
                // `kk` values (stride `ldx`), `w` kk rows of V·lanes values (stride `ldw`)
                // and `acc` R rows of V·lanes values (stride `lda`); prefetches never fault.
                unsafe {
                    const LINE: usize = 64 / std::mem::size_of::<$t>();
                    let mut s = [[$zero(); V]; R];
                    for r in 0..R {
                        for v in 0..V {
                            s[r][v] = $ld(acc.add(r * lda + v * $lanes));
                        }
                    }
                    for i in 0..kk {
                        let wp = w.add(i * ldw);
                        if ahead > 0 {
                            let mut l = 0;
                            while l < V * $lanes {
                                _mm_prefetch::<_MM_HINT_T0>(
                                    wp.wrapping_add(ahead * ldw + l) as *const i8
                                );
                                l += LINE;
                            }
                        }
                        let mut wv = [$zero(); V];
                        for v in 0..V {
                            wv[v] = $load(wp.add(v * $lanes));
                        }
                        for r in 0..R {
                            let b = $set1(*x.add(r * ldx + i));
                            for v in 0..V {
                                s[r][v] = $fma(b, wv[v], s[r][v]);
                            }
                        }
                    }
                    for r in 0..R {
                        for v in 0..V {
                            $st(acc.add(r * lda + v * $lanes), s[r][v]);
                        }
                    }
                }
            }
        };
    }

    tile!(
        tile16_f32,
        f32,
        "avx512f,avx2,fma,f16c",
        __m512,
        16,
        _mm512_loadu_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_setzero_ps
    );
    tile!(
        tile16_f16,
        f16,
        "avx512f,avx2,fma,f16c",
        __m512,
        16,
        load16_f16,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_setzero_ps
    );
    tile!(
        tile8_f32,
        f32,
        "avx2,fma,f16c",
        __m256,
        8,
        _mm256_loadu_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_setzero_ps
    );
    tile!(
        tile8_f16,
        f16,
        "avx2,fma,f16c",
        __m256,
        8,
        load8_f16,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_setzero_ps
    );
}

/// Runs `x86::$kernel::<R, V>` for the run-time `rows` (1..=6) and `vecs` (1..=4; a strip
/// is at most 4 vectors, and `check_tile` holds `cols` to a strip).
#[cfg(target_arch = "x86_64")]
macro_rules! by_shape {
    ($kernel:ident, $rows:expr, $vecs:expr, ($($arg:expr),*)) => {{
        macro_rules! v {
            ($r:literal) => {
                match $vecs {
                    1 => x86::$kernel::<$r, 1>($($arg),*),
                    2 => x86::$kernel::<$r, 2>($($arg),*),
                    3 => x86::$kernel::<$r, 3>($($arg),*),
                    4 => x86::$kernel::<$r, 4>($($arg),*),
                    _ => {}
                }
            };
        }
        match $rows {
            1 => v!(1),
            2 => v!(2),
            3 => v!(3),
            4 => v!(4),
            5 => v!(5),
            6 => v!(6),
            _ => {}
        }
    }};
}

/// The tile kernels of one weight type, per [`Isa`].
macro_rules! tile_impl {
    ($t:ty, $wide:ident, $narrow:ident, $widen:expr) => {
        impl TileWeight for $t {
            fn tile_with(
                isa: Isa,
                x: &[f32],
                ldx: usize,
                w: &[$t],
                ldw: usize,
                kk: usize,
                acc: &mut [f32],
                lda: usize,
                rows: usize,
                cols: usize,
                prefetch: bool,
            ) {
                let isa = effective(isa);
                check_tile(
                    x.len(),
                    ldx,
                    w.len(),
                    ldw,
                    kk,
                    acc.len(),
                    lda,
                    rows,
                    cols,
                    strip(isa),
                );
                let lanes = lanes(isa);
                let vecs = cols / lanes;
                #[cfg(target_arch = "x86_64")]
                if vecs > 0 && isa != Isa::Portable {
                    let ahead = if prefetch {
                        prefetch_distance()
                            .div_ceil(std::mem::size_of::<$t>() * ldw.max(1))
                            .max(8)
                    } else {
                        0
                    };
                    let args = (
                        x.as_ptr(),
                        ldx,
                        w.as_ptr(),
                        ldw,
                        kk,
                        acc.as_mut_ptr(),
                        lda,
                        ahead,
                    );
                    // SAFETY: `effective` returned a variant this CPU runs, and
                    // `check_tile` checked that every value a `rows × cols` tile reads and
                    // writes lies inside the slices (`vecs · lanes ≤ cols`).
                    unsafe {
                        if isa == Isa::Avx512 {
                            by_shape!(
                                $wide,
                                rows,
                                vecs,
                                (args.0, args.1, args.2, args.3, args.4, args.5, args.6, args.7)
                            );
                        } else {
                            by_shape!(
                                $narrow,
                                rows,
                                vecs,
                                (args.0, args.1, args.2, args.3, args.4, args.5, args.6, args.7)
                            );
                        }
                    }
                    let done = vecs * lanes;
                    // The columns past the whole vectors, a value at a time.
                    tile_portable(
                        x,
                        ldx,
                        &w[done..],
                        ldw,
                        kk,
                        &mut acc[done..],
                        lda,
                        rows,
                        cols - done,
                        $widen,
                    );
                    return;
                }
                let _ = prefetch;
                tile_portable(x, ldx, w, ldw, kk, acc, lda, rows, cols, $widen);
            }
        }
    };
}

tile_impl!(f32, tile16_f32, tile8_f32, |w: f32| w);
tile_impl!(f16, tile16_f16, tile8_f16, f16::to_f32);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{naive, values};

    #[test]
    fn every_variant_matches_the_definition() {
        // Row counts around the tile height, k around the block, n with every kind of tail.
        for (m, k, n) in [
            (2, 7, 5),
            (3, 50, 130),
            (6, 129, 64),
            (7, 300, 83),
            (13, 256, 200),
            (16, 9, 33),
            (64, 64, 96),
        ] {
            let x = values(m * k, 1);
            let w = values(k * n, 2);
            let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let w16_as_f32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
            let want = naive(&x, m, k, &w, n);
            let want16 = naive(&x, m, k, &w16_as_f32, n);
            for isa in Isa::available() {
                let tol = 1e-5 * (k as f32).sqrt();
                for (got, want) in [
                    (x_w_with(isa, &x, m, k, &w, n), &want),
                    (x_w_with(isa, &x, m, k, &w16, n), &want16),
                ] {
                    for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (a - b).abs() <= tol * (1.0 + b.abs()),
                            "{isa:?} m={m} k={k} n={n} element {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_rows_result_does_not_depend_on_the_batch() {
        // Row 0 alone, and among 1..=13 others: the same bits (the same sums, in one order).
        let (k, n) = (300, 150);
        let w = values(k * n, 3);
        for isa in Isa::available() {
            let x = values(14 * k, 4);
            let alone = x_w_with(isa, &x[..2 * k], 2, k, &w, n);
            for m in 2..=14 {
                let y = x_w_with(isa, &x[..m * k], m, k, &w, n);
                assert_eq!(&y[..n], &alone[..n], "{isa:?} m={m}");
            }
        }
    }

    #[test]
    fn tiles_refuse_slices_too_short() {
        let x = vec![1f32; 64];
        let w = vec![1f32; 4096];
        let run = |rows: usize, cols: usize, kk: usize| {
            let mut acc = vec![0f32; 1024];
            let (x, w) = (x.clone(), w.clone());
            std::panic::catch_unwind(move || {
                f32::tile_with(
                    Isa::selected(),
                    &x,
                    8,
                    &w,
                    80,
                    kk,
                    &mut acc,
                    80,
                    rows,
                    cols,
                    false,
                )
            })
        };
        let strip = strip(Isa::selected());
        assert!(run(6, strip, 8).is_ok());
        assert!(run(7, 8, 8).is_err(), "more rows than a tile");
        assert!(run(6, 8, 24).is_ok());
        assert!(run(6, 8, 25).is_err(), "x too short for kk");
        assert!(run(6, strip + 1, 8).is_err(), "more columns than a strip");
    }
}
