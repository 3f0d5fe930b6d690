//! The canonical tensor names and shapes, and the mapping from each layout's names.

use crate::Config;

/// Every tensor of a GPT-2 model with `config`'s sizes, in model order, with the shape
/// it must have: canonical names (Hugging Face style without the `transformer.` prefix),
/// shapes as Hugging Face stores them (`Conv1D` weights are `[in, out]`, `y = x @ W + b`).
///
/// | name | shape |
/// | --- | --- |
/// | `wte.weight` | `[n_vocab, n_embd]` |
/// | `wpe.weight` | `[n_ctx, n_embd]` |
/// | `h.{i}.ln_1.weight`, `h.{i}.ln_1.bias` | `[n_embd]` |
/// | `h.{i}.attn.c_attn.weight` / `.bias` | `[n_embd, 3 n_embd]` / `[3 n_embd]` |
/// | `h.{i}.attn.c_proj.weight` / `.bias` | `[n_embd, n_embd]` / `[n_embd]` |
/// | `h.{i}.ln_2.weight`, `h.{i}.ln_2.bias` | `[n_embd]` |
/// | `h.{i}.mlp.c_fc.weight` / `.bias` | `[n_embd, 4 n_embd]` / `[4 n_embd]` |
/// | `h.{i}.mlp.c_proj.weight` / `.bias` | `[4 n_embd, n_embd]` / `[n_embd]` |
/// | `ln_f.weight`, `ln_f.bias` | `[n_embd]` |
///
/// The LM head is tied to `wte.weight` (`logits = ln_f(h) @ wte^T`) and is not listed.
///
/// ```
/// use gpt2_weights::{expected_tensors, Config};
/// let t = expected_tensors(&Config::GPT2_124M);
/// assert_eq!(t.len(), 2 + 12 * 12 + 2);
/// assert_eq!(t[0], ("wte.weight".to_string(), vec![50257, 768]));
/// assert_eq!(t[4], ("h.0.attn.c_attn.weight".to_string(), vec![768, 2304]));
/// ```
pub fn expected_tensors(config: &Config) -> Vec<(String, Vec<usize>)> {
    expected_shapes(config).collect()
}

pub(crate) fn expected_shapes(config: &Config) -> impl Iterator<Item = (String, Vec<usize>)> {
    let (v, c, e) = (config.n_vocab, config.n_ctx, config.n_embd);
    let head = [
        ("wte.weight".to_string(), vec![v, e]),
        ("wpe.weight".to_string(), vec![c, e]),
    ];
    let blocks = (0..config.n_layer).flat_map(move |i| {
        let e3 = e.saturating_mul(3);
        let e4 = e.saturating_mul(4);
        [
            (format!("h.{i}.ln_1.weight"), vec![e]),
            (format!("h.{i}.ln_1.bias"), vec![e]),
            (format!("h.{i}.attn.c_attn.weight"), vec![e, e3]),
            (format!("h.{i}.attn.c_attn.bias"), vec![e3]),
            (format!("h.{i}.attn.c_proj.weight"), vec![e, e]),
            (format!("h.{i}.attn.c_proj.bias"), vec![e]),
            (format!("h.{i}.ln_2.weight"), vec![e]),
            (format!("h.{i}.ln_2.bias"), vec![e]),
            (format!("h.{i}.mlp.c_fc.weight"), vec![e, e4]),
            (format!("h.{i}.mlp.c_fc.bias"), vec![e4]),
            (format!("h.{i}.mlp.c_proj.weight"), vec![e4, e]),
            (format!("h.{i}.mlp.c_proj.bias"), vec![e]),
        ]
    });
    let tail = [
        ("ln_f.weight".to_string(), vec![e]),
        ("ln_f.bias".to_string(), vec![e]),
    ];
    head.into_iter().chain(blocks).chain(tail)
}

