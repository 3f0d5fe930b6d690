//! GGUF: the Q8_0 blocks, the container reader and writer, and GPT-2 models in it (written by
//! `convert_to_gguf`, opened as `Layout::Gguf`, converted back), plus crafted bad files.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use gpt2_weights::gguf::{
    self, convert_to_gguf, save_gguf, GgmlType, GgufFile, GgufOptions, GgufTensorOut,
    TokenizerLists, Value,
};
use gpt2_weights::q8_0::{self, Q8Error};
use gpt2_weights::{
    convert, expected_tensors, save_hf, Config, Dtype, Layout, SharedBytes, TensorView, Weights,
    WeightsError,
};
use half::f16;

const CONFIG: Config = Config {
    n_vocab: 100,
    n_ctx: 16,
    n_embd: 64,
    n_head: 4,
    n_layer: 2,
    layer_norm_epsilon: 1e-5,
};

/// Deterministic pseudo-random values in about [-scale, scale].
fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn f32_view(values: &[f32], shape: Vec<usize>) -> TensorView<'static> {
    TensorView {
        dtype: Dtype::F32,
        shape,
        transposed: false,
        data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
    }
}

/// A random HF f32 model at `dir`.
fn random_model(dir: &Path, config: &Config, seed: u64) {
    let tensors: Vec<(String, TensorView)> = expected_tensors(config)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            let scale = if name.ends_with("bias") { 0.1 } else { 0.5 };
            (name, f32_view(&random(n, seed + i as u64, scale), shape))
        })
        .collect();
    save_hf(dir, config, &tensors).expect("save_hf");
}

fn lists(n: usize) -> TokenizerLists {
    TokenizerLists {
        tokens: (0..n).map(|i| format!("t{i}")).collect(),
        merges: vec![("t".into(), "1".into()), ("t1".into(), "0".into())],
        eos: Some(n as u32 - 1),
    }
}

/// A tiny random model converted to GGUF: (tempdir, source HF dir, GGUF dir).
fn gguf_model(config: &Config) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f32");
    random_model(&src, config, 7);
    let out = tmp.path().join("q8");
    let opts = GgufOptions {
        name: "tiny".into(),
        tokenizer: Some(lists(config.n_vocab)),
    };
    convert_to_gguf(&src, &out, &opts).expect("convert_to_gguf");
    (tmp, src, out)
}

#[test]
fn round_trip_through_gguf_is_within_half_a_q8_0_step() {
    let (_tmp, src, out) = gguf_model(&CONFIG);
    assert!(out.join("config.json").is_file());
    let a = Weights::open(&src).unwrap();
    let b = Weights::open(&out).unwrap();
    assert_eq!(b.layout(), Layout::Gguf);
    assert_eq!(b.config(), &CONFIG);
    let file = b.gguf().expect("a GGUF file");
    assert_eq!(file.version(), 3);
    assert_eq!(file.name(), Some("tiny"));
    assert_eq!(file.tokenizer_lists().unwrap(), Some(lists(CONFIG.n_vocab)));
    assert!(file.metadata("output.weight").is_none());
    for name in a.names() {
        let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
        assert_eq!(x.shape, y.shape, "{name}");
        let (xv, yv) = (x.to_f32_vec(), y.to_f32_vec());
        assert_eq!(xv.len(), yv.len());
        let matrix = name == "wte.weight"
            || (name.ends_with(".weight") && x.shape.len() == 2 && name != "wpe.weight");
        if matrix {
            assert_eq!(y.dtype, Dtype::Q8_0, "{name}");
            assert_eq!(y.transposed, name != "wte.weight", "{name}");
            // Half a step of the largest block's scale, plus the f16 rounding of the scale.
            let d = xv.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let bound = d * (0.5 + 127.0 / 2048.0) * 1.001;
            for (i, (p, q)) in xv.iter().zip(&yv).enumerate() {
                assert!(
                    (p - q).abs() <= bound,
                    "{name}[{i}]: {p} vs {q} (bound {bound})"
                );
            }
        } else {
            assert_eq!((y.dtype, y.transposed), (Dtype::F32, false), "{name}");
            assert_eq!(xv, yv, "{name}");
        }
        let bytes = b.shared_bytes(name).unwrap();
        assert!(bytes.is_mapped());
        assert_eq!(&*bytes, &*y.data);
    }
    // The file itself opens too, and Weights::open prefers model.gguf over other layouts.
    let by_file = Weights::open(&out.join("model.gguf")).unwrap();
    assert_eq!(by_file.layout(), Layout::Gguf);
    std::fs::copy(src.join("model.safetensors"), out.join("model.safetensors")).unwrap();
    assert_eq!(Weights::detect_layout(&out).unwrap(), Layout::Gguf);
}

