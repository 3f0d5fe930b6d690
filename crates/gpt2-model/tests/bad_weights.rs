//! Weights that are not finite numbers are refused at load, naming the tensor, on every
//! path (with 8-bit kernels a NaN used to be rounded to zeros and give plausible numbers).

use std::borrow::Cow;

use gpt2_model::{Config, Gpt2, LoadOptions, ModelError};
use gpt2_weights::{Dtype, TensorView};

/// A random model saved with `value` at index 3 of tensor `bad`.
fn saved_with(dir: &std::path::Path, bad: &str, value: f32) {
    let config: Config = "124M"
        .parse::<gpt2_model::ModelSize>()
        .expect("size")
        .config();
    let config = Config {
        n_vocab: 64,
        n_ctx: 8,
        n_embd: 32,
        n_layer: 1,
        n_head: 2,
        ..config
    };
    let model = Gpt2::random(&config, 5, &LoadOptions::default()).expect("random");
    let views: Vec<(String, TensorView<'static>)> = model
        .named_tensors()
        .expect("tensors")
        .into_iter()
        .map(|(name, t)| {
            let mut v: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).expect("values");
            if name == bad {
                v[3] = value;
            }
            let view = TensorView {
                dtype: Dtype::F32,
                shape: t.dims().to_vec(),
                transposed: false,
                data: Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            (name, view)
        })
        .collect();
    gpt2_weights::save_hf(dir, &config, &views).expect("save");
}

#[test]
fn nan_and_infinite_weights_are_load_errors_naming_the_tensor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (bad, value)) in [
        ("ln_f.weight", f32::NAN),
        ("h.0.attn.c_attn.bias", f32::INFINITY),
        ("wpe.weight", f32::NEG_INFINITY),
        ("h.0.mlp.c_fc.weight", f32::NAN),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("m{i}"));
        saved_with(&dir, bad, value);
        // Quantize-at-load refuses every one; f32 refuses the small tensors (the matrices are
        // used in place, unscanned).
        let q8 = Gpt2::load(&dir, &LoadOptions::q8_0()).expect_err("q8_0");
        assert!(q8.to_string().contains(bad), "{bad}: {q8}");
        if !bad.ends_with("c_fc.weight") {
            let f32e = Gpt2::load(&dir, &LoadOptions::default()).expect_err("f32");
            assert!(
                matches!(&f32e, ModelError::NonFinite { name, index: 3, .. } if name == bad),
                "{f32e}"
            );
        }
    }
}
