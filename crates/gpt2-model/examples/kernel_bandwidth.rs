//! Bytes per second the decode kernels stream, on a 768 × 24576 matrix (a few of the 124M
//! shape's matrices): `x · W` (f32, f16), `x · Eᵀ` (the tied head's dot products, f32) and
//! Q8_0. A kernel near the machine's read bandwidth is memory-bound; one well below it is
//! compute-bound.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p gpt2-model --example kernel_bandwidth`
use gpt2_model::cpu::{gemv, q8::Q8Matrix};
use std::time::Instant;
fn main() {
    let (k, n) = (768usize, 3072usize * 8);
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i % 97) as f32 - 48.0) * 0.001)
        .collect();
    let w16: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    let q = Q8Matrix::from_rows(&w, n, k).expect("finite weights");
    let x: Vec<f32> = (0..k).map(|i| (i % 7) as f32 * 0.1).collect();
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(gemv::x_w(&x, 1, k, &w, n));
        }
        let a = t.elapsed().as_secs_f64() / 20.0;
        let t = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(gemv::x_w(&x, 1, k, &w16, n));
        }
        let b = t.elapsed().as_secs_f64() / 20.0;
        let t = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(gemv::x_et(&x, 1, k, &w, n));
        }
        let c = t.elapsed().as_secs_f64() / 20.0;
        let t = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(q.matmul_t(&x, 1));
        }
        let d = t.elapsed().as_secs_f64() / 20.0;
        let gb = (k * n) as f64 / 1e9;
        println!(
            "x_w f32 {:.1} GB/s, x_w f16 {:.1} GB/s ({:.1} Gw/s), x_et f32 {:.1} GB/s, q8 {:.1} GB/s ({:.1} Gw/s)", 4.0*gb/a, 2.0*gb/b, gb/b, 4.0*gb/c, 1.0625*gb/d, gb/d);
    }
}
