//! Vendor libraries behind reel's matrix product on CUDA (`reel_core::kernels`): the cuBLAS call
//! planning (pure, tested on the CPU) and, with the `cuda` features, the calls themselves.

#[cfg_attr(not(feature = "cuda-base"), allow(dead_code))]
pub mod gemm_plan;

#[cfg(feature = "cuda-base")]
pub mod cublas;
