//! The legacy Completions request: parsed from JSON field by field, so that every error names
//! the field and says what was expected.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// One prompt as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text, encoded with the model's tokenizer.
    Text(String),
    /// Token ids, used as they are (checked against the vocabulary).
    Ids(Vec<u32>),
}

/// A validated `POST /v1/completions` body (OpenAI's legacy Completions API, plus llama.cpp's
/// `top_k`, `min_p`, `repetition_penalty` and `ignore_eos`).
///
/// ```
/// use gpt2_server::CompletionRequest;
/// let r = CompletionRequest::parse(br#"{"prompt": ["a", "b"], "n": 2, "temperature": 0}"#).unwrap();
/// assert_eq!(r.prompts.len(), 2);
/// assert_eq!((r.n, r.best_of, r.max_tokens), (2, 2, 16));
/// let e = CompletionRequest::parse(br#"{"prompt": "a", "top_p": 2}"#).unwrap_err();
/// assert_eq!(e.param.as_deref(), Some("top_p"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The model asked for, if named.
    pub model: Option<String>,
    /// The prompts (at least one).
    pub prompts: Vec<Prompt>,
    /// New tokens per choice (default 16; 0 with `echo` scores the prompt).
    pub max_tokens: usize,
    /// Softmax temperature in [0, 2]; 0 is greedy (default 1).
    pub temperature: f32,
    /// Nucleus mass in (0, 1] (default 1: off).
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (0 or absent: off).
    pub top_k: Option<usize>,
    /// Minimum probability relative to the most likely token, in [0, 1].
    pub min_p: Option<f32>,
    /// CTRL repetition penalty, > 0 (1: none).
    pub repetition_penalty: f32,
    /// Choices returned per prompt, 1–128.
    pub n: usize,
    /// Choices generated per prompt (≥ n, ≤ 128); the n with the highest mean log-prob are returned.
    pub best_of: usize,
    /// Server-sent events instead of one JSON answer.
    pub stream: bool,
    /// With `stream`, a last chunk carrying `usage`.
    pub include_usage: bool,
    /// Up to 4 stop strings.
    pub stop: Vec<String>,
    /// Return the log-probs of the chosen tokens and this many alternatives (0–5).
    pub logprobs: Option<usize>,
    /// Return the prompt before the completion (and its log-probs with `logprobs`).
    pub echo: bool,
    /// Seed of the sampler (absent: a random one).
    pub seed: Option<u64>,
    /// OpenAI's presence penalty, −2…2.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty, −2…2.
    pub frequency_penalty: f32,
    /// Token id → bias in −100…100, added to the logit before sampling.
    pub logit_bias: Vec<(u32, f32)>,
    /// Keep going past `<|endoftext|>`.
    pub ignore_eos: bool,
}

/// The most choices per prompt (`n` and `best_of`).
pub const MAX_CHOICES: usize = 128;

impl CompletionRequest {
    /// Parses and validates a request body. Token ids are checked against the vocabulary,
    /// and lengths against the context, later (they need the model).
    ///
    /// # Errors
    /// A 400 naming the field for invalid JSON, a wrong type or a value out of range.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(ApiError::bad_request(
                "the body must be a JSON object with the completion's fields",
            ));
        };
        let f = Fields(&obj);
        if let Some(s) = f.string("suffix")? {
            if !s.is_empty() {
                return Err(ApiError::invalid(
                    "suffix",
                    "is not supported: GPT-2 is a left-to-right model and cannot insert text",
                ));
            }
        }
        let n = f.int("n", 1, MAX_CHOICES as u64)?.unwrap_or(1) as usize;
        let best_of = f.int("best_of", 1, MAX_CHOICES as u64)?.map(|b| b as usize);
        let stream = f.bool("stream")?.unwrap_or(false);
        let best_of = match best_of {
            Some(b) if b < n => {
                return Err(ApiError::invalid(
                    "best_of",
                    format!("must be at least n ({n}), got {b}"),
                ))
            }
            Some(b) if b > n && stream => {
                return Err(ApiError::invalid(
                    "best_of",
                    "cannot be larger than n when streaming",
                ))
            }
            Some(b) => b,
            None => n,
        };
        let include_usage = match obj.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => Fields(o)
                .bool("include_usage")
                .map_err(|e| ApiError::invalid("stream_options.include_usage", e.message))?
                .unwrap_or(false),
            Some(_) => return Err(ApiError::invalid("stream_options", "must be an object")),
        };
        Ok(CompletionRequest {
            model: f.string("model")?,
            prompts: prompts(obj.get("prompt"))?,
            max_tokens: f.int("max_tokens", 0, u32::MAX as u64)?.unwrap_or(16) as usize,
            temperature: f.float("temperature", 0.0, 2.0)?.unwrap_or(1.0),
            top_p: match f.float("top_p", 0.0, 1.0)? {
                Some(p) if p <= 0.0 => {
                    return Err(ApiError::invalid("top_p", "must be in (0, 1], got 0"))
                }
                p => p,
            },
            top_k: f
                .int("top_k", 0, u32::MAX as u64)?
                .filter(|&k| k > 0)
                .map(|k| k as usize),
            min_p: f.float("min_p", 0.0, 1.0)?,
            repetition_penalty: match f.float("repetition_penalty", 0.0, 100.0)? {
                Some(p) if p <= 0.0 => {
                    return Err(ApiError::invalid(
                        "repetition_penalty",
                        "must be > 0 (1 means no penalty), got 0",
                    ))
                }
                p => p.unwrap_or(1.0),
            },
            n,
            best_of,
            stream,
            include_usage,
            stop: stops(obj.get("stop"))?,
            logprobs: f.int("logprobs", 0, 5)?.map(|l| l as usize),
            echo: f.bool("echo")?.unwrap_or(false),
            seed: f.seed()?,
            presence_penalty: f.float("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
            frequency_penalty: f.float("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
            logit_bias: logit_bias(obj.get("logit_bias"))?,
            ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
        })
    }
}

