//! The KV cache gives the same logits as a full recompute; batched (left-padded) sequences
//! give the same logits as each run alone; the context limit is enforced or slid.

use gpt2_model::{
    Config, ContextOverflow, DType, Gpt2, KvCache, LoadOptions, Logits, ModelError, Tensor,
};
use gpt2_tests::*;

const TOL: f32 = 1e-4;

fn tiny() -> Gpt2 {
    Gpt2::load(repo_fixture("tiny/hf"), &LoadOptions::default()).expect("fixtures/tiny/hf")
}

/// Logits at every position of `ids` with no cache, `[n, vocab]`.
fn full(model: &Gpt2, ids: &[u32]) -> Tensor {
    model
        .forward(&row(ids))
        .expect("forward")
        .squeeze(0)
        .expect("squeeze")
}

fn prompt(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7919 + seed * 104_729 + 11) % 50257)
        .collect()
}

#[test]
fn cached_logits_equal_full_recompute() {
    let model = tiny();
    let ids = prompt(30, 1);
    let reference = full(&model, &ids);
    let mut cache = model.new_cache(ContextOverflow::Error);
    // Prefill 7 (all positions), then a chunk of 3, then one token at a time.
    let first = model
        .prefill(&mut cache, &[&ids[..7]], Logits::All)
        .expect("prefill");
    let d = max_abs_diff(
        &first.squeeze(0).expect("squeeze"),
        &reference.narrow(0, 0, 7).expect("narrow"),
    );
    assert!(d <= TOL, "prefill: {d}");
    let chunk = model
        .extend(&mut cache, &[&ids[7..10]], Logits::All)
        .expect("extend");
    let d = max_abs_diff(
        &chunk.squeeze(0).expect("squeeze"),
        &reference.narrow(0, 7, 3).expect("narrow"),
    );
    assert!(d <= TOL, "chunk: {d}");
    for (t, &id) in ids.iter().enumerate().skip(10) {
        let step = model.step(&mut cache, &[id]).expect("step");
        let d = max_abs_diff(&step, &reference.narrow(0, t, 1).expect("narrow"));
        assert!(d <= TOL, "position {t}: cached vs full {d}");
    }
    assert_eq!(cache.len(), ids.len());
    assert_eq!(cache.tokens(0), Some(ids.as_slice()));
}

#[test]
fn cached_greedy_equals_no_cache_argmax_loop() {
    let model = tiny();
    let mut ids = prompt(5, 2);
    let cached = greedy(&model, &ids, 20);
    for &want in &cached {
        let logits = model.forward_last(&row(&ids)).expect("forward_last");
        let next = logits
            .argmax(1)
            .and_then(|t| t.to_vec1::<u32>())
            .expect("argmax")[0];
        assert_eq!(next, want);
        ids.push(next);
    }
}

#[test]
fn batch_of_different_lengths_matches_each_alone() {
    let model = tiny();
    let prompts = [prompt(9, 3), prompt(1, 4), prompt(4, 5)];
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut cache = model.new_cache(ContextOverflow::Error);
    let all = model
        .prefill(&mut cache, &refs, Logits::All)
        .expect("prefill batch");
    assert_eq!(all.dims(), &[3, 9, 50257]);
    for (i, p) in prompts.iter().enumerate() {
        let pad = cache.padding(i).expect("padding");
        assert_eq!(pad, 9 - p.len());
        let got = all
            .get(i)
            .and_then(|t| t.narrow(0, pad, p.len()))
            .expect("slice");
        let d = max_abs_diff(&got, &full(&model, p));
        assert!(
            d <= TOL,
            "sequence {i} (len {}): batched vs alone {d}",
            p.len()
        );
    }
    // Decode 6 steps for the whole batch, feeding each sequence different tokens, and compare
    // every step with the same sequence decoded alone.
    let mut alone: Vec<(KvCache, Vec<u32>)> = prompts
        .iter()
        .map(|p| {
            let mut c = model.new_cache(ContextOverflow::Error);
            model
                .prefill(&mut c, &[p], Logits::Last)
                .expect("prefill alone");
            (c, p.clone())
        })
        .collect();
    for step in 0..6u32 {
        let next: Vec<u32> = (0..3u32).map(|i| 100 + 17 * step + 1000 * i).collect();
        let batched = model.step(&mut cache, &next).expect("batched step");
        for (i, (c, hist)) in alone.iter_mut().enumerate() {
            let single = model.step(c, &[next[i]]).expect("single step");
            hist.push(next[i]);
            let d = max_abs_diff(&batched.narrow(0, i, 1).expect("row"), &single);
            assert!(d <= TOL, "step {step}, sequence {i}: batched vs alone {d}");
            // And the same as a full recompute.
            let reference = full(&model, hist);
            let last = reference.narrow(0, hist.len() - 1, 1).expect("last");
            assert!(max_abs_diff(&single, &last) <= TOL);
        }
    }
    assert_eq!(cache.tokens(1).map(<[u32]>::len), Some(7));
}

