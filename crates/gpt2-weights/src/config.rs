//! Hyperparameters: [`Config`], read from OpenAI's `hparams.json` or Hugging Face's
//! `config.json`, and the four published sizes ([`ModelSize`]).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::WeightsError;

/// The largest value accepted for `n_vocab`, `n_ctx` and `n_embd` (a sanity bound that
/// keeps every size computation far from overflow).
pub const MAX_DIM: usize = 1 << 24;
/// The largest accepted `n_layer`.
pub const MAX_LAYERS: usize = 4096;

/// GPT-2 hyperparameters, whichever layout they came from.
///
/// ```
/// use gpt2_weights::Config;
/// let c = Config::GPT2_124M;
/// assert_eq!(c.head_dim(), 64);
/// assert_eq!(c.num_parameters(), 124_439_808);
/// c.validate().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Vocabulary size (50257 for the released models).
    pub n_vocab: usize,
    /// Context length: the number of learned positions.
    pub n_ctx: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of attention heads (`n_embd` must be divisible by it).
    pub n_head: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Layer-norm epsilon (1e-5 for the released models).
    pub layer_norm_epsilon: f64,
}

const fn published(n_embd: usize, n_head: usize, n_layer: usize) -> Config {
    Config {
        n_vocab: 50257,
        n_ctx: 1024,
        n_embd,
        n_head,
        n_layer,
        layer_norm_epsilon: 1e-5,
    }
}

impl Config {
    /// GPT-2 small: 12 layers, 768 wide, 12 heads.
    pub const GPT2_124M: Config = published(768, 12, 12);
    /// GPT-2 medium: 24 layers, 1024 wide, 16 heads.
    pub const GPT2_355M: Config = published(1024, 16, 24);
    /// GPT-2 large: 36 layers, 1280 wide, 20 heads.
    pub const GPT2_774M: Config = published(1280, 20, 36);
    /// GPT-2 XL: 48 layers, 1600 wide, 25 heads.
    pub const GPT2_1558M: Config = published(1600, 25, 48);

    /// Checks that the config describes a model that can exist: no zero sizes,
    /// `n_embd % n_head == 0`, a positive finite epsilon, and sizes within
    /// [`MAX_DIM`] / [`MAX_LAYERS`].
    ///
    /// ```
    /// use gpt2_weights::Config;
    /// let bad = Config { n_head: 7, ..Config::GPT2_124M };
    /// let err = bad.validate().unwrap_err().to_string();
    /// assert!(err.contains("n_embd (768) must be divisible by n_head (7)"), "{err}");
    /// ```
    pub fn validate(&self) -> Result<(), WeightsError> {
        let bad = |message: String| WeightsError::InvalidConfig {
            file: None,
            message,
        };
        for (name, v, max) in [
            ("n_vocab", self.n_vocab, MAX_DIM),
            ("n_ctx", self.n_ctx, MAX_DIM),
            ("n_embd", self.n_embd, MAX_DIM),
            ("n_head", self.n_head, MAX_DIM),
            ("n_layer", self.n_layer, MAX_LAYERS),
        ] {
            if v == 0 {
                return Err(bad(format!("{name} must be at least 1, found 0")));
            }
            if v > max {
                return Err(bad(format!("{name} must be at most {max}, found {v}")));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(bad(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            )));
        }
        // The model computes in f32 (and GGUF stores it as f32): 1e308 would be inf there,
        // 1e-50 zero.
        let eps32 = self.layer_norm_epsilon as f32;
        if !(self.layer_norm_epsilon.is_finite()
            && self.layer_norm_epsilon > 0.0
            && eps32.is_finite()
            && eps32 > 0.0)
        {
            return Err(bad(format!(
                "layer_norm_epsilon must be a positive number that stays finite and positive as \
                 an f32, found {}",
                self.layer_norm_epsilon
            )));
        }
        if self.checked_num_parameters().is_none() {
            return Err(bad(
                "the model would have more parameters than fit in memory".into(),
            ));
        }
        Ok(())
    }

    /// The width of one attention head, `n_embd / n_head`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// The number of parameters (the LM head is tied to `wte` and not counted twice).
    ///
    /// Saturates at `usize::MAX` for configs that [`validate`](Self::validate) rejects.
    pub fn num_parameters(&self) -> usize {
        self.checked_num_parameters().unwrap_or(usize::MAX)
    }

    fn checked_num_parameters(&self) -> Option<usize> {
        crate::names::expected_shapes(self)
            .try_fold(0usize, |acc, (_, shape)| {
                let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
                acc.checked_add(n)
            })
            // Leave room for 4 bytes per parameter.
            .filter(|&n| n.checked_mul(4).is_some())
    }

