//! Reading the Hugging Face layout.

mod common;

use gpt2_weights::{expected_tensors, Dtype, Layout, Weights};

#[test]
fn shared_tiny_hf_loads() {
    let Some(dir) = common::shared("gpt2-tiny/hf") else {
        return;
    };
    let w = Weights::open(&dir).unwrap();
    assert_eq!(w.layout(), Layout::HuggingFace);
    assert_eq!(w.dtype(), Dtype::F32);
    let c = *w.config();
    assert_eq!(
        (c.n_vocab, c.n_ctx, c.n_embd, c.n_head, c.n_layer),
        (50257, 128, 64, 4, 2)
    );
    let expected = expected_tensors(&c);
    let names: Vec<&str> = w.names().collect();
    assert_eq!(
        names,
        expected.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    for (name, shape) in &expected {
        let t = w.tensor(name).unwrap();
        assert_eq!(&t.shape, shape);
        assert!(
            matches!(t.data, std::borrow::Cow::Borrowed(_)),
            "{name} was copied"
        );
        assert_eq!(t.data.len(), t.num_elements() * 4);
    }
    assert_eq!(w.num_parameters(), c.num_parameters());
    w.verify().unwrap();
}
