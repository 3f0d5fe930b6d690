//! Decode kernels on weights that do not fit in cache: cycles through many matrices
//! (~1 GB per dtype), as a decode step does, and prints GB/s and Gweights/s, beside a plain
//! read of the same f32 bytes over the same threads (the bandwidth to compare with).
//! `RAYON_NUM_THREADS` sets the threads; `GPT2_KERNELS` and `GPT2_PREFETCH` pick the kernel
//! variant and the prefetch distance (see `cpu::gemv`).
use gpt2_model::cpu::{gemv, q8::Q8Matrix};
use rayon::prelude::*;
use std::time::Instant;
fn main() {
    let (k, n) = (768usize, 3072usize);
    let count = 96; // 96 × 768 × 3072 = 226M weights
    let mk = |s: usize| -> Vec<f32> {
        (0..k * n)
            .map(|i| (((i + s) % 97) as f32 - 48.0) * 0.001)
            .collect()
    };
    let w: Vec<Vec<f32>> = (0..count).map(mk).collect();
    let w16: Vec<Vec<half::f16>> = w
        .iter()
        .map(|w| w.iter().map(|&v| half::f16::from_f32(v)).collect())
        .collect();
    let q: Vec<Q8Matrix> = w
        .iter()
        .map(|w| Q8Matrix::from_rows(w, n, k).expect("finite weights"))
        .collect();
    let x: Vec<f32> = (0..k).map(|i| (i % 7) as f32 * 0.1).collect();
    let gw = (k * n * count) as f64 / 1e9;
    for _ in 0..3 {
        let t = Instant::now();
        for w in &w {
            std::hint::black_box(gemv::x_w(&x, 1, k, w, n));
        }
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for w in &w16 {
            std::hint::black_box(gemv::x_w(&x, 1, k, w, n));
        }
        let b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for w in &w {
            std::hint::black_box(gemv::x_et(&x, 1, k, w, n));
        }
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for w in &w16 {
            std::hint::black_box(gemv::x_et(&x, 1, k, w, n));
        }
        let e = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for q in &q {
            std::hint::black_box(q.matmul_t(&x, 1));
        }
        let d = t.elapsed().as_secs_f64();
        // The same bytes read as plainly as possible, over the same threads: the bandwidth
        // the kernels are measured against.
        let t = Instant::now();
        let sum: u64 = w
            .par_iter()
            .map(|w| {
                let mut acc = [0u32; 16];
                for c in w.chunks_exact(16) {
                    for l in 0..16 {
                        acc[l] = acc[l].wrapping_add(c[l].to_bits());
                    }
                }
                acc.iter().map(|&v| v as u64).sum::<u64>()
            })
            .sum();
        std::hint::black_box(sum);
        let r = t.elapsed().as_secs_f64();
        println!(
            "read {:.1} GB/s | x_w f32 {:.1} GB/s | x_w f16 {:.1} GB/s ({:.1} Gw/s) | x_et f32 {:.1} GB/s | x_et f16 {:.1} GB/s ({:.1} Gw/s) | q8 {:.1} GB/s ({:.1} Gw/s)",
            4.0 * gw / r, 4.0 * gw / a, 2.0 * gw / b, gw / b, 4.0 * gw / c, 2.0 * gw / e, gw / e, 1.0625 * gw / d, gw / d
        );
    }
}