#[test]
fn gguf_converts_back_to_hf_dequantized() {
    let (tmp, _src, out) = gguf_model(&CONFIG);
    let g = Weights::open(&out).unwrap();
    let hf = tmp.path().join("back");
    convert(&out, &hf, Dtype::F32).unwrap();
    let h = Weights::open(&hf).unwrap();
    assert_eq!(h.layout(), Layout::HuggingFace);
    assert_eq!(h.config(), g.config());
    for name in g.names() {
        let t = h.tensor(name).unwrap();
        assert_eq!((t.dtype, t.transposed), (Dtype::F32, false));
        assert_eq!(
            t.to_f32_vec(),
            g.tensor(name).unwrap().to_f32_vec(),
            "{name}"
        );
    }
    // f16 too (the values are small); Q8_0 is not a safetensors dtype.
    convert(&out, &tmp.path().join("f16"), Dtype::F16).unwrap();
    let err = convert(&out, &tmp.path().join("q8x"), Dtype::Q8_0).unwrap_err();
    assert!(matches!(err, WeightsError::Unsupported { .. }), "{err}");
    assert!(!tmp.path().join("q8x").exists());
    // GGUF → GGUF re-quantizes and keeps the tokenizer of the source file.
    let again = tmp.path().join("again");
    convert_to_gguf(&out, &again, &GgufOptions::default()).unwrap();
    let w = Weights::open(&again).unwrap();
    assert_eq!(
        w.gguf().unwrap().tokenizer_lists().unwrap(),
        Some(lists(CONFIG.n_vocab))
    );
    // And save_gguf refuses to overwrite.
    let path = again.join("model.gguf");
    assert!(matches!(
        save_gguf(&w, &path, &GgufOptions::default()),
        Err(WeightsError::DestinationExists(_))
    ));
}

#[test]
fn save_gguf_never_follows_a_symlink_and_leaves_nothing_on_error() {
    let (tmp, src, _out) = gguf_model(&CONFIG);
    let w = Weights::open(&src).unwrap();
    let target = tmp.path().join("target");
    let link = tmp.path().join("link.gguf");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            save_gguf(&w, &link, &GgufOptions::default()),
            Err(WeightsError::DestinationExists(_))
        ));
        assert!(!target.exists());
    }
    // A weight that cannot be quantized: an error naming the tensor, nothing written.
    let dir = tmp.path().join("nan");
    let config = Config {
        n_embd: 32,
        n_head: 2,
        ..CONFIG
    };
    let mut tensors: Vec<(String, TensorView)> = expected_tensors(&config)
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name, f32_view(&random(n, 1, 0.5), shape))
        })
        .collect();
    let mut bad = random(32 * 128, 3, 0.5);
    bad[77] = f32::NAN;
    tensors[10].1 = f32_view(&bad, vec![32, 128]);
    assert_eq!(tensors[10].0, "h.0.mlp.c_fc.weight");
    save_hf(&dir, &config, &tensors).unwrap();
    let before: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    let err = convert_to_gguf(&dir, &tmp.path().join("out"), &GgufOptions::default()).unwrap_err();
    match &err {
        WeightsError::Quantize {
            tensor,
            source: Q8Error::NonFinite { index, .. },
            ..
        } => {
            assert_eq!(tensor, "h.0.mlp.c_fc.weight");
            assert_eq!(*index, 77);
        }
        other => panic!("{other}"),
    }
    let path = tmp.path().join("m.gguf");
    let err = save_gguf(
        &Weights::open(&dir).unwrap(),
        &path,
        &GgufOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("h.0.mlp.c_fc.weight"), "{err}");
    let after: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(before.len(), after.len(), "something was left behind");
    // n_embd not a multiple of 32.
    let odd = tmp.path().join("odd");
    random_model(
        &odd,
        &Config {
            n_embd: 48,
            ..CONFIG
        },
        1,
    );
    let err = convert_to_gguf(&odd, &tmp.path().join("o"), &GgufOptions::default()).unwrap_err();
    assert!(err.to_string().contains("multiple of 32"), "{err}");
}

// ---- Q8_0 ----

