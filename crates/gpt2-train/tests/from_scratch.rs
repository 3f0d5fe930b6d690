//! A model trained from scratch (GPT-2's initialization, the full 50257-token vocabulary)
//! learns: the loss falls over 200 steps on a small English text.

use std::path::Path;

use gpt2_tokenizer::Tokenizer;
use gpt2_train::batches::DataOrder;
use gpt2_train::{data, init::gpt2_init, Settings, Trainer};

#[test]
fn the_loss_falls_over_200_steps() {
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let ids = data::read_tokens(&[text], &Tokenizer::gpt2(), 50257, &mut |_, _| {}).expect("data");
    let config = gpt2_weights::Config {
        n_vocab: 50257,
        n_ctx: 32,
        n_embd: 32,
        n_head: 2,
        n_layer: 2,
        layer_norm_epsilon: 1e-5,
    };
    let settings = Settings {
        batch_size: 2,
        seq_len: 32,
        steps: 200,
        lr: 3e-3,
        min_lr: 3e-4,
        warmup_steps: 20,
        data_order: DataOrder::Shuffled,
        ..Settings::default()
    };
    let mut t = Trainer::new(&config, gpt2_init(&config, 1).expect("init"), settings, ids)
        .expect("trainer");
    let mut losses = Vec::new();
    while !t.is_done() {
        losses.push(t.step().expect("step").loss);
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (start, end) = (mean(&losses[..10]), mean(&losses[190..]));
    eprintln!("loss: first 10 steps {start:.3}, last 10 {end:.3}");
    // ln(50257) = 10.8 at the start; a small model on a small text gets well below.
    assert!(start > 10.0, "{start}");
    assert!(end < start - 3.0, "{start} → {end}");
}
