//! f16 weights (with f32 activations, the CPU's f16 mode) against the f32 references: how far
//! the logits move and whether greedy decoding still picks the same tokens. The numbers are
//! printed (run with `--nocapture`) and recorded in the crate README.

use gpt2_model::DType;
use gpt2_tests::*;

/// Bound on max |logit diff| for f16 on the fixtures (measured at most 7.4e-3: see README).
const F16_LOGITS_TOL: f32 = 0.02;
/// Greedy picks must agree wherever the reference's top-1 margin exceeds this.
const F16_MARGIN: f64 = 0.05;

fn check(r: Option<Reference>, label: &str) {
    let Some(r) = r else { return };
    let model = r.model("hf", DType::F16);
    let mut worst = 0f32;
    let (mut agree, mut compared) = (0usize, 0usize);
    for p in r.prompts() {
        let logits = logits(&model, &p.ids);
        let d = max_abs_diff(&logits, &p.logits);
        worst = worst.max(d);
        let want = ids(&p.json["greedy"]["ids"]);
        let margins: Vec<f64> = p.json["greedy"]["top1_margins"]
            .as_array()
            .map(|m| m.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        let got = greedy(&model, &p.ids, want.len());
        // Compare up to the first disagreement: after it the contexts differ.
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            compared += 1;
            if g == w {
                agree += 1;
                continue;
            }
            let margin = margins.get(j).copied().unwrap_or(f64::INFINITY);
            assert!(
                margin < F16_MARGIN,
                "{label} prompt {}: f16 greedy token {j} is {g}, f32 reference {w}, with a top-1 margin of {margin}",
                p.name
            );
            eprintln!(
                "{label} {}: diverged at step {j} (reference margin {margin:.4})",
                p.name
            );
            break;
        }
    }
    eprintln!("{label}: f16 max |logit diff| vs f32 reference = {worst:.3e}; greedy agreement {agree}/{compared} tokens before any divergence");
    assert!(
        worst <= F16_LOGITS_TOL,
        "{label}: f16 max |logit diff| {worst} > {F16_LOGITS_TOL}"
    );
}

#[test]
fn f16_tiny() {
    check(Some(Reference::load(repo_fixture("tiny"))), "fixtures/tiny");
}

#[test]
fn f16_micro() {
    check(
        Some(Reference::load(repo_fixture("micro"))),
        "fixtures/micro",
    );
}

#[test]
fn f16_shared_gpt2_tiny() {
    check(
        shared_fixture("gpt2-tiny").map(Reference::load),
        "shared gpt2-tiny",
    );
}

/// An f16 checkpoint (OpenAI layout) computed in f32: only the weights' rounding differs.
#[test]
fn f16_checkpoint_computed_in_f32() {
    let r = Reference::load(repo_fixture("micro"));
    let model = r.model("openai-f16", DType::F32);
    assert_eq!(model.dtype(), DType::F32);
    let mut worst = 0f32;
    for p in r.prompts() {
        let logits = logits(&model, &p.ids);
        worst = worst.max(max_abs_diff(&logits, &p.logits));
    }
    eprintln!("micro/openai-f16 in f32: max |logit diff| = {worst:.3e}");
    assert!(worst <= F16_LOGITS_TOL, "{worst}");
}