/// The documented algorithm, written out plainly.
fn reference_block(w: &[f32]) -> Vec<u8> {
    let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut out = f16::from_f32(d).to_le_bytes().to_vec();
    out.extend(
        w.iter()
            .map(|&v| (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8 as u8),
    );
    out
}

#[test]
fn q8_0_blocks_are_the_documented_bytes() {
    // k / 100 for k = -127, -119, ..., 121 and 127: scale 0.01, q = k.
    let mut ks: Vec<i32> = (0..31).map(|i| -127 + 8 * i).collect();
    ks.push(127);
    let w: Vec<f32> = ks.iter().map(|&k| k as f32 / 100.0).collect();
    let mut block = [0u8; 34];
    q8_0::quantize_block(&w, &mut block).unwrap();
    assert_eq!(
        f16::from_le_bytes([block[0], block[1]]),
        f16::from_f32(0.01)
    );
    let q: Vec<i32> = block[2..].iter().map(|&b| b as i8 as i32).collect();
    assert_eq!(q, ks);
    assert_eq!(block.to_vec(), reference_block(&w));
    // Random blocks, ties, zeros.
    for seed in 0..200 {
        let w = random(32, seed, 10f32.powi((seed % 7) as i32 - 3));
        q8_0::quantize_block(&w, &mut block).unwrap();
        assert_eq!(block.to_vec(), reference_block(&w), "seed {seed}");
    }
    q8_0::quantize_block(&[0.0; 32], &mut block).unwrap();
    assert_eq!(block, [0u8; 34]);
    let mut ties = [0.5f32; 32];
    ties[0] = 127.0; // d = 1: 0.5 rounds to 0, 1.5 to 2
    ties[1] = 1.5;
    q8_0::quantize_block(&ties, &mut block).unwrap();
    assert_eq!((block[2], block[3], block[4]), (127, 2, 0));
    // Rows and transposes agree with the block function.
    let w = random(64 * 3, 9, 1.0);
    let rows = q8_0::quantize_rows(&w, 3, 64).unwrap();
    for (b, w) in rows.chunks(34).zip(w.chunks(32)) {
        assert_eq!(b.to_vec(), reference_block(w));
    }
    let back = q8_0::dequantize(&rows, 3, 64);
    assert_eq!(back.len(), w.len());
    let wt: Vec<f32> = (0..3)
        .flat_map(|o| (0..64).map(move |i| (i, o)))
        .map(|(i, o)| w[o * 64 + i])
        .collect();
    // w viewed as [64, 3]: its transpose is [3, 64] = wt.
    let w64x3: Vec<f32> = (0..64)
        .flat_map(|i| (0..3).map(move |o| (i, o)))
        .map(|(i, o)| wt[o * 64 + i])
        .collect();
    assert_eq!(
        q8_0::quantize_transposed(&w64x3, 64, 3).unwrap(),
        q8_0::quantize_rows(&wt, 3, 64).unwrap()
    );
}

#[test]
fn q8_0_refuses_nan_infinity_and_scale_overflow() {
    let mut block = [0u8; 34];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = [0.1f32; 32];
        w[5] = bad;
        match q8_0::quantize_block(&w, &mut block) {
            Err(Q8Error::NonFinite { index: 5, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    let mut w = [0.1f32; 32];
    w[0] = 65504.0 * 127.0; // d = 65504 exactly: the largest f16
    q8_0::quantize_block(&w, &mut block).unwrap();
    assert_eq!(f16::from_le_bytes([block[0], block[1]]), f16::MAX);
    w[0] = -65600.0 * 127.0;
    assert!(matches!(
        q8_0::quantize_block(&w, &mut block),
        Err(Q8Error::ScaleOverflow { .. })
    ));
    let mut rows = vec![0.1f32; 96];
    rows[70] = 1e30;
    match q8_0::quantize_rows(&rows, 1, 96) {
        Err(Q8Error::ScaleOverflow { start: 64, amax }) => assert_eq!(amax, 1e30),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        q8_0::quantize_rows(&rows, 1, 95),
        Err(Q8Error::Shape(_))
    ));
    assert!(matches!(
        q8_0::quantize_rows(&rows, 2, 96),
        Err(Q8Error::Shape(_))
    ));
    assert!(matches!(
        q8_0::quantize_block(&rows[..31], &mut block),
        Err(Q8Error::Shape(_))
    ));
}

// ---- The container ----

fn path() -> PathBuf {
    PathBuf::from("crafted.gguf")
}

fn parse(bytes: &[u8]) -> Result<GgufFile, WeightsError> {
    GgufFile::from_bytes(SharedBytes::from_vec(bytes.to_vec()), &path())
}

fn small_file() -> Vec<u8> {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let q = q8_0::quantize_rows(&random(64, 1, 1.0), 2, 32).unwrap();
    let mut out = Vec::new();
    gguf::write(
        &mut out,
        &[
            ("a.string", Value::String("x".into())),
            ("a.array", Value::Array(vec![Value::U16(1), Value::U16(2)])),
            ("a.bool", Value::Bool(true)),
        ],
        &[
            GgufTensorOut {
                name: "v",
                ggml_type: GgmlType::F32,
                dims: &[3],
                data: &data,
            },
            GgufTensorOut {
                name: "q",
                ggml_type: GgmlType::Q8_0,
                dims: &[2, 32],
                data: &q,
            },
        ],
    )
    .unwrap();
    out
}

/// A value's bytes (version 2/3), for crafting files by hand.
fn enc(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        Value::Array(items) => {
            out.extend(items.first().map_or(4, Value::type_id).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| enc(i, out));
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// A hand-made file: `infos` are (name, ne innermost first, type, offset); `data` follows the
/// header padded to `align`.
fn craft(
    kvs: &[(&str, Value)],
    infos: &[(&str, Vec<u64>, u32, u64)],
    data: &[u8],
    align: usize,
) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((infos.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        enc(&Value::String(k.to_string()), &mut b);
        b.extend(v.type_id().to_le_bytes());
        enc(v, &mut b);
    }
    for (name, ne, t, off) in infos {
        enc(&Value::String(name.to_string()), &mut b);
        b.extend((ne.len() as u32).to_le_bytes());
        ne.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(t.to_le_bytes());
        b.extend(off.to_le_bytes());
    }
    while !b.len().is_multiple_of(align) {
        b.push(0);
    }
    b.extend(data);
    b
}

fn format_err(bytes: &[u8], needle: &str) {
    match parse(bytes) {
        Err(
            e @ (WeightsError::Format { .. }
            | WeightsError::Unsupported { .. }
            | WeightsError::Metadata { .. }),
        ) => {
            let msg = e.to_string();
            assert!(msg.contains("crafted.gguf"), "{msg}");
            assert!(msg.contains(needle), "{needle:?} not in: {msg}");
            assert!(msg.len() < 1000, "{msg}");
        }
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(_) => panic!("accepted; expected an error with {needle:?}"),
    }
}

#[test]
fn the_writer_round_trips_every_value_type() {
    let values = vec![
        ("u8", Value::U8(1)),
        ("i8", Value::I8(-1)),
        ("u16", Value::U16(2)),
        ("i16", Value::I16(-2)),
        ("u32", Value::U32(3)),
        ("i32", Value::I32(-3)),
        ("f32", Value::F32(0.5)),
        ("bool", Value::Bool(false)),
        ("string", Value::String("héllo".into())),
        (
            "array",
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        ),
        (
            "nested",
            Value::Array(vec![
                Value::Array(vec![Value::I64(1)]),
                Value::Array(vec![]),
            ]),
        ),
        ("empty", Value::Array(vec![])),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-0.25)),
    ];
    let mut out = Vec::new();
    gguf::write(&mut out, &values, &[]).unwrap();
    let f = parse(&out).unwrap();
    let got: Vec<(&str, &Value)> = f.metadata_entries().collect();
    assert_eq!(got.len(), values.len());
    for ((k, v), (gk, gv)) in values.iter().zip(got) {
        assert_eq!((*k, v), (gk, gv));
    }
    assert_eq!(out.len() % 32, 0);
    // Mixed arrays and bad sizes are refused by the writer.
    let mixed = [("m", Value::Array(vec![Value::U8(1), Value::I8(1)]))];
    assert!(gguf::write(&mut Vec::new(), &mixed, &[]).is_err());
    let t = GgufTensorOut {
        name: "t",
        ggml_type: GgmlType::F32,
        dims: &[3],
        data: &[0; 8],
    };
    assert!(gguf::write(&mut Vec::new(), &[], &[t]).is_err());
    let t = GgufTensorOut {
        name: "t",
        ggml_type: GgmlType::Q8_0,
        dims: &[1, 16],
        data: &[0; 17],
    };
    assert!(gguf::write(&mut Vec::new(), &[], &[t]).is_err());
}

#[test]
fn a_small_file_reads_back() {
    let b = small_file();
    let f = parse(&b).unwrap();
    assert_eq!(
        (f.version(), f.alignment(), f.file_len()),
        (3, 32, b.len() as u64)
    );
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor("q").unwrap().dims, vec![2, 32]);
    assert_eq!(f.tensor("q").unwrap().ggml_type, GgmlType::Q8_0);
    assert_eq!(f.tensor("q").unwrap().offset, 32);
    assert_eq!(f.tensor_bytes("q").unwrap().len(), 68);
    assert_eq!(f.metadata("a.bool"), Some(&Value::Bool(true)));
    assert!(f.tensor_bytes("nope").is_none());
    // Version 1: u32 counts and lengths.
    let mut v1 = b"GGUF".to_vec();
    v1.extend(1u32.to_le_bytes());
    v1.extend(1u32.to_le_bytes()); // tensors
    v1.extend(1u32.to_le_bytes()); // kv
    v1.extend(3u32.to_le_bytes());
    v1.extend(b"k.s");
    v1.extend(8u32.to_le_bytes());
    v1.extend(2u32.to_le_bytes());
    v1.extend(b"hi");
    v1.extend(1u32.to_le_bytes());
    v1.extend(b"t");
    v1.extend(1u32.to_le_bytes()); // n_dims
    v1.extend(2u32.to_le_bytes()); // ne0
    v1.extend(0u32.to_le_bytes()); // F32
    v1.extend(0u64.to_le_bytes());
    while !v1.len().is_multiple_of(32) {
        v1.push(0);
    }
    v1.extend([0u8; 8]);
    let f = parse(&v1).unwrap();
    assert_eq!(f.version(), 1);
    assert_eq!(f.metadata("k.s").and_then(Value::as_str), Some("hi"));
    assert_eq!(f.tensor("t").unwrap().dims, vec![2]);
}

#[test]
fn every_truncation_is_an_error_and_never_a_panic() {
    let b = small_file();
    let f = parse(&b).unwrap();
    let last = f
        .tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.byte_len as u64)
        .max()
        .unwrap();
    for cut in 0..b.len() {
        let r = parse(&b[..cut]);
        if (cut as u64) < last {
            assert!(r.is_err(), "cut at {cut} accepted");
        } else {
            assert!(
                r.is_ok(),
                "cut at {cut} (only padding lost) refused: {:?}",
                r.err()
            );
        }
    }
    // And every single-byte change parses or fails cleanly.
    for i in 0..b.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut c = b.clone();
            c[i] ^= x;
            let _ = parse(&c);
        }
    }
}

