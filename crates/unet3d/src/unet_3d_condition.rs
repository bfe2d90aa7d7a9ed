//! `UNet3DConditionModel`, mirroring `diffusers/models/unets/unet_3d_condition.py`: the
//! text-to-video denoiser of ModelScope text-to-video-ms-1.7b and Zeroscope.
//!
//! `time_proj` (`Timesteps(C, flip_sin_to_cos=True, shift=0)`) → `time_embedding`; the sample
//! `(b, c, f, h, w)` becomes `(b·f, c, h, w)` frames, the time embedding and the text states are
//! repeated per frame; `conv_in` → `transformer_in` (temporal, 8 heads × `attention_head_dim`) →
//! down blocks → mid block → up blocks (skips popped in reverse, explicit upsample sizes when
//! `h` or `w` is not a multiple of `2^(levels-1)`) → `conv_norm_out` → SiLU → `conv_out` → back
//! to `(b, c_out, f, h, w)`. Inputs are checked in [`crate::Unet3d`]; this module assumes them
//! valid.

use burn::module::Module;
use burn::tensor::{activation, backend::Backend, Tensor};
use reel_core::nn::{Activation, Conv2d, GroupNorm};

use crate::attention::FeedForwardChunking;
use crate::config::UNet3DConditionConfig;
use crate::embeddings::{TimestepEmbedding, Timesteps};
use crate::trace::Trace;
use crate::transformer_temporal::TransformerTemporalModel;
use crate::unet_3d_blocks::{BlockSettings, DownBlock3D, UNetMidBlock3DCrossAttn, UpBlock3D};

/// diffusers' `UNet3DConditionModel` (parameter paths equal the checkpoint keys).
#[derive(Module, Debug)]
pub struct UNet3DConditionModel<B: Backend> {
    pub conv_in: Conv2d<B>,
    #[module(skip)]
    pub time_proj: Timesteps,
    pub time_embedding: TimestepEmbedding<B>,
    pub transformer_in: TransformerTemporalModel<B>,
    pub down_blocks: Vec<DownBlock3D<B>>,
    pub mid_block: UNetMidBlock3DCrossAttn<B>,
    pub up_blocks: Vec<UpBlock3D<B>>,
    /// `None` only without `norm_num_groups` (which [`UNet3DConditionConfig::validate`] refuses).
    pub conv_norm_out: Option<GroupNorm<B>>,
    pub conv_out: Conv2d<B>,
    /// `act_fn`: the activation every resnet applies to the time embedding (applied once a
    /// forward pass for all of them, [`reel_core::blocks::ResnetBlock2D::forward_activated`]).
    #[module(skip)]
    pub resnet_act: Activation,
}

impl<B: Backend> UNet3DConditionModel<B> {
    /// Builds the module tree from a validated config (parameters unallocated until loaded).
    pub fn new(config: &UNet3DConditionConfig, act: Activation, device: &B::Device) -> Self {
        let ch = &config.block_out_channels;
        let n = ch.len();
        let c0 = ch[0];
        let time_embed_dim = config.time_embed_dim();
        let s = BlockSettings {
            temb_channels: time_embed_dim,
            resnet_eps: config.norm_eps,
            resnet_act: act,
            groups: config.groups(),
            head_dim: config.head_dim(),
            cross_attention_dim: config.cross_attention_dim,
        };
        let layers = config.layers_per_block;

        let mut down_blocks = Vec::with_capacity(n);
        let mut output_channel = c0;
        for (i, &c) in ch.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = c;
            let is_final = i == n - 1;
            down_blocks.push(DownBlock3D::new(
                &s,
                config.down_has_attention(i),
                layers,
                input_channel,
                output_channel,
                !is_final,
                config.downsample_padding,
                device,
            ));
        }
        let mid_block =
            UNetMidBlock3DCrossAttn::new(&s, ch[n - 1], 1, config.mid_block_scale_factor, device);

        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut output_channel = reversed[0];
        for i in 0..n {
            let is_final = i == n - 1;
            let prev_output_channel = output_channel;
            output_channel = reversed[i];
            let input_channel = reversed[(i + 1).min(n - 1)];
            up_blocks.push(UpBlock3D::new(
                &s,
                config.up_has_attention(i),
                layers + 1,
                input_channel,
                output_channel,
                prev_output_channel,
                !is_final,
                device,
            ));
        }

