//! The bodies of the fuzz targets, one plain function per target, with no libFuzzer
//! dependency: the targets in `fuzz_targets/` call them, and the workspace's `cargo test`
//! (`tests/tests/fuzz_seeds.rs`, which includes this file as a module) replays the committed
//! seeds and regression inputs through the same functions.
//!
//! Every function takes arbitrary bytes, must return without panicking, and asserts what the
//! API promises on success. The ones that need files take a scratch directory, which they
//! overwrite.

use std::path::Path;
use std::sync::OnceLock;

use gpt2_model::generate::{
    apply_repetition_penalty, log_softmax, sampling_distribution, top_ids, Sampler, SamplingError,
    SamplingParams,
};
use gpt2_model::{ContextOverflow, DType, Gpt2, LoadOptions, Logits};
use gpt2_tokenizer::Tokenizer;
use gpt2_weights::{tf, Config, Weights};

/// Cuts `len` bytes (at most what is left) off the front of `data`.
fn take<'a>(data: &mut &'a [u8], len: usize) -> &'a [u8] {
    let (head, tail) = data.split_at(len.min(data.len()));
    *data = tail;
    head
}

/// A little-endian `u16` length prefix (0 when the input is too short).
fn take_u16(data: &mut &[u8]) -> usize {
    match take(data, 2) {
        [a, b] => u16::from_le_bytes([*a, *b]) as usize,
        _ => 0,
    }
}

/// A little-endian `u32` (0 when the input is too short).
fn take_u32(data: &mut &[u8]) -> u32 {
    let b = take(data, 4);
    let mut a = [0u8; 4];
    a[..b.len()].copy_from_slice(b);
    u32::from_le_bytes(a)
}

/// `index`: the `.index` parser on arbitrary bytes.
pub fn index(data: &[u8]) {
    let checked = tf::parse_index(data);
    // Without block checksums, mutations reach the block and protobuf parsers.
    let unchecked = tf::parse_index_unchecked(data);
    if let Ok(index) = &checked {
        assert_eq!(
            Some(index),
            unchecked.as_ref().ok(),
            "checksums changed the result"
        );
    }
    if let Ok(index) = unchecked {
        // What the parser promises on success.
        assert!(index.header.num_shards >= 1);
        for pair in index.entries.windows(2) {
            assert!(pair[0].0 < pair[1].0, "entries not strictly sorted");
        }
        for (name, e) in &index.entries {
            assert!(!name.is_empty());
            assert!(e.shard_id < index.header.num_shards);
        }
    }
}

/// The config of the micro fixture (`fixtures/micro`), which the `checkpoint` seeds have.
const MICRO: Config = Config {
    n_vocab: 96,
    n_ctx: 16,
    n_embd: 16,
    n_head: 2,
    n_layer: 1,
    layer_norm_epsilon: 1e-5,
};

/// `checkpoint`: a whole checkpoint (index + 1 or 2 data shards) from arbitrary bytes, then
/// every tensor read, checksummed and decoded.
///
/// Input: `[index_len: u16 le][num_shards - 1: u8 (mod 2)][index][shard data...]`; the shard
/// data is split into `num_shards` equal parts. The config is the micro fixture's.
pub fn checkpoint(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let index_len = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 3);
    let num_shards = 1 + (data[2] % 2) as usize;
    let index = &data[3..3 + index_len];
    let rest = &data[3 + index_len..];
    let part = rest.len().div_ceil(num_shards);
    let mut shards: Vec<Vec<u8>> = rest.chunks(part.max(1)).map(<[u8]>::to_vec).collect();
    shards.resize(num_shards, Vec::new());
    // Block checksums off (see `index`); tensor checksums stay on.
    let Ok(index) = tf::parse_index_unchecked(index) else {
        return;
    };
    if let Ok(w) = tf::open_from_parsed(MICRO, index, shards) {
        let names: Vec<String> = w.names().map(str::to_string).collect();
        assert_eq!(names.len(), 16);
        for name in &names {
            if let Ok(t) = w.tensor(name) {
                assert_eq!(Some(t.data.len()), t.dtype.byte_len(t.num_elements()));
                let _ = t.to_f32_vec();
            }
        }
        let _ = w.verify();
    }
}