#[test]
fn bad_magic_and_versions() {
    let mut b = small_file();
    b[..4].copy_from_slice(b"FUGG");
    format_err(&b, "big-endian");
    let mut b = small_file();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    format_err(&b, "big-endian");
    for v in [0u32, 4, 99] {
        let mut b = small_file();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        format_err(&b, &format!("version {v}"));
    }
    format_err(b"GGU", "shorter");
    format_err(b"GGML\x03\0\0\0", "not a GGUF file");
}

#[test]
fn huge_counts_and_lengths_fail_fast() {
    for huge in [1u64 << 63, u64::MAX, 1 << 40] {
        // Tensor count (offset 8), metadata count (16), first key length (24).
        for (at, needle) in [
            (8, "tensor count"),
            (16, "metadata count"),
            (24, "key of metadata entry 0"),
        ] {
            let mut b = small_file();
            b[at..at + 8].copy_from_slice(&huge.to_le_bytes());
            format_err(&b, needle);
        }
        // A string value's length and an array's length.
        let s = craft(&[("s", Value::String("abc".into()))], &[], &[], 32);
        let mut b = s.clone();
        let at = 24 + 8 + 1 + 4; // header, key, type
        b[at..at + 8].copy_from_slice(&huge.to_le_bytes());
        format_err(&b, "metadata `s`");
        let a = craft(&[("a", Value::Array(vec![Value::U8(1)]))], &[], &[], 32);
        let mut b = a.clone();
        let at = 24 + 8 + 1 + 4 + 4;
        b[at..at + 8].copy_from_slice(&huge.to_le_bytes());
        format_err(&b, "the length of metadata `a`");
        // A tensor name's length.
        let t = craft(&[], &[("t", vec![2], 0, 0)], &[0; 8], 32);
        let mut b = t.clone();
        b[24..32].copy_from_slice(&huge.to_le_bytes());
        format_err(&b, "tensor 0");
    }
}