/// Typed access to the fields of a JSON object; `null` counts as absent.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("must be a string, got {}", kind(v)),
            )),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("must be true or false, got {}", kind(v)),
            )),
        }
    }

    fn int(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
            _ if v.is_number() => Err(ApiError::invalid(
                name,
                format!("must be an integer from {min} to {max}, got {v}"),
            )),
            _ => Err(ApiError::invalid(
                name,
                format!("must be an integer, got {}", kind(v)),
            )),
        }
    }

    fn float(&self, name: &str, min: f32, max: f32) -> Result<Option<f32>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(x) if (min as f64..=max as f64).contains(&x) => Ok(Some(x as f32)),
            Some(_) => Err(ApiError::invalid(
                name,
                format!("must be a number from {min} to {max}, got {v}"),
            )),
            None => Err(ApiError::invalid(
                name,
                format!("must be a number, got {}", kind(v)),
            )),
        }
    }

    fn seed(&self) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get("seed") else {
            return Ok(None);
        };
        // OpenAI takes any 64-bit integer; a negative seed is its two's complement.
        match (v.as_u64(), v.as_i64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(i)) => Ok(Some(i as u64)),
            _ => Err(ApiError::invalid(
                "seed",
                format!("must be an integer, got {v}"),
            )),
        }
    }
}

/// What kind of JSON value `v` is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `prompt`: a string, an array of strings, an array of token ids, or an array of such arrays.
fn prompts(v: Option<&Value>) -> Result<Vec<Prompt>, ApiError> {
    let expected = "must be a string, an array of strings, an array of token ids, \
                    or an array of arrays of token ids";
    let ids = |items: &[Value]| -> Option<Vec<u32>> {
        items
            .iter()
            .map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
            .collect()
    };
    match v {
        None | Some(Value::Null) => Err(ApiError::invalid("prompt", "is required")),
        Some(Value::String(s)) => Ok(vec![Prompt::Text(s.clone())]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::invalid("prompt", "must not be an empty array"))
        }
        Some(Value::Array(items)) => {
            if items.iter().all(Value::is_string) {
                return Ok(items
                    .iter()
                    .filter_map(|s| s.as_str().map(|s| Prompt::Text(s.to_string())))
                    .collect());
            }
            if items.iter().all(Value::is_number) {
                return ids(items).map(|ids| vec![Prompt::Ids(ids)]).ok_or_else(|| {
                    ApiError::invalid("prompt", "token ids must be integers from 0 to 4294967295")
                });
            }
            items
                .iter()
                .map(|item| match item {
                    Value::Array(inner) if !inner.is_empty() => {
                        ids(inner).map(Prompt::Ids).ok_or_else(|| {
                            ApiError::invalid(
                                "prompt",
                                "token ids must be integers from 0 to 4294967295",
                            )
                        })
                    }
                    Value::Array(_) => Err(ApiError::invalid(
                        "prompt",
                        "must not hold an empty array of token ids",
                    )),
                    _ => Err(ApiError::invalid("prompt", expected)),
                })
                .collect()
        }
        Some(other) => Err(ApiError::invalid(
            "prompt",
            format!("{expected}, got {}", kind(other)),
        )),
    }
}

/// `stop`: a string or up to 4 strings, none empty.
fn stops(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid("stop", "must be a string or an array of strings"))?,
        Some(other) => {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "must be a string or an array of up to 4 strings, got {}",
                    kind(other)
                ),
            ))
        }
    };
    if list.len() > 4 {
        return Err(ApiError::invalid(
            "stop",
            format!("takes at most 4 strings, got {}", list.len()),
        ));
    }
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "must not contain an empty string",
        ));
    }
    Ok(list)
}

