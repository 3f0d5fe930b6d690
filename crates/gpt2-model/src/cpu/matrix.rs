//! [`Matrix`]: a weight matrix in whichever storage it was loaded into — the one place that
//! branches on storage.
//!
//! The layers hold a `Matrix` and ask for a product; this type picks the kernel:
//!
//! | storage | `x · W + b` ([`Matrix::affine`]) | `x · Wᵀ` ([`Matrix::matmul_t`], the tied head) |
//! |---|---|---|
//! | [`Matrix::Tensor`] (any device) | decode kernels for a few CPU rows, else candle's matmul | the same on `Wᵀ` (a strided view) |
//! | [`Matrix::Mapped`] (f32/f16 in the mapped file) | decode kernels, else the `gemm` crate in place | the same, reading `W`'s rows |
//! | [`Matrix::Q8`] (Q8_0 blocks) | the Q8_0 kernel on blocks of `Wᵀ` | the Q8_0 kernel on blocks of `W` |
//!
//! Candle's CPU tensors own their memory, so a model built from tensors holds a copy of
//! every weight: loading the 124M model then means copying 500 MB out of the page cache
//! before the first token. The large matrices (`wte` and the `Conv1D` weights, 99% of the
//! bytes) are instead kept as [`Mapped`] values read straight from the mapped file, or as
//! Q8_0 blocks read in place from a mapped GGUF file.
//!
//! As with any memory map, the file must not be truncated or rewritten in place while a
//! model uses it (that would change the weights under it, or end the process with SIGBUS if
//! it shrinks). Replacing it is fine: this project's writers (`save_hf`, `gpt2 convert`, the
//! downloads) write a new file and rename it over the old one, whose pages the map keeps.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use gpt2_weights::SharedBytes;
use half::f16;

use super::finite;
use super::gemm::{self, Layout};
use super::q8::{self, Q8Matrix};
use crate::error::{ModelError, Result};

/// A borrowed matrix of one of the kernels' element types.
#[derive(Debug, Clone, Copy)]
pub enum Slice<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

/// A `[rows, cols]` row-major f32 or f16 matrix in a mapped file (CPU only, no copy).
#[derive(Clone)]
pub struct Mapped {
    bytes: SharedBytes,
    dtype: DType,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({:?} [{}, {}])", self.dtype, self.rows, self.cols)
    }
}

impl Mapped {
    /// `bytes` as a `[rows, cols]` matrix of `dtype` (little-endian). `None` when the dtype
    /// is not f32/f16, the length does not match, the bytes are not aligned for the type,
    /// or this is a big-endian machine: then the caller copies into a tensor instead.
    pub fn new(bytes: SharedBytes, dtype: DType, rows: usize, cols: usize) -> Option<Self> {
        if cfg!(target_endian = "big") {
            return None;
        }
        let elem = match dtype {
            DType::F32 => 4,
            DType::F16 => 2,
            _ => return None,
        };
        let len_ok = rows.checked_mul(cols).and_then(|n| n.checked_mul(elem)) == Some(bytes.len());
        let aligned = (bytes.as_ptr() as usize).is_multiple_of(elem);
        (len_ok && aligned).then_some(Self {
            bytes,
            dtype,
            rows,
            cols,
        })
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The values.
    pub fn slice(&self) -> Slice<'_> {
        // Length and alignment were checked in `new`; the bytes never change.
        match self.dtype {
            DType::F16 => Slice::F16(bytemuck::cast_slice(&self.bytes)),
            _ => Slice::F32(bytemuck::cast_slice(&self.bytes)),
        }
    }

    /// A copy as a candle tensor on `device`.
    fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_raw_buffer(
            &self.bytes,
            self.dtype,
            &[self.rows, self.cols],
            device,
        )?)
    }

    /// Row `r` as f32 into `out` (`cols` long). `r < rows` (the caller checked the ids).
    fn row_f32(&self, r: usize, out: &mut [f32]) {
        let range = r * self.cols..(r + 1) * self.cols;
        match self.slice() {
            Slice::F32(v) => out.copy_from_slice(&v[range]),
            Slice::F16(v) => {
                for (o, h) in out.iter_mut().zip(&v[range]) {
                    *o = h.to_f32();
                }
            }
        }
    }

    /// All values as f32, row-major.
    fn to_f32_vec(&self) -> Vec<f32> {
        match self.slice() {
            Slice::F32(v) => v.to_vec(),
            Slice::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
        }
    }
}