/// Continuous batching: sequences in caches of their own, of different lengths, joining and
/// leaving between steps, stepped together, give each what it gets alone.
#[test]
fn ragged_steps_match_each_sequence_alone_as_sequences_join_and_leave() {
    let model = tiny();
    let prefilled = |p: &[u32]| {
        let mut c = model.new_cache(ContextOverflow::Error);
        model.prefill(&mut c, &[p], Logits::Last).expect("prefill");
        c
    };
    // (cache stepped together, cache stepped alone, step it joins, step it leaves)
    let mut seqs: Vec<(KvCache, KvCache, u32, u32)> = [(7, 0, 6), (2, 0, 3), (12, 2, 9), (1, 4, 9)]
        .into_iter()
        .enumerate()
        .map(|(i, (len, join, leave))| {
            let p = prompt(len, 20 + i as u32);
            (prefilled(&p), prefilled(&p), join, leave)
        })
        .collect();
    for step in 0..9u32 {
        let live: Vec<usize> = (0..seqs.len())
            .filter(|&i| seqs[i].2 <= step && step < seqs[i].3)
            .collect();
        let next: Vec<u32> = live
            .iter()
            .map(|&i| 300 + 13 * step + 977 * i as u32)
            .collect();
        let mut caches: Vec<&mut KvCache> = seqs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| live.contains(i))
            .map(|(_, s)| &mut s.0)
            .collect();
        let together = model.step_ragged(&mut caches, &next).expect("ragged step");
        assert_eq!(together.dims(), &[live.len(), 50257]);
        for (row, &i) in live.iter().enumerate() {
            let alone = model
                .step(&mut seqs[i].1, &[next[row]])
                .expect("step alone");
            let d = max_abs_diff(&together.narrow(0, row, 1).expect("row"), &alone);
            assert!(d <= TOL, "step {step}, sequence {i}: together vs alone {d}");
            assert_eq!(seqs[i].0.tokens(0), seqs[i].1.tokens(0));
        }
    }
    // Typed errors, nothing changed: a batch-2 cache, a token out of range, no caches.
    let mut two = model.new_cache(ContextOverflow::Error);
    model
        .prefill(&mut two, &[&[1, 2], &[3]], Logits::Last)
        .expect("prefill 2");
    assert!(matches!(
        model.step_ragged(&mut [&mut two], &[5]),
        Err(ModelError::BadInput { .. })
    ));
    let mut one = prefilled(&[1, 2, 3]);
    assert!(model.step_ragged(&mut [&mut one], &[50257]).is_err());
    assert_eq!(one.len(), 3);
    assert!(model.step_ragged(&mut [], &[]).is_err());
    let mut full_cache = prefilled(&prompt(32, 1));
    assert!(matches!(
        model.step_ragged(&mut [&mut full_cache], &[1]),
        Err(ModelError::ContextOverflow { fits: 0, .. })
    ));
}

