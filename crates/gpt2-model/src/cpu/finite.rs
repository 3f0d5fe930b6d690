//! Finding a NaN or an infinity in a weight matrix, fast enough to run on every load.
//!
//! A float is NaN or infinite exactly when all its exponent bits are set. The scans below
//! take the maximum of the masked exponent bits over a chunk (one vector `max` per 8–16
//! values once the compiler vectorizes it, no branch) and only look for the index when a
//! chunk holds a bad value. Large slices are split across the rayon pool: the scan is
//! bounded by memory bandwidth (~6 GB/s on a loaded 2-core guest).

use half::f16;
use rayon::prelude::*;

/// Values per parallel chunk (256 KiB of f32).
const CHUNK: usize = 1 << 16;

/// The first value of `v` that is NaN or infinite: `(index, value)`.
pub fn first_non_finite_f32(v: &[f32]) -> Option<(usize, f32)> {
    first_bad(v, |c| {
        c.iter().fold(0u32, |m, x| m.max(x.to_bits() & 0x7f80_0000)) == 0x7f80_0000
    })
    .map(|i| (i, v[i]))
}

/// The first value of `v` that is NaN or infinite: `(index, value as f32)`.
pub fn first_non_finite_f16(v: &[f16]) -> Option<(usize, f32)> {
    first_bad(v, |c| {
        c.iter().fold(0u16, |m, x| m.max(x.to_bits() & 0x7c00)) == 0x7c00
    })
    .map(|i| (i, v[i].to_f32()))
}

/// The index of the first non-finite value, scanning chunks with `chunk_is_bad` (in
/// parallel for large slices) and then the first bad chunk value by value.
fn first_bad<T: Copy + Sync + IsFinite>(
    v: &[T],
    chunk_is_bad: impl Fn(&[T]) -> bool + Sync,
) -> Option<usize> {
    let chunk = if v.len() > 4 * CHUNK {
        v.par_chunks(CHUNK).position_first(&chunk_is_bad)?
    } else {
        v.chunks(CHUNK).position(&chunk_is_bad)?
    };
    let start = chunk * CHUNK;
    v[start..]
        .iter()
        .position(|x| !x.finite())
        .map(|i| start + i)
}

/// `is_finite` for the two element types.
trait IsFinite {
    fn finite(self) -> bool;
}

impl IsFinite for f32 {
    fn finite(self) -> bool {
        self.is_finite()
    }
}

impl IsFinite for f16 {
    fn finite(self) -> bool {
        self.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_nan_or_infinity_anywhere() {
        for len in [0, 1, 7, CHUNK - 1, CHUNK + 3, 5 * CHUNK + 11] {
            let clean: Vec<f32> = (0..len).map(|i| (i as f32).sin() * 1e30).collect();
            assert_eq!(first_non_finite_f32(&clean), None, "len {len}");
            let halves: Vec<f16> = clean.iter().map(|&x| f16::from_f32(x * 1e-26)).collect();
            assert_eq!(first_non_finite_f16(&halves), None, "len {len}");
            for at in [0, len / 2, len.saturating_sub(1)]
                .into_iter()
                .filter(|&i| i < len)
            {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut v = clean.clone();
                    v[at] = bad;
                    if at + 1 < len {
                        v[len - 1] = f32::NAN; // a later one is not reported
                    }
                    let (i, x) = first_non_finite_f32(&v).expect("found");
                    assert_eq!(i, at);
                    assert_eq!(x.to_bits(), bad.to_bits());
                    let mut h = halves.clone();
                    h[at] = f16::from_f32(bad);
                    assert_eq!(first_non_finite_f16(&h).map(|(i, _)| i), Some(at));
                }
            }
        }
        // The largest finite values and subnormals are fine.
        assert_eq!(first_non_finite_f32(&[f32::MAX, f32::MIN, 1e-45]), None);
        assert_eq!(
            first_non_finite_f16(&[f16::MAX, f16::MIN, f16::MIN_POSITIVE_SUBNORMAL]),
            None
        );
    }
}
