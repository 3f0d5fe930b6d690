//! [`Settings`]: everything that decides a run's numbers, checked before anything is written.

use serde::{Deserialize, Serialize};

use crate::batches::DataOrder;
use crate::error::{Result, TrainError};
use crate::optim::AdamWConfig;
use crate::schedule::{LrSchedule, ScheduleKind};

/// A run's settings (the defaults are `gpt2 train`'s: nanoGPT's recipe).
///
/// ```
/// let s = gpt2_train::Settings::default();
/// assert_eq!((s.batch_size, s.seq_len, s.lr, s.beta2), (8, 256, 6e-4, 0.95));
/// s.validate(1024)?;
/// assert!(gpt2_train::Settings { seq_len: 2048, ..s }.validate(1024).is_err());
/// # Ok::<(), gpt2_train::TrainError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Sequences per micro-batch (`B`).
    pub batch_size: usize,
    /// Tokens per sequence (`T`), at most the model's `n_ctx`.
    pub seq_len: usize,
    /// Micro-batches per optimizer step (`K`).
    pub grad_accum: usize,
    /// Optimizer steps of the run (also where the cosine decay ends).
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the decay.
    pub min_lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Cosine or constant after warm-up.
    pub lr_schedule: ScheduleKind,
    /// Decoupled weight decay (on `wte`, `wpe` and the `Conv1D` weights).
    pub weight_decay: f64,
    /// Adam's β₁.
    pub beta1: f64,
    /// Adam's β₂.
    pub beta2: f64,
    /// Adam's ε.
    pub eps: f64,
    /// The global gradient norm is clipped to this (0: no clipping).
    pub grad_clip: f64,
    /// Dropout probability (embeddings, attention weights, residuals).
    pub dropout: f64,
    /// The windows' order.
    pub data_order: DataOrder,
    /// Seed of the shuffled order, dropout and a new model's weights.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_size: 8,
            seq_len: 256,
            grad_accum: 1,
            steps: 1000,
            lr: 6e-4,
            min_lr: 6e-5,
            warmup_steps: 100,
            lr_schedule: ScheduleKind::Cosine,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            dropout: 0.0,
            data_order: DataOrder::Shuffled,
            seed: 1337,
        }
    }
}

impl Settings {
    /// Checks every setting against its range; `n_ctx` bounds `seq_len`.
    ///
    /// # Errors
    /// [`TrainError::Setting`] naming the first setting out of range.
    pub fn validate(&self, n_ctx: usize) -> Result<()> {
        let positive = |name: &'static str, v: usize| {
            if v == 0 {
                Err(TrainError::setting(name, "at least 1", v))
            } else {
                Ok(())
            }
        };
        positive("--batch-size", self.batch_size)?;
        positive("--seq-len", self.seq_len)?;
        positive("--grad-accum", self.grad_accum)?;
        positive("--steps", self.steps)?;
        if self.seq_len > n_ctx {
            return Err(TrainError::setting(
                "--seq-len",
                format!("at most the model's context n_ctx = {n_ctx}"),
                self.seq_len,
            ));
        }
        let rate = |name: &'static str, v: f64, zero_ok: bool| {
            let ok = v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0));
            if ok {
                Ok(())
            } else {
                let expected = if zero_ok {
                    "a finite number >= 0"
                } else {
                    "a finite number > 0"
                };
                Err(TrainError::setting(name, expected, v))
            }
        };
        rate("--lr", self.lr, false)?;
        rate("--min-lr", self.min_lr, true)?;
        rate("--weight-decay", self.weight_decay, true)?;
        rate("--eps", self.eps, false)?;
        rate("--grad-clip", self.grad_clip, true)?;
        for (name, v) in [("--beta1", self.beta1), ("--beta2", self.beta2)] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err(TrainError::setting(name, "in [0, 1)", v));
            }
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(TrainError::setting("--dropout", "in [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.lr,
            min_lr: self.min_lr,
            warmup: self.warmup_steps,
            steps: self.steps,
            kind: self.lr_schedule,
        }
    }

    /// AdamW's hyperparameters.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// Tokens per optimizer step: `B · T · K`.
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.seq_len * self.grad_accum
    }
}
