//! `Conv1D`: GPT-2's name for an affine map `y = x · W + b` (it is not a convolution).

use std::sync::Arc;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::gemv::Layout;
use crate::matrix::{Mapped, Matrix, Slice};
use crate::q8::Q8Matrix;

/// Below this many weight elements a one-row product is not worth splitting over threads.
const SPLIT_MIN_ELEMENTS: usize = 1 << 18;

/// `x` `[rows, in]` · `w` `[in, out]` (any strides, e.g. `wteᵀ`).
///
/// On the CPU, candle's gemm runs a one-row product (a decode step) as a gemv on a single
/// thread, which leaves the other cores idle while the weights stream from memory. For one
/// row and a large `w`, this splits `w`'s columns into one block per rayon thread, multiplies
/// the blocks in parallel and concatenates the results (the same sums, in the same order, per
/// output). Anything else (several rows, small weights, other devices, the `mkl` feature) is a
/// plain `matmul`.
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    // A few rows (decode steps): the weight-streaming kernels of `gemv`.
    if let Some(y) = crate::gemv::matmul(x, w)? {
        return Ok(y);
    }
    // f16 weights with f32 activations (the CPU's f16 models), more rows than the kernels
    // take (a prefill): widen the weights for candle's f32 gemm.
    if x.dtype() != w.dtype() {
        return Ok(x.matmul(&w.to_dtype(x.dtype())?)?);
    }
    let threads = rayon::current_num_threads();
    let (rows, _) = x.dims2()?;
    let (n_in, n_out) = w.dims2()?;
    // MKL's gemv is multi-threaded already (and its candle binding rejects column blocks of
    // a row-major matrix).
    let mkl = cfg!(feature = "mkl");
    if mkl || !x.device().is_cpu() || rows != 1 || threads < 2 || n_in * n_out < SPLIT_MIN_ELEMENTS
    {
        return Ok(x.matmul(w)?);
    }
    // Blocks of a multiple of 64 columns (whole cache lines and SIMD vectors).
    let block = n_out.div_ceil(threads).div_ceil(64) * 64;
    let parts = (0..n_out.div_ceil(block))
        .into_par_iter()
        .map(|i| {
            let start = i * block;
            let len = block.min(n_out - start);
            Ok(x.matmul(&w.narrow(1, start, len)?)?)
        })
        .collect::<Result<Vec<Tensor>>>()?;
    Ok(Tensor::cat(&parts, 1)?)
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
    if let Some(y) = crate::gemv::matmul_slice(x, w.slice(), layout, k, n)? {
        return Ok(y);
    }
    let (m, k2) = x.dims2()?;
    if k2 != k {
        return Err(crate::ModelError::BadInput {
            expected: format!("activations with {k} columns"),
            found: format!("shape {:?}", x.dims()),
        });
    }
    let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let y = match w.slice() {
        Slice::F32(w) => gemm_f32(&xs, m, k, w, layout, n),
        Slice::F16(w) => {
            let wide: Vec<f32> = w.iter().map(|h| h.to_f32()).collect();
            gemm_f32(&xs, m, k, &wide, layout, n)
        }
    };
    Ok(Tensor::from_vec(y, (m, n), x.device())?.to_dtype(x.dtype())?)
}

/// `x` `[m, k]` · `w` → `[m, n]` with the `gemm` crate on borrowed values: `w` is `[k, n]`
/// row-major (`Layout::RowMajor`) or `[n, k]` row-major read as its transpose
/// (`Layout::Transposed`). Rayon's threads share the work.
///
/// ```
/// use gpt2_model::{gemv::Layout, linear::gemm_f32};
/// // [1, 2] · [[1, 2, 3], [4, 5, 6]] = [9, 12, 15]; the same matrix stored transposed too.
/// let y = gemm_f32(&[1.0, 2.0], 1, 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], Layout::RowMajor, 3);
/// assert_eq!(y, vec![9.0, 12.0, 15.0]);
/// let t = gemm_f32(&[1.0, 2.0], 1, 2, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0], Layout::Transposed, 3);
/// assert_eq!(t, y);
/// ```
///
/// # Panics
/// If `x.len() != m·k` or `w.len() != k·n`.
pub fn gemm_f32(x: &[f32], m: usize, k: usize, w: &[f32], layout: Layout, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), k * n, "w is not [k, n]");
    let mut out = vec![0f32; m * n];
    // (column stride, row stride) of w seen as [k, n].
    let (rhs_cs, rhs_rs) = match layout {
        Layout::RowMajor => (1, n as isize),
        Layout::Transposed => (k as isize, 1),
    };
    let threads = rayon::current_num_threads().max(1);
    // SAFETY: the three buffers hold m·k, k·n and m·n values (asserted / allocated above),
    // which is what the strides address; `out` is not aliased.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
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
    out
}