        UNet3DConditionModel {
            conv_in: Conv2d::new(config.in_channels, c0, 3, 1, 1, device),
            time_proj: Timesteps::new(c0, true, 0.0),
            time_embedding: TimestepEmbedding::new(
                c0,
                time_embed_dim,
                act,
                config.time_cond_proj_dim,
                device,
            ),
            transformer_in: TransformerTemporalModel::new(
                8,
                config.head_dim(),
                c0,
                1,
                config.groups(),
                device,
            ),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: config
                .norm_num_groups
                .map(|g| GroupNorm::new(g, c0, config.norm_eps, device)),
            conv_out: Conv2d::new(c0, config.out_channels, 3, 1, 1, device),
            resnet_act: act,
        }
    }

    /// The forward pass on checked inputs: `sample (b, c, f, h, w)`, `timesteps` (one f32 per
    /// batch item), `encoder_hidden_states (b, seq, cross_attention_dim)`, all in the model's
    /// dtype → `(b, out_channels, f, h, w)`. Block outputs go to `trace`.
    pub fn forward(
        &self,
        sample: Tensor<B, 5>,
        timesteps: &[f32],
        encoder_hidden_states: Tensor<B, 3>,
        trace: &mut Trace<B>,
    ) -> Tensor<B, 5> {
        let [b, c, f, h, w] = sample.dims();
        let device = sample.device();
        let dtype = sample.dtype();
        let overall_up_factor = 1usize << (self.up_blocks.len() - 1);
        let forward_upsample_size = h % overall_up_factor != 0 || w % overall_up_factor != 0;

        // time embedding, repeated per frame (repeat_interleave on the batch axis)
        let t_emb = self.time_proj.forward::<B>(timesteps, &device);
        trace.record("", "time_proj", &t_emb);
        let t_emb = reel_core::nn::to_dtype(t_emb, dtype);
        let emb = self.time_embedding.forward(t_emb);
        trace.record("", "time_embedding", &emb);
        let e = emb.dims()[1];
        // Every resnet starts with `act(emb)`: computed here once, on the b rows, not per resnet
        // on the repeated b·f rows (the same values).
        let emb = self.resnet_act.forward(emb);
        let emb = emb
            .unsqueeze_dim::<3>(1)
            .repeat_dim(1, f)
            .reshape([b * f, e]);
        let [_, seq, d] = encoder_hidden_states.dims();
        let ehs = encoder_hidden_states
            .unsqueeze_dim::<4>(1)
            .repeat_dim(1, f)
            .reshape([b * f, seq, d]);

        // (b, c, f, h, w) → (b·f, c, h, w)
        let x = sample.swap_dims(1, 2).reshape([b * f, c, h, w]);
        let x = self.conv_in.forward(x);
        trace.record("", "conv_in", &x);
        let x = self.transformer_in.forward(x, f);
        trace.record("", "transformer_in", &x);

        let mut res_samples = vec![x.clone()];
        let mut x = x;
        for (i, block) in self.down_blocks.iter().enumerate() {
            let (out, states) = block.forward(x, &emb, &ehs, f, trace, &format!("down_blocks.{i}"));
            x = out;
            res_samples.extend(states);
        }
        let mut x = self.mid_block.forward(x, &emb, &ehs, f, trace, "mid_block");

        let mut upsample_size = None;
        let n_up = self.up_blocks.len();
        for (i, block) in self.up_blocks.iter().enumerate() {
            let skips = res_samples.split_off(res_samples.len() - block.resnets.len());
            if i != n_up - 1 && forward_upsample_size {
                let [_, _, sh, sw] = res_samples
                    .last()
                    .expect("a skip state below each upsampler")
                    .dims();
                upsample_size = Some([sh, sw]);
            }
            x = block.forward(
                x,
                skips,
                &emb,
                &ehs,
                upsample_size,
                f,
                trace,
                &format!("up_blocks.{i}"),
            );
        }

        if let Some(norm) = &self.conv_norm_out {
            x = norm.forward(x);
            trace.record("", "conv_norm_out", &x);
            x = activation::silu(x);
        }
        let x = self.conv_out.forward(x);
        trace.record("", "conv_out", &x);
        let c_out = x.dims()[1];
        x.reshape([b, f, c_out, h, w]).swap_dims(1, 2)
    }

    /// diffusers' `enable_forward_chunking(chunk_size, dim)` / `disable_forward_chunking()`
    /// (`None`) on every transformer block.
    pub fn set_chunk_feed_forward(&mut self, chunking: Option<FeedForwardChunking>) {
        self.transformer_in.set_chunk_feed_forward(chunking);
        self.down_blocks
            .iter_mut()
            .for_each(|b| b.set_chunk_feed_forward(chunking));
        self.mid_block.set_chunk_feed_forward(chunking);
        self.up_blocks
            .iter_mut()
            .for_each(|b| b.set_chunk_feed_forward(chunking));
    }
}
