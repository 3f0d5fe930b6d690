//! Weights that are not finite numbers are refused at load, naming the tensor, on every
//! path (with 8-bit kernels a NaN used to be rounded to zeros and give plausible numbers).

use std::borrow::Cow;

use gpt2_model::{Config, Gpt2, LoadOptions, ModelError};
use gpt2_weights::{Dtype, TensorView};

/// A random model saved in `dtype` (f32 or f16) with `value` at index 3 of tensor `bad`.
fn saved_with(dir: &std::path::Path, bad: &str, value: f32, dtype: Dtype) {
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
            let data = match dtype {
                Dtype::F16 => v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            let view = TensorView {
                dtype,
                shape: t.dims().to_vec(),
                transposed: false,
                data: Cow::Owned(data),
            };
            (name, view)
        })
        .collect();
    gpt2_weights::save_hf(dir, &config, &views).expect("save");
}

/// Every storage a weight can end in: copied (small tensors, or a cast), used in place from
/// the map (f32 or f16), quantized at load.
fn every_load(dir: &std::path::Path, bad: &str) {
    let f16 = LoadOptions {
        dtype: candle_core::DType::F16,
        ..LoadOptions::default()
    };
    for (what, opts) in [
        ("f32 (in place)", LoadOptions::default()),
        ("f16 (a cast)", f16),
        ("q8_0 at load", LoadOptions::q8_0()),
    ] {
        let err = Gpt2::load(dir, &opts).expect_err(what);
        assert!(err.to_string().contains(bad), "{what}, {bad}: {err}");
        if what != "q8_0 at load" {
            assert!(
                matches!(&err, ModelError::NonFinite { name, index: 3, .. } if name == bad),
                "{what}: {err}"
            );
        }
    }
}

#[test]
fn nan_and_infinite_weights_are_load_errors_naming_the_tensor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (bad, value)) in [
        ("ln_f.weight", f32::NAN),
        ("h.0.attn.c_attn.bias", f32::INFINITY),
        ("wpe.weight", f32::NEG_INFINITY),
        ("h.0.mlp.c_fc.weight", f32::NAN),
        ("h.0.attn.c_proj.weight", f32::INFINITY),
        ("wte.weight", f32::NAN),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("m{i}"));
        saved_with(&dir, bad, value, Dtype::F32);
        every_load(&dir, bad);
    }
}

#[test]
fn nan_in_an_f16_file_is_a_load_error_in_place_and_widened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, bad) in ["h.0.mlp.c_proj.weight", "wte.weight", "h.0.ln_2.bias"]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("h{i}"));
        saved_with(&dir, bad, f32::NAN, Dtype::F16);
        every_load(&dir, bad);
    }
}

/// A GGUF file whose Q8_0 block scale (an f16) is patched to NaN or infinity is refused,
/// whether its blocks are used in place or dequantized.
#[test]
fn a_non_finite_q8_0_scale_in_a_gguf_file_is_a_load_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clean = tmp.path().join("clean");
    saved_with(&clean, "none", 0.0, Dtype::F32);
    for (i, (gguf_name, name, scale)) in [
        ("blk.0.ffn_up.weight", "h.0.mlp.c_fc.weight", 0x7e00u16), // NaN
        ("token_embd.weight", "wte.weight", 0x7c00),               // +inf
        ("blk.0.attn_output.weight", "h.0.attn.c_proj.weight", 0xfc00), // -inf
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("q{i}"));
        gpt2_weights::gguf::convert_to_gguf(&clean, &dir, &Default::default()).expect("convert");
        let path = gpt2_weights::gguf::find_gguf(&dir).expect("a gguf file");
        let file = gpt2_weights::gguf::GgufFile::open(&path).expect("open");
        let at = file.data_offset() + file.tensor(gguf_name).expect(gguf_name).offset;
        drop(file);
        let mut bytes = std::fs::read(&path).expect("read");
        // The second block of the tensor.
        let block = at as usize + gpt2_weights::q8_0::BLOCK_BYTES;
        bytes[block..block + 2].copy_from_slice(&scale.to_le_bytes());
        std::fs::write(&path, bytes).expect("write");
        for opts in [LoadOptions::q8_0(), LoadOptions::default()] {
            let err = Gpt2::load(&dir, &opts).expect_err(name);
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let err = Gpt2::load(&dir, &LoadOptions::q8_0()).expect_err(name);
        assert!(
            matches!(&err, ModelError::NonFiniteScale { name: n, .. } if n == name),
            "{err}"
        );
    }
}
