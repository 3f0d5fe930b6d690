//! [`Trainer`]: the training loop's step — micro-batches, gradients, clipping, AdamW.
//!
//! One optimizer step `s`, with `K` = grad-accum micro-batches of `B` windows:
//!
//! ```text
//! for k in 0..K:
//!     loss_k = mean cross-entropy over the B·T positions of micro-batch (s, k)
//!     grads += ∇(loss_k / K)                        (the tied head's gradient adds into wte's)
//! loss   = mean of the K loss_k
//! norm   = ‖grads‖₂ over all weights;  grads ·= clip / (norm + 1e-6) if that is < 1
//!          (the factor applied inside the update, to each gradient value as it is read)
//! lr     = get_lr(s);  AdamW(lr) on every weight   (decay on wte, wpe and Conv1D weights)
//! ```
//!
//! With dropout, each micro-step's masks are seeded from the run's seed, the step and the
//! micro-step ([`Gpt2::forward_dropout`]).
//!
//! The model is a [`Gpt2`] built over candle [`Var`]s ([`Gpt2::from_tensors`]): the forward
//! pass is the same layer code as inference, on its differentiable paths (on the CPU in f32,
//! layer norm, GELU, attention and the head with the loss are ops with hand-written backward
//! passes; candle's autograd does the rest).

use std::time::{Duration, Instant};

use candle_core::{CpuStorage, Device, Storage, Tensor, Var};
use gpt2_model::nn::functional::Dropout;
use gpt2_model::Gpt2;
use gpt2_tokenizer::Tokenizer;
use gpt2_weights::Config;

use crate::batches::{Batcher, Windows};
use crate::checkpoint::{self, Checkpoint, SavedParam, TrainState};
use crate::data::fingerprint;
use crate::error::{Result, TrainError};
use crate::optim::{adamw_update, clip_factor, global_norm, Moments};
use crate::settings::Settings;

/// Whether a weight takes weight decay: `wte`, `wpe` and the four `Conv1D` weights of each
/// block (the ≥ 2-D weights); biases and layer norms do not.
///
/// ```
/// use gpt2_train::trainer::decays;
/// assert!(decays("wte.weight") && decays("h.3.mlp.c_fc.weight"));
/// assert!(!decays("h.3.mlp.c_fc.bias") && !decays("ln_f.weight") && !decays("h.0.ln_1.weight"));
/// ```
pub fn decays(name: &str) -> bool {
    name == "wte.weight"
        || name == "wpe.weight"
        || (name.ends_with(".weight")
            && [".c_attn.", ".c_proj.", ".c_fc."]
                .iter()
                .any(|m| name.contains(m)))
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The step (0-based).
    pub step: usize,
    /// The mean of its micro-batches' losses.
    pub loss: f64,
    /// Each micro-batch's loss.
    pub micro_losses: Vec<f64>,
    /// The learning rate used.
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether the gradients were clipped.
    pub clipped: bool,
    /// Tokens processed (`B·T·K`).
    pub tokens: usize,
    /// Wall time of the step.
    pub elapsed: Duration,
}

impl StepReport {
    /// Tokens per second of this step.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `Σ g²` of a gradient (as [`global_norm`] squared), read in place (see [`with_values`]):
/// the norm needs no copy of the gradients.
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    with_values(Some(g), g.elem_count(), |v| global_norm(&[v]).powi(2))
}

/// Runs `f` on the `n` f32 values of gradient `g`: read in place from its storage when it is
/// a contiguous CPU f32 tensor (as candle's gradients are), copied otherwise, zeros for a
/// weight that got no gradient (`None`).
fn with_values<R>(g: Option<&Tensor>, n: usize, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let Some(g) = g else {
        return Ok(f(&vec![0.0; n]));
    };
    {
        let (storage, layout) = g.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            if let Some(v) = v.get(start..end).filter(|v| v.len() == n) {
                return Ok(f(v));
            }
        }
    }
    let v = g.flatten_all()?.to_vec1::<f32>()?;
    if v.len() != n {
        return Err(candle_core::Error::Msg(format!(
            "a gradient of {} values for a weight of {n}",
            v.len()
        ))
        .into());
    }
    Ok(f(&v))
}

