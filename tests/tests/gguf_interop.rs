//! GGUF models (`gpt2_weights::gguf::convert_to_gguf`, `Gpt2::load` of a directory with
//! `model.gguf`): the round trip against quantize-at-load and the accuracy cost against f32
//! (printed with `--nocapture` and recorded in the crate README). The reader's checks of
//! crafted files are `gpt2-weights`' tests.

use std::path::{Path, PathBuf};

use gpt2_model::{Config, Gpt2, LoadOptions, Quantization};
use gpt2_tests::*;
use gpt2_weights::gguf::{convert_to_gguf, GgufFile, GgufOptions, GGUF_FILE};
use gpt2_weights::{Layout, Weights, WeightsError};

fn random_dir(tmp: &Path, config: &Config, seed: u64) -> PathBuf {
    let dir = tmp.join(format!("f32-{seed}"));
    Gpt2::random(config, seed, &LoadOptions::default())
        .and_then(|m| m.save_hf(&dir))
        .expect("random model");
    dir
}

fn named(name: &str) -> GgufOptions {
    GgufOptions {
        name: name.into(),
        tokenizer: None,
    }
}

fn config(n_vocab: usize, n_embd: usize, n_layer: usize) -> Config {
    Config {
        n_vocab,
        n_ctx: 64,
        n_embd,
        n_head: 4,
        n_layer,
        layer_norm_epsilon: 1e-5,
    }
}

const PROMPTS: [&[u32]; 3] = [
    &[464, 3290, 318],
    &[50256],
    &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
];

#[test]
fn gguf_round_trip_matches_quantize_at_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(50257, 64, 2);
    let src = random_dir(tmp.path(), &cfg, 11);
    let out = tmp.path().join("q8");
    convert_to_gguf(&src, &out, &named("f32-11")).expect("convert");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.gguf"]);

    let weights = Weights::open(&out).expect("open");
    assert_eq!((weights.config(), weights.layout()), (&cfg, Layout::Gguf));
    let file = GgufFile::open(&out.join(GGUF_FILE)).expect("open");
    assert_eq!(file.version(), 3);
    assert_eq!(file.name(), Some("f32-11"));
    assert_eq!(file.tensors().len(), 2 + 12 * 2 + 2);
    let c_attn = &file.tensors()[4];
    assert_eq!(
        (c_attn.name.as_str(), c_attn.dims.as_slice()),
        ("blk.0.attn_qkv.weight", &[192, 64][..])
    );

    let gguf = Gpt2::load(&out, &LoadOptions::q8_0()).expect("load gguf");
    assert_eq!(gguf.quantization(), Some(Quantization::Q8_0));
    let at_load = Gpt2::load(&src, &LoadOptions::q8_0()).expect("load q8_0");
    // The GGUF's blocks are used where they lie in the mapped file; quantizing at load
    // makes new ones.
    assert!(gguf.weights_in_place());
    assert!(!at_load.weights_in_place());
    let mut worst = 0f32;
    for p in PROMPTS {
        let a = gguf.forward(&row(p)).expect("forward");
        let b = at_load.forward(&row(p)).expect("forward");
        worst = worst.max(max_abs_diff(&a, &b));
        assert_eq!(greedy(&gguf, p, 12), greedy(&at_load, p, 12), "{p:?}");
    }
    // Both round the scales to f16: the same model, bit for bit.
    eprintln!("GGUF vs quantize-at-load: max |logit diff| {worst:.2e}");
    assert_eq!(worst, 0.0);

    // The file alone: a path to model.gguf loads the same model.
    let direct = Gpt2::load(out.join(GGUF_FILE), &LoadOptions::q8_0()).expect("load file");
    let a = direct.forward(&row(PROMPTS[0])).expect("forward");
    let b = gguf.forward(&row(PROMPTS[0])).expect("forward");
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    // Default options dequantize: f32 compute with the Q8_0-rounded weights.
    let deq = Gpt2::load(&out, &LoadOptions::default()).expect("dequantized");
    assert_eq!(deq.quantization(), None);
    let f32m = Gpt2::load(&src, &LoadOptions::default()).expect("f32");
    let a = deq.forward(&row(PROMPTS[2])).expect("forward");
    let b = f32m.forward(&row(PROMPTS[2])).expect("forward");
    assert!(max_abs_diff(&a, &b) < 0.05);
}

