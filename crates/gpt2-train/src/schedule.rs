//! The learning-rate schedule: nanoGPT's `get_lr`.
//!
//! ```text
//! it < warmup:          lr · (it + 1) / (warmup + 1)
//! warmup ≤ it ≤ steps:  min_lr + ½ (1 + cos(π · (it − warmup) / (steps − warmup))) · (lr − min_lr)
//! it > steps:           min_lr
//! ```
//! with `it` the 0-based step and `steps` the run's length (nanoGPT's `lr_decay_iters`).

use serde::{Deserialize, Serialize};

/// The shape of the schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Cosine decay from `lr` to `min_lr` at the last step.
    Cosine,
    /// `lr` after warm-up.
    Constant,
}

/// A learning-rate schedule.
///
/// ```
/// use gpt2_train::schedule::{LrSchedule, ScheduleKind};
/// let s = LrSchedule { lr: 6e-4, min_lr: 6e-5, warmup: 10, steps: 100, kind: ScheduleKind::Cosine };
/// assert_eq!(s.at(0), 6e-4 / 11.0);
/// assert_eq!(s.at(10), 6e-4);
/// assert!((s.at(100) - 6e-5).abs() < 1e-18);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The peak rate.
    pub lr: f64,
    /// The rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Where the decay ends (the run's number of steps).
    pub steps: usize,
    /// Cosine or constant after warm-up.
    pub kind: ScheduleKind,
}

impl LrSchedule {
    /// The rate of step `it` (0-based), in f64 as Python computes it.
    pub fn at(&self, it: usize) -> f64 {
        if it < self.warmup {
            return self.lr * (it + 1) as f64 / (self.warmup + 1) as f64;
        }
        if self.kind == ScheduleKind::Constant {
            return self.lr;
        }
        if it > self.steps || self.steps <= self.warmup {
            return self.min_lr;
        }
        let ratio = (it - self.warmup) as f64 / (self.steps - self.warmup) as f64;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        self.min_lr + coeff * (self.lr - self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_nanogpt_by_hand() {
        let s = LrSchedule {
            lr: 6e-3,
            min_lr: 6e-4,
            warmup: 3,
            steps: 10,
            kind: ScheduleKind::Cosine,
        };
        // The values printed by the PyTorch reference script (fixtures/tiny/train).
        let want = [1.5e-3, 3e-3, 4.5e-3, 6e-3];
        for (it, w) in want.iter().enumerate() {
            assert!((s.at(it) - w).abs() < 1e-15);
        }
        // Halfway through the decay (it = 3 + 8/2): the mean of lr and min_lr.
        let mid = LrSchedule { steps: 11, ..s };
        assert!((mid.at(7) - (6e-3 + 6e-4) / 2.0).abs() < 1e-15);
        assert!((s.at(11) - 6e-4).abs() < 1e-18);
        let c = LrSchedule {
            kind: ScheduleKind::Constant,
            ..s
        };
        assert_eq!(c.at(9), 6e-3);
    }
}
