//! Reading the Hugging Face layout.

mod common;

use std::borrow::Cow;
use std::path::Path;

use gpt2_weights::{expected_tensors, Dtype, Layout, Weights};

fn check_hf(dir: &Path) -> Weights {
    let w = Weights::open(dir).unwrap();
    assert_eq!(w.layout(), Layout::HuggingFace);
    assert_eq!(w.dtype(), Dtype::F32);
    let c = *w.config();
    let expected = expected_tensors(&c);
    let names: Vec<&str> = w.names().collect();
    assert_eq!(
        names,
        expected.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    for (name, shape) in &expected {
        let t = w.tensor(name).unwrap();
        assert_eq!(&t.shape, shape);
        assert!(matches!(t.data, Cow::Borrowed(_)), "{name} was copied");
        assert_eq!(t.data.len(), t.num_elements() * 4);
    }
    assert_eq!(w.num_parameters(), c.num_parameters());
    w.verify().unwrap();
    w
}

#[test]
fn micro_hf_loads() {
    let w = check_hf(&common::fixtures("micro/hf"));
    let c = w.config();
    assert_eq!(
        (c.n_vocab, c.n_ctx, c.n_embd, c.n_head, c.n_layer),
        (96, 16, 16, 2, 1)
    );
    assert_eq!(c.layer_norm_epsilon, 1e-5);
}

#[test]
fn tiny_hf_loads() {
    let w = check_hf(&common::fixtures("tiny/hf"));
    let c = w.config();
    assert_eq!(
        (c.n_vocab, c.n_embd, c.n_head, c.n_layer),
        (50257, 40, 5, 2)
    );
}

#[test]
fn shared_tiny_hf_loads() {
    let Some(dir) = common::shared("gpt2-tiny/hf") else {
        return;
    };
    let w = check_hf(&dir);
    let c = w.config();
    assert_eq!(
        (c.n_vocab, c.n_ctx, c.n_embd, c.n_head, c.n_layer),
        (50257, 128, 64, 4, 2)
    );
}