/// Maps an OpenAI checkpoint name (`model/h3/attn/c_attn/w`) to its canonical name
/// (`h.3.attn.c_attn.weight`). `None` for names that are not of that form.
pub(crate) fn openai_to_canonical(name: &str) -> Option<String> {
    let rest = name.strip_prefix("model/")?;
    match rest {
        "wte" => return Some("wte.weight".into()),
        "wpe" => return Some("wpe.weight".into()),
        _ => {}
    }
    let mut parts: Vec<&str> = rest.split('/').collect();
    let last = match parts.pop()? {
        "w" | "g" => "weight",
        "b" => "bias",
        _ => return None,
    };
    let mut out = Vec::with_capacity(parts.len() + 2);
    for (k, p) in parts.iter().enumerate() {
        if k == 0 {
            if let Some(digits) = p.strip_prefix('h') {
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    out.push("h".to_string());
                    out.push(digits.to_string());
                    continue;
                }
            }
        }
        if p.is_empty() || p.contains('.') {
            return None;
        }
        out.push((*p).to_string());
    }
    out.push(last.into());
    Some(out.join("."))
}

/// A Hugging Face name without the `transformer.` prefix.
pub(crate) fn hf_to_canonical(name: &str) -> &str {
    name.strip_prefix("transformer.").unwrap_or(name)
}

/// HF's non-parameter buffers (`h.N.attn.bias` causal mask, `h.N.attn.masked_bias`).
pub(crate) fn is_hf_buffer(canonical: &str) -> bool {
    let Some(rest) = canonical.strip_prefix("h.") else {
        return false;
    };
    let Some((idx, tail)) = rest.split_once('.') else {
        return false;
    };
    idx.bytes().all(|b| b.is_ascii_digit())
        && !idx.is_empty()
        && (tail == "attn.bias" || tail == "attn.masked_bias")
}

/// How GGUF stores a canonical tensor (llama.cpp's GPT-2 convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GgufStored {
    /// `wte` `[n_vocab, n_embd]`: Q8_0 (in the files this crate writes), the same shape.
    Embedding,
    /// A `Conv1D` weight `[in, out]`: stored transposed, `[out, in]` (Q8_0 when written here).
    Conv1D,
    /// Vectors and `wpe`: F32, the same shape.
    F32,
}

/// The per-block parts: (canonical part after `h.N.`, GGUF part after `blk.N.`, whether its
/// `.weight` is a `Conv1D` weight). The one table both directions are read from.
const GGUF_BLOCK_PARTS: [(&str, &str, bool); 6] = [
    ("ln_1", "attn_norm", false),
    ("attn.c_attn", "attn_qkv", true),
    ("attn.c_proj", "attn_output", true),
    ("ln_2", "ffn_norm", false),
    ("mlp.c_fc", "ffn_up", true),
    ("mlp.c_proj", "ffn_down", true),
];

/// The top-level parts: (canonical, GGUF).
const GGUF_TOP_PARTS: [(&str, &str); 3] = [
    ("wte", "token_embd"),
    ("wpe", "position_embd"),
    ("ln_f", "output_norm"),
];

/// The GGUF name of a canonical tensor name (`h.0.attn.c_attn.weight` →
/// `blk.0.attn_qkv.weight`) and how it is stored. `None` for names that are not GPT-2's.
pub(crate) fn canonical_to_gguf(canonical: &str) -> Option<(String, GgufStored)> {
    let (base, suffix) = canonical.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    if let Some(&(_, g)) = GGUF_TOP_PARTS.iter().find(|(c, _)| *c == base) {
        let how = if base == "wte" && suffix == "weight" {
            GgufStored::Embedding
        } else {
            GgufStored::F32
        };
        return Some((format!("{g}.{suffix}"), how));
    }
    let (layer, part) = base.strip_prefix("h.")?.split_once('.')?;
    let layer = parse_layer(layer)?;
    let &(_, g, conv) = GGUF_BLOCK_PARTS.iter().find(|(c, _, _)| *c == part)?;
    let how = if conv && suffix == "weight" {
        GgufStored::Conv1D
    } else {
        GgufStored::F32
    };
    Some((format!("blk.{layer}.{g}.{suffix}"), how))
}

/// The canonical name of a GGUF tensor name and how it is stored; `output.weight` (llama.cpp's
/// LM head) is `lm_head.weight`. `None` for names that are not GPT-2's.
pub(crate) fn gguf_to_canonical(name: &str) -> Option<(String, GgufStored)> {
    if name == "output.weight" {
        return Some(("lm_head.weight".into(), GgufStored::Embedding));
    }
    let (base, suffix) = name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let canonical = if let Some(&(c, _)) = GGUF_TOP_PARTS.iter().find(|(_, g)| *g == base) {
        format!("{c}.{suffix}")
    } else {
        let (layer, part) = base.strip_prefix("blk.")?.split_once('.')?;
        let layer = parse_layer(layer)?;
        let &(c, _, _) = GGUF_BLOCK_PARTS.iter().find(|(_, g, _)| *g == part)?;
        format!("h.{layer}.{c}.{suffix}")
    };
    let how = canonical_to_gguf(&canonical)?.1;
    Some((canonical, how))
}

