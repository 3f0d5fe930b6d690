//! Matrix products behind [`Matrix`](super::matrix::Matrix): each picks the decode kernels
//! of [`gemv`](super::gemv) / [`q8`](super::q8) for a few rows, and a real gemm (candle's,
//! or the `gemm` crate on mapped values) for more.

use candle_core::{DType, Tensor};
use half::f16;

pub use super::gemv::Layout;
use super::gemv::{self, with_f32_values, MAX_ROWS};
use super::matrix::{Mapped, Slice};
use super::q8::{self, Q8Matrix};
use super::q8_gemm;
use super::{fast_exp, team};
use crate::error::{ModelError, Result};

/// `x` `[rows, in]` · `w` `[in, out]` (any strides, e.g. `wteᵀ`) for a tensor `w`, plus
/// `bias` `[out]` on every row when given.
///
/// Candle's CPU gemm runs a one-row product (a decode step) as a single-threaded gemv that
/// reaches well under the memory bandwidth; up to [`MAX_ROWS`] rows on the CPU go to the
/// decode kernels instead. Tensors that record a backward op (training) always take candle's
/// matmul, which is differentiable.
pub fn tensor_matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if x.track_op() || w.track_op() {
        return gemv::add_bias(x.matmul(w)?, bias);
    }
    if let Some(y) = gemv::matmul(x, w, bias)? {
        return Ok(y);
    }
    // More rows than the kernels take (a prefill) of f32 activations on the CPU: the `gemm`
    // crate on the tensor's values in place, as for mapped weights (f16 widened in panels).
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let y = gemv::with_weight_values(w, |w, layout, k, n| {
            slice_matmul(x, w, layout, k, n, bias).map(Some)
        })?;
        if let Some(y) = y {
            return Ok(y);
        }
    }
    // A gemm on rayon's threads: the decode team's helpers park meanwhile.
    team::rest();
    if x.dtype() != w.dtype() {
        return gemv::add_bias(x.matmul(&w.to_dtype(x.dtype())?)?, bias);
    }
    gemv::add_bias(x.matmul(w)?, bias)
}

/// `x` `[rows, k]` · a mapped `[k, n]` matrix (`Layout::RowMajor`) or the transpose of a
/// mapped `[n, k]` one (`Layout::Transposed`), plus `bias` `[n]` on every row when given, the
/// weights read in place: the decode kernels for a few rows,
/// the `gemm` crate (candle's CPU gemm) for more, f16 weights widened a panel at a time (see
/// [`gemm_slice`]). The result has `x`'s dtype.
pub fn mapped_matmul(
    x: &Tensor,
    w: &Mapped,
    layout: Layout,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (rows, cols) = w.dims();
    let (k, n) = match layout {
        Layout::RowMajor => (rows, cols),
        Layout::Transposed => (cols, rows),
    };
    if let Some(y) = gemv::matmul_slice(x, w.slice(), layout, k, n, bias)? {
        return Ok(y);
    }
    slice_matmul(x, w.slice(), layout, k, n, bias)
}

/// `x` `[m, k]` · `w` (`[k, n]` values, or the transpose of `[n, k]` ones) + `bias` with the
/// `gemm` crate ([`gemm_slice`]); the result has `x`'s dtype.
fn slice_matmul(
    x: &Tensor,
    w: Slice<'_>,
    layout: Layout,
    k: usize,
    n: usize,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (m, k2) = x.dims2()?;
    if k2 != k {
        return Err(ModelError::BadInput {
            expected: format!("activations with {k} columns"),
            found: format!("shape {:?}", x.dims()),
        });
    }
    let y = with_f32_values(x, |xs| gemm_slice(xs, m, k, w, layout, n))?;
    gemv::output(y, (m, n), x.dtype(), x.device(), bias)
}

/// About the most f32 values in one panel of [`gemm_slice`]'s f16 and [`q8_matmul`]'s paths
/// (16 MiB): every matrix of the 124M and 355M shapes in one panel, one gemm call each (the
/// gemm packs the activations again at every call: panels of 512 columns made a 124M q8_0
/// prefill ~5% slower, f16 ~1%), while the temporary stays bounded at the larger shapes (1558M's `c_fc` is 41 MB of
/// f32, three panels).
const PANEL_VALUES: usize = 4 << 20;

