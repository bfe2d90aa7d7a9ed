//! reel's own CPU kernels for burn-flex (`cpu`, with `bf16_gemm`'s AVX-512 BF16 products), and the vendor libraries behind reel's kernels on CUDA (`reel_core::kernels`): the cuBLAS call
//! planning and the GPU memory pool plans (pure, tested on the CPU) and, with the `cuda` features, cuBLAS products, cuDNN
//! convolutions, reel's own kernels (NVRTC: norms, softmax, bias, im2col) and their registration for both burn-cuda
//! backends.

pub mod bf16_gemm;
pub mod cpu;
#[cfg_attr(not(feature = "cuda-base"), allow(dead_code))]
pub mod gemm_plan;
#[cfg_attr(not(feature = "cuda-base"), allow(dead_code))]
pub mod memory_pools;

#[cfg(feature = "cuda-base")]
pub mod cublas;
#[cfg(feature = "cuda-base")]
pub mod cuda;
#[cfg(feature = "cuda-base")]
pub mod cudnn;
#[cfg(feature = "cuda-base")]
pub mod nvrtc;
