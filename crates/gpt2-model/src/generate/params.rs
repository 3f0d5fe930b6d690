//! Sampling parameters and their validation.

/// Why a [`SamplingParams`] value was refused by [`SamplingParams::validate`].
///
/// Every message says which parameter is wrong, what was expected and what was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// The temperature is negative, NaN or infinite.
    #[error("temperature must be a finite number > 0 (or exactly 0 for greedy decoding), got {0}")]
    Temperature(f32),
    /// `top_k` is 0.
    #[error("top-k must be at least 1, got {0}")]
    TopK(usize),
    /// `top_p` is outside (0, 1].
    #[error("top-p must be in (0, 1] (a probability mass), got {0}")]
    TopP(f32),
    /// `min_p` is outside [0, 1].
    #[error("min-p must be in [0, 1], got {0}")]
    MinP(f32),
    /// The repetition penalty is not a finite number > 0.
    #[error("repetition penalty must be a finite number > 0 (1 means no penalty), got {0}")]
    RepetitionPenalty(f32),
    /// The repetition window is 0.
    #[error("repetition window must be at least 1 token (leave it unset to use the whole context), got 0")]
    RepetitionWindow,
    /// The logits handed to the sampler are empty.
    #[error("cannot sample from an empty vocabulary (no logits)")]
    EmptyLogits,
    /// A logit is NaN (the model produced garbage).
    #[error("the logits contain NaN (at token id {0})")]
    NanLogit(usize),
}

/// How the next token is chosen from the model's logits.
///
/// The pipeline, in this order (the order of Hugging Face's logits processors):
/// 1. **repetition penalty** (CTRL, Keskar et al. 2019): for every distinct token id among the last
///    [`repetition_window`](Self::repetition_window) tokens of the context (prompt included), a positive
///    logit is divided by the penalty and a negative one multiplied by it;
/// 2. **temperature** τ: the distribution is `softmax(logits / τ)`; `τ = 0` means greedy (argmax);
/// 3. **top-k**: keep the `k` most likely tokens (all tokens tied with the k-th are kept, as in HF);
/// 4. **top-p** (nucleus): keep the smallest set of most likely tokens whose probability mass is ≥ `p`;
/// 5. **min-p**: keep the tokens whose probability is ≥ `min_p` × the probability of the most likely one;
/// 6. renormalise and draw with the sampler's seeded RNG.
///
/// `None` (or `min_p = 0`, `top_p = 1`, penalty 1) leaves a stage out.
///
/// ```
/// use gpt2_model::generate::SamplingParams;
/// let params = SamplingParams { temperature: 0.8, top_p: Some(0.95), seed: 42, ..Default::default() };
/// params.validate().unwrap();
/// assert!(SamplingParams { top_p: Some(1.5), ..params }.validate().is_err());
/// assert!(SamplingParams::greedy().is_greedy());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature τ: finite and > 0, or exactly 0 for greedy decoding. Default 1.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (k ≥ 1). Default: off.
    pub top_k: Option<usize>,
    /// Nucleus sampling mass, in (0, 1]. Default: off.
    pub top_p: Option<f32>,
    /// Minimum probability relative to the most likely token, in [0, 1]. Default: off.
    pub min_p: Option<f32>,
    /// CTRL repetition penalty, finite and > 0 (1 = none, > 1 discourages repeats). Default 1.
    pub repetition_penalty: f32,
    /// How many of the most recent context tokens the penalty looks at (`None`: the whole context).
    pub repetition_window: Option<usize>,
    /// Seed of the sampler's RNG (ChaCha8): the same seed gives the same draws everywhere.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Plain sampling from the model's distribution: τ = 1, no filters, no penalty, seed 0.
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            repetition_window: None,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token (temperature 0).
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Whether these parameters pick the argmax (temperature 0, or top-k 1) — no randomness involved.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }

    /// Checks every parameter; the error names the first bad one, what was expected and what was found.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(SamplingError::Temperature(t));
        }
        if let Some(k) = self.top_k {
            if k == 0 {
                return Err(SamplingError::TopK(k));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(SamplingError::TopP(p));
            }
        }
        if let Some(m) = self.min_p {
            if !(0.0..=1.0).contains(&m) {
                return Err(SamplingError::MinP(m));
            }
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(SamplingError::RepetitionPenalty(r));
        }
        if self.repetition_window == Some(0) {
            return Err(SamplingError::RepetitionWindow);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams::default();
        f(&mut p);
        p
    }

    #[test]
    fn defaults_and_greedy_are_valid() {
        assert_eq!(SamplingParams::default().validate(), Ok(()));
        assert_eq!(SamplingParams::greedy().validate(), Ok(()));
        assert!(SamplingParams::greedy().is_greedy());
        assert!(!SamplingParams::default().is_greedy());
        assert!(with(|p| p.top_k = Some(1)).is_greedy());
    }

    #[test]
    fn every_bad_value_is_refused_with_its_own_error() {
        for t in [-1.0, f32::NAN, f32::INFINITY, -0.0001] {
            assert!(matches!(
                with(|p| p.temperature = t).validate(),
                Err(SamplingError::Temperature(_))
            ));
        }
        assert_eq!(
            with(|p| p.top_k = Some(0)).validate(),
            Err(SamplingError::TopK(0))
        );
        for v in [0.0, -0.1, 1.01, f32::NAN] {
            assert!(matches!(
                with(|p| p.top_p = Some(v)).validate(),
                Err(SamplingError::TopP(_))
            ));
        }
        for v in [-0.1, 1.01, f32::NAN] {
            assert!(matches!(
                with(|p| p.min_p = Some(v)).validate(),
                Err(SamplingError::MinP(_))
            ));
        }
        for v in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                with(|p| p.repetition_penalty = v).validate(),
                Err(SamplingError::RepetitionPenalty(_))
            ));
        }
        assert_eq!(
            with(|p| p.repetition_window = Some(0)).validate(),
            Err(SamplingError::RepetitionWindow)
        );
        let msg = with(|p| p.top_p = Some(1.5))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("(0, 1]") && msg.contains("1.5"), "{msg}");
    }

    #[test]
    fn boundary_values_are_accepted() {
        for p in [
            with(|p| p.temperature = 1e-30),
            with(|p| p.temperature = 100.0),
            with(|p| p.top_p = Some(1.0)),
            with(|p| p.min_p = Some(0.0)),
            with(|p| p.min_p = Some(1.0)),
            with(|p| p.repetition_penalty = 0.5),
            with(|p| p.repetition_window = Some(1)),
        ] {
            assert_eq!(p.validate(), Ok(()), "{p:?}");
        }
    }
}
