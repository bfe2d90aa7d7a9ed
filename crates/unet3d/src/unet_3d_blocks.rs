//! The UNet3D's down, mid and up blocks, mirroring `diffusers/models/unets/unet_3d_blocks.py`:
//! `CrossAttnDownBlock3D` / `DownBlock3D` ([`DownBlock3D`]), `UNetMidBlock3DCrossAttn`,
//! `CrossAttnUpBlock3D` / `UpBlock3D` ([`UpBlock3D`]).
//!
//! Each layer is `ResnetBlock2D (+ temb) → TemporalConvLayer` and, in the cross-attention kinds,
//! `→ Transformer2DModel (text states) → TransformerTemporalModel`. Down blocks end in a stride-2
//! `Downsample2D` (except the last), up blocks concatenate a skip before each resnet and end in an
//! `Upsample2D` (except the last), to an explicit size when the latents are not a multiple of the
//! overall factor. The cross-attention and plain kinds of each side are one Rust type whose
//! attention lists are empty for the plain kind, so that `down_blocks` / `up_blocks` keep
//! diffusers' parameter paths (`down_blocks.3.resnets.0...`). All tensors are `(b·f, c, h, w)`.
//!
//! `temb` is the time embedding already through the resnets' activation (`act(emb)`, computed
//! once a step by the UNet; [`ResnetBlock2D::forward_activated`]).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use reel_core::blocks::{Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D};
use reel_core::nn::Activation;

use crate::attention::FeedForwardChunking;
use crate::resnet::TemporalConvLayer;
use crate::trace::Trace;
use crate::transformer_2d::Transformer2DModel;
use crate::transformer_temporal::TransformerTemporalModel;

/// What every block of one UNet shares (from `unet/config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSettings {
    pub temb_channels: usize,
    /// `norm_eps` (resnets only; the transformers and temporal convs hard-code theirs).
    pub resnet_eps: f64,
    pub resnet_act: Activation,
    pub groups: usize,
    /// The head size (`attention_head_dim`); heads = channels / head size.
    pub head_dim: usize,
    pub cross_attention_dim: usize,
}

impl BlockSettings {
    fn resnet<B: Backend>(
        &self,
        c_in: usize,
        c_out: usize,
        output_scale_factor: f64,
        device: &B::Device,
    ) -> ResnetBlock2D<B> {
        let mut c = ResnetBlock2DConfig::new(c_in);
        c.out_channels = Some(c_out);
        c.temb_channels = Some(self.temb_channels);
        c.groups = self.groups;
        c.eps = self.resnet_eps;
        c.non_linearity = self.resnet_act;
        c.output_scale_factor = output_scale_factor;
        c.init(device)
    }

    fn attention<B: Backend>(&self, c: usize, device: &B::Device) -> Transformer2DModel<B> {
        Transformer2DModel::new(
            c / self.head_dim,
            self.head_dim,
            c,
            1,
            Some(self.cross_attention_dim),
            self.groups,
            device,
        )
    }

    fn temp_attention<B: Backend>(
        &self,
        c: usize,
        device: &B::Device,
    ) -> TransformerTemporalModel<B> {
        TransformerTemporalModel::new(c / self.head_dim, self.head_dim, c, 1, self.groups, device)
    }
}

fn set_chunking<B: Backend>(
    attentions: &mut [Transformer2DModel<B>],
    temp_attentions: &mut [TransformerTemporalModel<B>],
    chunking: Option<FeedForwardChunking>,
) {
    attentions
        .iter_mut()
        .for_each(|a| a.set_chunk_feed_forward(chunking));
    temp_attentions
        .iter_mut()
        .for_each(|a| a.set_chunk_feed_forward(chunking));
}

/// One layer: resnet → temporal conv → (spatial transformer → temporal transformer).
#[allow(clippy::too_many_arguments)]
fn layer<B: Backend>(
    x: Tensor<B, 4>,
    j: usize,
    resnet: &ResnetBlock2D<B>,
    temp_conv: &TemporalConvLayer<B>,
    attn: Option<(&Transformer2DModel<B>, &TransformerTemporalModel<B>)>,
    temb: &Tensor<B, 2>,
    encoder_hidden_states: &Tensor<B, 3>,
    num_frames: usize,
    trace: &mut Trace<B>,
    prefix: &str,
) -> Tensor<B, 4> {
    let x = resnet.forward_activated(x, Some(temb.clone()));
    trace.record(prefix, &format!("resnets.{j}"), &x);
    let mut x = temp_conv.forward(x, num_frames);
    trace.record(prefix, &format!("temp_convs.{j}"), &x);
    if let Some((attn, temp_attn)) = attn {
        x = attn.forward(x, Some(encoder_hidden_states.clone()));
        trace.record(prefix, &format!("attentions.{j}"), &x);
        x = temp_attn.forward(x, num_frames);
        trace.record(prefix, &format!("temp_attentions.{j}"), &x);
    }
    x
}

