//! `Upsample2D`, mirroring `diffusers/models/upsampling.py` (`class Upsample2D`).
//!
//! Nearest-neighbour upsampling ×2 (`F.interpolate(scale_factor=2.0, mode="nearest")`) or to an
//! explicit `output_size` (`F.interpolate(size=output_size, mode="nearest")`, source index
//! `floor(dst * in / out)`), then an optional 3×3 convolution (`use_conv`, parameter `conv`).
//! Not carried over (unused by the VAE and the text-to-video UNets): `use_conv_transpose`,
//! `norm_type`, `interpolate=False`, the `Conv2d_0` parameter name.

use burn::module::Module;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{backend::Backend, Tensor};

use crate::nn::Conv2d;

/// diffusers' `Upsample2D` (`conv.weight`, `conv.bias`).
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    pub conv: Option<Conv2d<B>>,
    pub channels: usize,
}

impl<B: Backend> Upsample2D<B> {
    /// `Upsample2D(channels, use_conv, out_channels=out_channels)` with the default 3×3 kernel,
    /// padding 1 and bias.
    pub fn new(channels: usize, use_conv: bool, out_channels: Option<usize>, device: &B::Device) -> Self {
        let out_channels = out_channels.unwrap_or(channels);
        Upsample2D { conv: use_conv.then(|| Conv2d::new(channels, out_channels, 3, 1, 1, device)), channels }
    }

    /// `(b, c, h, w)` → `(b, c_out, 2h, 2w)`, or `(b, c_out, output_size[0], output_size[1])`.
    pub fn forward(&self, x: Tensor<B, 4>, output_size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = output_size.unwrap_or([2 * h, 2 * w]);
        let x = upsample_nearest(x, size);
        match &self.conv {
            Some(conv) => conv.forward(x),
            None => x,
        }
    }
}

/// Nearest-neighbour resize of `(b, c, h, w)` to `size` (the interpolation of [`Upsample2D`]).
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    crate::profile::record(|| {
        let [n, c, h, w] = x.dims();
        crate::profile::Op::Upsample { n, c, h, w, h_out: size[0], w_out: size[1] }
    });
    interpolate(x, size, InterpolateOptions::new(InterpolateMode::Nearest))
}