/// `gguf`: the GGUF container reader on arbitrary bytes; what it accepts must keep its
/// promises (power-of-two alignment; aligned, in-file, non-overlapping tensors), and its
/// tokenizer lists, when it has them, go to the tokenizer builder.
pub fn gguf(data: &[u8]) {
    let bytes = gpt2_weights::SharedBytes::from_vec(data.to_vec());
    let Ok(file) = gpt2_weights::gguf::GgufFile::from_bytes(bytes, "<fuzz>".as_ref()) else {
        return;
    };
    assert!(file.alignment().is_power_of_two());
    let mut spans: Vec<(u64, usize)> = Vec::new();
    for t in file.tensors() {
        let bytes = file
            .tensor_bytes(&t.name)
            .expect("a listed tensor has bytes");
        assert_eq!(bytes.len(), t.byte_len);
        assert_eq!(t.offset % file.alignment(), 0);
        spans.push((t.offset, t.byte_len));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].0 + w[0].1 as u64 <= w[1].0 || w[0].1 == 0,
            "overlapping tensors"
        );
    }
    if let Ok(Some(lists)) = file.tokenizer_lists() {
        if let Some(eos) = lists.eos {
            assert!((eos as usize) < lists.tokens.len(), "eos id out of range");
        }
        if let Ok(tokenizer) = Tokenizer::from_tokens_and_merges(lists.tokens, lists.merges, "gguf")
        {
            check_tokenizer(&tokenizer, b"");
        }
    }
}

/// `hf_dir`: a Hugging Face model directory from arbitrary bytes, opened with
/// [`Weights::open`], every tensor read and converted, then loaded into [`Gpt2`] (where the
/// shape and NaN checks live) as f32, f16 and Q8_0, and run on one token.
///
/// Input: `[config_len: u16 le][config.json][model.safetensors]`. `dir` is a scratch
/// directory; both files in it are overwritten.
pub fn hf_dir(dir: &Path, data: &[u8]) {
    let mut data = data;
    let config_len = take_u16(&mut data);
    let config = take(&mut data, config_len);
    std::fs::write(dir.join("config.json"), config).expect("write config.json");
    std::fs::write(dir.join("model.safetensors"), data).expect("write model.safetensors");
    let Ok(w) = Weights::open(dir) else {
        return;
    };
    let config = *w.config();
    assert!(config.validate().is_ok(), "opened with an invalid config");
    let expected = gpt2_weights::expected_tensors(&config);
    let names: Vec<String> = w.names().map(str::to_string).collect();
    assert_eq!(names.len(), expected.len());
    assert_eq!(w.num_parameters(), config.num_parameters());
    for (name, shape) in &expected {
        let t = w.tensor(name).expect("an opened HF tensor reads");
        assert_eq!(&t.shape, shape, "{name}");
        assert_eq!(Some(t.data.len()), t.dtype.byte_len(t.num_elements()));
        assert_eq!(t.to_f32_vec().len(), t.num_elements());
        for dtype in [
            gpt2_weights::Dtype::F32,
            gpt2_weights::Dtype::F16,
            gpt2_weights::Dtype::BF16,
        ] {
            let c = t.to_dtype(dtype);
            assert_eq!(Some(c.data.len()), dtype.byte_len(c.num_elements()));
        }
        let shared = w.shared_bytes(name).expect("shared bytes of a read tensor");
        assert_eq!(&shared[..], &t.data[..]);
    }
    assert!(w.verify().is_ok());
    for opts in [
        LoadOptions::default(),
        LoadOptions::cpu(DType::F16),
        LoadOptions::q8_0(),
    ] {
        if let Ok(model) = Gpt2::from_weights(&w, &opts) {
            assert_eq!(model.config(), &config);
            let mut cache = model.new_cache(ContextOverflow::Error);
            let logits = model
                .prefill(&mut cache, &[&[0]], Logits::Last)
                .expect("one token through a loaded model");
            assert_eq!(logits.dims(), &[1, config.n_vocab]);
        }
    }
}

/// What a loaded tokenizer promises, on a few texts and on `text` (arbitrary bytes, read
/// as lossy UTF-8): every id in range, decoding gives the text back, the streaming decoder
/// agrees with `decode`.
fn check_tokenizer(tokenizer: &Tokenizer, text: &[u8]) {
    let n = tokenizer.vocab_size();
    assert!(n >= 256, "a byte-level vocabulary has all 256 bytes");
    for id in 0..n.min(1024) as u32 {
        assert!(tokenizer.token_bytes(id).is_ok());
        assert!(tokenizer.token_spelling(id).is_ok());
    }
    assert!(tokenizer.token_bytes(n as u32).is_err());
    assert!(tokenizer.decode(&[n as u32]).is_err());
    if let Some(eot) = tokenizer.end_of_text() {
        assert!((eot as usize) < n);
    }
    let lossy = String::from_utf8_lossy(text);
    let texts = [
        "Hello, world!",
        " the quick brown fox's 123 jumps\n\n  over",
        "ab ab abc <|endoftext|> \u{e9}\u{1f44b}\u{4e16}",
        &lossy,
    ];
    for text in texts {
        let ids = tokenizer
            .encode(text)
            .expect("encode with a loaded tokenizer");
        assert!(ids.iter().all(|&id| (id as usize) < n));
        assert_eq!(tokenizer.decode(&ids).expect("decode"), text);
        let special = tokenizer
            .encode_with_special_tokens(text)
            .expect("encode with special tokens");
        assert_eq!(tokenizer.decode(&special).expect("decode"), text);
    }
}

