//! Scoring text: per-token log-probabilities and perplexity, with a sliding window for long texts.

use candle_core::{DType, Tensor, D};

use crate::{Gpt2, ModelError};

/// How [`score`] treats the first token and texts longer than the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// Window step for texts longer than `n_ctx`, in `1..=n_ctx` (`None`: `n_ctx / 2`, at least 1).
    pub stride: Option<usize>,
    /// Prepend `bos_token` so that the first token is scored too (as the prediction after
    /// `<|endoftext|>`, GPT-2's document separator).
    pub prepend_bos: bool,
    /// The token prepended with `prepend_bos` (`<|endoftext|>`, 50256).
    pub bos_token: u32,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            stride: None,
            prepend_bos: false,
            bos_token: gpt2_tokenizer::END_OF_TEXT,
        }
    }
}

/// Why [`score`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// No tokens at all.
    #[error("nothing to score: the text has no tokens")]
    Empty,
    /// The stride is 0 or larger than the context.
    #[error("the stride must be between 1 and the model's context length {n_ctx}, got {stride}")]
    Stride {
        /// The stride asked for.
        stride: usize,
        /// The model's context length.
        n_ctx: usize,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// One token of a scored text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    /// The token id.
    pub id: u32,
    /// `ln p(token | the tokens before it in its window)`; `None` for a token with no context
    /// (the first token without `prepend_bos`, and with `stride = n_ctx` the first of each window).
    pub logprob: Option<f64>,
}

/// The result of [`score`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreResult {
    /// Every token of the input (not the prepended `bos_token`), with its log-prob.
    pub tokens: Vec<TokenScore>,
    /// Sum of the scored tokens' log-probs (natural log).
    pub logprob: f64,
    /// How many tokens were scored.
    pub n_scored: usize,
    /// How many windows the model ran on (1 when the text fits the context).
    pub windows: usize,
}

impl ScoreResult {
    /// Mean log-prob per scored token (`None` when nothing was scored).
    pub fn mean_logprob(&self) -> Option<f64> {
        (self.n_scored > 0).then(|| self.logprob / self.n_scored as f64)
    }

    /// Perplexity `exp(-mean log-prob)` (`None` when nothing was scored).
    pub fn perplexity(&self) -> Option<f64> {
        self.mean_logprob().map(|m| (-m).exp())
    }
}

/// Scores `ids` under `model`: the log-probability of every token given the ones before it.
///
/// Texts up to `n_ctx` tokens (counting a prepended `bos_token`) run in one pass. Longer texts use
/// the sliding window of Hugging Face's perplexity guide: windows of `n_ctx` tokens starting every
/// `stride` tokens (the last one ends at the text's end); each window scores only the tokens the
/// previous window did not, so every token is scored exactly once, with at least `n_ctx − stride`
/// tokens of left context (except in the first window). A smaller stride gives more context per
/// token and costs more windows.
///
/// ```
/// use gpt2_model::generate::{score, ScoreOptions};
/// use gpt2_model::{Gpt2, LoadOptions};
/// use gpt2_weights::Config;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config { n_vocab: 100, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let model = Gpt2::random(&config, 3, &LoadOptions::default())?;
/// let ids: Vec<u32> = (0..20).collect(); // longer than n_ctx = 8: 3 windows with stride 6
/// let result = score(&model, &ids, &ScoreOptions { stride: Some(6), bos_token: 99, ..Default::default() })?;
/// assert_eq!(result.n_scored, 19); // all but the first token
/// assert!(result.perplexity().unwrap() > 1.0);
/// # Ok(()) }
/// ```
pub fn score(model: &Gpt2, ids: &[u32], options: &ScoreOptions) -> Result<ScoreResult, ScoreError> {
    let n_ctx = model.config().n_ctx;
    let stride = options.stride.unwrap_or((n_ctx / 2).max(1));
    if stride == 0 || stride > n_ctx {
        return Err(ScoreError::Stride { stride, n_ctx });
    }
    if ids.is_empty() {
        return Err(ScoreError::Empty);
    }
    let offset = usize::from(options.prepend_bos);
    let seq: Vec<u32> = options
        .prepend_bos
        .then_some(options.bos_token)
        .into_iter()
        .chain(ids.iter().copied())
        .collect();
    let mut logprobs: Vec<Option<f64>> = vec![None; seq.len()];
    let mut windows = 0;
    let mut prev_end = 0;
    let mut begin = 0;
    loop {
        let end = (begin + n_ctx).min(seq.len());
        // Targets: positions prev_end..end that have a token before them in this window.
        let first = prev_end.max(begin + 1);
        if first < end {
            let picked = window_logprobs(model, &seq[begin..end], first - begin)?;
            for (j, lp) in (first..end).zip(picked) {
                logprobs[j] = Some(lp as f64);
            }
        }
        windows += 1;
        prev_end = end;
        if end == seq.len() {
            break;
        }
        begin += stride;
    }
    let tokens: Vec<TokenScore> = seq[offset..]
        .iter()
        .zip(&logprobs[offset..])
        .map(|(&id, &logprob)| TokenScore { id, logprob })
        .collect();
    let scored = tokens.iter().filter_map(|t| t.logprob);
    Ok(ScoreResult {
        logprob: scored.clone().sum(),
        n_scored: scored.count(),
        tokens,
        windows,
    })
}