    /// Reads OpenAI's `hparams.json` (`n_vocab`, `n_ctx`, `n_embd`, `n_head`, `n_layer`;
    /// `layer_norm_epsilon` defaults to 1e-5) and validates it.
    pub fn from_hparams_json(path: &Path) -> Result<Config, WeightsError> {
        let obj = read_json_object(path)?;
        let get = |key: &str| get_usize(path, &obj, &[key]);
        let config = Config {
            n_vocab: get("n_vocab")?,
            n_ctx: get("n_ctx")?,
            n_embd: get("n_embd")?,
            n_head: get("n_head")?,
            n_layer: get("n_layer")?,
            layer_norm_epsilon: get_f64(path, &obj, "layer_norm_epsilon")?.unwrap_or(1e-5),
        };
        config.validate().map_err(|e| with_file(e, path))?;
        Ok(config)
    }

    /// Reads Hugging Face's `config.json` (`vocab_size`, `n_positions` or `n_ctx`,
    /// `n_embd`, `n_head`, `n_layer`, `layer_norm_epsilon`) and validates it.
    ///
    /// Also rejects settings that would change the math without changing any tensor shape
    /// (an `activation_function` other than `gelu_new`/`gelu_pytorch_tanh`,
    /// `scale_attn_by_inverse_layer_idx`, `scale_attn_weights: false`, `n_inner` other
    /// than `4 * n_embd`), so that a model that would silently compute something else is
    /// never loaded.
    pub fn from_config_json(path: &Path) -> Result<Config, WeightsError> {
        let obj = read_json_object(path)?;
        let config = Config {
            n_vocab: get_usize(path, &obj, &["vocab_size", "n_vocab"])?,
            n_ctx: get_usize(
                path,
                &obj,
                &["n_positions", "n_ctx", "max_position_embeddings"],
            )?,
            n_embd: get_usize(path, &obj, &["n_embd", "hidden_size"])?,
            n_head: get_usize(path, &obj, &["n_head", "num_attention_heads"])?,
            n_layer: get_usize(path, &obj, &["n_layer", "num_hidden_layers"])?,
            layer_norm_epsilon: get_f64(path, &obj, "layer_norm_epsilon")?.unwrap_or(1e-5),
        };
        let bad = |message: String| WeightsError::InvalidConfig {
            file: Some(path.to_path_buf()),
            message,
        };
        if let Some(Value::String(model_type)) = obj.get("model_type") {
            if model_type != "gpt2" {
                return Err(bad(format!(
                    "model_type must be \"gpt2\", found {model_type:?}"
                )));
            }
        }
        match obj.get("activation_function") {
            None | Some(Value::Null) => {}
            Some(Value::String(a)) if a == "gelu_new" || a == "gelu_pytorch_tanh" => {}
            Some(other) => {
                return Err(bad(format!(
                    "activation_function must be \"gelu_new\" (GELU, tanh approximation), found {other}"
                )))
            }
        }
        if obj.get("scale_attn_by_inverse_layer_idx") == Some(&Value::Bool(true)) {
            return Err(bad(
                "scale_attn_by_inverse_layer_idx = true is not supported".into(),
            ));
        }
        if obj.get("scale_attn_weights") == Some(&Value::Bool(false)) {
            return Err(bad("scale_attn_weights = false is not supported".into()));
        }
        // `n_embd` is not validated yet: 4 * n_embd may not fit.
        let n_inner = (config.n_embd as u64).checked_mul(4);
        match obj.get("n_inner") {
            None | Some(Value::Null) => {}
            Some(v) if n_inner.is_some() && v.as_u64() == n_inner => {}
            Some(v) => {
                let expected =
                    n_inner.map_or_else(|| "more than u64::MAX".into(), |n| n.to_string());
                return Err(bad(format!(
                    "n_inner must be null or 4 * n_embd = {expected}, found {v}"
                )));
            }
        }
        config.validate().map_err(|e| with_file(e, path))?;
        Ok(config)
    }

    /// The content of a Hugging Face `config.json` for this model (as `transformers`
    /// writes for `GPT2LMHeadModel`, tied embeddings).
    ///
    /// ```
    /// let v = gpt2_weights::Config::GPT2_124M.to_config_json();
    /// assert_eq!(v["n_positions"], 1024);
    /// assert_eq!(v["vocab_size"], 50257);
    /// ```
    pub fn to_config_json(&self) -> Value {
        let eos = self.n_vocab.saturating_sub(1);
        json!({
            "activation_function": "gelu_new",
            "architectures": ["GPT2LMHeadModel"],
            "attn_pdrop": 0.1,
            "bos_token_id": eos,
            "embd_pdrop": 0.1,
            "eos_token_id": eos,
            "initializer_range": 0.02,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "model_type": "gpt2",
            "n_ctx": self.n_ctx,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_inner": null,
            "n_layer": self.n_layer,
            "n_positions": self.n_ctx,
            "reorder_and_upcast_attn": false,
            "resid_pdrop": 0.1,
            "scale_attn_by_inverse_layer_idx": false,
            "scale_attn_weights": true,
            "tie_word_embeddings": true,
            "use_cache": true,
            "vocab_size": self.n_vocab,
        })
    }
}

