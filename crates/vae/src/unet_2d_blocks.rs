//! The VAE's blocks from `diffusers/models/unets/unet_2d_blocks.py`: `DownEncoderBlock2D`,
//! `UpDecoderBlock2D` and `UNetMidBlock2D`, with the arguments diffusers' `Encoder` / `Decoder`
//! build them with (no time embedding, `resnet_time_scale_shift` "default" / "group").

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use reel_core::blocks::{Attention, AttentionConfig, Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D};
use reel_core::nn::Activation;

fn resnet<B: Backend>(
    in_channels: usize,
    out_channels: usize,
    groups: usize,
    eps: f64,
    act: Activation,
    output_scale_factor: f64,
    device: &B::Device,
) -> ResnetBlock2D<B> {
    ResnetBlock2DConfig {
        out_channels: Some(out_channels),
        temb_channels: None,
        groups,
        eps,
        non_linearity: act,
        output_scale_factor,
        ..ResnetBlock2DConfig::new(in_channels)
    }
    .init(device)
}

/// `DownEncoderBlock2D`: `num_layers` resnets, then an optional `Downsample2D` (`downsamplers.0`).
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub downsamplers: Option<Vec<Downsample2D<B>>>,
}

impl<B: Backend> DownEncoderBlock2D<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        num_layers: usize,
        resnet_eps: f64,
        resnet_act_fn: Activation,
        resnet_groups: usize,
        add_downsample: bool,
        downsample_padding: usize,
        device: &B::Device,
    ) -> Self {
        let resnets = (0..num_layers)
            .map(|i| {
                let c_in = if i == 0 { in_channels } else { out_channels };
                resnet(c_in, out_channels, resnet_groups, resnet_eps, resnet_act_fn, 1.0, device)
            })
            .collect();
        let downsamplers = add_downsample
            .then(|| vec![Downsample2D::new(out_channels, true, Some(out_channels), downsample_padding, device)]);
        DownEncoderBlock2D { resnets, downsamplers }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = x;
        for resnet in &self.resnets {
            x = resnet.forward(x, None);
        }
        for down in self.downsamplers.iter().flatten() {
            x = down.forward(x);
        }
        x
    }
}

/// `UpDecoderBlock2D`: `num_layers` resnets, then an optional `Upsample2D` (`upsamplers.0`).
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub upsamplers: Option<Vec<Upsample2D<B>>>,
}

impl<B: Backend> UpDecoderBlock2D<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        num_layers: usize,
        resnet_eps: f64,
        resnet_act_fn: Activation,
        resnet_groups: usize,
        add_upsample: bool,
        device: &B::Device,
    ) -> Self {
        let resnets = (0..num_layers)
            .map(|i| {
                let c_in = if i == 0 { in_channels } else { out_channels };
                resnet(c_in, out_channels, resnet_groups, resnet_eps, resnet_act_fn, 1.0, device)
            })
            .collect();
        let upsamplers = add_upsample.then(|| vec![Upsample2D::new(out_channels, true, Some(out_channels), device)]);
        UpDecoderBlock2D { resnets, upsamplers }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = x;
        for resnet in &self.resnets {
            x = resnet.forward(x, None);
        }
        for up in self.upsamplers.iter().flatten() {
            x = up.forward(x, None);
        }
        x
    }
}

/// `UNetMidBlock2D`: `resnets.0`, then per layer an optional `Attention` (`attentions.i`, absent
/// with `add_attention=False`) and `resnets.{i+1}`.
#[derive(Module, Debug)]
pub struct UNetMidBlock2D<B: Backend> {
    pub attentions: Vec<Option<Attention<B>>>,
    pub resnets: Vec<ResnetBlock2D<B>>,
}

impl<B: Backend> UNetMidBlock2D<B> {
    /// As diffusers builds it with `resnet_time_scale_shift="default"`, `temb_channels=None`:
    /// attention heads `in_channels / attention_head_dim`, group norm with `resnet_groups`
    /// groups and `resnet_eps`, residual connection, `rescale_output_factor=output_scale_factor`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        num_layers: usize,
        resnet_eps: f64,
        resnet_act_fn: Activation,
        resnet_groups: usize,
        add_attention: bool,
        attention_head_dim: usize,
        output_scale_factor: f64,
        device: &B::Device,
    ) -> Self {
        let c = in_channels;
        let mut resnets = vec![resnet(c, c, resnet_groups, resnet_eps, resnet_act_fn, output_scale_factor, device)];
        let mut attentions = Vec::with_capacity(num_layers);
        for _ in 0..num_layers {
            attentions.push(add_attention.then(|| {
                AttentionConfig {
                    heads: c / attention_head_dim,
                    dim_head: attention_head_dim,
                    rescale_output_factor: output_scale_factor,
                    eps: resnet_eps,
                    norm_num_groups: Some(resnet_groups),
                    residual_connection: true,
                    bias: true,
                    ..AttentionConfig::new(c)
                }
                .init(device)
            }));
            resnets.push(resnet(c, c, resnet_groups, resnet_eps, resnet_act_fn, output_scale_factor, device));
        }
        UNetMidBlock2D { attentions, resnets }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            if let Some(attn) = attn {
                x = attn.forward_spatial(x, None);
            }
            x = resnet.forward(x, None);
        }
        x
    }
}
