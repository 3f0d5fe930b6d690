//! [`Dtype`], [`Layout`] and [`TensorView`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::WeightsError;

/// The element type of stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE 754 single precision (TensorFlow `DT_FLOAT`, safetensors `F32`).
    F32,
    /// IEEE 754 half precision (TensorFlow `DT_HALF`, safetensors `F16`).
    F16,
    /// bfloat16 (TensorFlow `DT_BFLOAT16`, safetensors `BF16`).
    BF16,
    /// GGML's `block_q8_0` blocks (GGUF type 8): per 32 weights a little-endian f16 scale
    /// and 32 `i8` (34 bytes; see [`q8_0`](crate::q8_0)). Only GGUF files store it; the
    /// blocks run along the stored rows (see [`TensorView::transposed`]).
    Q8_0,
}

impl Dtype {
    /// The bytes that `elements` elements of this dtype take: `None` when that overflows
    /// `usize`, or for [`Dtype::Q8_0`] when `elements` is not a multiple of 32.
    ///
    /// ```
    /// use gpt2_weights::Dtype;
    /// assert_eq!(Dtype::F16.byte_len(3), Some(6));
    /// assert_eq!(Dtype::Q8_0.byte_len(64), Some(68));
    /// assert_eq!(Dtype::Q8_0.byte_len(40), None);
    /// assert_eq!(Dtype::F32.byte_len(usize::MAX), None);
    /// ```
    pub fn byte_len(self, elements: usize) -> Option<usize> {
        match self {
            Dtype::F32 => elements.checked_mul(4),
            Dtype::F16 | Dtype::BF16 => elements.checked_mul(2),
            Dtype::Q8_0 => elements
                .is_multiple_of(crate::q8_0::BLOCK)
                .then(|| (elements / crate::q8_0::BLOCK).checked_mul(crate::q8_0::BLOCK_BYTES))
                .flatten(),
        }
    }

    /// Whether this is a float type (one value per element), not blocks.
    pub fn is_float(self) -> bool {
        !matches!(self, Dtype::Q8_0)
    }

    /// The safetensors dtype (`None` for Q8_0, which safetensors cannot store).
    pub(crate) fn to_safetensors(self) -> Option<safetensors::Dtype> {
        match self {
            Dtype::F32 => Some(safetensors::Dtype::F32),
            Dtype::F16 => Some(safetensors::Dtype::F16),
            Dtype::BF16 => Some(safetensors::Dtype::BF16),
            Dtype::Q8_0 => None,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
            Dtype::Q8_0 => "q8_0",
        })
    }
}

impl FromStr for Dtype {
    type Err = WeightsError;

    /// `f32`/`float32`, `f16`/`float16`/`half`, `bf16`/`bfloat16`, `q8_0`/`q8` (any case).
    ///
    /// ```
    /// use gpt2_weights::Dtype;
    /// assert_eq!("F16".parse::<Dtype>().unwrap(), Dtype::F16);
    /// assert!("q4".parse::<Dtype>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(Dtype::F32),
            "f16" | "float16" | "half" => Ok(Dtype::F16),
            "bf16" | "bfloat16" => Ok(Dtype::BF16),
            "q8_0" | "q8" => Ok(Dtype::Q8_0),
            _ => Err(WeightsError::Parse {
                what: "dtype",
                found: s.chars().take(64).collect(),
                expected: "f32, f16, bf16, q8_0",
            }),
        }
    }
}

/// The three layouts this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// OpenAI's release (`models/124M/`): `checkpoint`, `hparams.json`, a TensorFlow v1
    /// checkpoint `model.ckpt.index` + `model.ckpt.data-NNNNN-of-MMMMM`, `encoder.json`,
    /// `vocab.bpe`.
    OpenAi,
    /// The Hugging Face hub (`openai-community/gpt2`): `config.json` and
    /// `model.safetensors` (or sharded, with `model.safetensors.index.json`).
    HuggingFace,
    /// A GGUF file (`model.gguf` in a directory, or any `*.gguf` path), llama.cpp's GPT-2
    /// tensor names; read by this crate's own [`gguf`](crate::gguf) parser.
    Gguf,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::OpenAi => "openai",
            Layout::HuggingFace => "huggingface",
            Layout::Gguf => "gguf",
        })
    }
}