/// `CrossAttnDownBlock3D` (with attentions) or `DownBlock3D` (`attentions` and
/// `temp_attentions` empty).
#[derive(Module, Debug)]
pub struct DownBlock3D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub temp_convs: Vec<TemporalConvLayer<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub temp_attentions: Vec<TransformerTemporalModel<B>>,
    /// Empty without `add_downsample`.
    pub downsamplers: Vec<Downsample2D<B>>,
}

/// diffusers' name for the cross-attention kind of [`DownBlock3D`].
pub type CrossAttnDownBlock3D<B> = DownBlock3D<B>;

impl<B: Backend> DownBlock3D<B> {
    /// `num_layers` layers from `in_channels` to `out_channels`; `cross_attention` picks
    /// `CrossAttnDownBlock3D` over `DownBlock3D`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        s: &BlockSettings,
        cross_attention: bool,
        num_layers: usize,
        in_channels: usize,
        out_channels: usize,
        add_downsample: bool,
        downsample_padding: usize,
        device: &B::Device,
    ) -> Self {
        let c = out_channels;
        DownBlock3D {
            resnets: (0..num_layers)
                .map(|i| s.resnet(if i == 0 { in_channels } else { c }, c, 1.0, device))
                .collect(),
            temp_convs: (0..num_layers)
                .map(|_| TemporalConvLayer::new(c, c, s.groups, device))
                .collect(),
            attentions: if cross_attention {
                (0..num_layers).map(|_| s.attention(c, device)).collect()
            } else {
                vec![]
            },
            temp_attentions: if cross_attention {
                (0..num_layers)
                    .map(|_| s.temp_attention(c, device))
                    .collect()
            } else {
                vec![]
            },
            downsamplers: if add_downsample {
                vec![Downsample2D::new(
                    c,
                    true,
                    Some(c),
                    downsample_padding,
                    device,
                )]
            } else {
                vec![]
            },
        }
    }

    /// `has_cross_attention` in diffusers.
    pub fn has_cross_attention(&self) -> bool {
        !self.attentions.is_empty()
    }

    /// Returns the block output and the states it hands to the up blocks (each layer's output,
    /// then the downsampled one).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        encoder_hidden_states: &Tensor<B, 3>,
        num_frames: usize,
        trace: &mut Trace<B>,
        prefix: &str,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut x = x;
        let mut output_states = Vec::new();
        for (j, (resnet, temp_conv)) in self.resnets.iter().zip(&self.temp_convs).enumerate() {
            let attn = self.attentions.get(j).zip(self.temp_attentions.get(j));
            x = layer(
                x,
                j,
                resnet,
                temp_conv,
                attn,
                temb,
                encoder_hidden_states,
                num_frames,
                trace,
                prefix,
            );
            output_states.push(x.clone());
        }
        for (k, down) in self.downsamplers.iter().enumerate() {
            x = down.forward(x);
            trace.record(prefix, &format!("downsamplers.{k}"), &x);
            output_states.push(x.clone());
        }
        (x, output_states)
    }

    pub fn set_chunk_feed_forward(&mut self, chunking: Option<FeedForwardChunking>) {
        set_chunking(&mut self.attentions, &mut self.temp_attentions, chunking);
    }
}

/// diffusers' `UNetMidBlock3DCrossAttn` (`num_layers = 1`): resnet → temporal conv, then per
/// layer spatial transformer → temporal transformer → resnet → temporal conv.
#[derive(Module, Debug)]
pub struct UNetMidBlock3DCrossAttn<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub temp_convs: Vec<TemporalConvLayer<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub temp_attentions: Vec<TransformerTemporalModel<B>>,
}

