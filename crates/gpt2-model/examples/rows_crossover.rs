//! Where the decode kernels ([`gemv::x_w`]) stop beating the gemm ([`gemm::gemm_slice`])
//! as the number of activation rows grows, on the 124M shape's four block matrices (f32 and
//! f16 weights, interleaved, medians of 7): the crossover behind `gemv::MAX_ROWS`.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p gpt2-model --features unstable-kernels --example rows_crossover`
use gpt2_model::cpu::{gemm, gemv, matrix::Slice};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // (k, n) of c_attn, c_proj (attention), c_fc, c_proj (MLP).
    let shapes = [(768usize, 2304usize), (768, 768), (768, 3072), (3072, 768)];
    let weights: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(k, n)| {
            (0..k * n)
                .map(|i| ((i % 97) as f32 - 48.0) * 0.001)
                .collect()
        })
        .collect();
    let halves: Vec<Vec<half::f16>> = weights
        .iter()
        .map(|w| w.iter().map(|&v| half::f16::from_f32(v)).collect())
        .collect();
    println!("rows  dtype  kernels GFLOP/s  gemm GFLOP/s");
    for m in [2usize, 4, 8, 16, 32, 64, 128, 256, 512] {
        for f16 in [false, true] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..7 {
                let (mut ta, mut tb, mut flop) = (0.0, 0.0, 0.0);
                for (i, &(k, n)) in shapes.iter().enumerate() {
                    let x: Vec<f32> = (0..m * k).map(|j| (j % 13) as f32 * 0.01).collect();
                    flop += (2 * m * k * n) as f64;
                    let t = Instant::now();
                    if f16 {
                        std::hint::black_box(gemv::x_w(&x, m, k, &halves[i], n));
                    } else {
                        std::hint::black_box(gemv::x_w(&x, m, k, &weights[i], n));
                    }
                    ta += t.elapsed().as_secs_f64();
                    let w = if f16 {
                        Slice::F16(&halves[i])
                    } else {
                        Slice::F32(&weights[i])
                    };
                    let t = Instant::now();
                    std::hint::black_box(gemm::gemm_slice(&x, m, k, w, gemv::Layout::RowMajor, n)?);
                    tb += t.elapsed().as_secs_f64();
                }
                a.push(flop / ta / 1e9);
                b.push(flop / tb / 1e9);
            }
            println!(
                "{m:>4}  {:<5}  {:>15.1}  {:>12.1}",
                if f16 { "f16" } else { "f32" },
                median(a),
                median(b)
            );
        }
    }
    Ok(())
}