/// `logit_bias`: `{"token id": bias}` with biases in −100…100.
fn logit_bias(v: Option<&Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(ApiError::invalid(
                "logit_bias",
                format!(
                    "must be an object mapping token ids to biases, got {}",
                    kind(other)
                ),
            ))
        }
    };
    map.iter()
        .map(|(k, v)| {
            let id: u32 = k.parse().map_err(|_| {
                ApiError::invalid("logit_bias", format!("keys must be token ids, got {k:?}"))
            })?;
            match v.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                _ => Err(ApiError::invalid(
                    "logit_bias",
                    format!("the bias of token {id} must be a number from -100 to 100, got {v}"),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        CompletionRequest::parse(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn every_prompt_form() {
        let p = |body: &str| {
            CompletionRequest::parse(body.as_bytes())
                .expect(body)
                .prompts
        };
        assert_eq!(p(r#"{"prompt":"hi"}"#), vec![Prompt::Text("hi".into())]);
        assert_eq!(p(r#"{"prompt":["a","b"]}"#).len(), 2);
        assert_eq!(p(r#"{"prompt":[1,2,3]}"#), vec![Prompt::Ids(vec![1, 2, 3])]);
        assert_eq!(
            p(r#"{"prompt":[[1],[2,3]]}"#),
            vec![Prompt::Ids(vec![1]), Prompt::Ids(vec![2, 3])]
        );
        for bad in [
            r#"{}"#,
            r#"{"prompt":5}"#,
            r#"{"prompt":[]}"#,
            r#"{"prompt":[[]]}"#,
            r#"{"prompt":[-1]}"#,
            r#"{"prompt":[1.5]}"#,
            r#"{"prompt":["a",1]}"#,
            r#"{"prompt":[[1],"a"]}"#,
        ] {
            assert_eq!(err(bad).param.as_deref(), Some("prompt"), "{bad}");
        }
    }

    #[test]
    fn out_of_range_and_wrong_types_name_the_field() {
        for (body, param) in [
            (r#"{"prompt":"a","temperature":2.5}"#, "temperature"),
            (r#"{"prompt":"a","temperature":"hot"}"#, "temperature"),
            (r#"{"prompt":"a","top_p":0}"#, "top_p"),
            (r#"{"prompt":"a","n":0}"#, "n"),
            (r#"{"prompt":"a","n":129}"#, "n"),
            (r#"{"prompt":"a","n":2,"best_of":1}"#, "best_of"),
            (r#"{"prompt":"a","best_of":2,"stream":true}"#, "best_of"),
            (r#"{"prompt":"a","logprobs":6}"#, "logprobs"),
            (r#"{"prompt":"a","max_tokens":-1}"#, "max_tokens"),
            (r#"{"prompt":"a","stop":["a","b","c","d","e"]}"#, "stop"),
            (r#"{"prompt":"a","stop":[""]}"#, "stop"),
            (r#"{"prompt":"a","presence_penalty":3}"#, "presence_penalty"),
            (
                r#"{"prompt":"a","frequency_penalty":-2.1}"#,
                "frequency_penalty",
            ),
            (r#"{"prompt":"a","logit_bias":{"x":1}}"#, "logit_bias"),
            (r#"{"prompt":"a","logit_bias":{"5":101}}"#, "logit_bias"),
            (r#"{"prompt":"a","echo":"yes"}"#, "echo"),
            (r#"{"prompt":"a","suffix":"b"}"#, "suffix"),
            (r#"{"prompt":"a","seed":1.5}"#, "seed"),
            (
                r#"{"prompt":"a","stream_options":{"include_usage":1}}"#,
                "stream_options.include_usage",
            ),
            (
                r#"{"prompt":"a","repetition_penalty":0}"#,
                "repetition_penalty",
            ),
        ] {
            let e = err(body);
            assert_eq!(e.status.as_u16(), 400);
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
            assert!(e.message.contains(param), "{}", e.message);
        }
        assert!(err("{").message.contains("not valid JSON"));
        assert!(err("[1]").message.contains("JSON object"));
    }

    #[test]
    fn defaults_and_nulls() {
        let r = CompletionRequest::parse(br#"{"prompt":"a","temperature":null,"stop":"\n","logit_bias":{"50256":-100},"seed":-1}"#)
            .expect("valid");
        assert_eq!(r.temperature, 1.0);
        assert_eq!(r.max_tokens, 16);
        assert_eq!(r.stop, vec!["\n".to_string()]);
        assert_eq!(r.logit_bias, vec![(50256, -100.0)]);
        assert_eq!(r.seed, Some(u64::MAX));
        assert_eq!(r.top_k, None);
    }
}
