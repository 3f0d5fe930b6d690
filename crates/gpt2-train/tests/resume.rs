//! Checkpoints: a run stopped after 5 steps and resumed to 10 ends with the same weights, bit
//! for bit, as 10 steps in one go (shuffled data and dropout: their draws are restored too); a checkpoint is a model directory that loads for
//! inference; and what is not a checkpoint is refused.

use std::path::Path;

use gpt2_model::{Gpt2, LoadOptions};
use gpt2_tokenizer::Tokenizer;
use gpt2_train::batches::DataOrder;
use gpt2_train::{checkpoint, Settings, TrainError, Trainer};

fn fixture() -> (gpt2_weights::Config, Vec<(String, candle_core::Tensor)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny/hf");
    let model = Gpt2::load(dir, &LoadOptions::default()).expect("fixture model");
    (*model.config(), model.named_tensors().expect("tensors"))
}

fn ids() -> Vec<u32> {
    (0..600u32).map(|i| (i * 7919 + i / 3) % 3000).collect()
}

fn settings() -> Settings {
    Settings {
        batch_size: 2,
        seq_len: 16,
        grad_accum: 2,
        steps: 10,
        lr: 3e-3,
        min_lr: 3e-4,
        warmup_steps: 3,
        grad_clip: 1.0,
        data_order: DataOrder::Shuffled,
        dropout: 0.1,
        seed: 5,
        ..Settings::default()
    }
}

#[test]
fn five_steps_then_resume_to_ten_is_bit_exact() {
    let (config, weights) = fixture();
    let mut whole = Trainer::new(&config, weights.clone(), settings(), ids()).expect("trainer");
    let mut losses = Vec::new();
    while !whole.is_done() {
        losses.push(whole.step().expect("step").loss);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let mut first = Trainer::new(&config, weights, settings(), ids()).expect("trainer");
    for _ in 0..5 {
        first.step().expect("step");
    }
    first.save(&out, &Tokenizer::gpt2()).expect("save");
    // Saving again over the checkpoint replaces it.
    first.save(&out, &Tokenizer::gpt2()).expect("save again");
    drop(first);

    let ckpt = checkpoint::load(&out).expect("load checkpoint");
    assert_eq!(ckpt.state.step, 5);
    let mut resumed = Trainer::resume(ckpt, None, ids()).expect("resume");
    let mut resumed_losses = Vec::new();
    while !resumed.is_done() {
        resumed_losses.push(resumed.step().expect("step").loss);
    }
    assert_eq!(resumed_losses, losses[5..].to_vec());
    let (a, b) = (whole.weights().expect("w"), resumed.weights().expect("w"));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs"
        );
    }
    // No temporaries are left beside the checkpoint.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("run")]);
}

#[test]
fn a_checkpoint_is_a_model_directory() {
    let (config, weights) = fixture();
    let mut t = Trainer::new(&config, weights, settings(), ids()).expect("trainer");
    t.step().expect("step");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("model");
    t.save(&out, &Tokenizer::gpt2()).expect("save");
    let model = Gpt2::load(&out, &LoadOptions::default()).expect("loads for inference");
    let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], &candle_core::Device::Cpu).expect("ids");
    let (a, b) = (
        model.forward(&ids).expect("forward"),
        t.model().forward(&ids).expect("forward"),
    );
    let d = (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    assert!(d < 1e-5, "{d}");
    let tok = Tokenizer::from_dir(&out).expect("tokenizer files");
    assert_eq!(tok.encode("Hello world").expect("encode"), [15496, 995]);
}

#[test]
fn what_is_not_a_checkpoint_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not = |p: &Path| matches!(checkpoint::load(p), Err(TrainError::NotACheckpoint { .. }));
    assert!(not(&dir.path().join("missing")));
    assert!(not(dir.path()));
    // A model directory without optimizer state is not one either.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny/hf");
    assert!(not(&model));
    // Resuming on other data is refused.
    let (config, weights) = fixture();
    let t = Trainer::new(&config, weights, settings(), ids()).expect("trainer");
    let out = dir.path().join("c");
    t.save(&out, &Tokenizer::gpt2()).expect("save");
    let other: Vec<u32> = ids().into_iter().rev().collect();
    let ckpt = checkpoint::load(&out).expect("load");
    assert!(matches!(
        Trainer::resume(ckpt, None, other),
        Err(TrainError::NotACheckpoint { .. })
    ));
}