/// One weight under training.
struct Param {
    name: String,
    shape: Vec<usize>,
    var: Var,
    decay: bool,
    moments: Moments,
}

/// A training run: the model's weights and AdamW's state, the data, and the step count.
///
/// ```
/// use gpt2_train::{init::gpt2_init, Settings, Trainer};
/// # fn main() -> Result<(), gpt2_train::TrainError> {
/// let config = gpt2_weights::Config { n_vocab: 64, n_ctx: 8, n_embd: 8, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let settings = Settings { batch_size: 2, seq_len: 4, steps: 3, warmup_steps: 1, ..Settings::default() };
/// let ids: Vec<u32> = (0..100).map(|i| (i * 7 % 64) as u32).collect();
/// let mut trainer = Trainer::new(&config, gpt2_init(&config, 0)?, settings, ids)?;
/// while !trainer.is_done() {
///     let report = trainer.step()?;
///     assert!(report.loss.is_finite());
/// }
/// assert_eq!(trainer.steps_done(), 3);
/// # Ok(()) }
/// ```
pub struct Trainer {
    config: Config,
    settings: Settings,
    params: Vec<Param>,
    /// The model over the `Var`s (records backward ops).
    tracked: Gpt2,
    /// The same weights without gradient tracking (evaluation and samples: the fast paths).
    view: Gpt2,
    windows: Windows,
    /// [`fingerprint`] of the training tokens (recorded in every checkpoint).
    fingerprint: u64,
    batcher: Batcher,
    step: usize,
}

impl Trainer {
    /// A run from step 0 on the model with weights `weights` (every canonical tensor of
    /// `config`, any float dtype; copied), training on `train` tokens.
    ///
    /// # Errors
    /// A setting out of range, fewer tokens than one window, weights that do not fit.
    pub fn new(
        config: &Config,
        weights: Vec<(String, Tensor)>,
        settings: Settings,
        train: Vec<u32>,
    ) -> Result<Self> {
        let mut params = Vec::with_capacity(weights.len());
        for (name, t) in weights {
            let t = t
                .to_device(&Device::Cpu)?
                .to_dtype(candle_core::DType::F32)?;
            let shape = t.dims().to_vec();
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            let n = values.len();
            params.push(SavedParam {
                name,
                shape,
                values,
                moments: Moments::zeros(n),
            });
        }
        let fingerprint = fingerprint(&train);
        Self::build(config, params, settings, train, fingerprint, 0)
    }

    /// Continues the run saved in `checkpoint` on `train` tokens (the same as the run's;
    /// checked against the recorded fingerprint). `steps`, when given, replaces the run's
    /// length (and so the end of its cosine decay).
    ///
    /// # Errors
    /// [`TrainError::NotACheckpoint`] when the data differ from the run's; a setting out of
    /// range. (A run already past `steps` is done at once.)
    pub fn resume(checkpoint: Checkpoint, steps: Option<usize>, train: Vec<u32>) -> Result<Self> {
        let Checkpoint {
            config,
            params,
            state,
        } = checkpoint;
        let train_fingerprint = fingerprint(&train);
        let fp = format!("{train_fingerprint:016x}");
        if train.len() != state.train_tokens || fp != state.train_fingerprint {
            return Err(TrainError::NotACheckpoint {
                path: "the resumed run".into(),
                reason: format!(
                    "it was trained on other data ({} tokens, fingerprint {}); these are {} tokens, fingerprint {fp}",
                    state.train_tokens,
                    state.train_fingerprint,
                    train.len()
                ),
            });
        }
        let mut settings = state.settings;
        if let Some(steps) = steps {
            settings.steps = steps;
        }
        Self::build(
            &config,
            params,
            settings,
            train,
            train_fingerprint,
            state.step,
        )
    }

