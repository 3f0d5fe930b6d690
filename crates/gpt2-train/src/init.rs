//! A new model's weights, initialized as GPT-2 was (and as nanoGPT and Hugging Face's
//! `GPT2LMHeadModel` initialize one): every matrix and embedding `N(0, 0.02²)`, the residual
//! projections (`attn.c_proj`, `mlp.c_proj`) `N(0, (0.02/√(2·n_layer))²)`, biases 0,
//! layer-norm gains 1 and shifts 0.

use candle_core::{Device, Tensor};
use gpt2_weights::Config;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::Result;

/// The standard deviation of GPT-2's initialization.
pub const INIT_STD: f64 = 0.02;

/// Every weight of a new model of shape `config` (canonical names and order), seeded: the
/// same `config` and `seed` give the same weights. Each tensor draws from its own generator
/// (seeded from `seed` and the tensor's index).
///
/// ```
/// let config = gpt2_weights::Config { n_vocab: 50, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 2, layer_norm_epsilon: 1e-5 };
/// let w = gpt2_train::init::gpt2_init(&config, 1)?;
/// let ln = w.iter().find(|(n, _)| n == "h.0.ln_1.weight").unwrap();
/// assert_eq!(ln.1.to_vec1::<f32>()?, vec![1.0; 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn gpt2_init(config: &Config, seed: u64) -> Result<Vec<(String, Tensor)>> {
    config.validate()?;
    let residual_std = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
    gpt2_weights::expected_tensors(config)
        .into_iter()
        .enumerate()
        .map(|(index, (name, shape))| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.contains("ln_") {
                vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let std = if name.ends_with("c_proj.weight") {
                    residual_std
                } else {
                    INIT_STD
                };
                let mut rng = ChaCha8Rng::seed_from_u64(
                    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                match Normal::new(0.0f32, std as f32) {
                    Ok(d) => (0..n).map(|_| d.sample(&mut rng)).collect(),
                    Err(_) => vec![0.0; n],
                }
            };
            Ok((name, Tensor::from_vec(values, shape, &Device::Cpu)?))
        })
        .collect()
}
