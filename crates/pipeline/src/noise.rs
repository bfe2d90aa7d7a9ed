//! Randomness as diffusers draws it: one `torch.Generator("cpu").manual_seed(seed)` per
//! pipeline call (reel_core::torch_rng reproduces it bit for bit), consumed in diffusers' order —
//! initial latents (`randn_tensor(shape, generator)`), the VAE posterior sample and the
//! `add_noise` noise of video-to-video, then every stochastic scheduler step.

use burn::tensor::{backend::Backend, DType, Tensor};
use reel_core::torch_rng::{randn_tensor_as, DrawDtype, TorchGenerator};
use reel_schedulers::NoiseSource;

/// A seeded torch-compatible generator that draws in the pipeline's dtype (torch draws float16
/// values differently from rounded float32 ones).
pub struct TorchNoise {
    pub generator: TorchGenerator,
    pub dtype: DrawDtype,
    /// How many tensors were drawn (diagnostics).
    pub draws: usize,
}

impl TorchNoise {
    pub fn new(seed: u64, dtype: DType) -> Self {
        let dtype = match dtype {
            DType::F16 => DrawDtype::F16,
            DType::BF16 => DrawDtype::BF16,
            _ => DrawDtype::F32,
        };
        Self { generator: TorchGenerator::new(seed), dtype, draws: 0 }
    }

    /// `randn_tensor(shape, generator=g, dtype=...)` on `device`, as f32 values.
    pub fn randn<B: Backend, const D: usize>(&mut self, shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
        self.draws += 1;
        randn_tensor_as::<B, D>(&mut self.generator, shape, self.dtype, device)
    }
}

impl<B: Backend> NoiseSource<B> for TorchNoise {
    fn randn(&mut self, shape: [usize; 4], device: &B::Device) -> reel_schedulers::Result<Tensor<B, 4>> {
        Ok(TorchNoise::randn::<B, 4>(self, shape, device))
    }
}