/// Where a matrix holds a NaN or an infinity ([`Matrix::first_non_finite`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NonFinite {
    /// Value `index` of `W` (row-major) is `value`.
    Value {
        /// Row-major index into `W`.
        index: usize,
        /// The value (NaN or ±inf).
        value: f32,
    },
    /// The Q8_0 block holding value `index` of `W` (row-major) has the scale `scale`.
    Scale {
        /// Row-major index into `W` of the block's first value.
        index: usize,
        /// The block's scale (NaN or ±inf).
        scale: f32,
    },
}

/// A weight matrix `W` `[rows, cols]`: a candle tensor (any device), f32/f16 values in the
/// mapped weight file, or Q8_0 blocks.
#[derive(Debug, Clone)]
pub enum Matrix {
    /// A tensor of its own.
    Tensor(Tensor),
    /// Values in the mapped weight file.
    Mapped(Mapped),
    /// Q8_0 blocks: of `W` itself (blocks along `cols`, `transposed == false`: how `wte`
    /// is kept, for the head's `x · Wᵀ`) or of `Wᵀ` (blocks along `rows`, `transposed ==
    /// true`: how `Conv1D` weights are kept, for `x · W`). The blocks always run along the
    /// dimension the products sum over.
    Q8 {
        /// The blocks, `[cols, rows]` when `transposed`, else `[rows, cols]`.
        blocks: Arc<Q8Matrix>,
        /// Whether `blocks` holds `Wᵀ`.
        transposed: bool,
    },
}