/// `x` `[m, k]` · `w` → `[m, n]` with the `gemm` crate on borrowed values: `w` is `[k, n]`
/// row-major (`Layout::RowMajor`) or `[n, k]` row-major read as its transpose
/// (`Layout::Transposed`), f32 or f16. Rayon's threads share the work. An error (before any
/// unsafe code runs) when the lengths are not `m·k` and `k·n`, or those products overflow.
///
/// f32 weights are read in place. f16 weights are widened to f32 one panel of columns (of
/// about [`PANEL_VALUES`] values) at a time, in parallel, 16 or 8 halves per instruction
/// ([`gemv::widen_f16`]), and each panel is multiplied as soon as it is widened. (Each whole
/// matrix was widened value by value on one thread before: with the decode team parking
/// before the gemm, which came in the same change, a 512-token f16 prefill went from 631 to
/// 763 tok/s.)
pub fn gemm_slice(
    x: &[f32],
    m: usize,
    k: usize,
    w: Slice<'_>,
    layout: Layout,
    n: usize,
) -> Result<Vec<f32>> {
    let shape_error = |what: &str, want: Option<usize>, len: usize| ModelError::BadInput {
        expected: format!(
            "{what} of {} values",
            want.map_or("more than fit in memory".into(), |w| w.to_string())
        ),
        found: format!("{len} values"),
    };
    let w_len = match w {
        Slice::F32(w) => w.len(),
        Slice::F16(w) => w.len(),
    };
    let (mk, kn, mn) = (m.checked_mul(k), k.checked_mul(n), m.checked_mul(n));
    if mk != Some(x.len()) {
        return Err(shape_error("x [m, k]", mk, x.len()));
    }
    if kn != Some(w_len) {
        return Err(shape_error("w [k, n]", kn, w_len));
    }
    let (Some(mn), Ok(n_i), Ok(k_i)) = (mn, isize::try_from(n), isize::try_from(k)) else {
        return Err(shape_error("y [m, n]", mn, 0));
    };
    team::rest();
    let mut out = vec![0f32; mn];
    let w = match w {
        Slice::F32(w) => w,
        Slice::F16(w) => {
            gemm_f16_panels(x, m, k, w, layout, n, &mut out, PANEL_VALUES);
            return Ok(out);
        }
    };
    // (column stride, row stride) of w seen as [k, n].
    let (rhs_cs, rhs_rs) = match layout {
        Layout::RowMajor => (1, n_i),
        Layout::Transposed => (k_i, 1),
    };
    // SAFETY: the three buffers hold exactly m·k, k·n and m·n values (checked above, without
    // overflow), which is what these dimensions and strides address; `out` is not aliased.
    unsafe { gemm_raw(m, n, k, &mut out, n_i, x, w, rhs_cs, rhs_rs) };
    Ok(out)
}

/// [`gemm_slice`] for f16 weights (lengths checked by the caller): panels widened by
/// [`gemv::widen_f16`].
#[allow(clippy::too_many_arguments)]
fn gemm_f16_panels(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f16],
    layout: Layout,
    n: usize,
    out: &mut [f32],
    panel_values: usize,
) {
    use rayon::prelude::*;
    gemm_panels(x, m, k, n, layout, out, panel_values, &|j0, p| {
        let mut buf = vec![0f32; k * p];
        match layout {
            // Columns j0..j0+p of each of w's k rows.
            Layout::RowMajor => buf
                .par_chunks_mut(p.max(1))
                .enumerate()
                .with_min_len(64)
                .for_each(|(i, o)| gemv::widen_f16(&w[i * n + j0..i * n + j0 + p], o)),
            // Rows j0..j0+p of e = wᵀ [n, k], one contiguous run.
            Layout::Transposed => buf
                .par_chunks_mut(k.max(1))
                .zip(w[j0 * k..(j0 + p) * k].par_chunks(k.max(1)))
                .with_min_len(16)
                .for_each(|(o, h)| gemv::widen_f16(h, o)),
        }
        buf
    });
}

/// `out` `[m, n]` = `x` `[m, k]` · `w`, where `w` is only available as f32 panels of
/// columns of about `panel_values` values each ([`PANEL_VALUES`] in use): `fill(j0, p)`
/// returns columns `j0 .. j0 + p` of `w` (`k·p` values), as `[k, p]` row-major for
/// `Layout::RowMajor` or as `[p, k]` row-major (rows `j0 ..` of `wᵀ`) for
/// `Layout::Transposed`.
///
/// # Panics
/// When `x` is not `m·k` values, `out` not `m·n`, or a panel not `k·p` (the callers check
/// their inputs first).
#[allow(clippy::too_many_arguments)]
fn gemm_panels(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    layout: Layout,
    out: &mut [f32],
    panel_values: usize,
    fill: &(dyn Fn(usize, usize) -> Vec<f32> + Sync),
) {
    assert!(
        Some(x.len()) == m.checked_mul(k) && Some(out.len()) == m.checked_mul(n),
        "gemm_panels: x has {} values for [{m}, {k}], out {} for [{m}, {n}]",
        x.len(),
        out.len()
    );
    // Panels of equal width (a multiple of 16), about `panel_values` values each.
    let most = (panel_values / k.max(1)).max(16);
    let panels = n.div_ceil(most).max(1);
    let width = n.div_ceil(panels).next_multiple_of(16).min(n).max(1);
    for j0 in (0..n).step_by(width) {
        let p = width.min(n - j0);
        let buf = fill(j0, p);
        assert_eq!(buf.len(), k * p, "gemm_panels: a panel of the wrong size");
        // The panel seen as [k, p]: (column stride, row stride). Every size here is at most
        // a slice's length, so within isize.
        let (cs, rs) = match layout {
            Layout::RowMajor => (1, p as isize),
            Layout::Transposed => (k as isize, 1),
        };
        // SAFETY: `out[j0..]` holds the m rows of stride n from column j0 (`out` is m·n,
        // asserted above), of which the product writes p ≤ n − j0 columns; `x` is m·k
        // (asserted); `buf` is k·p values, which (cs, rs) address for i < k, c < p.
        unsafe { gemm_raw(m, p, k, &mut out[j0..], n as isize, x, &buf, cs, rs) };
    }
}

