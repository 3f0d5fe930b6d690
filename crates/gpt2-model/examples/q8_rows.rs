//! Q8_0 products by number of activation rows, on the 124M shape's four block matrices:
//! the decode kernel ([`Q8Matrix::matmul_t`], one pass over the weights per row), the
//! integer tiles of [`q8_gemm`] (weights packed per call), and for scale the f32 gemm on
//! weights dequantized beforehand (what f32 weights cost). Interleaved, medians of 7, in
//! GMAC/s (multiply-adds per second): the crossover behind the rows at which
//! `gemm::q8_matmul` switches kernels.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p gpt2-model --features unstable-kernels --example q8_rows`
use gpt2_model::cpu::{gemm, gemv, matrix::Slice, q8::Q8Matrix, q8_gemm};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !q8_gemm::available() {
        println!("no AVX-512 VNNI on this CPU: q8_0 prefills dequantize instead");
    }
    // (k, n) of c_attn, c_proj (attention), c_fc, c_proj (MLP); W is [n, k].
    let shapes = [(768usize, 2304usize), (768, 768), (768, 3072), (3072, 768)];
    let mut mats = Vec::new();
    for &(k, n) in &shapes {
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i % 97) as f32 - 48.0) * 0.001)
            .collect();
        let q = Q8Matrix::from_rows(&w, n, k)?;
        mats.push((q.dequantize(), q));
    }
    println!("rows  decode kernel  integer tiles  f32 gemm (dequantized beforehand)");
    for m in [8usize, 16, 24, 32, 48, 64, 96, 128, 256, 512] {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..7 {
            let (mut ta, mut tb, mut tc, mut macs) = (0.0, 0.0, 0.0, 0.0);
            for (&(k, n), (deq, q)) in shapes.iter().zip(&mats) {
                let x: Vec<f32> = (0..m * k).map(|j| (j % 13) as f32 * 0.01 - 0.06).collect();
                macs += (m * k * n) as f64;
                let t = Instant::now();
                std::hint::black_box(q.matmul_t(&x, m));
                ta += t.elapsed().as_secs_f64();
                let t = Instant::now();
                std::hint::black_box(q8_gemm::matmul_t(q, &x, m));
                tb += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let w = Slice::F32(deq);
                std::hint::black_box(gemm::gemm_slice(&x, m, k, w, gemv::Layout::Transposed, n)?);
                tc += t.elapsed().as_secs_f64();
            }
            a.push(macs / ta / 1e9);
            b.push(macs / tb / 1e9);
            c.push(macs / tc / 1e9);
        }
        println!(
            "{m:>4}  {:>13.1}  {:>13.1}  {:>10.1}",
            median(a),
            median(b),
            median(c)
        );
    }
    Ok(())
}