/// The accuracy cost of the GGUF file against the f32 weights it came from.
#[test]
fn gguf_accuracy_against_f32() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // GPT-2's proportions (as in tests/q8_0.rs): n_embd 128, 4 layers, full vocabulary.
    let src = random_dir(tmp.path(), &config(50257, 128, 4), 3);
    let out = tmp.path().join("q8");
    convert_to_gguf(&src, &out, &GgufOptions::default()).expect("convert");
    let f32m = Gpt2::load(&src, &LoadOptions::default()).expect("f32");
    let q8 = Gpt2::load(&out, &LoadOptions::q8_0()).expect("gguf");
    let (mut worst, mut agree, mut total, mut margin) = (0f32, 0, 0, 0f64);
    for p in PROMPTS {
        let (d, a, n, m) = compare(&f32m, &q8, p, 16);
        worst = worst.max(d);
        agree += a;
        total += n;
        margin = margin.max(m);
    }
    eprintln!("random n_embd 128: GGUF q8_0 max |logit diff| vs f32 = {worst:.3e}; greedy agreement {agree}/{total}; largest f32 margin at a divergence {margin:.3}");
    assert!(worst <= 0.05, "{worst}");
    assert!(margin < 0.25, "{margin}");

    // The shared gpt2-tiny fixture (n_embd 64), against the f32 model and the HF reference.
    let Some(dir) = shared_fixture("gpt2-tiny") else {
        return;
    };
    let r = Reference::load(dir);
    let out = tmp.path().join("shared-q8");
    convert_to_gguf(&r.dir.join("hf"), &out, &GgufOptions::default()).expect("convert shared");
    let q8 = Gpt2::load(&out, &LoadOptions::q8_0()).expect("gguf");
    let f32m = r.model("hf", gpt2_model::DType::F32);
    let (mut worst, mut agree, mut total, mut margin) = (0f32, 0, 0, 0f64);
    for p in r.prompts() {
        let logits = logits(&q8, &p.ids);
        worst = worst.max(max_abs_diff(&logits, &p.logits));
        let n = ids(&p.json["greedy"]["ids"]).len();
        let (_, a, c, m) = compare(&f32m, &q8, &p.ids, n);
        agree += a;
        total += c;
        margin = margin.max(m);
    }
    eprintln!("shared gpt2-tiny: GGUF q8_0 max |logit diff| vs the reference = {worst:.3e}; greedy agreement {agree}/{total}; largest f32 margin at a divergence {margin:.3}");
    assert!(worst <= 0.4, "{worst}");
    assert!(margin < 0.25, "{margin}");
}

#[test]
fn gguf_refuses_n_embd_not_a_multiple_of_32_and_existing_destinations() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for fixture in ["tiny/hf", "micro/openai"] {
        // n_embd 40 and 16.
        let to = tmp.path().join(fixture.replace('/', "-"));
        let err = convert_to_gguf(&repo_fixture(fixture), &to, &GgufOptions::default())
            .expect_err(fixture);
        assert!(err.to_string().contains("multiple of 32"), "{err}");
        assert!(!to.exists());
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("read_dir").count(),
        0,
        "left-overs"
    );
    let src = random_dir(tmp.path(), &config(64, 32, 1), 1);
    let to = tmp.path().join("exists");
    std::fs::create_dir(&to).expect("mkdir");
    std::fs::write(to.join("keep"), b"mine").expect("write");
    let err = convert_to_gguf(&src, &to, &GgufOptions::default()).expect_err("exists");
    assert!(matches!(err, WeightsError::DestinationExists(_)), "{err}");
    assert_eq!(std::fs::read(to.join("keep")).expect("read"), b"mine");
}

#[test]
fn q8_0_with_f16_activations_is_refused_like_quantize_at_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = random_dir(tmp.path(), &config(64, 32, 1), 3);
    let out = tmp.path().join("q8");
    convert_to_gguf(&src, &out, &GgufOptions::default()).expect("convert");
    let mut opts = LoadOptions::q8_0();
    opts.dtype = gpt2_model::DType::F16;
    let err = Gpt2::load(&out, &opts).expect_err("f16");
    assert!(err.to_string().contains("f32 activations"), "{err}");
}
