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