#[test]
fn bad_alignment_is_refused_naming_the_key() {
    for v in [
        Value::U8(0),
        Value::U32(0),
        Value::I32(0),
        Value::U32(3),
        Value::I32(-32),
        Value::String("32".into()),
        Value::U64(1 << 40),
    ] {
        let b = craft(
            &[("general.alignment", v.clone())],
            &[("t", vec![2], 0, 0)],
            &[0; 8],
            32,
        );
        match parse(&b) {
            Err(WeightsError::Metadata { key, .. }) => {
                assert_eq!(key, "general.alignment", "{v:?}")
            }
            other => panic!("{v:?}: {other:?}"),
        }
    }
    // A valid non-default alignment is used for the data section and offsets.
    let b = craft(
        &[("general.alignment", Value::U32(64))],
        &[("t", vec![2], 0, 0)],
        &[1; 8],
        64,
    );
    let f = parse(&b).unwrap();
    assert_eq!((f.alignment(), f.data_offset() % 64), (64, 0));
    assert_eq!(&*f.tensor_bytes("t").unwrap(), &[1; 8]);
}

#[test]
fn bad_values_and_tensor_infos() {
    // Unknown value type (patch the first kv's type) and unknown array element type.
    let mut b = craft(&[("k", Value::U32(1))], &[], &[], 32);
    b[24 + 9..24 + 13].copy_from_slice(&13u32.to_le_bytes());
    format_err(&b, "unknown value type 13");
    let mut b = craft(&[("k", Value::Array(vec![Value::U8(1)]))], &[], &[], 32);
    b[24 + 13..24 + 17].copy_from_slice(&99u32.to_le_bytes());
    format_err(&b, "unknown array element type 99");
    let mut b = craft(&[("k", Value::Bool(true))], &[], &[], 32);
    b[24 + 13] = 2;
    format_err(&b, "bool byte 2");
    let mut b = craft(&[("k", Value::String("ab".into()))], &[], &[], 32);
    b[24 + 21] = 0xff;
    format_err(&b, "not UTF-8");
    let nested = (0..6).fold(Value::U8(1), |v, _| Value::Array(vec![v]));
    format_err(&craft(&[("k", nested)], &[], &[], 32), "nested");
    format_err(
        &craft(&[("k", Value::U8(1)), ("k", Value::U8(2))], &[], &[], 32),
        "appears twice",
    );
    // Tensor infos.
    format_err(
        &craft(&[], &[("t", vec![1; 5], 0, 0)], &[0; 32], 32),
        "5 dimensions",
    );
    format_err(
        &craft(
            &[],
            &[("t", vec![1 << 32, 1 << 32, 1 << 32], 0, 0)],
            &[0; 32],
            32,
        ),
        "needs more bytes",
    );
    format_err(
        &craft(&[], &[("t", vec![u64::MAX], 0, 0)], &[0; 32], 32),
        "needs more bytes",
    );
    format_err(
        &craft(&[], &[("t", vec![2], 2, 0)], &[0; 32], 32),
        "GGML type 2 (Q4_0)",
    );
    format_err(
        &craft(&[], &[("t", vec![16], 8, 0)], &[0; 32], 32),
        "not whole blocks",
    );
    format_err(
        &craft(
            &[],
            &[("t", vec![2], 0, 0), ("t", vec![2], 0, 32)],
            &[0; 64],
            32,
        ),
        "appears twice",
    );
    format_err(
        &craft(&[], &[("t", vec![2], 0, 4)], &[0; 64], 32),
        "not a multiple of the alignment",
    );
    format_err(
        &craft(
            &[],
            &[("a", vec![16], 0, 0), ("b", vec![2], 0, 32)],
            &[0; 96],
            32,
        ),
        "overlap",
    );
    format_err(
        &craft(&[], &[("t", vec![2], 0, 64)], &[0; 64], 32),
        "truncated",
    );
    format_err(
        &craft(&[], &[("t", vec![2], 0, u64::MAX - 31)], &[0; 64], 32),
        "truncated",
    );
    // Zero-sized and adjacent tensors are fine.
    let ok = craft(
        &[],
        &[
            ("a", vec![8], 0, 0),
            ("b", vec![0], 0, 32),
            ("c", vec![2], 0, 32),
        ],
        &[0; 64],
        32,
    );
    assert_eq!(parse(&ok).unwrap().tensors().len(), 3);
}