/// A layer index written without sign or leading zeros.
fn parse_layer(s: &str) -> Option<usize> {
    let plain =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    plain.then(|| s.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_names() {
        assert_eq!(
            openai_to_canonical("model/wte").as_deref(),
            Some("wte.weight")
        );
        assert_eq!(
            openai_to_canonical("model/h11/attn/c_attn/w").as_deref(),
            Some("h.11.attn.c_attn.weight")
        );
        assert_eq!(
            openai_to_canonical("model/h0/ln_1/g").as_deref(),
            Some("h.0.ln_1.weight")
        );
        assert_eq!(
            openai_to_canonical("model/ln_f/b").as_deref(),
            Some("ln_f.bias")
        );
        assert_eq!(openai_to_canonical("global_step"), None);
        assert_eq!(openai_to_canonical("model/h0/x.y/w"), None);
    }

    #[test]
    fn gguf_names_follow_llama_cpp_both_ways() {
        for (canonical, name, how) in [
            ("wte.weight", "token_embd.weight", GgufStored::Embedding),
            ("wpe.weight", "position_embd.weight", GgufStored::F32),
            ("h.3.ln_1.bias", "blk.3.attn_norm.bias", GgufStored::F32),
            (
                "h.0.attn.c_attn.weight",
                "blk.0.attn_qkv.weight",
                GgufStored::Conv1D,
            ),
            (
                "h.0.attn.c_proj.bias",
                "blk.0.attn_output.bias",
                GgufStored::F32,
            ),
            (
                "h.11.ln_2.weight",
                "blk.11.ffn_norm.weight",
                GgufStored::F32,
            ),
            (
                "h.1.mlp.c_fc.weight",
                "blk.1.ffn_up.weight",
                GgufStored::Conv1D,
            ),
            (
                "h.1.mlp.c_proj.weight",
                "blk.1.ffn_down.weight",
                GgufStored::Conv1D,
            ),
            ("ln_f.bias", "output_norm.bias", GgufStored::F32),
        ] {
            assert_eq!(canonical_to_gguf(canonical), Some((name.to_string(), how)));
            assert_eq!(gguf_to_canonical(name), Some((canonical.to_string(), how)));
        }
        assert!(canonical_to_gguf("h.0.attn.bias").is_none());
        assert!(canonical_to_gguf("lm_head.weight").is_none());
        assert!(gguf_to_canonical("blk.01.ffn_up.weight").is_none());
        assert!(gguf_to_canonical("blk.0.ffn_gate.weight").is_none());
        assert_eq!(
            gguf_to_canonical("output.weight").map(|c| c.0).as_deref(),
            Some("lm_head.weight")
        );
        let c = Config {
            n_vocab: 8,
            n_ctx: 4,
            n_embd: 4,
            n_head: 2,
            n_layer: 2,
            layer_norm_epsilon: 1e-5,
        };
        for (name, _) in expected_shapes(&c) {
            let (g, _) = canonical_to_gguf(&name).unwrap();
            assert_eq!(gguf_to_canonical(&g).unwrap().0, name);
        }
    }

    #[test]
    fn hf_buffers() {
        assert!(is_hf_buffer("h.0.attn.bias"));
        assert!(is_hf_buffer("h.11.attn.masked_bias"));
        assert!(!is_hf_buffer("h.0.attn.c_attn.bias"));
        assert!(!is_hf_buffer("ln_f.bias"));
    }

    #[test]
    fn parameter_counts_of_published_sizes() {
        // Known totals of the released checkpoints (tied LM head counted once).
        assert_eq!(Config::GPT2_124M.num_parameters(), 124_439_808);
        assert_eq!(Config::GPT2_355M.num_parameters(), 354_823_168);
        assert_eq!(Config::GPT2_774M.num_parameters(), 774_030_080);
        assert_eq!(Config::GPT2_1558M.num_parameters(), 1_557_611_200);
    }
}
