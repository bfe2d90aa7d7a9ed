//! The VAE's `Encoder`, `Decoder` and `DiagonalGaussianDistribution`, mirroring
//! `diffusers/models/autoencoders/vae.py` (group-norm decoder only: no `SpatialNorm`).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use reel_core::nn::{Activation, Conv2d, GroupNorm};
use reel_core::{Error, Result};

use crate::unet_2d_blocks::{DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D};

/// diffusers' `Encoder` (`double_z=True`): frames `(n, in_channels, H, W)` → moments
/// `(n, 2 * latent_channels, h, w)`, mean channels first.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<DownEncoderBlock2D<B>>,
    pub mid_block: UNetMidBlock2D<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        block_out_channels: &[usize],
        layers_per_block: usize,
        norm_num_groups: usize,
        act_fn: Activation,
        double_z: bool,
        mid_block_add_attention: bool,
        device: &B::Device,
    ) -> Self {
        let n = block_out_channels.len();
        let last = block_out_channels[n - 1];
        let mut output_channel = block_out_channels[0];
        let down_blocks = (0..n)
            .map(|i| {
                let input_channel = output_channel;
                output_channel = block_out_channels[i];
                DownEncoderBlock2D::new(
                    input_channel,
                    output_channel,
                    layers_per_block,
                    1e-6,
                    act_fn,
                    norm_num_groups,
                    i != n - 1,
                    0,
                    device,
                )
            })
            .collect();
        let conv_out_channels = if double_z { 2 * out_channels } else { out_channels };
        Encoder {
            conv_in: Conv2d::new(in_channels, block_out_channels[0], 3, 1, 1, device),
            down_blocks,
            mid_block: UNetMidBlock2D::new(last, 1, 1e-6, act_fn, norm_num_groups, mid_block_add_attention, last, 1.0, device),
            conv_norm_out: GroupNorm::new(norm_num_groups, last, 1e-6, device),
            conv_out: Conv2d::new(last, conv_out_channels, 3, 1, 1, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv_in.forward(x);
        for block in &self.down_blocks {
            x = block.forward(x);
        }
        let x = self.mid_block.forward(x);
        // `conv_act` is `nn.SiLU()` whatever `act_fn` is
        let x = self.conv_norm_out.forward_silu(x);
        self.conv_out.forward(x)
    }

    /// The latent size for a frame size along one dimension, or `None` where a downsampling
    /// convolution would get an input smaller than its kernel (PyTorch raises there).
    pub fn output_size(&self, n: usize) -> Option<usize> {
        let mut n = n;
        for block in &self.down_blocks {
            for down in block.downsamplers.iter().flatten() {
                n = down.output_size(n)?;
            }
        }
        Some(n)
    }
}

/// diffusers' `Decoder` with `norm_type="group"`: latents `(n, latent_channels, h, w)` → frames.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: UNetMidBlock2D<B>,
    pub up_blocks: Vec<UpDecoderBlock2D<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        block_out_channels: &[usize],
        layers_per_block: usize,
        norm_num_groups: usize,
        act_fn: Activation,
        mid_block_add_attention: bool,
        device: &B::Device,
    ) -> Self {
        let n = block_out_channels.len();
        let last = block_out_channels[n - 1];
        let reversed: Vec<usize> = block_out_channels.iter().rev().copied().collect();
        let mut output_channel = reversed[0];
        let up_blocks = (0..n)
            .map(|i| {
                let prev_output_channel = output_channel;
                output_channel = reversed[i];
                UpDecoderBlock2D::new(
                    prev_output_channel,
                    output_channel,
                    layers_per_block + 1,
                    1e-6,
                    act_fn,
                    norm_num_groups,
                    i != n - 1,
                    device,
                )
            })
            .collect();
        Decoder {
            conv_in: Conv2d::new(in_channels, last, 3, 1, 1, device),
            mid_block: UNetMidBlock2D::new(last, 1, 1e-6, act_fn, norm_num_groups, mid_block_add_attention, last, 1.0, device),
            up_blocks,
            conv_norm_out: GroupNorm::new(norm_num_groups, block_out_channels[0], 1e-6, device),
            conv_out: Conv2d::new(block_out_channels[0], out_channels, 3, 1, 1, device),
        }
    }

    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.conv_in.forward(z);
        let mut x = self.mid_block.forward(x);
        for block in &self.up_blocks {
            x = block.forward(x);
        }
        let x = self.conv_norm_out.forward_silu(x);
        self.conv_out.forward(x)
    }
}

/// diffusers' `DiagonalGaussianDistribution`: the posterior `encode` returns.
#[derive(Debug, Clone)]
pub struct DiagonalGaussianDistribution<B: Backend> {
    pub mean: Tensor<B, 4>,
    /// `clamp(logvar, -30, 20)`, as diffusers stores it.
    pub logvar: Tensor<B, 4>,
    /// `exp(0.5 * logvar)`.
    pub std: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussianDistribution<B> {
    /// Splits moments `(n, 2c, h, w)` into mean (first `c` channels) and logvar.
    pub fn new(moments: Tensor<B, 4>) -> Self {
        let mut parts = moments.chunk(2, 1).into_iter();
        let (mean, logvar) = (parts.next().unwrap(), parts.next().unwrap());
        let logvar = logvar.clamp(-30.0, 20.0);
        let std = (logvar.clone() * 0.5).exp();
        DiagonalGaussianDistribution { mean, logvar, std }
    }

    /// `exp(logvar)`.
    pub fn var(&self) -> Tensor<B, 4> {
        self.logvar.clone().exp()
    }

    /// `mean`, what diffusers' `mode()` returns.
    pub fn mode(&self) -> Tensor<B, 4> {
        self.mean.clone()
    }

    /// `mean + std * noise`, what diffusers' `sample(generator)` returns for the standard-normal
    /// `noise` its generator draws (`randn_tensor(mean.shape, generator)`).
    pub fn sample(&self, noise: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::input(format!(
                "VAE posterior sample: noise has shape {:?}, the posterior mean {:?}",
                noise.dims(),
                self.mean.dims()
            )));
        }
        let noise = reel_core::nn::to_dtype(noise, self.mean.dtype());
        Ok(self.mean.clone() + self.std.clone() * noise)
    }
}