impl<B: Backend> UNetMidBlock3DCrossAttn<B> {
    pub fn new(
        s: &BlockSettings,
        in_channels: usize,
        num_layers: usize,
        output_scale_factor: f64,
        device: &B::Device,
    ) -> Self {
        let c = in_channels;
        UNetMidBlock3DCrossAttn {
            resnets: (0..=num_layers)
                .map(|_| s.resnet(c, c, output_scale_factor, device))
                .collect(),
            temp_convs: (0..=num_layers)
                .map(|_| TemporalConvLayer::new(c, c, s.groups, device))
                .collect(),
            attentions: (0..num_layers).map(|_| s.attention(c, device)).collect(),
            temp_attentions: (0..num_layers)
                .map(|_| s.temp_attention(c, device))
                .collect(),
        }
    }

    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        encoder_hidden_states: &Tensor<B, 3>,
        num_frames: usize,
        trace: &mut Trace<B>,
        prefix: &str,
    ) -> Tensor<B, 4> {
        let x = self.resnets[0].forward_activated(x, Some(temb.clone()));
        trace.record(prefix, "resnets.0", &x);
        let mut x = self.temp_convs[0].forward(x, num_frames);
        trace.record(prefix, "temp_convs.0", &x);
        for (i, (attn, temp_attn)) in self
            .attentions
            .iter()
            .zip(&self.temp_attentions)
            .enumerate()
        {
            x = attn.forward(x, Some(encoder_hidden_states.clone()));
            trace.record(prefix, &format!("attentions.{i}"), &x);
            x = temp_attn.forward(x, num_frames);
            trace.record(prefix, &format!("temp_attentions.{i}"), &x);
            x = self.resnets[i + 1].forward_activated(x, Some(temb.clone()));
            trace.record(prefix, &format!("resnets.{}", i + 1), &x);
            x = self.temp_convs[i + 1].forward(x, num_frames);
            trace.record(prefix, &format!("temp_convs.{}", i + 1), &x);
        }
        x
    }

    pub fn set_chunk_feed_forward(&mut self, chunking: Option<FeedForwardChunking>) {
        set_chunking(&mut self.attentions, &mut self.temp_attentions, chunking);
    }
}

/// `CrossAttnUpBlock3D` (with attentions) or `UpBlock3D` (`attentions` and `temp_attentions`
/// empty).
#[derive(Module, Debug)]
pub struct UpBlock3D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub temp_convs: Vec<TemporalConvLayer<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub temp_attentions: Vec<TransformerTemporalModel<B>>,
    /// Empty without `add_upsample`.
    pub upsamplers: Vec<Upsample2D<B>>,
}

/// diffusers' name for the cross-attention kind of [`UpBlock3D`].
pub type CrossAttnUpBlock3D<B> = UpBlock3D<B>;

impl<B: Backend> UpBlock3D<B> {
    /// `num_layers` layers; layer `i`'s resnet takes `prev_output_channel` (i = 0) or
    /// `out_channels`, plus the skip's channels (`in_channels` for the last layer, else
    /// `out_channels`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        s: &BlockSettings,
        cross_attention: bool,
        num_layers: usize,
        in_channels: usize,
        out_channels: usize,
        prev_output_channel: usize,
        add_upsample: bool,
        device: &B::Device,
    ) -> Self {
        let c = out_channels;
        let resnet_in = |i: usize| {
            let skip = if i == num_layers - 1 { in_channels } else { c };
            let prev = if i == 0 { prev_output_channel } else { c };
            prev + skip
        };
        UpBlock3D {
            resnets: (0..num_layers)
                .map(|i| s.resnet(resnet_in(i), c, 1.0, device))
                .collect(),
            temp_convs: (0..num_layers)
                .map(|_| TemporalConvLayer::new(c, c, s.groups, device))
                .collect(),
            attentions: if cross_attention {
                (0..num_layers).map(|_| s.attention(c, device)).collect()
            } else {
                vec![]
            },
            temp_attentions: if cross_attention {
                (0..num_layers)
                    .map(|_| s.temp_attention(c, device))
                    .collect()
            } else {
                vec![]
            },
            upsamplers: if add_upsample {
                vec![Upsample2D::new(c, true, Some(c), device)]
            } else {
                vec![]
            },
        }
    }

    pub fn has_cross_attention(&self) -> bool {
        !self.attentions.is_empty()
    }

    /// `skips` are the down blocks' states for this block, in the order they were produced (the
    /// last one is concatenated first). `upsample_size` is the explicit `(h, w)` for the upsampler.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        mut skips: Vec<Tensor<B, 4>>,
        temb: &Tensor<B, 2>,
        encoder_hidden_states: &Tensor<B, 3>,
        upsample_size: Option<[usize; 2]>,
        num_frames: usize,
        trace: &mut Trace<B>,
        prefix: &str,
    ) -> Tensor<B, 4> {
        let mut x = x;
        for (j, (resnet, temp_conv)) in self.resnets.iter().zip(&self.temp_convs).enumerate() {
            let skip = skips.pop().expect("one skip state per up-block resnet");
            x = Tensor::cat(vec![x, skip], 1);
            let attn = self.attentions.get(j).zip(self.temp_attentions.get(j));
            x = layer(
                x,
                j,
                resnet,
                temp_conv,
                attn,
                temb,
                encoder_hidden_states,
                num_frames,
                trace,
                prefix,
            );
        }
        for (k, up) in self.upsamplers.iter().enumerate() {
            x = up.forward(x, upsample_size);
            trace.record(prefix, &format!("upsamplers.{k}"), &x);
        }
        x
    }

    pub fn set_chunk_feed_forward(&mut self, chunking: Option<FeedForwardChunking>) {
        set_chunking(&mut self.attentions, &mut self.temp_attentions, chunking);
    }
}
