//! `Downsample2D`, mirroring `diffusers/models/downsampling.py` (`class Downsample2D`).
//!
//! A stride-2 3×3 convolution (`use_conv`) or a 2×2 average pool. With `padding == 0` diffusers
//! pads the input by `(0, 1, 0, 1)` (one zero row at the bottom, one column at the right) before
//! the convolution, as the VAE encoder does (`downsample_padding=0`); otherwise the convolution
//! pads symmetrically. The parameter is `conv` (diffusers' `name="op"`, and `"conv"` minus its
//! `Conv2d_0` alias); the `norm_type` options (unused by the VAE and text-to-video UNets) are
//! not carried over.

use burn::module::Module;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{backend::Backend, Tensor};

use crate::nn::Conv2d;

/// diffusers' `Downsample2D` (`conv.weight`, `conv.bias`).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// `None`: average pooling (`use_conv=False`).
    pub conv: Option<Conv2d<B>>,
    pub channels: usize,
    pub padding: usize,
}

impl<B: Backend> Downsample2D<B> {
    /// `Downsample2D(channels, use_conv, out_channels, padding)` with the default 3×3 kernel and
    /// bias. Without `use_conv`, `out_channels` must equal `channels` (diffusers asserts it).
    pub fn new(
        channels: usize,
        use_conv: bool,
        out_channels: Option<usize>,
        padding: usize,
        device: &B::Device,
    ) -> Self {
        let out_channels = out_channels.unwrap_or(channels);
        assert!(use_conv || out_channels == channels, "Downsample2D without a conv keeps the channel count");
        Downsample2D {
            conv: use_conv.then(|| Conv2d::new(channels, out_channels, 3, 2, padding, device)),
            channels,
            padding,
        }
    }

    /// `(b, c, h, w)` → `(b, c_out, h', w')`. With `padding == 0`,
    /// `h' = (h + 1 - 3) / 2 + 1` (needs `h ≥ 2`); with padding `p`, `h' = (h + 2p - 3) / 2 + 1`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match &self.conv {
            Some(conv) if self.padding == 0 => conv.forward_padded(x, [0, 1, 0, 1]),
            Some(conv) => conv.forward(x),
            None => avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false),
        }
    }

    /// The output size along one spatial dimension of size `n`, or `None` where the convolution
    /// has nothing to run on (PyTorch raises there).
    pub fn output_size(&self, n: usize) -> Option<usize> {
        let padded = match &self.conv {
            Some(_) if self.padding == 0 => n + 1,
            Some(_) => n + 2 * self.padding,
            None => return (n >= 2).then_some(n / 2),
        };
        (padded >= 3).then(|| (padded - 3) / 2 + 1)
    }
}
