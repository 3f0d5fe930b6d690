//! Reading OpenAI's TensorFlow checkpoints: every layout of the committed fixtures
//! (and of the shared ones, when present) loads into the same tensors.

mod common;

use std::borrow::Cow;
use std::path::Path;

use gpt2_weights::{expected_tensors, Dtype, Layout, Weights};

/// Opens both directories and checks they hold bit-identical tensors.
fn assert_same(openai: &Path, hf: &Path) {
    let a = Weights::open(openai).unwrap();
    let b = Weights::open(hf).unwrap();
    assert_eq!(a.layout(), Layout::OpenAi);
    assert_eq!(b.layout(), Layout::HuggingFace);
    assert_eq!(a.config(), b.config());
    assert_eq!(a.dtype(), Dtype::F32);
    let expected = expected_tensors(a.config());
    assert_eq!(
        a.names().collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    for (name, shape) in &expected {
        let ta = a.tensor(name).unwrap();
        let tb = b.tensor(name).unwrap();
        assert_eq!(&ta.shape, shape);
        assert_eq!(ta, tb, "{name} differs between layouts");
        assert!(matches!(ta.data, Cow::Borrowed(_)), "{name} was copied");
        assert!(matches!(tb.data, Cow::Borrowed(_)), "{name} was copied");
    }
    a.verify().unwrap();
    b.verify().unwrap();
}

#[test]
fn micro_openai_equals_hf() {
    let d = common::fixtures("micro");
    assert_same(&d.join("openai"), &d.join("hf"));
}

#[test]
fn micro_sharded_equals_hf() {
    let d = common::fixtures("micro");
    let idx = std::fs::read(d.join("openai-sharded/model.ckpt.index")).unwrap();
    let parsed = gpt2_weights::tf::parse_index(&idx).unwrap();
    assert_eq!(parsed.header.num_shards, 2);
    assert!(parsed.entries.iter().any(|(_, e)| e.shard_id == 1));
    assert_same(&d.join("openai-sharded"), &d.join("hf"));
}

#[test]
fn micro_f16_is_hf_cast_to_f16() {
    let d = common::fixtures("micro");
    let a = Weights::open(&d.join("openai-f16")).unwrap();
    let b = Weights::open(&d.join("hf")).unwrap();
    assert_eq!(a.dtype(), Dtype::F16);
    assert_eq!(a.config(), b.config());
    a.verify().unwrap();
    for name in b.names() {
        let ta = a.tensor(name).unwrap();
        let tb = b.tensor(name).unwrap();
        assert_eq!(ta.dtype, Dtype::F16);
        assert!(matches!(ta.data, Cow::Borrowed(_)));
        assert_eq!(ta.shape, tb.shape);
        assert_eq!(
            ta,
            tb.to_dtype(Dtype::F16),
            "{name}: f16 checkpoint != f16(hf)"
        );
    }
}

#[test]
fn tiny_openai_equals_hf() {
    let d = common::fixtures("tiny");
    assert_same(&d.join("openai"), &d.join("hf"));
    let w = Weights::open(&d.join("openai")).unwrap();
    // 5 heads: not a power of two.
    assert_eq!((w.config().n_embd, w.config().n_head), (40, 5));
}

#[test]
fn shared_tiny_openai_equals_hf() {
    let (Some(oa), Some(hf)) = (
        common::shared("gpt2-tiny/openai"),
        common::shared("gpt2-tiny/hf"),
    ) else {
        return;
    };
    assert_same(&oa, &hf);
}
