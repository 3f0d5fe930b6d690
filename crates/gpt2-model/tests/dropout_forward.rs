//! `Gpt2::forward_dropout`: with p = 0 it is `forward`; with p > 0 it depends on the seed only.

use gpt2_model::nn::functional::Dropout;
use gpt2_model::{Gpt2, LoadOptions, Tensor};

#[test]
fn forward_dropout_with_p_0_is_forward_and_is_seeded_otherwise(
) -> Result<(), gpt2_model::ModelError> {
    let config = gpt2_weights::Config {
        n_vocab: 50,
        n_ctx: 8,
        n_embd: 8,
        n_head: 2,
        n_layer: 2,
        layer_norm_epsilon: 1e-5,
    };
    let model = Gpt2::random(&config, 1, &LoadOptions::default())?;
    let ids = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 7, 8]], model.device())?;
    let plain = model.forward(&ids)?.flatten_all()?.to_vec1::<f32>()?;
    let none = model
        .forward_dropout(&ids, &Dropout { p: 0.0, seed: 9 })?
        .flatten_all()?
        .to_vec1::<f32>()?;
    for (a, b) in plain.iter().zip(&none) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let run = |seed| -> Result<Vec<f32>, gpt2_model::ModelError> {
        Ok(model
            .forward_dropout(&ids, &Dropout { p: 0.2, seed })?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    assert_eq!(run(1)?, run(1)?);
    assert_ne!(run(1)?, run(2)?);
    assert_ne!(run(1)?, plain);
    Ok(())
}
