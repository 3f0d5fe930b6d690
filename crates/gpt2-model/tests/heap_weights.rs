//! Weights parsed from bytes in memory (not a file mapping): building a model from them must
//! leave them intact. (Page advice meant for mapped files, `MADV_DONTNEED`, zeroes heap
//! memory.)

use std::path::PathBuf;

use gpt2_model::{Gpt2, LoadOptions, Tensor};
use gpt2_weights::Weights;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny/openai")
}

#[test]
fn a_model_built_from_heap_weights_leaves_them_intact() {
    let dir = tiny();
    let config = *Weights::open(&dir).expect("open").config();
    let index = std::fs::read(dir.join("model.ckpt.index")).expect("index");
    let data = std::fs::read(dir.join("model.ckpt.data-00000-of-00001")).expect("data");
    let heap: Weights =
        gpt2_weights::tf::open_from_bytes(config, &index, vec![data]).expect("from bytes");
    let before: Vec<Vec<f32>> = heap
        .names()
        .map(|n| heap.tensor(n).expect("tensor").to_f32_vec())
        .collect();
    // wte alone is 8 MB: whole pages lie inside every large tensor's bytes.
    let model = Gpt2::from_weights(&heap, &LoadOptions::default()).expect("model");
    let after: Vec<Vec<f32>> = heap
        .names()
        .map(|n| heap.tensor(n).expect("tensor").to_f32_vec())
        .collect();
    assert_eq!(
        before, after,
        "building the model changed the weights in memory"
    );
    // And the model equals the one loaded from the files.
    let mapped = Gpt2::load(&dir, &LoadOptions::default()).expect("load");
    let ids = Tensor::new(&[[1u32, 5, 9, 2]], model.device()).expect("ids");
    let (a, b) = (
        model.forward(&ids).expect("forward"),
        mapped.forward(&ids).expect("forward"),
    );
    let d = (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff");
    assert_eq!(d, 0.0);
}
