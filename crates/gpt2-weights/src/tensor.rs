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
}

impl Dtype {
    /// Bytes per element.
    ///
    /// ```
    /// assert_eq!(gpt2_weights::Dtype::F16.size_in_bytes(), 2);
    /// ```
    pub fn size_in_bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    pub(crate) fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            Dtype::F32 => safetensors::Dtype::F32,
            Dtype::F16 => safetensors::Dtype::F16,
            Dtype::BF16 => safetensors::Dtype::BF16,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
        })
    }
}

impl FromStr for Dtype {
    type Err = WeightsError;

    /// `f32`/`float32`, `f16`/`float16`/`half`, `bf16`/`bfloat16` (any case).
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
            _ => Err(WeightsError::Parse {
                what: "dtype",
                found: s.to_string(),
                expected: "f32, f16, bf16",
            }),
        }
    }
}

/// The two directory layouts this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// OpenAI's release (`models/124M/`): `checkpoint`, `hparams.json`, a TensorFlow v1
    /// checkpoint `model.ckpt.index` + `model.ckpt.data-NNNNN-of-MMMMM`, `encoder.json`,
    /// `vocab.bpe`.
    OpenAi,
    /// The Hugging Face hub (`openai-community/gpt2`): `config.json` and
    /// `model.safetensors` (or sharded, with `model.safetensors.index.json`).
    HuggingFace,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::OpenAi => "openai",
            Layout::HuggingFace => "huggingface",
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
/// let t = TensorView { dtype: Dtype::F32, shape: vec![2], data: Cow::Owned(bytes) };
/// assert_eq!(t.num_elements(), 2);
/// assert_eq!(t.to_f32_vec(), vec![1.0, -2.5]);
/// assert_eq!(t.to_dtype(Dtype::F16).to_f32_vec(), vec![1.0, -2.5]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView<'a> {
    /// Element type of `data`.
    pub dtype: Dtype,
    /// Shape, outermost dimension first (row-major).
    pub shape: Vec<usize>,
    /// `num_elements() * dtype.size_in_bytes()` little-endian bytes.
    pub data: Cow<'a, [u8]>,
}

impl TensorView<'_> {
    /// The number of elements (the product of the shape; 1 for a scalar).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as `f32` (exact for every supported dtype).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.dtype {
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
        }
    }

    /// This tensor with its elements cast to `dtype` (round to nearest even when
    /// narrowing). Borrows when `dtype` is already the tensor's dtype.
    pub fn to_dtype(&self, dtype: Dtype) -> TensorView<'_> {
        if dtype == self.dtype {
            return TensorView {
                dtype,
                shape: self.shape.clone(),
                data: Cow::Borrowed(&self.data),
            };
        }
        // Element by element, without an intermediate f32 buffer.
        let out_len = self.num_elements() * dtype.size_in_bytes();
        let mut data = Vec::with_capacity(out_len);
        let src = self.dtype.size_in_bytes();
        for c in self.data.chunks_exact(src) {
            let v = match self.dtype {
                Dtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                Dtype::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
                Dtype::BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
            };
            match dtype {
                Dtype::F32 => data.extend_from_slice(&v.to_le_bytes()),
                Dtype::F16 => data.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                Dtype::BF16 => data.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            }
        }
        TensorView {
            dtype,
            shape: self.shape.clone(),
            data: Cow::Owned(data),
        }
    }
}

impl safetensors::View for &TensorView<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.to_safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_view(values: &[f32]) -> TensorView<'static> {
        TensorView {
            dtype: Dtype::F32,
            shape: vec![values.len()],
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
    fn same_dtype_borrows() {
        let v = f32_view(&[1.0, 2.0]);
        assert!(matches!(v.to_dtype(Dtype::F32).data, Cow::Borrowed(_)));
    }
}
