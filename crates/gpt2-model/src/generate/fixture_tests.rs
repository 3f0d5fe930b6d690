//! Generation on the fixture models against the references' greedy continuations.
//!
//! Uses the committed `fixtures/` (tiny, micro) and, when present, the shared
//! `../shared/fixtures/gpt2-tiny` beside the checkout (skipped with a note when absent).

use std::path::{Path, PathBuf};

use gpt2_tokenizer::Tokenizer;

use super::*;
use crate::{Gpt2, LoadOptions};

struct Reference {
    prompts: Vec<(Vec<u32>, Vec<u32>)>, // (prompt ids, greedy ids)
    /// (logprob.sum, logprob_with_bos.sum) per prompt, where they apply.
    logprobs: Vec<(Option<f64>, Option<f64>)>,
}

fn read_reference(path: &Path) -> Reference {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    Reference {
        prompts: json["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (ids(&p["ids"]), ids(&p["greedy"]["ids"])))
            .collect(),
        logprobs: json["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["logprob"]["sum"].as_f64(),
                    p["logprob_with_bos"]["sum"].as_f64(),
                )
            })
            .collect(),
    }
}

/// (model dir, reference.json) pairs that exist.
fn fixture_models() -> Vec<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for (dir, refs) in [
        ("fixtures/tiny/hf", "fixtures/tiny/reference.json"),
        ("fixtures/tiny/openai", "fixtures/tiny/reference.json"),
        ("fixtures/micro/hf", "fixtures/micro/reference.json"),
        (
            "../shared/fixtures/gpt2-tiny/hf",
            "../shared/fixtures/gpt2-tiny/reference.json",
        ),
        (
            "../shared/fixtures/gpt2-tiny/openai",
            "../shared/fixtures/gpt2-tiny/reference.json",
        ),
    ] {
        let (dir, refs) = (root.join(dir), root.join(refs));
        if dir.is_dir() && refs.is_file() {
            out.push((dir, refs));
        } else {
            eprintln!("note: {} absent, skipped", dir.display());
        }
    }
    out
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_new_tokens,
        stop_at_eos: false, // the references do not stop at <|endoftext|>
        ..Default::default()
    }
}

#[test]
fn greedy_generation_matches_the_reference() {
    let tokenizer = Tokenizer::gpt2();
    let models = fixture_models();
    assert!(!models.is_empty(), "the committed fixtures are missing");
    for (dir, refs) in models {
        let model = Gpt2::load(&dir, &LoadOptions::default()).unwrap();
        let reference = read_reference(&refs);
        let mut session = Session::new(&model);
        for (prompt, want) in &reference.prompts {
            // Ask for 20: the context limit (n_ctx) must end longer prompts where the reference did.
            let gen = session.generate(&tokenizer, prompt, greedy(20)).unwrap();
            let tokens: Vec<GeneratedToken> = gen.map(Result::unwrap).collect();
            let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
            assert_eq!(&ids, want, "{} prompt {prompt:?}", dir.display());
            assert_eq!(
                tokens.last().and_then(|t| t.finish_reason),
                Some(FinishReason::Length)
            );
            let text: String = tokens.iter().map(|t| t.text.as_str()).collect();
            assert_eq!(text, tokenizer.decode(want).unwrap());
        }
    }
}

#[test]
fn batched_greedy_equals_each_prompt_alone() {
    let tokenizer = Tokenizer::gpt2();
    for (dir, refs) in fixture_models() {
        let model = Gpt2::load(&dir, &LoadOptions::default()).unwrap();
        let n_ctx = model.config().n_ctx;
        let reference = read_reference(&refs);
        let all: Vec<&[u32]> = reference.prompts.iter().map(|(p, _)| &p[..]).collect();
        // All prompts together, then the shorter half (more new tokens fit).
        let longest = all.iter().map(|p| p.len()).max().unwrap();
        let mut short: Vec<&[u32]> = all.clone();
        short.retain(|p| p.len() < longest);
        for batch in [all, short] {
            if batch.len() < 2 {
                continue;
            }
            let longest = batch.iter().map(|p| p.len()).max().unwrap();
            let outputs = generate_batch(&model, &tokenizer, &batch, &greedy(20)).unwrap();
            assert_eq!(outputs.len(), batch.len());
            // The padded batch is full when its longest row is.
            let fits = 20.min(n_ctx - longest);
            for (out, prompt) in outputs.iter().zip(&batch) {
                let (_, want) = reference.prompts.iter().find(|(p, _)| p == prompt).unwrap();
                assert_eq!(out.ids(), want[..fits], "{} {prompt:?}", dir.display());
                assert_eq!(out.prompt, *prompt);
                assert_eq!(out.finish_reason, FinishReason::Length);
                assert_eq!(out.text, tokenizer.decode(&want[..fits]).unwrap());
            }
        }
    }
}