    fn build(
        config: &Config,
        saved: Vec<SavedParam>,
        settings: Settings,
        train: Vec<u32>,
        fingerprint: u64,
        step: usize,
    ) -> Result<Self> {
        settings.validate(config.n_ctx)?;
        let windows = Windows::new(train, settings.seq_len, "training")?;
        let batcher = Batcher::new(windows.count(), settings.data_order, settings.seed);
        let mut params = Vec::with_capacity(saved.len());
        for p in saved {
            let t = Tensor::from_vec(p.values, p.shape.as_slice(), &Device::Cpu)?;
            params.push(Param {
                decay: decays(&p.name),
                var: Var::from_tensor(&t)?,
                name: p.name,
                shape: p.shape,
                moments: p.moments,
            });
        }
        let tracked: Vec<(String, Tensor)> = params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect();
        let detached: Vec<(String, Tensor)> = params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().detach()))
            .collect();
        let model = Gpt2::from_tensors(config, &tracked)?;
        let view = Gpt2::from_tensors(config, &detached)?;
        Ok(Self {
            config: *config,
            settings,
            params,
            tracked: model,
            view,
            windows,
            fingerprint,
            batcher,
            step,
        })
    }

    /// The mean cross-entropy of `model` over the windows `rows` (a scalar tensor), with
    /// `dropout` when given.
    fn loss(
        &self,
        model: &Gpt2,
        windows: &Windows,
        rows: &[usize],
        dropout: Option<Dropout>,
    ) -> Result<Tensor> {
        let (x, y) = windows.inputs_and_targets(rows);
        let (b, t) = (rows.len(), windows.seq_len());
        let ids = Tensor::from_vec(x, (b, t), &Device::Cpu)?;
        // The tied head and the cross-entropy as one op (the logits' gradient written over
        // the logits): gpt2-model's fused loss.
        let dropout = dropout.filter(|d| d.p > 0.0);
        Ok(model.loss(&ids, &y, dropout.as_ref())?)
    }

    /// The dropout of micro-step `micro` of the current step: its masks depend only on the
    /// seed, the step and the micro-step, so a resumed run draws the same ones.
    fn dropout(&self, micro: usize) -> Dropout {
        let mut seed = self.settings.seed ^ 0xD1B5_4A32_D192_ED03;
        for v in [self.step as u64, micro as u64] {
            seed = (seed ^ v)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
        }
        Dropout {
            p: self.settings.dropout,
            seed,
        }
    }

    /// The loss of the training windows `rows` and the gradient of every weight
    /// (canonical order, row-major), with no update: what one micro-batch contributes.
    ///
    /// # Errors
    /// A tensor operation failing.
    pub fn loss_and_gradients(&self, rows: &[usize]) -> Result<(f64, Vec<Vec<f32>>)> {
        let loss = self.loss(&self.tracked, &self.windows, rows, None)?;
        let grads = loss.backward()?;
        let value = loss.to_scalar::<f32>()? as f64;
        let g = self.collect(&grads)?;
        Ok((value, g))
    }

    /// Every weight's gradient from `grads` (zeros for one that got none).
    fn collect(&self, grads: &candle_core::backprop::GradStore) -> Result<Vec<Vec<f32>>> {
        self.params
            .iter()
            .map(|p| match grads.get(p.var.as_tensor()) {
                Some(g) => Ok(g.flatten_all()?.to_vec1::<f32>()?),
                None => Ok(vec![0.0; p.shape.iter().product()]),
            })
            .collect()
    }

    /// Runs the next optimizer step.
    ///
    /// Memory: besides the weights and AdamW's two moments, one gradient per weight is kept
    /// (candle's, summed over the micro-steps); the update then copies one weight at a time.
    ///
    /// # Errors
    /// A tensor operation failing.
    pub fn step(&mut self) -> Result<StepReport> {
        let start = Instant::now();
        let s = &self.settings;
        let (k_total, b) = (s.grad_accum, s.batch_size);
        let mut acc: Vec<Option<Tensor>> = vec![None; self.params.len()];
        let mut micro_losses = Vec::with_capacity(k_total);
        for k in 0..k_total {
            let rows = self.batcher.micro_batch(self.step, k, k_total, b);
            let loss = self.loss(&self.tracked, &self.windows, &rows, Some(self.dropout(k)))?;
            let mut grads = (&loss / k_total as f64)?.backward()?;
            micro_losses.push(loss.to_scalar::<f32>()? as f64);
            drop(loss);
            for (a, p) in acc.iter_mut().zip(&self.params) {
                if let Some(g) = grads.remove(p.var.as_tensor()) {
                    // torch's accumulation: p.grad += g, element by element in f32.
                    *a = Some(match a.take() {
                        Some(prev) => (prev + g)?,
                        None => g,
                    });
                }
            }
        }
        let mut sum_sq = 0f64;
        for g in acc.iter().flatten() {
            sum_sq += sum_of_squares(g)?;
        }
        let grad_norm = sum_sq.sqrt();
        let factor = clip_factor(grad_norm, self.settings.grad_clip);
        let lr = self.settings.schedule().at(self.step);
        let adamw = self.settings.adamw();
        let t = self.step as u64 + 1;
        for (p, a) in self.params.iter_mut().zip(acc.iter_mut()) {
            let mut w = p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            // The gradient read in place (the clip factor goes into the update).
            with_values(a.take().as_ref(), w.len(), |g| {
                adamw_update(&adamw, lr, t, p.decay, &mut w, g, factor, &mut p.moments)
            })?;
            p.var
                .set(&Tensor::from_vec(w, p.shape.as_slice(), &Device::Cpu)?)?;
        }
        let report = StepReport {
            step: self.step,
            loss: micro_losses.iter().sum::<f64>() / k_total as f64,
            micro_losses,
            lr,
            grad_norm,
            clipped: factor.is_some(),
            tokens: self.settings.tokens_per_step(),
            elapsed: start.elapsed(),
        };
        self.step += 1;
        Ok(report)
    }

    /// The mean loss over the first `batches` batches of `B` windows of `windows` (each
    /// window at most once), without gradients.
    ///
    /// # Errors
    /// A tensor operation failing.
    pub fn evaluate(&self, windows: &Windows, batches: usize) -> Result<f64> {
        let b = self.settings.batch_size;
        let n = batches.min(windows.count().div_ceil(b)).max(1);
        let mut total = 0.0;
        for i in 0..n {
            let rows: Vec<usize> = (i * b..((i + 1) * b).min(windows.count())).collect();
            total += self
                .loss(&self.view, windows, &rows, None)?
                .to_scalar::<f32>()? as f64;
        }
        Ok(total / n as f64)
    }

    /// The model with the current weights, outside any gradient graph (for samples).
    pub fn model(&self) -> &Gpt2 {
        &self.view
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The run's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The training windows.
    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// Steps completed.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Whether all the run's steps are done.
    pub fn is_done(&self) -> bool {
        self.step >= self.settings.steps
    }

    /// Every weight's current values (canonical order).
    ///
    /// # Errors
    /// A tensor operation failing.
    pub fn weights(&self) -> Result<Vec<(String, Vec<f32>)>> {
        self.params
            .iter()
            .map(|p| {
                Ok((
                    p.name.clone(),
                    p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?,
                ))
            })
            .collect()
    }

    /// Where the run stands, as a checkpoint records it.
    pub fn state(&self) -> TrainState {
        TrainState {
            format: checkpoint::FORMAT.to_string(),
            version: 1,
            step: self.step,
            settings: self.settings.clone(),
            train_tokens: self.windows.ids().len(),
            train_fingerprint: format!("{:016x}", self.fingerprint),
        }
    }

    /// Saves a checkpoint at `dir` (see [`checkpoint`]), with `tokenizer`'s files.
    ///
    /// # Errors
    /// A file that cannot be written (the previous checkpoint at `dir` is kept then).
    pub fn save(&self, dir: &std::path::Path, tokenizer: &Tokenizer) -> Result<()> {
        let values: Vec<Vec<f32>> = self
            .params
            .iter()
            .map(|p| Ok(p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<_>>()?;
        let params: Vec<checkpoint::ParamRef<'_>> = self
            .params
            .iter()
            .zip(&values)
            .map(|(p, v)| checkpoint::ParamRef {
                name: &p.name,
                shape: &p.shape,
                values: v,
                moments: &p.moments,
            })
            .collect();
        checkpoint::save(dir, &self.config, &params, &self.state(), tokenizer)
    }
}
