//! `GEGLU`, mirroring `diffusers/models/activations.py` (`class GEGLU`): one projection to twice
//! the output width, split in two halves `h, gate`, `h * gelu(gate)` (exact erf GELU).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use reel_core::nn::Linear;

/// diffusers' `GEGLU` (`proj.weight` `[2·dim_out, dim_in]`, `proj.bias`).
#[derive(Module, Debug)]
pub struct Geglu<B: Backend> {
    pub proj: Linear<B>,
}

impl<B: Backend> Geglu<B> {
    pub fn new(dim_in: usize, dim_out: usize, bias: bool, device: &B::Device) -> Self {
        Geglu {
            proj: Linear::new(dim_in, dim_out * 2, bias, device),
        }
    }

    /// `(…, dim_in)` → `(…, dim_out)`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        geglu_gate(self.proj.forward(x))
    }
}

/// GEGLU after its projection: `(…, 2·dim)` split into `h, gate` → `h * gelu(gate)` `(…, dim)`;
/// one kernel when the registered kernels have it ([`reel_core::kernels::Kernels::geglu`]).
pub fn geglu_gate<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    reel_core::profile::record(|| {
        let dims = x.dims();
        reel_core::profile::Op::Geglu { rows: dims[..D - 1].iter().product(), dim: dims[D - 1] / 2 }
    });
    if let Some(kernel) = reel_core::kernels::offering::<B>(x.dtype(), |k| k.has_geglu()) {
        let mut dims = x.dims();
        let width = dims[D - 1];
        let rows = dims[..D - 1].iter().product();
        dims[D - 1] = width / 2;
        return kernel.geglu(x.reshape([rows, width])).reshape(dims);
    }
    reel_core::kernels::geglu_ops(x)
}
