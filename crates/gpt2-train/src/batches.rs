//! Batches: the token stream cut into windows of `T + 1` tokens, taken in order or shuffled.
//!
//! Window `r` is `ids[r·T .. r·T + T + 1]` (windows start `T` apart, so consecutive windows
//! share one token; only full windows count). Its first `T` tokens are a sequence's inputs,
//! its last `T` the targets. Optimizer step `s`, micro-step `k` (of `K` = grad-accum) takes the
//! `B` windows numbered `(s·K + k)·B … (s·K + k)·B + B − 1` of the run's window order, counted
//! modulo the number of windows: [`DataOrder::Sequential`] is `0, 1, 2, …`, and
//! [`DataOrder::Shuffled`] a seeded random permutation of the windows for each pass over
//! them (pass `e` is permuted by a generator seeded from the seed and `e`). Either way the
//! batches of a step depend only on the step, so a resumed run takes the same ones.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// In which order the windows are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataOrder {
    /// Window after window, from the start: exact and easy to check.
    Sequential,
    /// A seeded random permutation of the windows for each pass.
    Shuffled,
}

/// The token stream and its windows of `seq_len + 1` tokens.
///
/// ```
/// use gpt2_train::batches::Windows;
/// let w = Windows::new((0..10).collect(), 3, "training")?;
/// assert_eq!(w.count(), 3); // [0..4], [3..7], [6..10]
/// assert_eq!(w.window(1), &[3, 4, 5, 6]);
/// # Ok::<(), gpt2_train::TrainError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Windows {
    ids: Vec<u32>,
    seq_len: usize,
    count: usize,
}

impl Windows {
    /// The windows of `ids`. `what` names the data in errors (`training`, `validation`).
    ///
    /// # Errors
    /// `seq_len` 0, or fewer than `seq_len + 1` tokens.
    pub fn new(ids: Vec<u32>, seq_len: usize, what: &'static str) -> Result<Self> {
        if seq_len == 0 {
            return Err(TrainError::setting("--seq-len", "at least 1", 0));
        }
        if ids.len() < seq_len + 1 {
            return Err(TrainError::TooFewTokens {
                what,
                tokens: ids.len(),
                needed: seq_len + 1,
            });
        }
        let count = (ids.len() - 1) / seq_len;
        Ok(Self {
            ids,
            seq_len,
            count,
        })
    }

    /// The number of full windows.
    pub fn count(&self) -> usize {
        self.count
    }

    /// `T`.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The tokens.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Window `r` (`r < count`): `T + 1` tokens.
    pub fn window(&self, r: usize) -> &[u32] {
        let start = (r % self.count) * self.seq_len;
        &self.ids[start..start + self.seq_len + 1]
    }

    /// The inputs and targets (`[rows·T]` each, row-major) of the windows `rows`.
    pub fn inputs_and_targets(&self, rows: &[usize]) -> (Vec<u32>, Vec<u32>) {
        let t = self.seq_len;
        let mut x = Vec::with_capacity(rows.len() * t);
        let mut y = Vec::with_capacity(rows.len() * t);
        for &r in rows {
            let w = self.window(r);
            x.extend_from_slice(&w[..t]);
            y.extend_from_slice(&w[1..]);
        }
        (x, y)
    }
}

/// Which windows each micro-batch takes.
///
/// ```
/// use gpt2_train::batches::{Batcher, DataOrder};
/// let mut b = Batcher::new(5, DataOrder::Sequential, 0);
/// // Step 1, micro-step 1 of 2, batch size 2: windows 6, 7 → 1, 2 (modulo 5).
/// assert_eq!(b.micro_batch(1, 1, 2, 2), vec![1, 2]);
/// ```
#[derive(Debug, Clone)]
pub struct Batcher {
    count: usize,
    order: DataOrder,
    seed: u64,
    /// The permutation of the last pass used (`Shuffled`).
    pass: Option<(usize, Vec<usize>)>,
}

impl Batcher {
    /// A batcher over `count` windows.
    pub fn new(count: usize, order: DataOrder, seed: u64) -> Self {
        Self {
            count: count.max(1),
            order,
            seed,
            pass: None,
        }
    }

    /// The window numbers of step `step`, micro-step `micro` (of `grad_accum`), `batch_size`
    /// windows.
    pub fn micro_batch(
        &mut self,
        step: usize,
        micro: usize,
        grad_accum: usize,
        batch_size: usize,
    ) -> Vec<usize> {
        let first = (step * grad_accum + micro) * batch_size;
        (first..first + batch_size)
            .map(|i| self.window_at(i))
            .collect()
    }

    /// The `i`-th window of the run's order.
    fn window_at(&mut self, i: usize) -> usize {
        match self.order {
            DataOrder::Sequential => i % self.count,
            DataOrder::Shuffled => {
                let pass = i / self.count;
                if self.pass.as_ref().map(|(p, _)| *p) != Some(pass) {
                    let mut perm: Vec<usize> = (0..self.count).collect();
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        self.seed ^ (pass as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    perm.shuffle(&mut rng);
                    self.pass = Some((pass, perm));
                }
                match &self.pass {
                    Some((_, perm)) => perm[i % self.count],
                    None => i % self.count,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_windows_by_hand() -> Result<()> {
        // T = 4: windows [0..5], [4..9], [8..13]; 14 tokens → 3 full windows.
        let w = Windows::new((0..14).collect(), 4, "training")?;
        assert_eq!(w.count(), 3);
        let mut b = Batcher::new(w.count(), DataOrder::Sequential, 0);
        // K = 2, B = 2: step 0 takes windows 0,1 then 2,0; step 1 takes 1,2 then 0,1.
        assert_eq!(b.micro_batch(0, 0, 2, 2), vec![0, 1]);
        assert_eq!(b.micro_batch(0, 1, 2, 2), vec![2, 0]);
        assert_eq!(b.micro_batch(1, 0, 2, 2), vec![1, 2]);
        let (x, y) = w.inputs_and_targets(&[2, 0]);
        assert_eq!(x, vec![8, 9, 10, 11, 0, 1, 2, 3]);
        assert_eq!(y, vec![9, 10, 11, 12, 1, 2, 3, 4]);
        Ok(())
    }

    #[test]
    fn shuffled_is_a_seeded_permutation_per_pass() {
        let mut a = Batcher::new(10, DataOrder::Shuffled, 7);
        let pass0: Vec<usize> = (0..10).flat_map(|s| a.micro_batch(s, 0, 1, 1)).collect();
        let mut sorted = pass0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(pass0, (0..10).collect::<Vec<_>>());
        let pass1: Vec<usize> = (10..20).flat_map(|s| a.micro_batch(s, 0, 1, 1)).collect();
        assert_ne!(pass0, pass1);
        // A fresh batcher (a resumed run) takes the same windows at the same steps.
        let mut b = Batcher::new(10, DataOrder::Shuffled, 7);
        assert_eq!(b.micro_batch(13, 0, 1, 1), vec![pass1[3]]);
        assert_eq!(b.micro_batch(2, 0, 1, 1), vec![pass0[2]]);
    }

    #[test]
    fn too_few_tokens_for_a_window() {
        assert!(matches!(
            Windows::new(vec![1, 2, 3], 3, "training"),
            Err(TrainError::TooFewTokens {
                tokens: 3,
                needed: 4,
                ..
            })
        ));
    }
}
