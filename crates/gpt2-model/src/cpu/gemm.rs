//! Matrix products behind [`Matrix`](super::matrix::Matrix): each picks the decode kernels
//! of [`gemv`](super::gemv) / [`q8`](super::q8) for a few rows, and a real gemm (candle's,
//! or the `gemm` crate on mapped values) for more.

use candle_core::{DType, Tensor};

pub use super::gemv::Layout;
use super::gemv::{self, MAX_ROWS};
use super::matrix::{Mapped, Slice};
use super::q8::Q8Matrix;
use crate::error::{ModelError, Result};

/// `x` `[rows, in]` · `w` `[in, out]` (any strides, e.g. `wteᵀ`) for a tensor `w`.
///
/// Candle's CPU gemm runs a one-row product (a decode step) as a single-threaded gemv that
/// reaches well under the memory bandwidth; up to [`MAX_ROWS`] rows on the CPU go to the
/// decode kernels instead. Tensors that record a backward op (training) always take candle's
/// matmul, which is differentiable.
pub fn tensor_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.track_op() || w.track_op() {
        return Ok(x.matmul(w)?);
    }
    if let Some(y) = gemv::matmul(x, w)? {
        return Ok(y);
    }
    // f16 weights with f32 activations (the CPU's f16 models), more rows than the kernels
    // take (a prefill): widen the weights for candle's f32 gemm.
    if x.dtype() != w.dtype() {
        return Ok(x.matmul(&w.to_dtype(x.dtype())?)?);
    }
    Ok(x.matmul(w)?)
}

/// `x` `[rows, k]` · a mapped `[k, n]` matrix (`Layout::RowMajor`) or the transpose of a
/// mapped `[n, k]` one (`Layout::Transposed`), in place: the decode kernels for a few rows,
/// the `gemm` crate (candle's CPU gemm) for more; f16 weights are widened into a temporary
/// f32 copy first. The result has `x`'s dtype.
pub fn mapped_matmul(x: &Tensor, w: &Mapped, layout: Layout) -> Result<Tensor> {
    let (rows, cols) = w.dims();
    let (k, n) = match layout {
        Layout::RowMajor => (rows, cols),
        Layout::Transposed => (cols, rows),
    };
    if let Some(y) = gemv::matmul_slice(x, w.slice(), layout, k, n)? {
        return Ok(y);
    }
    let (m, k2) = x.dims2()?;
    if k2 != k {
        return Err(ModelError::BadInput {
            expected: format!("activations with {k} columns"),
            found: format!("shape {:?}", x.dims()),
        });
    }
    let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let y = match w.slice() {
        Slice::F32(w) => gemm_f32(&xs, m, k, w, layout, n)?,
        Slice::F16(w) => {
            let wide: Vec<f32> = w.iter().map(|h| h.to_f32()).collect();
            gemm_f32(&xs, m, k, &wide, layout, n)?
        }
    };
    Ok(Tensor::from_vec(y, (m, n), x.device())?.to_dtype(x.dtype())?)
}

/// `x` `[m, k]` · `w` → `[m, n]` with the `gemm` crate on borrowed values: `w` is `[k, n]`
/// row-major (`Layout::RowMajor`) or `[n, k]` row-major read as its transpose
/// (`Layout::Transposed`). Rayon's threads share the work. An error (before any unsafe
/// code runs) when the lengths are not `m·k` and `k·n`, or those products overflow.
pub fn gemm_f32(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
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
    let (mk, kn, mn) = (m.checked_mul(k), k.checked_mul(n), m.checked_mul(n));
    if mk != Some(x.len()) {
        return Err(shape_error("x [m, k]", mk, x.len()));
    }
    if kn != Some(w.len()) {
        return Err(shape_error("w [k, n]", kn, w.len()));
    }
    let (Some(mn), Ok(n_i), Ok(k_i)) = (mn, isize::try_from(n), isize::try_from(k)) else {
        return Err(shape_error("y [m, n]", mn, 0));
    };
    let mut out = vec![0f32; mn];
    // (column stride, row stride) of w seen as [k, n].
    let (rhs_cs, rhs_rs) = match layout {
        Layout::RowMajor => (1, n_i),
        Layout::Transposed => (k_i, 1),
    };
    let threads = rayon::current_num_threads().max(1);
    // SAFETY: the three buffers hold exactly m·k, k·n and m·n values (checked above, without
    // overflow), which is what these dimensions and strides address; `out` is not aliased.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n_i,
            false,
            x.as_ptr(),
            1,
            k_i,
            w.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
    Ok(out)
}

/// `x` `[m, k]` · `qᵀ` for a Q8_0 matrix `q` `[n, k]` → `[m, n]` (f32): the blocked kernel for
/// a few rows, a dequantized gemm for more (prefill).
pub fn q8_matmul(x: &Tensor, q: &Q8Matrix) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    if k != q.k() {
        return Err(ModelError::BadInput {
            expected: format!("activations with {} columns", q.k()),
            found: format!("shape {:?}", x.dims()),
        });
    }
    if m <= MAX_ROWS {
        let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        return Ok(Tensor::from_vec(
            q.matmul_t(&xs, m),
            (m, q.rows()),
            x.device(),
        )?);
    }
    let w = Tensor::from_vec(q.dequantize(), (q.rows(), k), x.device())?;
    Ok(x.to_dtype(DType::F32)?.matmul(&w.t()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gemm_f32_in_both_layouts() -> Result<()> {
        // [1, 2] · [[1, 2, 3], [4, 5, 6]] = [9, 12, 15]; the same matrix stored transposed too.
        let y = gemm_f32(
            &[1.0, 2.0],
            1,
            2,
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            Layout::RowMajor,
            3,
        )?;
        assert_eq!(y, vec![9.0, 12.0, 15.0]);
        let t = gemm_f32(
            &[1.0, 2.0],
            1,
            2,
            &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0],
            Layout::Transposed,
            3,
        )?;
        assert_eq!(t, y);
        Ok(())
    }

    #[test]
    fn gemm_f32_refuses_lengths_that_do_not_match_or_overflow() {
        assert!(gemm_f32(&[1.0], 1, 2, &[1.0; 6], Layout::RowMajor, 3).is_err());
        assert!(gemm_f32(&[1.0, 2.0], 1, 2, &[1.0; 5], Layout::RowMajor, 3).is_err());
        // m·k and k·n wrap around to the lengths given: 2³² · 2³² = 0 in 64 bits.
        let big = 1usize << 32;
        assert!(gemm_f32(&[], big, big, &[], Layout::RowMajor, 0).is_err());
        assert!(gemm_f32(&[], 0, big, &[], Layout::Transposed, big).is_err());
    }

    #[test]
    fn tensor_products_equal_candles_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (333, 1001), &dev)?;
        // Several rows: the gemv kernels up to MAX_ROWS, then candle's gemm; a strided wᵀ.
        for w in [w.clone(), w.t()?.contiguous()?.t()?] {
            for rows in [1, 4, 40, 100] {
                let xs = Tensor::randn(0f32, 1.0, (rows, 333), &dev)?;
                let d = (tensor_matmul(&xs, &w)? - xs.matmul(&w)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?;
                assert!(d < 1e-4, "{rows} rows: {d}");
            }
        }
        Ok(())
    }
}
