//! Exactness against the reference implementations (Hugging Face transformers, whose
//! outputs the fixtures store; OpenAI's TF checkpoints hold the same numbers): logits at every
//! position, the residual stream after every block, greedy continuations and log-probs.
//!
//! Runs on the committed fixtures (`fixtures/tiny`: 5 heads of 8 channels; `fixtures/micro`)
//! and, when present, on the shared cross-check set (`../shared/fixtures/gpt2-tiny`).

use gpt2_model::DType;
use gpt2_tests::*;

const LOGITS_TOL: f32 = 1e-4;
const HIDDEN_TOL: f32 = 1e-4;
const LOGPROB_TOL: f64 = 1e-3;

fn reference(set: &str) -> Option<Reference> {
    match set {
        "gpt2-tiny" => shared_fixture("gpt2-tiny").map(Reference::load),
        other => Some(Reference::load(repo_fixture(other))),
    }
}

fn check_logits(set: &str, layout: &str) {
    let Some(r) = reference(set) else { return };
    let model = r.model(layout, DType::F32);
    for p in r.prompts() {
        let logits = logits(&model, &p.ids);
        let d = max_abs_diff(&logits, &p.logits);
        eprintln!("{set}/{layout} {}: max |logit diff| = {d:.2e}", p.name);
        assert!(
            d <= LOGITS_TOL,
            "{set}/{layout} prompt {}: max |logit diff| {d} > {LOGITS_TOL}",
            p.name
        );
        let argmax = logits
            .argmax(1)
            .and_then(|t| t.to_vec1::<u32>())
            .expect("argmax");
        assert_eq!(
            argmax,
            ids(&p.json["argmax_per_position"]),
            "prompt {}",
            p.name
        );
    }
}

/// Index `k` of HF's hidden states: 0 = embeddings, k = after block k-1, n_layer = ln_f(last).
fn check_hidden(set: &str, layout: &str, k: usize) {
    let Some(r) = reference(set) else { return };
    if k > r.n_layer() {
        return;
    }
    let model = r.model(layout, DType::F32);
    for p in r.prompts() {
        let hs = model.hidden_states(&row(&p.ids)).expect("hidden states");
        assert_eq!(hs.len(), r.n_layer() + 1);
        let got = hs[k].squeeze(0).expect("squeeze");
        let want = p.hidden_states.get(k).expect("reference index");
        let d = max_abs_diff(&got, &want);
        assert!(
            d <= HIDDEN_TOL,
            "{set}/{layout} prompt {}: hidden_states[{k}] ({}) max |diff| {d} > {HIDDEN_TOL}",
            p.name,
            match k {
                0 => "wte + wpe".to_string(),
                k if k == r.n_layer() => format!("ln_f(output of block h.{})", k - 1),
                k => format!("output of block h.{}", k - 1),
            }
        );
    }
}

fn check_greedy(set: &str, layout: &str) {
    let Some(r) = reference(set) else { return };
    let model = r.model(layout, DType::F32);
    for p in r.prompts() {
        let want = ids(&p.json["greedy"]["ids"]);
        let got = greedy(&model, &p.ids, want.len());
        assert_eq!(
            got, want,
            "{set}/{layout} prompt {}: greedy continuation",
            p.name
        );
    }
}

fn check_logprob(set: &str, layout: &str) {
    let Some(r) = reference(set) else { return };
    let model = r.model(layout, DType::F32);
    for p in r.prompts() {
        let logits = logits(&model, &p.ids);
        let got = logprob_sum(&logits, &p.ids);
        // A one-token prompt has no targets: the reference stores null or 0.
        let want = p.json["logprob"]["sum"].as_f64().unwrap_or(0.0);
        assert!(
            (got - want).abs() <= LOGPROB_TOL,
            "{set}/{layout} prompt {}: logprob {got} vs {want}",
            p.name
        );
        if let Some(with_bos) = p.json["logprob_with_bos"]["sum"].as_f64() {
            let mut ids = vec![50256];
            ids.extend(&p.ids);
            if ids.len() <= model.config().n_ctx {
                let logits = gpt2_tests::logits(&model, &ids);
                let got = logprob_sum(&logits, &ids);
                assert!(
                    (got - with_bos).abs() <= LOGPROB_TOL,
                    "prompt {}: logprob_with_bos {got} vs {with_bos}",
                    p.name
                );
            }
        }
    }
}

macro_rules! reference_tests {
    ($name:ident, $set:expr, $layout:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn logits_at_every_position() {
                check_logits($set, $layout);
            }
            #[test]
            fn hidden_states_0_embeddings() {
                check_hidden($set, $layout, 0);
            }
            #[test]
            fn hidden_states_1_after_block_0() {
                check_hidden($set, $layout, 1);
            }
            #[test]
            fn hidden_states_2_after_block_1() {
                check_hidden($set, $layout, 2);
            }
            #[test]
            fn greedy_continuation() {
                check_greedy($set, $layout);
            }
            #[test]
            fn logprob() {
                check_logprob($set, $layout);
            }
        }
    };
}

reference_tests!(tiny_hf, "tiny", "hf");
reference_tests!(tiny_openai, "tiny", "openai");
reference_tests!(micro_hf, "micro", "hf");
reference_tests!(micro_openai, "micro", "openai");
reference_tests!(micro_openai_sharded, "micro", "openai-sharded");
reference_tests!(shared_gpt2_tiny_hf, "gpt2-tiny", "hf");
reference_tests!(shared_gpt2_tiny_openai, "gpt2-tiny", "openai");

/// The committed fixtures have 2 blocks (tiny) and 1 (micro): the per-index tests above
/// cover every block. Fail loudly if a fixture grows so that some block goes unchecked.
#[test]
fn per_block_tests_cover_every_block() {
    for set in ["tiny", "micro", "gpt2-tiny"] {
        if let Some(r) = reference(set) {
            assert!(
                r.n_layer() <= 2,
                "{set} has {} blocks; add hidden_states tests",
                r.n_layer()
            );
        }
    }
}