impl Matrix {
    /// The shape of `W`.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Matrix::Tensor(t) => t.dims().to_vec(),
            Matrix::Mapped(m) => vec![m.rows, m.cols],
            Matrix::Q8 { blocks, transposed } => match transposed {
                true => vec![blocks.k(), blocks.rows()],
                false => vec![blocks.rows(), blocks.k()],
            },
        }
    }

    /// Whether the values are read in place from a mapped file (f32/f16 safetensors, or the
    /// Q8_0 blocks of a GGUF file).
    pub fn is_mapped(&self) -> bool {
        match self {
            Matrix::Tensor(_) => false,
            Matrix::Mapped(_) => true,
            Matrix::Q8 { blocks, .. } => blocks.is_mapped(),
        }
    }

    /// `W` as a tensor on `device`: the tensor itself (a cheap clone), a copy of mapped
    /// values, or the dequantized Q8_0 blocks (f32, `[rows, cols]`).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        match self {
            Matrix::Tensor(t) => Ok(t.clone()),
            Matrix::Mapped(m) => m.to_tensor(device),
            Matrix::Q8 { blocks, transposed } => {
                let t = Tensor::from_vec(blocks.dequantize(), (blocks.rows(), blocks.k()), device)?;
                Ok(match transposed {
                    true => t.t()?.contiguous()?,
                    false => t,
                })
            }
        }
    }

    /// `x` `[m, rows]` · `W` + `bias` (`[cols]`, added to every row; none for `x · W`) →
    /// `[m, cols]`, in `x`'s dtype (f32 for Q8_0 weights): the `Conv1D` layers. Where the
    /// product is built in a buffer of its own (the CPU kernels and gemms), an f32 bias is
    /// added there, before the buffer becomes a tensor; otherwise with candle's broadcast add.
    pub fn affine(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Matrix::Tensor(w) => gemm::tensor_matmul(x, w, bias),
            Matrix::Mapped(w) => gemm::mapped_matmul(x, w, Layout::RowMajor, bias),
            Matrix::Q8 {
                blocks,
                transposed: true,
            } => gemm::q8_matmul(x, blocks, bias),
            Matrix::Q8 { .. } => gemm::tensor_matmul(x, &self.to_tensor(x.device())?, bias),
        }
    }

    /// `x` `[m, cols]` · `Wᵀ` → `[m, rows]` (the tied LM head, `h · wteᵀ`).
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::Tensor(w) => gemm::tensor_matmul(x, &w.t()?, None),
            Matrix::Mapped(w) => gemm::mapped_matmul(x, w, Layout::Transposed, None),
            Matrix::Q8 {
                blocks,
                transposed: false,
            } => gemm::q8_matmul(x, blocks, None),
            Matrix::Q8 { .. } => gemm::tensor_matmul(x, &self.to_tensor(x.device())?.t()?, None),
        }
    }

    /// Rows `ids` of `W` (`[n]` u32, each `< rows`, checked by the caller) → `[n, cols]`:
    /// candle's `index_select` on a tensor (differentiable), rows widened to f32 otherwise.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        let row = |n_cols: usize, row: &dyn Fn(usize, &mut [f32])| -> Result<Tensor> {
            let idv: Vec<u32> = ids.to_vec1()?;
            let mut out = vec![0f32; idv.len() * n_cols];
            for (o, &id) in out.chunks_mut(n_cols.max(1)).zip(&idv) {
                row(id as usize, o);
            }
            Ok(Tensor::from_vec(out, (idv.len(), n_cols), ids.device())?)
        };
        match self {
            Matrix::Tensor(w) => Ok(w.index_select(ids, 0)?),
            Matrix::Mapped(m) => row(m.cols, &|r, o| m.row_f32(r, o)),
            Matrix::Q8 {
                blocks,
                transposed: false,
            } => row(blocks.k(), &|r, o| blocks.row_f32(r, o)),
            Matrix::Q8 { .. } => Ok(self.to_tensor(ids.device())?.index_select(ids, 0)?),
        }
    }

    /// `W` in Q8_0 blocks (GGML's `block_q8_0`, f16 scales, the bytes a GGUF file holds):
    /// the blocks of `W` itself (`transposed == false`, along `cols`) or of `Wᵀ` (`true`,
    /// along `rows`). Q8_0 blocks are returned as they are; mapped f32 values are quantized
    /// in place; anything else is widened to f32 first. An error (naming the tensor as
    /// `name`) when the matrix is not 2-D, the blocked dimension is not a multiple of 32, or
    /// a weight is NaN, infinite or too large for an f16 scale.
    pub fn to_q8(&self, transposed: bool, name: &str) -> Result<Matrix> {
        let dims = self.dims();
        let (rows, cols) = match dims[..] {
            [r, c] if (if transposed { r } else { c }).is_multiple_of(q8::BLOCK) => (r, c),
            _ => {
                return Err(ModelError::BadInput {
                    expected: format!(
                        "{name}: a 2-D matrix whose {} count is a multiple of {}",
                        if transposed { "row" } else { "column" },
                        q8::BLOCK
                    ),
                    found: format!("shape {dims:?}"),
                })
            }
        };
        if let Matrix::Q8 {
            transposed: t,
            blocks,
        } = self
        {
            if *t == transposed {
                return Ok(Matrix::Q8 {
                    blocks: blocks.clone(),
                    transposed,
                });
            }
        }
        let quantize = |w: &[f32]| {
            match transposed {
                false => Q8Matrix::from_rows(w, rows, cols),
                true => Q8Matrix::from_transposed(w, rows, cols),
            }
            .map_err(|source| ModelError::Quantize {
                name: name.to_string(),
                source,
            })
        };
        let blocks = match self {
            Matrix::Mapped(m) => match m.slice() {
                Slice::F32(w) => quantize(w)?,
                Slice::F16(_) => quantize(&m.to_f32_vec())?,
            },
            _ => quantize(&self.to_f32_vec()?)?,
        };
        Ok(Matrix::Q8 {
            blocks: Arc::new(blocks),
            transposed,
        })
    }

    /// The first NaN or infinity in `W`, if any: a value (f32/f16 tensors and mapped values,
    /// scanned in place) or a Q8_0 block scale. Bounded by memory bandwidth (see
    /// [`finite`](super::finite)); tensors on other devices are copied to the host first.
    pub fn first_non_finite(&self) -> Result<Option<NonFinite>> {
        let value = |found: Option<(usize, f32)>| {
            found.map(|(index, value)| NonFinite::Value { index, value })
        };
        Ok(match self {
            Matrix::Mapped(m) => value(match m.slice() {
                Slice::F32(v) => finite::first_non_finite_f32(v),
                Slice::F16(v) => finite::first_non_finite_f16(v),
            }),
            Matrix::Tensor(t) => {
                let (storage, layout) = t.storage_and_layout();
                match (&*storage, layout.contiguous_offsets()) {
                    (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => {
                        value(finite::first_non_finite_f32(&v[a..b]))
                    }
                    (Storage::Cpu(CpuStorage::F16(v)), Some((a, b))) => {
                        value(finite::first_non_finite_f16(&v[a..b]))
                    }
                    _ => {
                        drop(storage);
                        value(finite::first_non_finite_f32(&self.to_f32_vec()?))
                    }
                }
            }
            Matrix::Q8 { blocks, transposed } => {
                blocks
                    .first_bad_scale()
                    .map(|(r, b, scale)| NonFinite::Scale {
                        index: match transposed {
                            // Block b of row r of Wᵀ starts at W[b·32, r].
                            true => b * q8::BLOCK * blocks.rows() + r,
                            false => r * blocks.k() + b * q8::BLOCK,
                        },
                        scale,
                    })
            }
        })
    }

    /// Unmaps a mapped matrix's file pages from the process (they stay in the page cache),
    /// once its values have been copied or quantized: the f32 file then does not count in
    /// the peak RSS next to the copy.
    pub fn release(&self) {
        if let Matrix::Mapped(m) = self {
            super::mmap::drop_mapped(&m.bytes);
        }
    }

    /// All values of `W` as f32, row-major.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match self {
            Matrix::Mapped(m) => Ok(m.to_f32_vec()),
            _ => Ok(self
                .to_tensor(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?),
        }
    }
}