fn with_file(e: WeightsError, path: &Path) -> WeightsError {
    match e {
        WeightsError::InvalidConfig { message, .. } => WeightsError::InvalidConfig {
            file: Some(path.to_path_buf()),
            message,
        },
        other => other,
    }
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|e| WeightsError::io(path, e))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(WeightsError::InvalidConfig {
            file: Some(path.to_path_buf()),
            message: format!("expected a JSON object, found {}", json_kind(&other)),
        }),
        Err(e) => Err(WeightsError::InvalidConfig {
            file: Some(path.to_path_buf()),
            message: format!("not valid JSON: {e}"),
        }),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn get_usize(path: &Path, obj: &Map<String, Value>, keys: &[&str]) -> Result<usize, WeightsError> {
    let bad = |message: String| WeightsError::InvalidConfig {
        file: Some(path.to_path_buf()),
        message,
    };
    for key in keys {
        match obj.get(*key) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                return v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!("`{key}` must be a non-negative integer, found {v}"))
                    })
            }
        }
    }
    let names: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    Err(bad(format!("missing key {}", names.join(" or "))))
}

fn get_f64(path: &Path, obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, WeightsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| WeightsError::InvalidConfig {
                file: Some(path.to_path_buf()),
                message: format!("`{key}` must be a number, found {v}"),
            }),
    }
}

/// The four published GPT-2 sizes.
///
/// ```
/// use gpt2_weights::{Config, ModelSize};
/// let size: ModelSize = "gpt2-medium".parse().unwrap();
/// assert_eq!(size, ModelSize::Medium355M);
/// assert_eq!(size.openai_name(), "355M");
/// assert_eq!(size.hub_repo(), "openai-community/gpt2-medium");
/// assert_eq!(size.config(), Config::GPT2_355M);
/// assert_eq!("openai-community/gpt2-xl".parse::<ModelSize>().unwrap(), ModelSize::Xl1558M);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelSize {
    /// 124M parameters (`gpt2`).
    Small124M,
    /// 355M parameters (`gpt2-medium`).
    Medium355M,
    /// 774M parameters (`gpt2-large`).
    Large774M,
    /// 1558M parameters (`gpt2-xl`).
    Xl1558M,
}

impl ModelSize {
    /// All four sizes, smallest first.
    pub const ALL: [ModelSize; 4] = [
        ModelSize::Small124M,
        ModelSize::Medium355M,
        ModelSize::Large774M,
        ModelSize::Xl1558M,
    ];

    /// The hyperparameters of this size.
    pub fn config(self) -> Config {
        match self {
            ModelSize::Small124M => Config::GPT2_124M,
            ModelSize::Medium355M => Config::GPT2_355M,
            ModelSize::Large774M => Config::GPT2_774M,
            ModelSize::Xl1558M => Config::GPT2_1558M,
        }
    }

    /// OpenAI's name for it (the directory name of the original release): `"124M"`...
    pub fn openai_name(self) -> &'static str {
        match self {
            ModelSize::Small124M => "124M",
            ModelSize::Medium355M => "355M",
            ModelSize::Large774M => "774M",
            ModelSize::Xl1558M => "1558M",
        }
    }

    /// The Hugging Face hub repository: `"openai-community/gpt2"`...
    pub fn hub_repo(self) -> &'static str {
        match self {
            ModelSize::Small124M => "openai-community/gpt2",
            ModelSize::Medium355M => "openai-community/gpt2-medium",
            ModelSize::Large774M => "openai-community/gpt2-large",
            ModelSize::Xl1558M => "openai-community/gpt2-xl",
        }
    }
}

impl fmt::Display for ModelSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.openai_name())
    }
}

impl FromStr for ModelSize {
    type Err = WeightsError;

    /// Accepts `124M`/`355M`/`774M`/`1558M` (also with a lowercase `m`, and `117M`/`345M`,
    /// the sizes' original names) and the hub names `gpt2`, `gpt2-medium`, `gpt2-large`,
    /// `gpt2-xl` with or without the `openai-community/` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix("openai-community/").unwrap_or(t);
        let size = match t.to_ascii_lowercase().as_str() {
            "124m" | "117m" | "gpt2" | "gpt2-small" => ModelSize::Small124M,
            "355m" | "345m" | "gpt2-medium" => ModelSize::Medium355M,
            "774m" | "gpt2-large" => ModelSize::Large774M,
            "1558m" | "1.5b" | "gpt2-xl" => ModelSize::Xl1558M,
            _ => {
                return Err(WeightsError::Parse {
                    what: "model size",
                    found: s.to_string(),
                    expected: "124M, 355M, 774M, 1558M, gpt2, gpt2-medium, gpt2-large, gpt2-xl",
                })
            }
        };
        Ok(size)
    }
}
