//! The timestep embedding, mirroring `diffusers/models/embeddings.py`:
//! `get_timestep_embedding`, `Timesteps` (sinusoidal, no parameters) and `TimestepEmbedding`
//! (`linear_1 → act → linear_2`, optional `cond_proj`).
//!
//! The sinusoid is computed on the host in f32, operation for operation as diffusers does it
//! (`exponent = -ln(max_period) · arange(half) / (half - shift)`, `exp`, `t.float() · freq`,
//! `[sin, cos]`, flipped to `[cos, sin]` when `flip_sin_to_cos`), then moved to the device.
//! `sin`, `cos` and `exp` are evaluated in f64 and rounded, so single entries may differ from
//! PyTorch's vectorised f32 kernels by an ulp.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use reel_core::nn::{Activation, Linear};

/// diffusers' `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift, scale)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timesteps {
    pub num_channels: usize,
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f64,
    pub scale: f64,
    pub max_period: f64,
}

impl Timesteps {
    pub fn new(num_channels: usize, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Timesteps {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
            scale: 1.0,
            max_period: 10000.0,
        }
    }

    /// The `(n, num_channels)` f32 embedding of `n` timesteps (already converted to f32, as
    /// `timesteps.float()` does), row-major.
    pub fn embed(&self, timesteps: &[f32]) -> Vec<f32> {
        let dim = self.num_channels;
        let half = dim / 2;
        let neg_log = -(self.max_period.ln() as f32);
        let denom = (half as f64 - self.downscale_freq_shift) as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (((neg_log * i as f32) / denom) as f64).exp() as f32)
            .collect();
        let scale = self.scale as f32;
        let mut out = Vec::with_capacity(timesteps.len() * dim);
        for &t in timesteps {
            let args: Vec<f32> = freqs.iter().map(|&f| scale * (t * f)).collect();
            let sin = args.iter().map(|&a| (a as f64).sin() as f32);
            let cos = args.iter().map(|&a| (a as f64).cos() as f32);
            if self.flip_sin_to_cos {
                out.extend(cos);
                out.extend(sin);
            } else {
                out.extend(sin);
                out.extend(cos);
            }
            if dim % 2 == 1 {
                out.push(0.0);
            }
        }
        out
    }

    /// [`Self::embed`] as an f32 tensor `(n, num_channels)` on `device`.
    pub fn forward<B: Backend>(&self, timesteps: &[f32], device: &B::Device) -> Tensor<B, 2> {
        let data = TensorData::new(self.embed(timesteps), [timesteps.len(), self.num_channels]);
        Tensor::from_data(data, (device, burn::tensor::DType::F32))
    }
}

/// diffusers' `TimestepEmbedding` (`linear_1`, `linear_2`, optional `cond_proj`).
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    /// `cond_proj_dim`: a projection of `timestep_cond` added to the input (no bias). Built so the
    /// keys match; reel's UNet forward has no `timestep_cond`, which skips it as diffusers does
    /// when the condition is `None`.
    pub cond_proj: Option<Linear<B>>,
    pub linear_2: Linear<B>,
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn new(
        in_channels: usize,
        time_embed_dim: usize,
        act: Activation,
        cond_proj_dim: Option<usize>,
        device: &B::Device,
    ) -> Self {
        TimestepEmbedding {
            linear_1: Linear::new(in_channels, time_embed_dim, true, device),
            cond_proj: cond_proj_dim.map(|d| Linear::new(d, in_channels, false, device)),
            linear_2: Linear::new(time_embed_dim, time_embed_dim, true, device),
            act,
        }
    }

    /// `(n, in_channels)` → `(n, time_embed_dim)`.
    pub fn forward(&self, sample: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2
            .forward(self.act.forward(self.linear_1.forward(sample)))
    }
}
