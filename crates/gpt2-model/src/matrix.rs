//! Weight matrices as the layers keep them: a candle tensor, or f32/f16 values used in
//! place from the memory-mapped weight file.
//!
//! Candle's CPU tensors own their memory, so a model built from tensors holds a copy of
//! every weight: loading the 124M model then means copying 500 MB out of the page cache
//! (about 0.3 s here) before the first token. The large matrices (`wte` and the `Conv1D`
//! weights, 99% of the bytes) are instead kept as [`Mapped`]: the decode kernels read them
//! straight from the mapped file, and the long products (a prefill of more than
//! [`gemv::MAX_ROWS`](crate::gemv::MAX_ROWS) positions) call the `gemm` crate, candle's own
//! CPU gemm, on the mapped values (f16 ones are widened into a temporary f32 copy first).
//!
//! The map asks for transparent huge pages (see `gpt2_weights`): a page cache that holds the
//! file in 2 MiB pages makes the in-place reads ~20% faster than 4 KiB pages.
//!
//! As with any memory map, the file must not be truncated or rewritten in place while a
//! model uses it (that would change the weights under it, or end the process with SIGBUS if
//! it shrinks). Replacing it is fine: this project's writers (`save_hf`, `gpt2 convert`, the
//! downloads) write a new file and rename it over the old one, whose pages the map keeps.

use candle_core::{DType, Device, Tensor};
use gpt2_weights::SharedBytes;
use half::f16;

use crate::error::Result;
use crate::q8::{self, Q8Matrix};

/// A borrowed matrix of one of the kernels' element types.
#[derive(Debug, Clone, Copy)]
pub enum Slice<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

/// A `[rows, cols]` row-major f32 or f16 matrix in a mapped file (CPU only, no copy).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use gpt2_model::matrix::Mapped;
/// use gpt2_model::DType;
/// let dir = tempfile::tempdir()?;
/// let config = gpt2_weights::Config { n_vocab: 64, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let path = dir.path().join("model");
/// gpt2_model::Gpt2::random(&config, 1, &Default::default())?.save_hf(&path)?;
/// let weights = gpt2_weights::Weights::open(&path)?;
/// let wte = Mapped::new(weights.shared_bytes("wte.weight")?, DType::F32, 64, 8).expect("aligned");
/// assert_eq!(wte.dims(), (64, 8));
/// # Ok(()) }
/// ```
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

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
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
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_raw_buffer(
            &self.bytes,
            self.dtype,
            &[self.rows, self.cols],
            device,
        )?)
    }

    /// Row `r` as f32 into `out` (`cols` long).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
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
}

/// A weight matrix: a candle tensor (any device) or [`Mapped`] values.
///
/// ```
/// # fn main() -> Result<(), gpt2_model::ModelError> {
/// use gpt2_model::matrix::Matrix;
/// use gpt2_model::{Device, Tensor};
/// let w: Matrix = Tensor::ones((64, 3), gpt2_model::DType::F32, &Device::Cpu)?.into();
/// assert_eq!(w.dims(), vec![64, 3]);
/// // Q8_0 blocks of its transpose ([3, 64], blocks along the 64): ones come back as
/// // 127 · f16(1/127).
/// let q = w.to_q8(true)?;
/// assert_eq!((q.rows(), q.k()), (3, 64));
/// assert!(q.dequantize().iter().all(|&v| (v - 1.0).abs() < 1e-3));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub enum Matrix {
    /// A tensor of its own.
    Tensor(Tensor),
    /// Values in the mapped weight file.
    Mapped(Mapped),
}

impl Matrix {
    /// The shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Matrix::Tensor(t) => t.dims().to_vec(),
            Matrix::Mapped(m) => vec![m.rows, m.cols],
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Matrix::Tensor(t) => t.dtype(),
            Matrix::Mapped(m) => m.dtype,
        }
    }

    /// As a tensor on `device`: the tensor itself (a cheap clone), or a copy of mapped
    /// values.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        match self {
            Matrix::Tensor(t) => Ok(t.clone()),
            Matrix::Mapped(m) => m.to_tensor(device),
        }
    }

    /// The matrix in Q8_0 blocks (GGML's `block_q8_0`, f16 scales, the bytes a GGUF file
    /// holds): its rows as they are (`transpose == false`: `[rows, cols]`, blocks along
    /// `cols`) or its transpose (`true`: `[cols, rows]`, blocks along `rows`). Mapped f32
    /// values are quantized in place; anything else is widened to f32 first. An error when
    /// the matrix is not 2-D or the blocked dimension is not a multiple of 32.
    pub fn to_q8(&self, transpose: bool) -> Result<Q8Matrix> {
        let (rows, cols) = match self.dims()[..] {
            [r, c] if (if transpose { r } else { c }).is_multiple_of(q8::BLOCK) => (r, c),
            _ => {
                return Err(crate::ModelError::BadInput {
                    expected: format!(
                        "a 2-D matrix whose {} count is a multiple of {}",
                        if transpose { "row" } else { "column" },
                        q8::BLOCK
                    ),
                    found: format!("shape {:?}", self.dims()),
                })
            }
        };
        let quantize = |w: &[f32]| match transpose {
            false => Q8Matrix::from_rows(w, rows, cols),
            true => Q8Matrix::from_transposed(w, rows, cols),
        };
        Ok(match self {
            Matrix::Mapped(m) => match m.slice() {
                Slice::F32(w) => quantize(w),
                Slice::F16(_) => quantize(&self.to_f32_vec()?),
            },
            Matrix::Tensor(_) => quantize(&self.to_f32_vec()?),
        })
    }

    /// All values as f32, row-major.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match self {
            Matrix::Tensor(t) => Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
            Matrix::Mapped(m) => Ok(match m.slice() {
                Slice::F32(v) => v.to_vec(),
                Slice::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
            }),
        }
    }
}

impl From<Tensor> for Matrix {
    fn from(t: Tensor) -> Self {
        Matrix::Tensor(t)
    }
}