/// `tokenizer_files`: tokenizer files from arbitrary bytes through the loaders.
///
/// Input: `[kind: u8][a_len: u16 le][a][b_len: u16 le][b][text]`. Kind even: `a` is
/// `encoder.json`, `b` is `vocab.bpe`, loaded from bytes and (kind % 4 == 2) from files with
/// [`Tokenizer::from_dir`]; kind odd: `a` is a `tokenizer.json` file (`b` unused). A loaded
/// tokenizer then encodes and decodes a few texts and `text`. `dir` is a scratch directory.
pub fn tokenizer_files(dir: &Path, data: &[u8]) {
    let mut data = data;
    let kind = take(&mut data, 1).first().copied().unwrap_or(0);
    let a_len = take_u16(&mut data);
    let a = take(&mut data, a_len);
    let b_len = take_u16(&mut data);
    let b = take(&mut data, b_len);
    let text = data;
    let tokenizer = if kind % 2 == 0 {
        let from_bytes = Tokenizer::from_vocab_and_merges_bytes(a, b, "encoder.json", "vocab.bpe");
        if kind % 4 == 2 {
            let _ = std::fs::remove_file(dir.join("tokenizer.json"));
            std::fs::write(dir.join("encoder.json"), a).expect("write encoder.json");
            std::fs::write(dir.join("vocab.bpe"), b).expect("write vocab.bpe");
            let from_dir = Tokenizer::from_dir(dir);
            assert_eq!(from_bytes.is_ok(), from_dir.is_ok());
            if let (Ok(x), Ok(y)) = (&from_bytes, &from_dir) {
                assert_eq!(x.tokens_and_merges(), y.tokens_and_merges());
            }
        }
        from_bytes
    } else {
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, a).expect("write tokenizer.json");
        Tokenizer::from_tokenizer_json(&path)
    };
    let Ok(tokenizer) = tokenizer else {
        return;
    };
    check_tokenizer(&tokenizer, text);
    // The lists GGUF stores give the same tokenizer back.
    let (tokens, merges) = tokenizer.tokens_and_merges();
    if let Ok(copy) = Tokenizer::from_tokens_and_merges(tokens, merges, "lists") {
        let text = String::from_utf8_lossy(text);
        assert_eq!(copy.encode(&text).ok(), tokenizer.encode(&text).ok());
    }
}

/// GPT-2's tokenizer (the embedded vocabulary, the committed `encoder.json` + `vocab.bpe`),
/// built once.
fn gpt2_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(Tokenizer::gpt2)
}

/// `encode_decode`: arbitrary bytes through GPT-2's tokenizer. Valid UTF-8 must come back
/// from `decode(encode(s))` (and from the streaming decoder); any bytes go through the
/// byte-taking APIs (the streaming decoder's `push_bytes`; the input read as ids).
pub fn encode_decode(data: &[u8]) {
    let tokenizer = gpt2_tokenizer();
    let n = tokenizer.vocab_size() as u32;
    if let Ok(text) = std::str::from_utf8(data) {
        let ids = tokenizer.encode(text).expect("encode");
        assert!(ids.iter().all(|&id| id < n));
        assert_eq!(tokenizer.decode(&ids).expect("decode"), text);
        assert_eq!(tokenizer.decode_bytes(&ids).expect("decode_bytes"), data);
        let mut stream = tokenizer.stream_decoder();
        let mut streamed = String::new();
        for &id in &ids {
            streamed += &stream.push(id).expect("push");
        }
        streamed += &stream.finish();
        assert_eq!(streamed, text);
        let special = tokenizer
            .encode_with_special_tokens(text)
            .expect("encode_with_special_tokens");
        assert_eq!(tokenizer.decode(&special).expect("decode"), text);
    }
    // Any bytes: the streaming decoder in pieces is `from_utf8_lossy` of the whole.
    let mut stream = tokenizer.stream_decoder();
    let mut streamed = String::new();
    let step = 1 + data.first().map_or(0, |&b| b as usize % 7);
    for piece in data.chunks(step) {
        streamed += &stream.push_bytes(piece);
        assert!(stream.pending().len() <= 3);
    }
    streamed += &stream.finish();
    assert_eq!(streamed, String::from_utf8_lossy(data));
    // Any bytes as ids (u16 each, so most are in range).
    let ids: Vec<u32> = data
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    let all_valid = ids.iter().all(|&id| id < n);
    let decoded = tokenizer.decode(&ids);
    assert_eq!(decoded.is_ok(), all_valid);
    assert_eq!(tokenizer.decode_bytes(&ids).is_ok(), all_valid);
    if let Ok(text) = decoded {
        let mut stream = tokenizer.stream_decoder();
        let mut streamed = String::new();
        for &id in &ids {
            streamed += &stream.push(id).expect("push of a valid id");
            let _ = tokenizer.token_display(id);
        }
        streamed += &stream.finish();
        assert_eq!(streamed, text);
    }
    let _ = gpt2_tokenizer::escape_bytes(data);
    let _ = gpt2_tokenizer::excerpt(&String::from_utf8_lossy(data));
}