// ---- GPT-2 GGUF models with bad metadata ----

/// Rewrites a GGUF file with `edit` applied to its metadata and tensors.
fn rewrite(
    from: &Path,
    to: &Path,
    edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<(String, GgmlType, Vec<usize>, Vec<u8>)>),
) {
    let f = GgufFile::open(from).unwrap();
    let mut md: Vec<(String, Value)> = f
        .metadata_entries()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut ts: Vec<_> = f
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.ggml_type,
                t.dims.clone(),
                f.tensor_bytes(&t.name).unwrap().to_vec(),
            )
        })
        .collect();
    edit(&mut md, &mut ts);
    let md_refs: Vec<(&str, Value)> = md.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let outs: Vec<GgufTensorOut> = ts
        .iter()
        .map(|(n, t, d, b)| GgufTensorOut {
            name: n,
            ggml_type: *t,
            dims: d,
            data: b,
        })
        .collect();
    let mut bytes = Vec::new();
    gguf::write(&mut bytes, &md_refs, &outs).unwrap();
    std::fs::write(to, bytes).unwrap();
}

type Metadata = Vec<(String, Value)>;

fn set(md: &mut Metadata, key: &str, v: Option<Value>) {
    md.retain(|(k, _)| k != key);
    if let Some(v) = v {
        md.push((key.to_string(), v));
    }
}

