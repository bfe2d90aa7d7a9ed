//! `TemporalConvLayer`, mirroring `diffusers/models/resnet.py` (`class TemporalConvLayer`, from
//! ModelScope): four `GroupNorm → SiLU → (Dropout →) Conv3d(kernel (3, 1, 1), padding (1, 0, 0))`
//! stages across the frames, plus the input. The group norms see `(b, c, f, h, w)`, so their
//! groups span all frames; their epsilon is PyTorch's default 1e-5 (not `norm_eps`).
//!
//! The `(3, 1, 1)` convolution mixes each pixel's three neighbouring frames only. It runs as a
//! 2D convolution with a `(3, 1)` kernel over `(b, c, f, h·w)`, which is the same sum.
//! Parameter names follow diffusers' `nn.Sequential` indices: `conv1.0` (norm), `conv1.2`
//! (conv); `convK.0`, `convK.3` for K = 2..4 (index 2 is the dropout).

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use reel_core::kernels::contiguous;
use reel_core::nn::{conv2d, conv2d_add, lazy_param, GroupNorm};

/// `nn.Conv3d(c_in, c_out, (3, 1, 1), padding=(1, 0, 0))`: `weight [c_out, c_in, 3, 1, 1]`, `bias`.
#[derive(Module, Debug)]
pub struct TemporalConv3d<B: Backend> {
    pub weight: Param<Tensor<B, 5>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> TemporalConv3d<B> {
    pub fn new(c_in: usize, c_out: usize, device: &B::Device) -> Self {
        TemporalConv3d {
            weight: lazy_param([c_out, c_in, 3, 1, 1], device),
            bias: lazy_param([c_out], device),
        }
    }

    /// `(b, c_in, f, n)` (frames on axis 2, any flattening of the pixels on axis 3) →
    /// `(b, c_out, f, n)`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let weight = self.weight_2d(&x);
        conv2d(x, weight, Some(self.bias.val()), [1, 1], [1, 1, 0, 0])
    }

    /// `forward(x) + residual`, the add inside the convolution where the kernels offer it.
    pub fn forward_add(&self, x: Tensor<B, 4>, residual: Tensor<B, 4>) -> Tensor<B, 4> {
        let weight = self.weight_2d(&x);
        conv2d_add(x, weight, Some(self.bias.val()), [1, 1], [1, 0], residual)
    }

    /// The weight as a `(c_out, c_in, 3, 1)` 2D kernel; records the operation applied to `x`.
    fn weight_2d(&self, x: &Tensor<B, 4>) -> Tensor<B, 4> {
        let [c_out, c_in, k, _, _] = self.weight.dims();
        reel_core::profile::record(|| {
            let [b, _, f, pixels] = x.dims();
            reel_core::profile::Op::TemporalConv { b, c_in, f, pixels, c_out }
        });
        self.weight.val().reshape([c_out, c_in, k, 1])
    }
}

/// diffusers' `TemporalConvLayer` (`conv1` … `conv4`).
#[derive(Module, Debug)]
pub struct TemporalConvLayer<B: Backend> {
    /// `nn.Sequential(GroupNorm, SiLU, Conv3d)`.
    pub conv1: (GroupNorm<B>, String, TemporalConv3d<B>),
    /// `nn.Sequential(GroupNorm, SiLU, Dropout, Conv3d)`.
    pub conv2: (GroupNorm<B>, String, String, TemporalConv3d<B>),
    pub conv3: (GroupNorm<B>, String, String, TemporalConv3d<B>),
    pub conv4: (GroupNorm<B>, String, String, TemporalConv3d<B>),
}

impl<B: Backend> TemporalConvLayer<B> {
    /// `TemporalConvLayer(in_dim, out_dim, norm_num_groups)`.
    pub fn new(in_dim: usize, out_dim: usize, norm_num_groups: usize, device: &B::Device) -> Self {
        let stage = |c_norm: usize, c_out: usize| {
            (
                GroupNorm::new(norm_num_groups, c_norm, 1e-5, device),
                "SiLU".to_string(),
                "Dropout".to_string(),
                TemporalConv3d::new(c_norm, c_out, device),
            )
        };
        TemporalConvLayer {
            conv1: (
                GroupNorm::new(norm_num_groups, in_dim, 1e-5, device),
                "SiLU".to_string(),
                TemporalConv3d::new(in_dim, out_dim, device),
            ),
            conv2: stage(out_dim, in_dim),
            conv3: stage(out_dim, in_dim),
            conv4: stage(out_dim, in_dim),
        }
    }

    /// `(b·f, c, h, w)` with `num_frames = f` → `(b·f, c, h, w)`.
    pub fn forward(&self, hidden_states: Tensor<B, 4>, num_frames: usize) -> Tensor<B, 4> {
        let [bf, c, h, w] = hidden_states.dims();
        let (b, f) = (bf / num_frames, num_frames);
        // (b, f, c, h·w) → (b, c, f, h·w)
        let identity = contiguous(hidden_states.reshape([b, f, c, h * w]).swap_dims(1, 2));
        let stage = |x: Tensor<B, 4>, norm: &GroupNorm<B>, conv: &TemporalConv3d<B>| {
            conv.forward(norm.forward_silu(x))
        };
        let x = stage(identity.clone(), &self.conv1.0, &self.conv1.2);
        let x = stage(x, &self.conv2.0, &self.conv2.3);
        let x = stage(x, &self.conv3.0, &self.conv3.3);
        // identity + conv4(…), the add inside the convolution
        let x = self.conv4.3.forward_add(self.conv4.0.forward_silu(x), identity);
        let c_out = x.dims()[1];
        contiguous(x.swap_dims(1, 2)).reshape([bf, c_out, h, w])
    }
}