/// A float from the input: raw bits, or (when `pick` says so) one of a few values that make
/// valid parameters likely.
fn pick_f32(data: &mut &[u8], pick: bool, table: &[f32]) -> f32 {
    let raw = take_u32(data);
    if pick {
        table[raw as usize % table.len()]
    } else {
        f32::from_bits(raw)
    }
}

/// Logits from the input: mostly small finite values, with NaN, ±inf, huge and tiny values
/// on demand.
fn logit(c: &[u8]) -> f32 {
    let raw = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    match raw >> 28 {
        0 => f32::from_bits((raw << 4) | (raw & 0xF)),
        1 => f32::NEG_INFINITY,
        2 => f32::INFINITY,
        3 => f32::NAN,
        4 => f32::MAX * if raw & 1 == 0 { 1.0 } else { -1.0 },
        _ => (raw & 0xFFFF) as f32 / 1024.0 - 32.0,
    }
}

/// `sampling`: arbitrary [`SamplingParams`], logits (NaN, ±inf and empty included) and
/// context ids through validation, [`Sampler::sample`] and the pure sampling functions.
///
/// Input: `[flags: u8][temperature: 4][top_k: 4][top_p: 4][min_p: 4][penalty: 4]
/// [window: 4][seed: 8][top_n: u8][context_len: u8][context: 4 each][logits: 4 each]`.
pub fn sampling(data: &[u8]) {
    let mut data = data;
    let flags = take(&mut data, 1).first().copied().unwrap_or(0);
    let pick = flags & 0x80 != 0;
    let temperature = pick_f32(&mut data, pick, &[1.0, 0.0, 0.7, 1e-30, 100.0, -1.0]);
    let top_k = take_u32(&mut data) as usize % 70;
    let top_p = pick_f32(&mut data, pick, &[1.0, 0.9, 0.5, 1e-7, 0.0, 1.5]);
    let min_p = pick_f32(&mut data, pick, &[0.0, 0.05, 0.5, 1.0, -0.1]);
    let penalty = pick_f32(&mut data, pick, &[1.0, 1.3, 0.5, 1e-30, 1e30, 0.0]);
    let window = take_u32(&mut data) as usize % 40;
    let seed = u64::from(take_u32(&mut data)) | (u64::from(take_u32(&mut data)) << 32);
    let top_n = take(&mut data, 1).first().map_or(0, |&b| b as usize % 16);
    let context_len = take(&mut data, 1).first().map_or(0, |&b| b as usize % 64);
    let context: Vec<u32> = take(&mut data, 4 * context_len)
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % 96)
        .collect();
    let logits: Vec<f32> = data.chunks_exact(4).map(logit).collect();
    let params = SamplingParams {
        temperature,
        top_k: (flags & 1 != 0).then_some(top_k),
        top_p: (flags & 2 != 0).then_some(top_p),
        min_p: (flags & 4 != 0).then_some(min_p),
        repetition_penalty: if flags & 8 != 0 { penalty } else { 1.0 },
        repetition_window: (flags & 16 != 0).then_some(window),
        seed,
    };

    let n = logits.len();
    let first_nan = logits.iter().position(|l| l.is_nan());
    let valid = params.validate();
    let sampler = Sampler::new(params);
    assert_eq!(valid.is_ok(), sampler.is_ok());
    if let Ok(mut sampler) = sampler {
        let result = sampler.sample(&logits, &context, top_n);
        match (n, first_nan, result) {
            (0, _, r) => assert_eq!(r, Err(SamplingError::EmptyLogits)),
            (_, Some(i), r) => assert_eq!(r, Err(SamplingError::NanLogit(i))),
            (_, None, Ok(s)) => {
                assert!((s.token.id as usize) < n, "sampled id out of range");
                assert_eq!(s.alternatives.len(), top_n.min(n));
                assert!(s.alternatives.iter().all(|c| (c.id as usize) < n));
                let mut penalised = logits.clone();
                apply_repetition_penalty(
                    &mut penalised,
                    &context,
                    params.repetition_penalty,
                    params.repetition_window,
                );
                // With something to choose from, the choice has a probability in (0, 1].
                if penalised.iter().any(|&l| l != f32::NEG_INFINITY) {
                    let p = s.token.sampling_prob;
                    assert!(p > 0.0 && p <= 1.0 + 1e-5, "sampling prob {p}");
                    assert_ne!(
                        penalised[s.token.id as usize],
                        f32::NEG_INFINITY,
                        "an impossible token was sampled"
                    );
                }
                for c in &s.alternatives {
                    let p = c.sampling_prob;
                    assert!((0.0..=1.0 + 1e-5).contains(&p), "alternative prob {p}");
                }
            }
            (_, None, Err(e)) => panic!("sampling valid logits failed: {e}"),
        }
    }

    if let Ok(dist) = sampling_distribution(&logits, &params) {
        assert!(valid.is_ok() && n > 0 && first_nan.is_none());
        let mut ids: Vec<u32> = dist.iter().map(|&(id, _)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), dist.len(), "a token listed twice");
        assert!(ids.iter().all(|&id| (id as usize) < n));
        if logits.iter().any(|&l| l != f32::NEG_INFINITY) {
            let total: f64 = dist.iter().map(|&(_, p)| p).sum();
            assert!((total - 1.0).abs() < 1e-6, "probabilities sum to {total}");
            assert!(dist.iter().all(|&(_, p)| (0.0..=1.0).contains(&p)));
        }
    }

    let mut penalised = logits.clone();
    apply_repetition_penalty(&mut penalised, &context, penalty, params.repetition_window);
    for (i, (a, b)) in logits.iter().zip(&penalised).enumerate() {
        if !context.contains(&(i as u32)) {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "a token outside the context changed"
            );
        }
    }

    let top = top_ids(&logits, top_n);
    assert_eq!(top.len(), top_n.min(n));
    for pair in top.windows(2) {
        assert!(logits[pair[0]].total_cmp(&logits[pair[1]]).is_ge());
        assert_ne!(pair[0], pair[1]);
    }

    let lp = log_softmax(&logits);
    assert_eq!(lp.len(), n);
    if logits.iter().all(|l| l.is_finite()) {
        assert!(lp.iter().all(|&l| !l.is_nan() && l <= 1e-5), "{lp:?}");
    }
}

