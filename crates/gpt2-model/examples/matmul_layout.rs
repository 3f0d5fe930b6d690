//! Measures which weight layout candle's CPU matmul prefers for `x · W`:
//! W stored `[in, out]` (HF Conv1D) or `[out, in]` used through `.t()`.
//!
//! `cargo run --release -p gpt2-model --example matmul_layout`
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

fn time(
    label: &str,
    iters: usize,
    mut f: impl FnMut() -> candle_core::Result<Tensor>,
) -> candle_core::Result<()> {
    f()?;
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    let per = t.elapsed().as_secs_f64() / iters as f64;
    println!("{label:<44} {:>9.3} ms", per * 1e3);
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F16] {
        for (k, n) in [(768, 2304), (768, 3072), (3072, 768), (768, 50257)] {
            let w_in_out = Tensor::randn(0f32, 0.02, (k, n), &dev)?.to_dtype(dtype)?;
            let w_out_in = w_in_out.t()?.contiguous()?;
            for m in [1usize, 4, 512] {
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?.to_dtype(dtype)?;
                let iters = if m == 512 { 3 } else { 20 };
                time(
                    &format!("{dtype:?} m={m} k={k} n={n} W[in,out]"),
                    iters,
                    || x.matmul(&w_in_out),
                )?;
                time(
                    &format!("{dtype:?} m={m} k={k} n={n} W[out,in].t()"),
                    iters,
                    || x.matmul(&w_out_in.t()?),
                )?;
                if m == 1 {
                    // The gemm crate runs a one-row product (gemv) on one thread; split the
                    // output columns over two threads by hand to see what that leaves.
                    time(
                        &format!("{dtype:?} m={m} k={k} n={n} W[in,out] 2 threads"),
                        iters,
                        || {
                            let half = n / 2;
                            let (a, b) = std::thread::scope(|s| {
                                let a = s.spawn(|| {
                                    w_in_out.narrow(1, 0, half).and_then(|w| x.matmul(&w))
                                });
                                let b = w_in_out
                                    .narrow(1, half, n - half)
                                    .and_then(|w| x.matmul(&w));
                                (a.join().expect("thread"), b)
                            });
                            Tensor::cat(&[a?, b?], 1)
                        },
                    )?;
                }
            }
        }
    }
    Ok(())
}
