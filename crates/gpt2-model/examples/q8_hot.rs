//! Q8_0 decode kernel in cache: 200 one-row products with a 3072 × 768 matrix (2.4 MB,
//! L2-resident) on the calling thread's pool. Run under `perf stat -e cycles` to compare
//! kernels by cycles per weight, which other load on the machine does not change much.
use gpt2_model::q8::Q8Matrix;
fn main() {
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3072);
    let k = 768usize;
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i % 97) as f32 - 48.0) * 0.001)
        .collect();
    let q = Q8Matrix::from_rows(&w, n, k);
    let x: Vec<f32> = (0..k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let mut s = 0f32;
    for _ in 0..reps {
        s += std::hint::black_box(q.matmul_t(&x, 1))[7];
    }
    println!("{} weights, checksum {s}", reps * k * n);
}