/// Prompt chunks and decode steps in one ragged pass: every sequence gets what `prefill` /
/// `extend` / `step` give it alone.
#[test]
fn ragged_prefill_chunks_and_decode_steps_match_each_sequence_alone() {
    let model = tiny();
    let new = || model.new_cache(ContextOverflow::Error);
    // Sequence 0 decodes from the start; 1 is prefilled whole at step 0; 2 arrives in
    // chunks of 5, 5 and 2 over steps 0–2; 3 joins at step 2 with a one-token prompt.
    let prompts = [prompt(6, 40), prompt(9, 41), prompt(12, 42), prompt(1, 43)];
    let mut together: Vec<KvCache> = (0..4).map(|_| new()).collect();
    let mut alone: Vec<KvCache> = (0..4).map(|_| new()).collect();
    for c in [&mut together[0], &mut alone[0]] {
        model
            .prefill(c, &[&prompts[0]], Logits::Last)
            .expect("prefill");
    }
    // Per step, in the order they are fed: (sequence, its new tokens).
    let plan: Vec<Vec<(usize, Vec<u32>)>> = vec![
        vec![
            (0, vec![500]),
            (1, prompts[1].clone()),
            (2, prompts[2][..5].to_vec()),
        ],
        vec![
            (2, prompts[2][5..10].to_vec()),
            (0, vec![501]),
            (1, vec![502]),
        ],
        vec![
            (1, vec![503]),
            (3, prompts[3].clone()),
            (2, prompts[2][10..].to_vec()),
            (0, vec![504]),
        ],
        vec![
            (3, vec![505]),
            (2, vec![506]),
            (0, vec![507]),
            (1, vec![508]),
        ],
    ];
    for (step, feeds) in plan.iter().enumerate() {
        // The caches, moved out in the plan's order, fed together, put back.
        let mut caches: Vec<KvCache> = feeds
            .iter()
            .map(|(i, _)| std::mem::replace(&mut together[*i], new()))
            .collect();
        let chunks: Vec<&[u32]> = feeds.iter().map(|(_, t)| t.as_slice()).collect();
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let logits = model
            .extend_ragged(&mut refs, &chunks)
            .expect("ragged pass");
        assert_eq!(logits.dims(), &[feeds.len(), 50257]);
        for ((row, (i, t)), c) in feeds.iter().enumerate().zip(caches) {
            let one = model
                .extend(&mut alone[*i], &[t], Logits::Last)
                .expect("alone");
            let d = max_abs_diff(&logits.narrow(0, row, 1).expect("row"), &one);
            assert!(d <= TOL, "step {step}, sequence {i}: together vs alone {d}");
            assert_eq!(c.tokens(0), alone[*i].tokens(0));
            together[*i] = c;
        }
    }
    // Typed errors, nothing changed: an empty chunk, a chunk past n_ctx.
    let mut c = new();
    assert!(matches!(
        model.extend_ragged(&mut [&mut c], &[&[]]),
        Err(ModelError::EmptySequence { sequence: 0 })
    ));
    assert!(matches!(
        model.extend_ragged(&mut [&mut c], &[&prompt(33, 1)]),
        Err(ModelError::ContextOverflow { fits: 32, .. })
    ));
    assert!(c.is_empty());
    // step_ragged wants prefilled caches.
    assert!(matches!(
        model.step_ragged(&mut [&mut c], &[1]),
        Err(ModelError::BadInput { .. })
    ));
}

#[test]
fn batched_prefill_last_matches_forward_last() {
    let model = tiny();
    let prompts = [prompt(3, 6), prompt(8, 7)];
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut cache = model.new_cache(ContextOverflow::Error);
    let last = model
        .prefill(&mut cache, &refs, Logits::Last)
        .expect("prefill");
    assert_eq!(last.dims(), &[2, 50257]);
    for (i, p) in prompts.iter().enumerate() {
        let alone = model.forward_last(&row(p)).expect("forward_last");
        assert!(max_abs_diff(&last.narrow(0, i, 1).expect("row"), &alone) <= TOL);
    }
}

