//! `ResnetBlock2D`, mirroring `diffusers/models/resnet.py` (`class ResnetBlock2D`).
//!
//! `norm1 → act → conv1 (→ + time_emb_proj(act(temb))) → norm2 (→ scale/shift) → act → conv2`,
//! plus the input (through the 1×1 `conv_shortcut` when the channel count changes, or when
//! `use_in_shortcut` asks for it), divided by `output_scale_factor`. Dropout is the identity
//! (inference). Not carried over: the `up` / `down` resampling options (FIR / `sde_vp` kernels,
//! unused by the VAE and the text-to-video UNets). diffusers 0.42 stores the `conv_shortcut`
//! flag without using it (its shortcut is always 1×1); so does this.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::nn::{Activation, Conv2d, GroupNorm, Linear};

/// diffusers' `time_embedding_norm`: how the time embedding enters the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeEmbeddingNorm {
    /// `"default"`: `conv1(x) + time_emb_proj(temb)` before `norm2` (also what `"group"`,
    /// the VAE decoder's value, does when there is no time embedding).
    #[default]
    Default,
    /// `"scale_shift"`: `norm2(h) * (1 + scale) + shift`, `time_emb_proj` gives `2 * out` channels.
    ScaleShift,
}

impl TimeEmbeddingNorm {
    /// From diffusers' `resnet_time_scale_shift` / `time_embedding_norm` string. `"group"` is
    /// what diffusers' VAE decoder passes; without a time embedding it acts like `"default"`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "default" | "group" => Some(TimeEmbeddingNorm::Default),
            "scale_shift" => Some(TimeEmbeddingNorm::ScaleShift),
            _ => None,
        }
    }
}

/// The constructor arguments of diffusers' `ResnetBlock2D`, with its defaults from [`Self::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResnetBlock2DConfig {
    pub in_channels: usize,
    /// `None`: `in_channels`.
    pub out_channels: Option<usize>,
    /// diffusers stores this flag and never reads it (the shortcut is always a 1×1 conv); kept
    /// so that call sites can be written argument for argument.
    pub conv_shortcut: bool,
    /// `None`: no `time_emb_proj` (the VAE). diffusers' default is 512.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    /// `None`: `groups`.
    pub groups_out: Option<usize>,
    pub eps: f64,
    pub non_linearity: Activation,
    pub skip_time_act: bool,
    pub time_embedding_norm: TimeEmbeddingNorm,
    pub output_scale_factor: f64,
    /// `None`: a shortcut conv exactly when `in_channels != conv_2d_out_channels`.
    pub use_in_shortcut: Option<bool>,
    pub conv_shortcut_bias: bool,
    /// `None`: `out_channels`.
    pub conv_2d_out_channels: Option<usize>,
}