/// One tensor: dtype, shape and little-endian bytes, borrowed from the memory-mapped file
/// whenever the stored bytes can be used as they are.
///
/// ```
/// use std::borrow::Cow;
/// use gpt2_weights::{Dtype, TensorView};
/// let bytes: Vec<u8> = [1.0f32, -2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
/// let t = TensorView { dtype: Dtype::F32, shape: vec![2], transposed: false, data: Cow::Owned(bytes) };
/// assert_eq!(t.num_elements(), 2);
/// assert_eq!(t.to_f32_vec(), vec![1.0, -2.5]);
/// assert_eq!(t.to_dtype(Dtype::F16).to_f32_vec(), vec![1.0, -2.5]);
///
/// // A [2, 3] tensor stored transposed ([3, 2] row-major): values come out canonical.
/// let stored = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0];
/// let t = TensorView {
///     dtype: Dtype::F32,
///     shape: vec![2, 3],
///     transposed: true,
///     data: Cow::Owned(stored.iter().flat_map(|x| x.to_le_bytes()).collect()),
/// };
/// assert_eq!(t.to_f32_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// assert!(!t.to_dtype(Dtype::F32).transposed);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView<'a> {
    /// Element type of `data`.
    pub dtype: Dtype,
    /// The canonical shape, outermost dimension first (row-major).
    pub shape: Vec<usize>,
    /// Whether `data` hold the tensor's transpose: a 2-D tensor of shape `[a, b]` stored as
    /// `[b, a]` row-major. GGUF stores `Conv1D` weights `[out, in]` while the canonical shape
    /// is Hugging Face's `[in, out]`; for [`Dtype::Q8_0`] the blocks then run along `in`.
    /// [`to_f32_vec`](Self::to_f32_vec) and [`to_dtype`](Self::to_dtype) always give the
    /// canonical order. False for every tensor of the OpenAI and Hugging Face layouts.
    pub transposed: bool,
    /// `dtype.byte_len(num_elements())` little-endian bytes (in the stored order).
    pub data: Cow<'a, [u8]>,
}

