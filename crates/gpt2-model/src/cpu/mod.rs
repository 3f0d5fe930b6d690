//! The CPU kernels, behind one boundary: the layers in [`crate::nn`] reach them only through
//! [`Matrix`](matrix::Matrix) (every weight product), [`ops`] (the fast paths of GELU,
//! the attention softmax and decode attention) and [`train_ops`] (GELU, layer norm,
//! softmax, attention and the head's loss for training). Nothing here imports from `nn` or `model`.
//!
//! - [`matrix`]: `Matrix { Tensor, Mapped, Q8 }`, the one place that branches on storage;
//! - [`gemm`]: the products behind it (decode kernels for a few rows, a gemm for more);
//! - [`gemv`]: f32/f16 weight-streaming kernels for one activation row (a decode step);
//! - [`tile`]: register-tiled f32/f16 kernels for several rows (batches, prompt chunks);
//! - [`q8`]: Q8_0 blocks and their integer dot-product kernels;
//! - [`q8_gemm`]: the integer product of many rows with Q8_0 blocks (a prefill's);
//! - [`ops`]: the fast paths of the layers' ops;
//! - [`train_ops`]: GELU, layer norm, the attention softmax, the attention core and the
//!   tied head's cross-entropy for training, with hand-written backward passes;
//! - [`team`]: spinning helper threads for the short parallel loops of a decode step;
//! - [`fast_exp`]: a vectorizable `exp`;
//! - [`finite`]: the NaN/inf scan of weights at load;
//! - [`mmap`]: page advice for mapped weights and quantized blocks.
//!
//! The module is private; the `unstable-kernels` feature makes it public for the kernel
//! benchmarks in `examples/` (no stability promised).

pub mod fast_exp;
pub mod finite;
pub mod gemm;
pub mod gemv;
pub mod matrix;
pub mod mmap;
pub mod ops;
pub mod q8;
pub mod q8_gemm;
pub mod team;
pub mod tile;
pub mod train_ops;