impl From<Tensor> for Matrix {
    fn from(t: Tensor) -> Self {
        Matrix::Tensor(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_storage_gives_the_same_products() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        let dev = Device::Cpu;
        let (rows, cols) = (64, 96);
        let values = crate::test_values::values(rows * cols, 9);
        let w = Tensor::from_vec(values.clone(), (rows, cols), &dev)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("w");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, &bytes)?;
        let mapped = Mapped::new(SharedBytes::map_file(&path)?, DType::F32, rows, cols)
            .map(Matrix::Mapped)
            .expect("aligned");
        let tensor = Matrix::Tensor(w.clone());
        let x = Tensor::randn(0f32, 1.0, (3, rows), &dev)?;
        let xt = Tensor::randn(0f32, 1.0, (2, cols), &dev)?;
        let want = x.matmul(&w)?;
        let want_t = xt.matmul(&w.t()?)?;
        let close = |a: &Tensor, b: &Tensor, tol: f32| -> Result<()> {
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < tol, "{d}");
            Ok(())
        };
        for m in [&tensor, &mapped] {
            assert_eq!(m.dims(), vec![rows, cols]);
            close(&m.affine(&x, None)?, &want, 1e-4)?;
            close(&m.matmul_t(&xt)?, &want_t, 1e-4)?;
            let ids = Tensor::new(&[3u32, 0, 63], &dev)?;
            close(
                &m.rows(&ids)?,
                &w.index_select(&ids, 0)?,
                0.0 + f32::EPSILON,
            )?;
        }
        // Q8_0 in both orientations: the products of the dequantized matrix (to the
        // rounding of the activations, which the kernel quantizes too).
        for transposed in [true, false] {
            let q = tensor.to_q8(transposed, "w")?;
            assert_eq!(q.dims(), vec![rows, cols]);
            let deq = q.to_tensor(&dev)?;
            close(&deq, &w, 0.01)?;
            // |y| ~ 5 here; the activations' 8-bit rounding moves it by ~0.05.
            close(&q.affine(&x, None)?, &x.matmul(&deq)?, 0.25)?;
            close(&q.matmul_t(&xt)?, &xt.matmul(&deq.t()?)?, 0.25)?;
        }
        // `affine` = the product plus the bias on every row, bit for bit, for the kernels'
        // few rows and the gemm's many, with the bias added in place (contiguous f32) or by
        // candle (a strided view).
        let q8 = tensor.to_q8(true, "w")?;
        let b = Tensor::randn(0f32, 1.0, cols, &dev)?;
        let strided = Tensor::randn(0f32, 1.0, (cols, 2), &dev)?
            .narrow(1, 0, 1)?
            .squeeze(1)?;
        assert!(!strided.is_contiguous());
        for m in [&tensor, &mapped, &q8] {
            for n_rows in [1, 3, crate::cpu::gemv::MAX_ROWS + 6] {
                let x = Tensor::randn(0f32, 1.0, (n_rows, rows), &dev)?;
                let y = m.affine(&x, None)?;
                for bias in [&b, &strided] {
                    let got = m.affine(&x, Some(bias))?;
                    assert_eq!(
                        got.to_vec2::<f32>()?,
                        y.broadcast_add(bias)?.to_vec2::<f32>()?
                    );
                }
            }
        }
        // A bias of another dtype than the product is candle's to refuse.
        let x = Tensor::randn(0f32, 1.0, (1, rows), &dev)?;
        assert!(tensor.affine(&x, Some(&b.to_dtype(DType::F16)?)).is_err());
        Ok(())
    }
}