impl TensorView<'_> {
    /// The number of elements (the product of the shape; 1 for a scalar).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The rows and columns of the stored matrix: `[shape[1], shape[0]]` when transposed, else
    /// `[all but the last dimension, last dimension]`.
    fn stored_rows_cols(&self) -> (usize, usize) {
        let n = self.num_elements();
        if self.transposed && self.shape.len() == 2 {
            (self.shape[1], self.shape[0])
        } else {
            let cols = self.shape.last().copied().unwrap_or(1);
            (n.checked_div(cols).unwrap_or(0), cols)
        }
    }

    /// The values as `f32`, in canonical row-major order (dequantized for [`Dtype::Q8_0`],
    /// transposed back when [`transposed`](Self::transposed)); exact for the float dtypes.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let stored: Vec<f32> = match self.dtype {
            Dtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => self
                .data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => self
                .data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::Q8_0 => {
                let mut out = vec![0f32; self.data.len() / crate::q8_0::BLOCK_BYTES * 32];
                for (o, b) in out
                    .chunks_exact_mut(crate::q8_0::BLOCK)
                    .zip(self.data.chunks_exact(crate::q8_0::BLOCK_BYTES))
                {
                    crate::q8_0::dequantize_block(b, o);
                }
                out
            }
        };
        if !self.transposed {
            return stored;
        }
        let (rows, cols) = self.stored_rows_cols();
        if stored.len() != rows * cols {
            return stored;
        }
        // stored [rows, cols] → canonical [cols, rows].
        let mut out = vec![0f32; stored.len()];
        for (r, row) in stored.chunks_exact(cols.max(1)).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                out[c * rows + r] = v;
            }
        }
        out
    }

    /// Calls `f` with every value as f32, in stored order, without allocating for the float
    /// dtypes.
    pub(crate) fn for_each_f32(&self, mut f: impl FnMut(f32)) {
        match self.dtype {
            Dtype::F32 => self
                .data
                .chunks_exact(4)
                .for_each(|c| f(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            Dtype::F16 => self
                .data
                .chunks_exact(2)
                .for_each(|c| f(half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
            Dtype::BF16 => self
                .data
                .chunks_exact(2)
                .for_each(|c| f(half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
            Dtype::Q8_0 => {
                let mut out = [0f32; crate::q8_0::BLOCK];
                for b in self.data.chunks_exact(crate::q8_0::BLOCK_BYTES) {
                    crate::q8_0::dequantize_block(b, &mut out);
                    out.iter().for_each(|&v| f(v));
                }
            }
        }
    }

    /// This tensor as a canonical (not transposed) float tensor of `dtype`: cast (round to
    /// nearest even when narrowing), dequantized from [`Dtype::Q8_0`], transposed back when
    /// [`transposed`](Self::transposed). Borrows when nothing changes.
    ///
    /// [`Dtype::Q8_0`] is not a cast target (quantizing can fail, and the blocked dimension
    /// is the caller's choice: see [`q8_0`](crate::q8_0)): `to_dtype(Dtype::Q8_0)` of a
    /// float tensor gives its canonical f32 form; of a Q8_0 tensor, the tensor itself.
    pub fn to_dtype(&self, dtype: Dtype) -> TensorView<'_> {
        if dtype == self.dtype && (!self.transposed || dtype == Dtype::Q8_0) {
            return TensorView {
                dtype,
                shape: self.shape.clone(),
                transposed: self.transposed,
                data: Cow::Borrowed(&self.data),
            };
        }
        let dtype = if dtype == Dtype::Q8_0 {
            Dtype::F32
        } else {
            dtype
        };
        let push = |data: &mut Vec<u8>, v: f32| match dtype {
            Dtype::F16 => data.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            Dtype::BF16 => data.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            _ => data.extend_from_slice(&v.to_le_bytes()),
        };
        let out_len = dtype.byte_len(self.num_elements()).unwrap_or(0);
        let mut data = Vec::with_capacity(out_len);
        if self.transposed || self.dtype == Dtype::Q8_0 {
            for v in self.to_f32_vec() {
                push(&mut data, v);
            }
        } else {
            // Element by element, without an intermediate f32 buffer.
            self.for_each_f32(|v| push(&mut data, v));
        }
        TensorView {
            dtype,
            shape: self.shape.clone(),
            transposed: false,
            data: Cow::Owned(data),
        }
    }
}

/// Presents the canonical float form to the safetensors writer: a transposed view is written
/// in canonical order and a [`Dtype::Q8_0`] view as f32 (safetensors has no Q8_0), never raw
/// blocks.
impl safetensors::View for &TensorView<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
            .to_safetensors()
            .unwrap_or(safetensors::Dtype::F32)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if self.dtype.is_float() && !self.transposed {
            return Cow::Borrowed(&self.data);
        }
        Cow::Owned(self.to_dtype(Dtype::F32).data.into_owned())
    }
    fn data_len(&self) -> usize {
        if self.dtype.is_float() {
            self.data.len()
        } else {
            self.num_elements().saturating_mul(4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_view(values: &[f32]) -> TensorView<'static> {
        TensorView {
            dtype: Dtype::F32,
            shape: vec![values.len()],
            transposed: false,
            data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    }

    #[test]
    fn f16_cast_rounds_to_nearest_even_and_saturates_to_inf() {
        let tie_down = 1.0 + 2f32.powi(-11); // halfway between 1 and 1 + 2^-10: even is 1
        let tie_up = 1.0 + 3.0 * 2f32.powi(-11); // halfway: even is 1 + 2^-9
        let v = f32_view(&[tie_down, tie_up, 65520.0, -1e-8, f32::NEG_INFINITY, 0.5]);
        let h = v.to_dtype(Dtype::F16);
        assert_eq!(h.data.len(), 12);
        let back = h.to_f32_vec();
        assert_eq!(back[0], 1.0);
        assert_eq!(back[1], 1.0 + 2f32.powi(-9));
        assert_eq!(back[2], f32::INFINITY);
        assert_eq!(back[3], -0.0);
        assert!(back[3].is_sign_negative());
        assert_eq!(back[4], f32::NEG_INFINITY);
        assert_eq!(back[5], 0.5);
        assert!(f32_view(&[f32::NAN]).to_dtype(Dtype::F16).to_f32_vec()[0].is_nan());
    }

    #[test]
    fn bf16_cast_and_back() {
        let v = f32_view(&[1.0 + 2f32.powi(-8), 3.0, -2.5e30]);
        let b = v.to_dtype(Dtype::BF16);
        assert_eq!(b.to_f32_vec()[0], 1.0); // tie to even
        assert_eq!(b.to_f32_vec()[1], 3.0);
        // Widening is exact.
        assert_eq!(b.to_dtype(Dtype::F32).to_f32_vec(), b.to_f32_vec());
        assert_eq!(
            b.to_dtype(Dtype::F16).to_dtype(Dtype::F16).dtype,
            Dtype::F16
        );
    }

    #[test]
    fn q8_0_views_dequantize_in_canonical_order() {
        // A [64, 2] tensor stored transposed: 2 rows of 64 weights, blocks along the rows.
        let canonical: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) / 64.0).collect();
        let stored: Vec<f32> = (0..2)
            .flat_map(|c| (0..64).map(move |r| (r, c)))
            .map(|(r, c)| canonical[r * 2 + c])
            .collect();
        let blocks = crate::q8_0::quantize_rows(&stored, 2, 64).unwrap();
        let t = TensorView {
            dtype: Dtype::Q8_0,
            shape: vec![64, 2],
            transposed: true,
            data: Cow::Owned(blocks),
        };
        let back = t.to_f32_vec();
        for (a, b) in canonical.iter().zip(&back) {
            assert!((a - b).abs() <= 1.0 / 127.0, "{a} {b}");
        }
        let f = t.to_dtype(Dtype::F32);
        assert!(!f.transposed);
        assert_eq!(f.to_f32_vec(), back);
        assert_eq!(t.to_dtype(Dtype::Q8_0).data, t.data);
        let h = t.to_dtype(Dtype::F16);
        assert_eq!(h.data.len(), 256);
    }

    #[test]
    fn same_dtype_borrows() {
        let v = f32_view(&[1.0, 2.0]);
        assert!(matches!(v.to_dtype(Dtype::F32).data, Cow::Borrowed(_)));
    }
}