#[test]
fn gpt2_metadata_must_agree_with_the_tensors() {
    let (tmp, _src, out) = gguf_model(&Config {
        n_embd: 32,
        n_head: 2,
        ..CONFIG
    });
    let good = out.join("model.gguf");
    let p = tmp.path().join("x.gguf");
    let metadata_err = |key: &str, edit: &dyn Fn(&mut Metadata)| {
        let _ = std::fs::remove_file(&p);
        rewrite(&good, &p, |md, _| edit(md));
        match Weights::open(&p) {
            Err(WeightsError::Metadata { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        }
    };
    for v in [5u32, u32::MAX, 101] {
        metadata_err("gpt2.vocab_size", &|md| {
            set(md, "gpt2.vocab_size", Some(Value::U32(v)))
        });
    }
    metadata_err("gpt2.vocab_size", &|md| {
        set(md, "gpt2.vocab_size", Some(Value::String("100".into())))
    });
    metadata_err("gpt2.block_count", &|md| set(md, "gpt2.block_count", None));
    metadata_err("gpt2.block_count", &|md| {
        set(md, "gpt2.block_count", Some(Value::String("2".into())))
    });
    metadata_err("gpt2.block_count", &|md| {
        set(md, "gpt2.block_count", Some(Value::I32(-2)))
    });
    metadata_err("gpt2.attention.layer_norm_epsilon", &|md| {
        set(md, "gpt2.attention.layer_norm_epsilon", Some(Value::U32(1)))
    });
    metadata_err("general.architecture", &|md| {
        set(
            md,
            "general.architecture",
            Some(Value::String("llama".into())),
        )
    });
    metadata_err("gpt2.feed_forward_length", &|md| {
        set(md, "gpt2.feed_forward_length", Some(Value::U32(64)))
    });
    metadata_err("tokenizer.ggml.tokens", &|md| {
        set(
            md,
            "tokenizer.ggml.tokens",
            Some(Value::Array(vec![Value::String("a".into()); 101])),
        )
    });
    metadata_err("tokenizer.ggml.tokens", &|md| {
        set(
            md,
            "tokenizer.ggml.tokens",
            Some(Value::Array(vec![Value::U32(1); 100])),
        )
    });
    metadata_err("tokenizer.ggml.model", &|md| {
        set(
            md,
            "tokenizer.ggml.model",
            Some(Value::String("llama".into())),
        )
    });
    metadata_err("tokenizer.ggml.merges", &|md| {
        set(
            md,
            "tokenizer.ggml.merges",
            Some(Value::Array(vec![Value::String("nospace".into())])),
        )
    });
    // Hyperparameters that disagree with the shapes: the tensor check reports them.
    for (key, v) in [
        ("gpt2.embedding_length", 64u32),
        ("gpt2.block_count", 3),
        ("gpt2.context_length", 17),
        ("gpt2.attention.head_count", 3),
    ] {
        let _ = std::fs::remove_file(&p);
        rewrite(&good, &p, |md, _| set(md, key, Some(Value::U32(v))));
        let err = Weights::open(&p).unwrap_err();
        assert!(
            matches!(
                err,
                WeightsError::Mismatch { .. }
                    | WeightsError::InvalidConfig { .. }
                    | WeightsError::Metadata { .. }
            ),
            "{key}: {err}"
        );
    }
    // A tied `output.weight` is accepted; an untied one is not.
    let _ = std::fs::remove_file(&p);
    rewrite(&good, &p, |_, ts| {
        let e = ts
            .iter()
            .find(|t| t.0 == "token_embd.weight")
            .unwrap()
            .clone();
        ts.push(("output.weight".into(), e.1, e.2, e.3));
    });
    Weights::open(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    rewrite(&good, &p, |_, ts| {
        let mut e = ts
            .iter()
            .find(|t| t.0 == "token_embd.weight")
            .unwrap()
            .clone();
        e.3[5] ^= 1;
        ts.push(("output.weight".into(), e.1, e.2, e.3));
    });
    let err = Weights::open(&p).unwrap_err();
    assert!(err.to_string().contains("output.weight"), "{err}");
    // An unknown tensor and a missing one.
    let _ = std::fs::remove_file(&p);
    rewrite(&good, &p, |_, ts| {
        ts.retain(|t| t.0 != "blk.1.ffn_up.bias");
        ts.push((
            "blk.0.ffn_gate.weight".into(),
            GgmlType::F32,
            vec![1],
            vec![0; 4],
        ));
    });
    match Weights::open(&p) {
        Err(WeightsError::Mismatch { mismatch, .. }) => {
            assert_eq!(mismatch.missing, vec!["h.1.mlp.c_fc.bias".to_string()]);
            assert_eq!(
                mismatch.unexpected,
                vec!["blk.0.ffn_gate.weight".to_string()]
            );
        }
        other => panic!("{other:?}"),
    }
    // F16 / F32 matrices (as llama.cpp's converter may write) open, transposed.
    let _ = std::fs::remove_file(&p);
    rewrite(&good, &p, |_, ts| {
        for t in ts.iter_mut().filter(|t| t.0 == "blk.0.attn_qkv.weight") {
            let vals = q8_0::dequantize(&t.3, t.2[0], t.2[1]);
            t.1 = GgmlType::F16;
            t.3 = vals
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect();
        }
    });
    let w = Weights::open(&p).unwrap();
    let t = w.tensor("h.0.attn.c_attn.weight").unwrap();
    assert_eq!(
        (t.dtype, t.transposed, t.shape.clone()),
        (Dtype::F16, true, vec![32, 96])
    );
    let g = Weights::open(&good).unwrap();
    let want = g.tensor("h.0.attn.c_attn.weight").unwrap().to_f32_vec();
    for (a, b) in t.to_f32_vec().iter().zip(&want) {
        assert!((a - b).abs() <= b.abs() / 1024.0 + 1e-7);
    }
}

// ---- convert.rs ----

#[test]
fn f16_conversion_refuses_weights_beyond_its_range() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big");
    let config = Config {
        n_embd: 32,
        n_head: 2,
        ..CONFIG
    };
    let tensors: Vec<(String, TensorView)> = expected_tensors(&config)
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let mut v = random(n, 2, 0.5);
            if name == "h.1.ln_2.bias" {
                v[3] = -70000.0;
            }
            (name, f32_view(&v, shape))
        })
        .collect();
    save_hf(&src, &config, &tensors).unwrap();
    let to = tmp.path().join("f16");
    let err = convert(&src, &to, Dtype::F16).unwrap_err();
    assert!(err.to_string().contains("h.1.ln_2.bias"), "{err}");
    assert!(!to.exists());
    convert(&src, &tmp.path().join("bf16"), Dtype::BF16).unwrap();
}