/// `out[r·out_rs + c] = Σ_i x[r·k + i] · w[i·rs + c·cs]` for `r < m`, `c < n`, with the
/// `gemm` crate on rayon's threads.
///
/// # Safety
/// `out` must hold `(m − 1)·out_rs + n` values, `x` `m·k`, and `w` every index addressed;
/// all strides non-negative and the sizes within `isize`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
    out_rs: isize,
    x: &[f32],
    w: &[f32],
    cs: isize,
    rs: isize,
) {
    let threads = rayon::current_num_threads().max(1);
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_rs,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            cs,
            rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

/// `x` `[m, k]` · `qᵀ` for a Q8_0 matrix `q` `[n, k]`, plus `bias` `[n]` on every row when
/// given → `[m, n]` (f32): the blocked kernel for a few rows; for more (a prefill), the
/// integer tiles of [`q8_gemm`] where the CPU has AVX-512 VNNI, else the `gemm` crate on
/// panels of rows dequantized to f32 in turn (no f32 copy of the whole matrix).
pub fn q8_matmul(x: &Tensor, q: &Q8Matrix, bias: Option<&Tensor>) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    if k != q.k() {
        return Err(ModelError::BadInput {
            expected: format!("activations with {} columns", q.k()),
            found: format!("shape {:?}", x.dims()),
        });
    }
    if m <= MAX_ROWS {
        let y = with_f32_values(x, |xs| Ok(q.matmul_t(xs, m)))?;
        return gemv::output(y, (m, q.rows()), DType::F32, x.device(), bias);
    }
    // More rows (a prefill).
    let n = q.rows();
    let Some(mn) = m.checked_mul(n) else {
        return Err(ModelError::BadInput {
            expected: "a product that fits in memory".into(),
            found: format!("[{m}, {k}] · [{k}, {n}]"),
        });
    };
    team::rest();
    // 8-bit integer products where the CPU has them (AVX-512 VNNI)...
    if let Some(y) = with_f32_values(x, |xs| Ok(q8_gemm::matmul_t(q, xs, m)))? {
        return gemv::output(y, (m, n), DType::F32, x.device(), bias);
    }
    // ... else a gemm on panels of dequantized rows, as for f16 weights.
    let mut out = vec![0f32; mn];
    with_f32_values(x, |xs| {
        gemm_panels(
            xs,
            m,
            k,
            n,
            Layout::Transposed,
            &mut out,
            PANEL_VALUES,
            &|j0, p| {
                use rayon::prelude::*;
                // Rows j0..j0+p, block by block: collected in place (no zeroed buffer
                // first), each block's conversion vectorized.
                let nb = k / q8::BLOCK;
                (0..p * nb)
                    .into_par_iter()
                    .with_min_len(256)
                    .map(|i| fast_exp::vectorized(|| q.block_f32(j0 + i / nb, i % nb)))
                    .collect::<Vec<[f32; q8::BLOCK]>>()
                    .into_flattened()
            },
        );
        Ok(())
    })?;
    gemv::output(out, (m, n), DType::F32, x.device(), bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gemm_slice_in_both_layouts() -> Result<()> {
        // [1, 2] · [[1, 2, 3], [4, 5, 6]] = [9, 12, 15]; the same matrix stored transposed too.
        let y = gemm_slice(
            &[1.0, 2.0],
            1,
            2,
            Slice::F32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            Layout::RowMajor,
            3,
        )?;
        assert_eq!(y, vec![9.0, 12.0, 15.0]);
        let t = gemm_slice(
            &[1.0, 2.0],
            1,
            2,
            Slice::F32(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]),
            Layout::Transposed,
            3,
        )?;
        assert_eq!(t, y);
        Ok(())
    }

    #[test]
    fn gemm_slice_refuses_lengths_that_do_not_match_or_overflow() {
        assert!(gemm_slice(&[1.0], 1, 2, Slice::F32(&[1.0; 6]), Layout::RowMajor, 3).is_err());
        assert!(gemm_slice(
            &[1.0, 2.0],
            1,
            2,
            Slice::F32(&[1.0; 5]),
            Layout::RowMajor,
            3
        )
        .is_err());
        // m·k and k·n wrap around to the lengths given: 2³² · 2³² = 0 in 64 bits.
        let big = 1usize << 32;
        assert!(gemm_slice(&[], big, big, Slice::F32(&[]), Layout::RowMajor, 0).is_err());
        assert!(gemm_slice(&[], 0, big, Slice::F16(&[]), Layout::Transposed, big).is_err());
    }

    #[test]
    fn f16_panels_equal_the_product_of_the_widened_matrix() -> Result<()> {
        // n: under one panel, several panels of equal width with a short last one, and
        // widths that are not multiples of 16; both layouts.
        for (m, k, n) in [(3, 5, 7), (70, 33, 837), (65, 64, 1537), (2, 0, 9)] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5)
                .collect();
            let w16: Vec<f16> = (0..k * n)
                .map(|i| f16::from_f32(((i * 53) % 29) as f32 / 11.0 - 1.25))
                .collect();
            let wide: Vec<f32> = w16.iter().map(|h| h.to_f32()).collect();
            for layout in [Layout::RowMajor, Layout::Transposed] {
                let want = gemm_slice(&x, m, k, Slice::F32(&wide), layout, n)?;
                let one = gemm_slice(&x, m, k, Slice::F16(&w16), layout, n)?;
                // Panels of ~512 values: 16 to 32 columns each, the last one shorter.
                // NaN where the product must write every value (with k = 0 there is no
                // product: the zeros `gemm_slice` starts from stay).
                let mut got = vec![if k > 0 { f32::NAN } else { 0.0 }; m * n];
                gemm_f16_panels(&x, m, k, &w16, layout, n, &mut got, 512);
                for (a, b) in one.iter().zip(&got) {
                    assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
                }
                // The same f32 products in the same kernels: equal to rounding.
                let d = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                    .fold(0f32, f32::max);
                assert!(d < 1e-5, "{m}x{k}x{n} {layout:?}: {d}");
                // And against a plain loop.
                let at = |i: usize, j: usize| match layout {
                    Layout::RowMajor => wide[i * n + j],
                    Layout::Transposed => wide[j * k + i],
                };
                for r in [0, m - 1] {
                    for j in [0, n / 2, n - 1] {
                        let y: f32 = (0..k).map(|i| x[r * k + i] * at(i, j)).sum();
                        assert!((got[r * n + j] - y).abs() <= 1e-4 * y.abs().max(1.0));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn q8_products_of_few_and_many_rows_equal_the_dequantized_product() -> Result<()> {
        let dev = Device::Cpu;
        let (k, n) = (64, 77);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31) % 17) as f32 / 5.0 - 1.6)
            .collect();
        let q = Q8Matrix::from_rows(&w, n, k).expect("finite");
        let deq = Tensor::from_vec(q.dequantize(), (n, k), &dev)?;
        // A decode's few rows (the blocked kernel) and a prefill's many (the integer tiles,
        // or the dequantized panels).
        for m in [3, MAX_ROWS + 9] {
            let xs: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7) % 19) as f32 / 6.0 - 1.5)
                .collect();
            let x = Tensor::from_vec(xs.clone(), (m, k), &dev)?;
            let got = q8_matmul(&x, &q, None)?;
            assert_eq!(got.dims(), &[m, n]);
            let want = x.matmul(&deq.t()?)?;
            let d = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            // The integer kernels round x to 8 bits too (steps of max|x|/127 per block);
            // the gemm takes it as it is.
            let rounds_x = m <= MAX_ROWS || q8_gemm::available();
            let tol = if rounds_x { 0.02 * scale } else { 1e-5 * scale };
            assert!(d < tol, "{m} rows: {d}");
            if rounds_x {
                // Rounded alike, the many-row tiles equal the decode kernel up to the
                // order of the f32 sums.
                let decode = Tensor::from_vec(q.matmul_t(&xs, m), (m, n), &dev)?;
                let d = (&got - decode)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-5 * scale, "{m} rows against the decode kernel: {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn tensor_products_equal_candles_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (333, 1001), &dev)?;
        // Several rows: the gemv kernels up to MAX_ROWS, then candle's gemm; a strided wᵀ.
        for w in [w.clone(), w.t()?.contiguous()?.t()?] {
            for rows in [1, 4, 40, 100] {
                let xs = Tensor::randn(0f32, 1.0, (rows, 333), &dev)?;
                let d = (tensor_matmul(&xs, &w, None)? - xs.matmul(&w)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert!(d < 1e-4, "{rows} rows: {d}");
            }
        }
        Ok(())
    }
}
