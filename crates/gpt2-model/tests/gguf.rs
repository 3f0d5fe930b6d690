//! GGUF files (`gguf::convert_to_gguf`, `Gpt2::load` of a directory with `model.gguf`):
//! the round trip against quantize-at-load, the accuracy cost against f32 (printed with
//! `--nocapture` and recorded in the crate README), and typed errors for bad files.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use common::*;
use gpt2_model::gguf::{convert_to_gguf, GgufError, GgufFile, GGUF_FILE};
use gpt2_model::{Config, Device, Gpt2, LoadOptions, ModelError, Quantization};
use gpt2_weights::WeightsError;

fn random_dir(tmp: &Path, config: &Config, seed: u64) -> PathBuf {
    let dir = tmp.join(format!("f32-{seed}"));
    Gpt2::random(config, seed, &LoadOptions::default())
        .and_then(|m| m.save_hf(&dir))
        .expect("random model");
    dir
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
    convert_to_gguf(&src, &out).expect("convert");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.gguf"]);

    let file = GgufFile::open(&out.join(GGUF_FILE)).expect("open");
    assert_eq!(file.config(), &cfg);
    assert_eq!(file.version(), 3);
    assert_eq!(file.name(), Some("f32-11"));
    assert_eq!(file.tensors().len(), 2 + 12 * 2 + 2);
    assert_eq!(file.tensors()[2].name, "blk.0.attn_norm.weight");
    let c_attn = &file.tensors()[4];
    assert_eq!(
        (
            c_attn.name.as_str(),
            c_attn.dtype.as_str(),
            c_attn.shape.as_slice()
        ),
        ("blk.0.attn_qkv.weight", "Q8_0", &[192, 64][..])
    );
    // No tokenizer files beside the weights and GPT-2's vocabulary size: GPT-2's tokenizer.
    let tok = file.tokenizer().expect("tokenizer").expect("stored");
    let gpt2 = gpt2_tokenizer::Tokenizer::gpt2();
    let text = "GGUF files, loaded: ünïcode too";
    assert_eq!(
        tok.encode(text).expect("encode"),
        gpt2.encode(text).expect("encode")
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
    convert_to_gguf(&src, &out).expect("convert");
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
    convert_to_gguf(&r.dir.join("hf"), &out).expect("convert shared");
    let q8 = Gpt2::load(&out, &LoadOptions::q8_0()).expect("gguf");
    let f32m = r.model("hf", gpt2_model::DType::F32);
    let (mut worst, mut agree, mut total, mut margin) = (0f32, 0, 0, 0f64);
    for p in r.prompts() {
        let logits = q8
            .forward(&row(&p.ids))
            .expect("forward")
            .squeeze(0)
            .expect("squeeze");
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
        let err = convert_to_gguf(&repo_fixture(fixture), &to).expect_err(fixture);
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
    let err = convert_to_gguf(&src, &to).expect_err("exists");
    assert!(
        matches!(err, ModelError::Weights(WeightsError::DestinationExists(_))),
        "{err}"
    );
    assert_eq!(std::fs::read(to.join("keep")).expect("read"), b"mine");
}

/// Every tensor of a file, read back as candle QTensors (to write modified copies).
fn read_all(path: &Path) -> (Content, Vec<(String, QTensor)>) {
    let mut f = std::fs::File::open(path).expect("open");
    let content = Content::read(&mut f).expect("read");
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    let tensors = names
        .into_iter()
        .map(|n| {
            let t = content.tensor(&mut f, &n, &Device::Cpu).expect("tensor");
            (n, t)
        })
        .collect();
    (content, tensors)
}

fn write_copy(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) {
    let mut f = std::fs::File::create(path).expect("create");
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut f, &md, &ts).expect("write");
}

fn gguf_err(path: &Path) -> GgufError {
    match Gpt2::load_gguf(path, &LoadOptions::q8_0()) {
        Err(ModelError::Gguf(e)) => e,
        Err(other) => panic!("{}: not a GGUF error: {other}", path.display()),
        Ok(_) => panic!("{}: loaded", path.display()),
    }
}

#[test]
fn bad_gguf_files_are_typed_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = random_dir(tmp.path(), &config(96, 32, 1), 2);
    let out = tmp.path().join("q8");
    convert_to_gguf(&src, &out).expect("convert");
    let good = out.join(GGUF_FILE);
    let bytes = std::fs::read(&good).expect("read");

    // Every truncation (a sample of lengths through the header and the data) is an error.
    let cut = tmp.path().join("cut.gguf");
    let step = (bytes.len() / 300).max(1);
    for len in (0..64).chain((64..bytes.len()).step_by(step)) {
        std::fs::write(&cut, &bytes[..len]).expect("write");
        assert!(
            Gpt2::load_gguf(&cut, &LoadOptions::q8_0()).is_err(),
            "truncated to {len} bytes loaded"
        );
    }
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).expect("write");
    assert!(matches!(gguf_err(&cut), GgufError::Truncated { .. }));
    let mut bad = bytes.clone();
    bad[0] = b'X';
    std::fs::write(&cut, &bad).expect("write");
    assert!(matches!(gguf_err(&cut), GgufError::Format { .. }));

    let (content, tensors) = read_all(&good);
    let metadata: Vec<(String, Value)> = content.metadata.clone().into_iter().collect();
    let path = tmp.path().join("edited.gguf");
    let edit = |md: &[(String, Value)], ts: &[(String, QTensor)]| {
        let _ = std::fs::remove_file(&path);
        write_copy(&path, md, ts);
        gguf_err(&path)
    };
    // The unmodified copy loads.
    write_copy(&path, &metadata, &tensors);
    Gpt2::load_gguf(&path, &LoadOptions::q8_0()).expect("copy loads");

    let without = |name: &str| -> Vec<(String, QTensor)> {
        read_all(&good)
            .1
            .into_iter()
            .filter(|(n, _)| n != name)
            .collect()
    };
    let e = edit(&metadata, &without("blk.0.ffn_up.bias"));
    assert!(
        matches!(&e, GgufError::MissingTensor { name, .. } if name == "blk.0.ffn_up.bias"),
        "{e}"
    );

    // A bias of the wrong length.
    let mut ts = without("blk.0.ffn_up.bias");
    let short =
        candle_core::Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).expect("zeros");
    ts.push((
        "blk.0.ffn_up.bias".into(),
        QTensor::quantize(&short, GgmlDType::F32).expect("q"),
    ));
    let e = edit(&metadata, &ts);
    assert!(
        matches!(&e, GgufError::WrongShape { expected, .. } if expected == &[128]),
        "{e}"
    );

    // A matrix in F32 instead of Q8_0.
    let mut ts = without("blk.0.attn_qkv.weight");
    let w =
        candle_core::Tensor::zeros((96, 32), candle_core::DType::F32, &Device::Cpu).expect("zeros");
    ts.push((
        "blk.0.attn_qkv.weight".into(),
        QTensor::quantize(&w, GgmlDType::F32).expect("q"),
    ));
    let e = edit(&metadata, &ts);
    assert!(matches!(&e, GgufError::UnsupportedDtype { .. }), "{e}");

    // Another architecture; a missing hyperparameter.
    let mut md = metadata.clone();
    for (k, v) in md.iter_mut() {
        if k == "general.architecture" {
            *v = Value::String("llama".into());
        }
    }
    assert!(
        matches!(edit(&md, &tensors), GgufError::Metadata { key, .. } if key == "general.architecture")
    );
    let md: Vec<_> = metadata
        .iter()
        .filter(|(k, _)| k != "gpt2.block_count")
        .cloned()
        .collect();
    assert!(
        matches!(edit(&md, &tensors), GgufError::Metadata { key, .. } if key == "gpt2.block_count")
    );

    // An extra tensor; llama.cpp's tied `output.weight` (allowed when equal to the embedding).
    let mut ts = read_all(&good).1;
    let extra =
        candle_core::Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).expect("zeros");
    ts.push((
        "blk.0.attn.bias".into(),
        QTensor::quantize(&extra, GgmlDType::F32).expect("q"),
    ));
    assert!(matches!(
        edit(&metadata, &ts),
        GgufError::UnexpectedTensors { .. }
    ));
    let mut ts = read_all(&good).1;
    let embd = read_all(&good)
        .1
        .into_iter()
        .find(|(n, _)| n == "token_embd.weight")
        .expect("token_embd")
        .1;
    ts.push(("output.weight".into(), embd));
    let _ = std::fs::remove_file(&path);
    write_copy(&path, &metadata, &ts);
    Gpt2::load_gguf(&path, &LoadOptions::q8_0()).expect("tied output.weight loads");
    let mut ts = read_all(&good).1;
    let other = read_all(&good)
        .1
        .into_iter()
        .find(|(n, _)| n == "token_embd.weight")
        .expect("token_embd")
        .1
        .dequantize(&Device::Cpu)
        .and_then(|t| t + 1.0)
        .and_then(|t| QTensor::quantize(&t, GgmlDType::Q8_0))
        .expect("untied");
    ts.push(("output.weight".into(), other));
    assert!(matches!(
        edit(&metadata, &ts),
        GgufError::UntiedOutput { .. }
    ));

    // Q8_0 on a GPU or with f16 activations is refused like quantize-at-load.
    let mut opts = LoadOptions::q8_0();
    opts.dtype = gpt2_model::DType::F16;
    let err = Gpt2::load_gguf(&good, &opts).expect_err("f16");
    assert!(err.to_string().contains("f32 activations"), "{err}");
}