/// `server_request`: a `POST /v1/completions` body through the server's request parser: it
/// is refused with a 400 naming a field, or accepted with every value in its range.
pub fn server_request(data: &[u8]) {
    match gpt2_server::CompletionRequest::parse(data) {
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400, "{e}");
            assert!(!e.message.is_empty());
            if let Some(param) = &e.param {
                assert!(e.message.contains(param.as_str()), "{e}");
            }
        }
        Ok(r) => {
            assert!(!r.prompts.is_empty());
            assert!((1..=gpt2_server::MAX_CHOICES).contains(&r.n));
            assert!((r.n..=gpt2_server::MAX_CHOICES).contains(&r.best_of));
            assert!(!(r.stream && r.best_of > r.n));
            assert!((0.0..=2.0).contains(&r.temperature));
            assert!(r.top_p.is_none_or(|p| p > 0.0 && p <= 1.0));
            assert!(r.min_p.is_none_or(|p| (0.0..=1.0).contains(&p)));
            assert!(r.repetition_penalty > 0.0 && r.repetition_penalty.is_finite());
            assert!(r.logprobs.is_none_or(|l| l <= 5));
            assert!(r.stop.len() <= 4 && r.stop.iter().all(|s| !s.is_empty()));
            assert!((-2.0..=2.0).contains(&r.presence_penalty));
            assert!((-2.0..=2.0).contains(&r.frequency_penalty));
            assert!(r
                .logit_bias
                .iter()
                .all(|(_, b)| (-100.0..=100.0).contains(b)));
        }
    }
}