#[test]
fn epsilon_must_survive_f32() {
    for eps in [1e308, 1e-50, f64::NAN, 0.0, -1e-5] {
        let err = Config {
            layer_norm_epsilon: eps,
            ..CONFIG
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("layer_norm_epsilon"), "{err}");
    }
    Config {
        layer_norm_epsilon: 1e-30,
        ..CONFIG
    }
    .validate()
    .unwrap();
}

#[test]
fn save_dir_with_cleans_up_when_the_destination_appears_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("model");
    let err = gpt2_weights::save_dir_with(&to, &CONFIG, &[], &["w.bin"], |dir| {
        let p = dir.join("w.bin");
        std::fs::write(&p, b"x").unwrap();
        std::fs::create_dir(&to).unwrap(); // someone else takes the name
        Ok::<_, WeightsError>(vec![p])
    })
    .unwrap_err();
    assert!(matches!(err, WeightsError::DestinationExists(_)), "{err}");
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["model".to_string()]);
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), 0);
    // An error from the writer leaves nothing at all.
    let to2 = tmp.path().join("model2");
    let err = gpt2_weights::save_dir_with(&to2, &CONFIG, &[], &["w.bin"], |_| {
        Err::<Vec<PathBuf>, _>(WeightsError::UnknownTensor("x".into()))
    })
    .unwrap_err();
    assert!(matches!(err, WeightsError::UnknownTensor(_)));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}