/// Log-probs of `window[first..]`, each given the tokens before it in `window` (`first ≥ 1`).
fn window_logprobs(model: &Gpt2, window: &[u32], first: usize) -> Result<Vec<f32>, ModelError> {
    let device = model.device();
    let ids = Tensor::new(window, device)?.unsqueeze(0)?;
    let logits = model.forward(&ids)?.squeeze(0)?; // [w, vocab]

    // Logits at position p predict the token at p + 1.
    let rows = logits.narrow(0, first - 1, window.len() - first)?;
    let log_probs = candle_nn::ops::log_softmax(&rows.to_dtype(DType::F32)?, D::Minus1)?;
    let targets = Tensor::new(&window[first..], device)?.unsqueeze(1)?;
    Ok(log_probs.gather(&targets, 1)?.squeeze(1)?.to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadOptions;
    use gpt2_weights::Config;

    fn model(n_ctx: usize) -> Gpt2 {
        let config = Config {
            n_vocab: 50,
            n_ctx,
            n_embd: 8,
            n_head: 2,
            n_layer: 1,
            layer_norm_epsilon: 1e-5,
        };
        Gpt2::random(&config, 7, &LoadOptions::default()).unwrap()
    }

    /// Log-prob of ids[j] given ids[start..j], by a full forward pass.
    fn direct(model: &Gpt2, ids: &[u32], start: usize, j: usize) -> f64 {
        let x = Tensor::new(&ids[start..j], model.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits: Vec<f32> = model
            .forward_last(&x)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        crate::generate::log_softmax(&logits)[ids[j] as usize] as f64
    }

    #[test]
    fn short_text_scores_every_token_but_the_first() {
        let m = model(16);
        let ids = [3u32, 9, 4, 1, 30];
        let r = score(&m, &ids, &ScoreOptions::default()).unwrap();
        assert_eq!(r.windows, 1);
        assert_eq!(r.n_scored, 4);
        assert_eq!(r.tokens[0].logprob, None);
        for j in 1..ids.len() {
            let want = direct(&m, &ids, 0, j);
            assert!((r.tokens[j].logprob.unwrap() - want).abs() < 1e-4);
        }
        let with_bos = score(
            &m,
            &ids,
            &ScoreOptions {
                prepend_bos: true,
                bos_token: 0,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(with_bos.n_scored, 5);
        let mut seq = vec![0u32];
        seq.extend_from_slice(&ids);
        assert!((with_bos.tokens[0].logprob.unwrap() - direct(&m, &seq, 0, 1)).abs() < 1e-4);
        assert!((r.perplexity().unwrap() - (-r.logprob / 4.0).exp()).abs() < 1e-9);
    }

    #[test]
    fn sliding_window_scores_each_token_once_with_its_window_context() {
        let m = model(8);
        let ids: Vec<u32> = (0..21).map(|i| (i * 7 % 50) as u32).collect();
        let r = score(
            &m,
            &ids,
            &ScoreOptions {
                stride: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.n_scored, 20);
        // Windows begin at 0, 3, 6, 9, 12 (ends 8, 11, 14, 17, 20) and 15 (end 21).
        assert_eq!(r.windows, 6);
        for j in 1..ids.len() {
            // Token j is scored by the first window whose end passes it.
            let begin = if j < 8 { 0 } else { ((j - 8) / 3 + 1) * 3 };
            let want = direct(&m, &ids, begin, j);
            let got = r.tokens[j].logprob.unwrap();
            assert!((got - want).abs() < 1e-4, "token {j}: {got} vs {want}");
        }
        // stride = n_ctx: disjoint windows; the first token of each has no context.
        let r = score(
            &m,
            &ids,
            &ScoreOptions {
                stride: Some(8),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.n_scored, 21 - 3);
        assert_eq!(r.tokens[8].logprob, None);
    }

    #[test]
    fn bad_inputs() {
        let m = model(8);
        assert!(matches!(
            score(&m, &[], &ScoreOptions::default()),
            Err(ScoreError::Empty)
        ));
        for stride in [0, 9] {
            let e = score(
                &m,
                &[1, 2],
                &ScoreOptions {
                    stride: Some(stride),
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert!(matches!(e, ScoreError::Stride { n_ctx: 8, .. }), "{e}");
        }
        let r = score(&m, &[1], &ScoreOptions::default()).unwrap();
        assert_eq!((r.n_scored, r.perplexity()), (0, None));
    }
}
