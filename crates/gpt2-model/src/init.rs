//! Random initialisation (for benchmarks at the real sizes and for tests) and saving.

use std::path::Path;

use candle_core::{DType, Tensor};
use gpt2_weights::{Config, TensorView};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::cpu::matrix::Matrix;
use crate::error::{ModelError, Result};
use crate::{Gpt2, LoadOptions};

/// The value of one randomly initialised tensor (f32, row-major), GPT-2's recipe:
/// matrices and embeddings `N(0, 0.02²)` (the residual projections `c_proj` scaled by
/// `1/√(2·n_layer)`), biases `N(0, 0.02²)`, layer-norm gains `1 + N(0, 0.1²)` and shifts
/// `N(0, 0.05²)` (perturbed away from 1 and 0 so that mistakes in them show).
///
/// Each tensor has its own generator seeded from `seed` and the tensor's index, so the
/// values do not depend on the order of generation.
fn random_values(
    config: &Config,
    index: usize,
    name: &str,
    shape: &[usize],
    seed: u64,
) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let is_ln = name.contains("ln_");
    let (mean, std) = match (is_ln, name.ends_with(".weight")) {
        (true, true) => (1.0, 0.1),
        (true, false) => (0.0, 0.05),
        (false, true) if name.ends_with("c_proj.weight") => {
            (0.0, 0.02 / (2.0 * config.n_layer as f32).sqrt())
        }
        _ => (0.0, 0.02),
    };
    // Both are finite and std > 0, so Normal::new cannot fail; fall back to zeros anyway.
    match Normal::new(mean, std) {
        Ok(dist) => (0..n).map(|_| dist.sample(&mut rng)).collect(),
        Err(_) => vec![mean; n],
    }
}

impl Gpt2 {
    /// A model of the given shape with random weights (see the crate docs for the recipe),
    /// the same for the same `config` and `seed`. Used for benchmarks at the real sizes
    /// without downloads; [`Gpt2::save_hf`] writes it as a model directory.
    ///
    /// ```
    /// use gpt2_model::{Gpt2, LoadOptions};
    /// use gpt2_weights::Config;
    /// # fn main() -> Result<(), gpt2_model::ModelError> {
    /// let config = Config { n_vocab: 50, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 2, layer_norm_epsilon: 1e-5 };
    /// let a = Gpt2::random(&config, 7, &LoadOptions::default())?;
    /// let b = Gpt2::random(&config, 7, &LoadOptions::default())?;
    /// let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], a.device())?;
    /// let (la, lb) = (a.forward(&ids)?, b.forward(&ids)?);
    /// assert_eq!(la.to_vec3::<f32>()?, lb.to_vec3::<f32>()?);
    /// # Ok(()) }
    /// ```
    pub fn random(config: &Config, seed: u64, opts: &LoadOptions) -> Result<Self> {
        config.validate()?;
        let expected = gpt2_weights::expected_tensors(config);
        Self::build(config, opts, |name, dtype| {
            let (index, (_, shape)) = expected
                .iter()
                .enumerate()
                .find(|(_, (n, _))| n == name)
                .ok_or_else(|| ModelError::Config(format!("no tensor named {name}")))?;
            let values = random_values(config, index, name, shape, seed);
            let t = Tensor::from_vec(values, shape.as_slice(), &opts.device)?;
            Ok(Matrix::Tensor(t.to_dtype(dtype)?))
        })
    }

    /// Writes the model as a Hugging Face-layout directory (`config.json` +
    /// `model.safetensors`, in the model's dtype: f32, f16 or bf16), atomically (see
    /// `gpt2_weights::save_hf`). Holds one extra copy of the weights in memory while writing.
    pub fn save_hf(&self, dir: impl AsRef<Path>) -> Result<()> {
        if let Some(q) = self.quantization() {
            return Err(ModelError::BadInput {
                expected: "an unquantized model (save_hf writes f32/f16/bf16 safetensors)".into(),
                found: format!("a {q:?} model"),
            });
        }
        let mut views = Vec::new();
        for (name, t) in self.named_tensors()? {
            let shape = t.dims().to_vec();
            // One dtype for the whole file (biases and norms are f32 on the CPU).
            let t = t
                .to_device(&candle_core::Device::Cpu)?
                .to_dtype(self.dtype())?
                .flatten_all()?;
            let (dtype, data): (gpt2_weights::Dtype, Vec<u8>) = match t.dtype() {
                DType::F32 => (
                    gpt2_weights::Dtype::F32,
                    t.to_vec1::<f32>()?
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                ),
                DType::F16 => (
                    gpt2_weights::Dtype::F16,
                    t.to_vec1::<half::f16>()?
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                ),
                DType::BF16 => (
                    gpt2_weights::Dtype::BF16,
                    t.to_vec1::<half::bf16>()?
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                ),
                other => return Err(ModelError::UnsupportedDtype(other)),
            };
            views.push((
                name,
                TensorView {
                    dtype,
                    shape,
                    transposed: false,
                    data: std::borrow::Cow::Owned(data),
                },
            ));
        }
        gpt2_weights::save_hf(dir.as_ref(), self.config(), &views)?;
        Ok(())
    }
}