#[test]
fn seeded_sampling_on_the_model_is_reproducible() {
    let tokenizer = Tokenizer::gpt2();
    let Some((dir, _)) = fixture_models().into_iter().next() else {
        return;
    };
    let model = Gpt2::load(&dir, &LoadOptions::default()).unwrap();
    let run = |seed: u64, stream: u64| -> Vec<u32> {
        let mut session = Session::new(&model);
        let options = GenerateOptions {
            sampling: SamplingParams {
                temperature: 1.5,
                top_k: Some(50),
                seed,
                ..Default::default()
            },
            max_new_tokens: 12,
            stream,
            ..Default::default()
        };
        session
            .generate(&tokenizer, &[464], options)
            .unwrap()
            .map(|t| t.unwrap().id)
            .collect()
    };
    assert_eq!(run(1, 0), run(1, 0));
    assert_ne!(run(1, 0), run(2, 0));
    assert_ne!(run(1, 0), run(1, 1));
    // Batched sampling: row i uses stream `stream + i`. (Compared between batches of the same
    // shape, which compute the same logits bit for bit; a batch's logits equal the sequence's
    // alone only to rounding, ~1e-6, which can reorder near-equal candidates of this random
    // model's flat distribution and so change a draw.)
    let batch = |stream: u64| {
        let options = GenerateOptions {
            sampling: SamplingParams {
                temperature: 1.5,
                top_k: Some(50),
                seed: 1,
                ..Default::default()
            },
            max_new_tokens: 12,
            stream,
            ..Default::default()
        };
        let outs = generate_batch(&model, &tokenizer, &[&[464], &[464]], &options).unwrap();
        (outs[0].ids().to_vec(), outs[1].ids().to_vec())
    };
    let (a0, a1) = batch(0);
    let (b0, b1) = batch(1);
    assert_eq!(a1, b0);
    assert_ne!(a0, a1);
    assert_ne!(b0, b1);
    assert_eq!(batch(0), (a0, a1));
}

#[test]
fn reported_logprobs_are_the_models() {
    let tokenizer = Tokenizer::gpt2();
    let Some((dir, _)) = fixture_models().into_iter().next() else {
        return;
    };
    let model = Gpt2::load(&dir, &LoadOptions::default()).unwrap();
    let prompt = [464u32, 3290];
    let options = GenerateOptions {
        top_n: 5,
        ..greedy(3)
    };
    let tokens: Vec<GeneratedToken> = Session::new(&model)
        .generate(&tokenizer, &prompt, options)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Recompute each step's distribution without the cache.
    let mut context = prompt.to_vec();
    for t in &tokens {
        let ids = candle_core::Tensor::new(&context[..], model.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits: Vec<f32> = model
            .forward_last(&ids)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let lp = log_softmax(&logits);
        assert!((t.logprob - lp[t.id as usize]).abs() < 1e-4);
        assert_eq!(t.alternatives[0].id, t.id); // greedy: the top alternative
        for a in &t.alternatives {
            assert!((a.logprob - lp[a.id as usize]).abs() < 1e-4);
        }
        let sum: f32 = t.alternatives.iter().map(|a| a.prob()).sum();
        assert!(sum <= 1.0 + 1e-6);
        context.push(t.id);
    }
}

#[test]
fn scores_match_the_reference_logprobs() {
    for (dir, refs) in fixture_models() {
        let model = Gpt2::load(&dir, &LoadOptions::default()).unwrap();
        let reference = read_reference(&refs);
        for ((prompt, _), (plain, with_bos)) in reference.prompts.iter().zip(&reference.logprobs) {
            let r = score(&model, prompt, &ScoreOptions::default()).unwrap();
            match plain {
                Some(want) => assert!((r.logprob - want).abs() < 1e-3, "{} vs {want}", r.logprob),
                None => assert_eq!(r.n_scored, 0),
            }
            if let Some(want) = with_bos {
                let opts = ScoreOptions {
                    prepend_bos: true,
                    ..Default::default()
                };
                let r = score(&model, prompt, &opts).unwrap();
                assert_eq!(r.n_scored, prompt.len());
                assert!((r.logprob - want).abs() < 1e-3, "{} vs {want}", r.logprob);
            }
            // A stride small enough to need several windows still scores every token once.
            let n_ctx = model.config().n_ctx;
            let long: Vec<u32> = prompt.iter().cycle().take(n_ctx * 2 + 3).copied().collect();
            let r = score(
                &model,
                &long,
                &ScoreOptions {
                    stride: Some(n_ctx / 4),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(r.n_scored, long.len() - 1);
            assert!(r.windows > 2);
        }
    }
}

#[test]
fn filters_that_keep_one_token_are_greedy_at_any_temperature() {
    let tokenizer = Tokenizer::gpt2();
    let (dir, refs) = fixture_models().into_iter().next().unwrap();
    let model = Gpt2::load(&dir, &LoadOptions::default()).unwrap();
    let reference = read_reference(&refs);
    let (prompt, want) = &reference.prompts[0];
    let narrow = [
        SamplingParams {
            top_k: Some(1),
            ..Default::default()
        },
        SamplingParams {
            top_p: Some(1e-6),
            ..Default::default()
        },
        SamplingParams {
            min_p: Some(1.0),
            ..Default::default()
        },
        SamplingParams {
            temperature: 1e-4,
            ..Default::default()
        },
    ];
    for (i, sampling) in narrow.into_iter().enumerate() {
        for (seed, temperature) in [(1, 5.0), (2, 1.0), (3, 0.3)] {
            let sampling = SamplingParams {
                seed,
                temperature: if i == 3 {
                    sampling.temperature
                } else {
                    temperature
                },
                ..sampling
            };
            let options = GenerateOptions {
                sampling,
                ..greedy(want.len())
            };
            let ids: Vec<u32> = Session::new(&model)
                .generate(&tokenizer, prompt, options)
                .unwrap()
                .map(|t| t.unwrap().id)
                .collect();
            assert_eq!(&ids, want, "{sampling:?}");
        }
    }
}