impl ResnetBlock2DConfig {
    /// diffusers' defaults: `temb_channels=512, groups=32, eps=1e-6, non_linearity="swish"`,
    /// `time_embedding_norm="default"`, `output_scale_factor=1.0`.
    pub fn new(in_channels: usize) -> Self {
        ResnetBlock2DConfig {
            in_channels,
            out_channels: None,
            conv_shortcut: false,
            temb_channels: Some(512),
            groups: 32,
            groups_out: None,
            eps: 1e-6,
            non_linearity: Activation::Silu,
            skip_time_act: false,
            time_embedding_norm: TimeEmbeddingNorm::Default,
            output_scale_factor: 1.0,
            use_in_shortcut: None,
            conv_shortcut_bias: true,
            conv_2d_out_channels: None,
        }
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// The channel count of the block's output.
    pub fn conv_2d_out_channels(&self) -> usize {
        self.conv_2d_out_channels.unwrap_or(self.out_channels())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ResnetBlock2D<B> {
        let out_channels = self.out_channels();
        let conv_out = self.conv_2d_out_channels();
        let time_emb_proj = self.temb_channels.map(|t| {
            let n = match self.time_embedding_norm {
                TimeEmbeddingNorm::Default => out_channels,
                TimeEmbeddingNorm::ScaleShift => 2 * out_channels,
            };
            Linear::new(t, n, true, device)
        });
        let use_in_shortcut = self.use_in_shortcut.unwrap_or(self.in_channels != conv_out);
        let conv_shortcut = use_in_shortcut.then(|| {
            let mut conv = Conv2d::new(self.in_channels, conv_out, 1, 1, 0, device);
            if !self.conv_shortcut_bias {
                conv.bias = None;
            }
            conv
        });
        ResnetBlock2D {
            norm1: GroupNorm::new(self.groups, self.in_channels, self.eps, device),
            conv1: Conv2d::new(self.in_channels, out_channels, 3, 1, 1, device),
            time_emb_proj,
            norm2: GroupNorm::new(self.groups_out.unwrap_or(self.groups), out_channels, self.eps, device),
            conv2: Conv2d::new(out_channels, conv_out, 3, 1, 1, device),
            conv_shortcut,
            nonlinearity: self.non_linearity,
            time_embedding_norm: self.time_embedding_norm,
            skip_time_act: self.skip_time_act,
            output_scale_factor: self.output_scale_factor,
        }
    }
}

/// diffusers' `ResnetBlock2D` (parameters `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`,
/// `conv_shortcut`).
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
    #[module(skip)]
    pub nonlinearity: Activation,
    #[module(skip)]
    pub time_embedding_norm: TimeEmbeddingNorm,
    pub skip_time_act: bool,
    pub output_scale_factor: f64,
}

impl<B: Backend> ResnetBlock2D<B> {
    /// `x (b, c_in, h, w)`, `temb (b, temb_channels)` → `(b, c_out, h, w)`.
    ///
    /// `temb` is used only when the block has a `time_emb_proj` (built with `temb_channels`);
    /// a `ScaleShift` block needs it (diffusers raises without it; this panics, a model bug).
    pub fn forward(&self, input: Tensor<B, 4>, temb: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
        let temb = match (&self.time_emb_proj, temb) {
            (Some(_), Some(t)) if !self.skip_time_act => Some(self.nonlinearity.forward(t)),
            (Some(_), t) => t,
            (None, _) => None,
        };
        self.forward_activated(input, temb)
    }

    /// [`Self::forward`] with `temb` already through the block's `nonlinearity` (as given with
    /// `skip_time_act`): that activation is the same for every block of a model that shares the
    /// embedding and the activation, so the caller computes it once for all of them (the
    /// UNet's 22 resnets: one operation a step instead of one per block).
    pub fn forward_activated(&self, input: Tensor<B, 4>, temb: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
        let act = self.nonlinearity;
        let h = self.norm1.forward_act(input.clone(), act);
        let h = self.conv1.forward(h);
        // (b, c): one value per image and channel
        let temb = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => Some(proj.forward(t)),
            _ => None,
        };
        let h = match self.time_embedding_norm {
            // norm2(h + temb[:, :, None, None]): the add inside the norm's kernel
            TimeEmbeddingNorm::Default => match temb {
                Some(t) => self.norm2.forward_act_plus(h, t, act),
                None => self.norm2.forward_act(h, act),
            },
            TimeEmbeddingNorm::ScaleShift => {
                let t = temb.expect("ResnetBlock2D with time_embedding_norm=scale_shift needs temb");
                let [b, c] = t.dims();
                let t = t.reshape([b, c, 1, 1]);
                let mut parts = t.chunk(2, 1).into_iter();
                let (scale, shift) = (parts.next().unwrap(), parts.next().unwrap());
                act.forward(self.norm2.forward(h) * (scale + 1.0) + shift)
            }
        };
        let input = match &self.conv_shortcut {
            Some(conv) => conv.forward(input),
            None => input,
        };
        // input + conv2(h): the add inside the convolution where the kernels offer it
        let out = self.conv2.forward_add(h, input);
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}