/// `x` `[m, k]` · `qᵀ` for a Q8_0 matrix `q` `[n, k]` → `[m, n]` (f32): the blocked kernel for
/// a few rows, a dequantized gemm for more (prefill).
pub fn q8_matmul(x: &Tensor, q: &Q8Matrix) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    if m <= crate::gemv::MAX_ROWS {
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

/// The affine layers `c_attn`, `c_proj` and `c_fc`: `y = x · W + b`.
///
/// `weight` is kept `[in, out]` and contiguous, exactly as Hugging Face's `Conv1D` (and
/// OpenAI's checkpoint, minus its leading 1) store it, so loading needs no transposition.
/// This is also the faster layout for candle's CPU gemm here (measured with
/// `examples/matmul_layout.rs`: for one decode row `[1, n]`, `[in, out]` is as fast or faster
/// than `[out, in]ᵀ` in f32, and 5× faster for small batches in f16).
#[derive(Debug, Clone)]
pub struct Conv1D {
    /// `W`, `[in, out]` (an empty `[0]` tensor when the layer is quantized).
    pub weight: Matrix,
    /// `b`, `[out]`.
    pub bias: Tensor,
    /// `Wᵀ` `[out, in]` in Q8_0 blocks, for quantized models; then `weight` is empty and
    /// this is what `forward` multiplies by.
    pub quantized: Option<Arc<Q8Matrix>>,
}

impl Conv1D {
    /// A layer from `W` `[in, out]` and `b` `[out]`.
    pub fn new(weight: impl Into<Matrix>, bias: Tensor) -> Self {
        Self {
            weight: weight.into(),
            bias,
            quantized: None,
        }
    }

    /// A Q8_0 layer: `W` `[in, out]` is stored transposed, `[out, in]`, in blocks of 32
    /// along `in` (which must be a multiple of 32). `b` stays as given.
    pub fn quantize(weight: &Matrix, bias: Tensor) -> Result<Self> {
        // Scales rounded to f16, as GGML stores them: the same numbers as a GGUF file of
        // this model (`gpt2 convert --dtype q8_0`).
        let q = weight.to_q8(true)?;
        let device = bias.device().clone();
        Ok(Self {
            weight: Tensor::zeros(0, DType::F32, &device)?.into(),
            bias,
            quantized: Some(Arc::new(q)),
        })
    }

    /// `x`: `[.., in]` → `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let n_in = dims[dims.len() - 1];
        let rows = x.elem_count() / n_in.max(1);
        let x2 = x.reshape((rows, n_in))?;
        // [rows, in] · [in, out] → [rows, out]: one gemm whatever the leading dims.
        let y = match (&self.quantized, &self.weight) {
            (Some(q), _) => q8_matmul(&x2, q)?,
            (None, Matrix::Tensor(w)) => matmul(&x2, w)?,
            (None, Matrix::Mapped(w)) => mapped_matmul(&x2, w, Layout::RowMajor)?,
        };
        let y = y.broadcast_add(&self.bias)?;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.bias.dim(0)?;
        }
        Ok(y.reshape(out_dims)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn computes_x_w_plus_b() -> Result<()> {
        let dev = Device::Cpu;
        // W = [[1, 2, 3], [4, 5, 6]] ([in 2, out 3]), b = [0.5, 0, -1]
        let w = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev)?;
        let b = Tensor::new(&[0.5f32, 0., -1.], &dev)?;
        let layer = Conv1D::new(w, b);
        // x = [[[1, 1], [2, -1]]] ([1, 2, 2])
        let x = Tensor::new(&[[[1f32, 1.], [2., -1.]]], &dev)?;
        let y = layer.forward(&x)?;
        assert_eq!(y.dims(), &[1, 2, 3]);
        assert_eq!(
            y.to_vec3::<f32>()?,
            vec![vec![vec![5.5, 7., 8.], vec![-1.5, -1., -1.]]]
        );
        Ok(())
    }

    #[test]
    fn split_one_row_product_equals_plain_matmul() -> Result<()> {
        let dev = Device::Cpu;
        // Large enough to be split; odd sizes so the last block is short.
        let w = Tensor::randn(0f32, 1.0, (333, 1001), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (1, 333), &dev)?;
        let plain = x.matmul(&w)?;
        for w in [w.clone(), w.t()?.contiguous()?.t()?] {
            let split = matmul(&x, &w)?;
            assert_eq!(split.dims(), &[1, 1001]);
            let d = (split - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "{d}");
        }
        // Several rows (the gemv kernels up to gemv::MAX_ROWS, then candle's gemm).
        for rows in [4, 40, 100] {
            let xs = Tensor::randn(0f32, 1.0, (rows, 333), &dev)?;
            let d = (matmul(&xs, &w)? - xs.matmul(&w)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-4, "{rows} rows: {d}");
        }
        Ok(())
    }
}