#[test]
fn full_context_is_an_error_that_says_how_many_fit() {
    let model = tiny(); // n_ctx 32
    let n_ctx = model.config().n_ctx;
    let mut cache = model.new_cache(ContextOverflow::Error);
    model
        .prefill(&mut cache, &[&prompt(30, 8)], Logits::Last)
        .expect("prefill 30");
    let err = model
        .extend(&mut cache, &[&[1, 2, 3]], Logits::Last)
        .expect_err("33 > 32");
    match &err {
        ModelError::ContextOverflow {
            n_ctx: n,
            cached,
            requested,
            fits,
        } => {
            assert_eq!((*n, *cached, *requested, *fits), (n_ctx, 30, 3, 2));
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("only 2 more fit") && msg.contains("n_ctx = 32"),
        "{msg}"
    );
    // Nothing changed: two more tokens still fit.
    assert_eq!(cache.len(), 30);
    model
        .extend(&mut cache, &[&[1, 2]], Logits::Last)
        .expect("exactly n_ctx");
    assert!(matches!(
        model.step(&mut cache, &[5]),
        Err(ModelError::ContextOverflow { fits: 0, .. })
    ));
    // A prompt longer than n_ctx, and forward without a cache.
    assert!(matches!(
        model.prefill(&mut cache, &[&prompt(40, 9)], Logits::Last),
        Err(ModelError::ContextOverflow {
            requested: 40,
            fits: 32,
            ..
        })
    ));
    assert!(matches!(
        model.forward(&row(&prompt(33, 9))),
        Err(ModelError::ContextOverflow { .. })
    ));
}

#[test]
fn slide_keeps_the_most_recent_n_ctx_tokens() {
    let model = tiny();
    let n_ctx = model.config().n_ctx;
    let long = prompt(45, 10);
    let mut cache = model.new_cache(ContextOverflow::Slide);
    // A prompt longer than n_ctx: its last n_ctx tokens.
    let got = model
        .prefill(&mut cache, &[&long[..40]], Logits::Last)
        .expect("prefill");
    let want = model
        .forward_last(&row(&long[40 - n_ctx..40]))
        .expect("window");
    assert!(max_abs_diff(&got, &want) <= TOL);
    assert_eq!(cache.len(), n_ctx);
    // Then one token at a time: each step sees the n_ctx most recent tokens.
    for t in 40..45 {
        let got = model.step(&mut cache, &[long[t]]).expect("step");
        let want = model
            .forward_last(&row(&long[t + 1 - n_ctx..=t]))
            .expect("window");
        assert!(max_abs_diff(&got, &want) <= TOL, "token {t}");
        assert_eq!(cache.tokens(0), Some(&long[t + 1 - n_ctx..=t]));
    }
    // Logits::All returns the new tokens' logits.
    let got = model
        .extend(&mut cache, &[&[7, 8, 9]], Logits::All)
        .expect("extend");
    assert_eq!(got.dims(), &[1, 3, 50257]);
}

#[test]
fn slide_in_a_batch() {
    let model = tiny();
    let n_ctx = model.config().n_ctx;
    let (a, b) = (prompt(n_ctx, 11), prompt(10, 12));
    let mut cache = model.new_cache(ContextOverflow::Slide);
    model
        .prefill(&mut cache, &[&a, &b], Logits::Last)
        .expect("prefill");
    let got = model.step(&mut cache, &[3, 4]).expect("slide step");
    let mut ha = a.clone();
    ha.push(3);
    let mut hb = b.clone();
    hb.push(4);
    let want_a = model
        .forward_last(&row(&ha[ha.len() - n_ctx..]))
        .expect("a");
    let want_b = model.forward_last(&row(&hb)).expect("b");
    assert!(max_abs_diff(&got.narrow(0, 0, 1).expect("a"), &want_a) <= TOL);
    assert!(max_abs_diff(&got.narrow(0, 1, 1).expect("b"), &want_b) <= TOL);
}

#[test]
fn reset_and_truncate_reuse_one_cache() {
    let model = tiny();
    let (p, q) = (prompt(12, 13), prompt(6, 14));
    let mut cache = model.new_cache(ContextOverflow::Error);
    model
        .prefill(&mut cache, &[&p], Logits::Last)
        .expect("prefill p");
    for t in [1u32, 2, 3] {
        model.step(&mut cache, &[t]).expect("step");
    }
    // Truncate back to the prompt and continue differently.
    cache.truncate(12);
    assert_eq!(cache.tokens(0), Some(p.as_slice()));
    let got = model.step(&mut cache, &[99]).expect("step after truncate");
    let mut hist = p.clone();
    hist.push(99);
    assert!(max_abs_diff(&got, &model.forward_last(&row(&hist)).expect("ref")) <= TOL);
    // Reset and start another sequence: same as a fresh cache.
    cache.reset();
    assert!(cache.is_empty());
    let got = model
        .prefill(&mut cache, &[&q], Logits::Last)
        .expect("prefill q");
    assert!(max_abs_diff(&got, &model.forward_last(&row(&q)).expect("ref")) <= TOL);
}

#[test]
fn cache_grows_in_large_steps_not_per_token() {
    let config = Config {
        n_vocab: 50,
        n_ctx: 300,
        n_embd: 8,
        n_head: 2,
        n_layer: 2,
        layer_norm_epsilon: 1e-5,
    };
    let model = Gpt2::random(&config, 3, &LoadOptions::default()).expect("random");
    let mut cache = model.new_cache(ContextOverflow::Error);
    model
        .prefill(&mut cache, &[&[1, 2, 3]], Logits::Last)
        .expect("prefill");
    assert_eq!(cache.capacity(), 64);
    let mut capacities = vec![cache.capacity()];
    let mut hist = vec![1u32, 2, 3];
    for t in 0..297u32 {
        let logits = model.step(&mut cache, &[t % 50]).expect("step");
        hist.push(t % 50);
        if capacities.last() != Some(&cache.capacity()) {
            capacities.push(cache.capacity());
        }
        if t % 61 == 0 {
            // Growth keeps the cached keys/values intact.
            let want = model.forward_last(&row(&hist)).expect("ref");
            assert!(max_abs_diff(&logits, &want) <= TOL);
        }
    }
    assert_eq!(capacities, vec![64, 128, 256, 300]);
    cache.reserve(300).expect("reserve");
    assert_eq!(cache.capacity(), 300);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let model = tiny();
    let mut cache = model.new_cache(ContextOverflow::Error);
    let err = model
        .prefill(&mut cache, &[&[1, 50257]], Logits::Last)
        .expect_err("id out of range");
    assert!(matches!(
        err,
        ModelError::TokenOutOfRange {
            id: 50257,
            sequence: 0,
            position: 1,
            n_vocab: 50257
        }
    ));
    assert!(err.to_string().contains("50257"), "{err}");
    assert!(matches!(
        model.prefill(&mut cache, &[&[1], &[]], Logits::Last),
        Err(ModelError::EmptySequence { sequence: 1 })
    ));
    assert!(matches!(
        model.prefill(&mut cache, &[], Logits::Last),
        Err(ModelError::BatchSize { .. })
    ));
    model
        .prefill(&mut cache, &[&[1], &[2, 3]], Logits::Last)
        .expect("prefill");
    assert!(matches!(
        model.step(&mut cache, &[1]),
        Err(ModelError::BatchSize {
            expected: 2,
            found: 1
        })
    ));
    assert!(matches!(
        model.extend(&mut cache, &[&[1], &[2, 3]], Logits::Last),
        Err(ModelError::RaggedExtend {
            expected: 1,
            sequence: 1,
            found: 2
        })
    ));
    assert!(matches!(
        model.forward(&Tensor::new(&[1u32, 2], model.device()).expect("t")),
        Err(ModelError::BadInput { .. })
    ));
    assert!(matches!(
        model.forward(&Tensor::new(&[[1f32]], model.device()).expect("t")),
        Err(ModelError::BadInput { .. })
    ));
}

#[test]
fn random_model_saves_and_loads_back_identically() {
    let config = Config {
        n_vocab: 60,
        n_ctx: 16,
        n_embd: 12,
        n_head: 3,
        n_layer: 2,
        layer_norm_epsilon: 1e-5,
    };
    let model = Gpt2::random(&config, 5, &LoadOptions::default()).expect("random");
    let other_seed = Gpt2::random(&config, 6, &LoadOptions::default()).expect("random");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m");
    model.save_hf(&path).expect("save_hf");
    let loaded = Gpt2::load(&path, &LoadOptions::default()).expect("load");
    assert_eq!(loaded.config(), &config);
    let ids = row(&[1, 2, 3, 59]);
    let a = model.forward(&ids).expect("a");
    assert_eq!(max_abs_diff(&a, &loaded.forward(&ids).expect("b")), 0.0);
    assert!(max_abs_diff(&a, &other_seed.forward(&ids).expect("c")) > 1e-3);
    // f16 models save as f16.
    let half = Gpt2::random(&config, 5, &LoadOptions::cpu(DType::F16)).expect("random f16");
    let path16 = dir.path().join("m16");
    half.save_hf(&path16).expect("save f16");
    let w = gpt2_weights::Weights::open(&path16).expect("open");
    assert_eq!(w.dtype(), gpt2_weights::Dtype::F16);
}

#[test]
fn weights_used_in_place_give_the_same_logits_as_tensors() {
    // n_ctx above gemv::MAX_ROWS, so that a long forward pass takes the temporary-copy path.
    let config = Config {
        n_vocab: 300,
        n_ctx: 160,
        n_embd: 32,
        n_head: 2,
        n_layer: 2,
        layer_norm_epsilon: 1e-5,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, dtype) in [("f32", DType::F32), ("f16", DType::F16)] {
        let opts = LoadOptions::cpu(dtype);
        let random = Gpt2::random(&config, 9, &opts).expect("random");
        let path = dir.path().join(name);
        random.save_hf(&path).expect("save_hf");
        let loaded = Gpt2::load(&path, &opts).expect("load");
        assert!(loaded.weights_in_place(), "{name}: not mapped");
        assert!(!random.weights_in_place());
        // The same values in tensors: the random model itself for f32; for f16 (whose file
        // has f16-rounded biases) the file cast to f32 at load, which copies.
        let model = match dtype {
            DType::F32 => random,
            _ => Gpt2::load(&path, &LoadOptions::cpu(DType::F32)).expect("load cast"),
        };
        assert!(!model.weights_in_place());
        for n in [1, 5, 150] {
            let ids = row(&prompt(n, 3).iter().map(|t| t % 300).collect::<Vec<_>>());
            let a = model.forward(&ids).expect("a");
            let b = loaded.forward(&ids).expect("b");
            assert_eq!(max_abs_diff(&a, &b), 0.0, "{name}, {n} tokens");
        }
        let mut ca = model.new_cache(ContextOverflow::Error);
        let mut cb = loaded.new_cache(ContextOverflow::Error);
        let p = [5u32, 17, 250];
        let la = model.prefill(&mut ca, &[&p], Logits::Last).expect("pa");
        let lb = loaded.prefill(&mut cb, &[&p], Logits::Last).expect("pb");
        assert_eq!(max_abs_diff(&la, &lb), 0.0);
        let la = model.step(&mut ca, &[7]).expect("sa");
        let lb = loaded.step(&mut cb, &[7]).expect("sb");
        assert_eq!(max_abs_diff(&la, &lb), 0.0);
        // q8_0 quantizes the mapped f32 values in place: same model as from tensors.
        if dtype == DType::F32 {
            let qa = Gpt2::random(&config, 9, &LoadOptions::q8_0()).expect("q8 random");
            let qb = Gpt2::load(&path, &LoadOptions::q8_0()).expect("q8 load");
            let ids = row(&[1, 2, 3]);
            let d = max_abs_diff(
                &qa.forward(&ids).expect("qa"),
                &qb.forward(&ids).expect("qb"),
            );
            assert_eq!(d, 0.0);
        }
    }
}

#[test]
fn a_forked_cache_continues_independently() {
    let model = tiny();
    let p = prompt(8, 15);
    let mut a = model.new_cache(ContextOverflow::Error);
    model.prefill(&mut a, &[&p], Logits::Last).expect("prefill");
    let mut b = a.try_clone().expect("fork");
    let la = model.step(&mut a, &[10]).expect("a");
    let lb = model.step(&mut b, &[20]).expect("b");
    // Continue a again: b's write at the same column must not have touched a.
    let la2 = model.step(&mut a, &[11]).expect("a2");
    let mut ha = p.clone();
    ha.push(10);
    assert!(max_abs_diff(&la, &model.forward_last(&row(&ha)).expect("ref")) <= TOL);
    ha.push(11);
    assert!(max_abs_diff(&la2, &model.forward_last(&row(&ha)).expect("ref")) <= TOL);
    let mut hb = p.clone();
    hb.push(20);
    assert!(max_abs_diff(&lb, &model.forward_last(&row(&hb)).expect("ref")) <= TOL);
    assert_eq!(b.tokens(0), Some(hb.as_slice()));
}

#[test]
fn bf16_on_the_cpu_is_refused_at_load() {
    let err =
        Gpt2::load(repo_fixture("micro/hf"), &LoadOptions::cpu(DType::BF16)).expect_err("bf16");
    assert!(matches!(err, ModelError::UnsupportedDtype(DType::BF16)));
    assert!(err.to_string().contains("f32 or f16"), "{err}");
}

#[test]
fn the_model_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Gpt2>();
    assert_send_sync::<KvCache>();
}
