//! `TransformerTemporalModel`, mirroring `diffusers/models/transformers/transformer_temporal.py`:
//! attention across the frames of each spatial position. `(b·f, c, h, w)` → `norm` (GroupNorm
//! over `(b, c, f, h, w)`, i.e. its groups span all frames; eps 1e-6 hard-coded) → tokens
//! `(b·h·w, f, c)` → `proj_in` → `transformer_blocks` (`double_self_attention`: `attn2` is a second
//! self-attention; no frame position embedding) → `proj_out` → back to `(b·f, c, h, w)` + input.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use reel_core::kernels::contiguous;
use reel_core::nn::{GroupNorm, Linear};

use crate::attention::{BasicTransformerBlock, BasicTransformerBlockConfig, FeedForwardChunking};

/// diffusers' `TransformerTemporalModel` (`norm`, `proj_in`, `transformer_blocks`, `proj_out`).
#[derive(Module, Debug)]
pub struct TransformerTemporalModel<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Linear<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: Linear<B>,
}

impl<B: Backend> TransformerTemporalModel<B> {
    /// `TransformerTemporalModel(num_attention_heads, attention_head_dim, in_channels,
    /// num_layers, norm_num_groups, double_self_attention=True)`; inner width `heads · head_dim`
    /// (which may differ from `in_channels`, as in `transformer_in`). The 3D blocks pass a
    /// `cross_attention_dim`, which `double_self_attention` makes unused, so it is not taken here.
    pub fn new(
        num_attention_heads: usize,
        attention_head_dim: usize,
        in_channels: usize,
        num_layers: usize,
        norm_num_groups: usize,
        device: &B::Device,
    ) -> Self {
        let inner = num_attention_heads * attention_head_dim;
        let mut block =
            BasicTransformerBlockConfig::new(inner, num_attention_heads, attention_head_dim);
        block.double_self_attention = true;
        TransformerTemporalModel {
            norm: GroupNorm::new(norm_num_groups, in_channels, 1e-6, device),
            proj_in: Linear::new(in_channels, inner, true, device),
            transformer_blocks: (0..num_layers).map(|_| block.init(device)).collect(),
            proj_out: Linear::new(inner, in_channels, true, device),
        }
    }

    /// `(b·f, c, h, w)` with `num_frames = f` → `(b·f, c, h, w)`.
    pub fn forward(&self, hidden_states: Tensor<B, 4>, num_frames: usize) -> Tensor<B, 4> {
        let [bf, c, h, w] = hidden_states.dims();
        let (b, f) = (bf / num_frames, num_frames);
        let residual = hidden_states.clone();
        // (b, f, c, h·w) → (b, c, f, h·w): the group norm's groups span all frames
        let x = contiguous(hidden_states.reshape([b, f, c, h * w]).swap_dims(1, 2));
        let x = self.norm.forward(x);
        // (b, c, f, h·w) → (b, h·w, f, c) → tokens (b·h·w, f, c)
        let x = contiguous(x.permute([0, 3, 2, 1])).reshape([b * h * w, f, c]);
        let mut x = self.proj_in.forward(x);
        for block in &self.transformer_blocks {
            x = block.forward(x, None);
        }
        let x = self.proj_out.forward(x);
        // (b·h·w, f, c) → (b, h·w, f, c) → (b, f, c, h·w) → (b·f, c, h, w)
        let x = contiguous(x.reshape([b, h * w, f, c]).permute([0, 2, 3, 1])).reshape([bf, c, h, w]);
        x + residual
    }

    pub fn set_chunk_feed_forward(&mut self, chunking: Option<FeedForwardChunking>) {
        for b in &mut self.transformer_blocks {
            b.chunking = chunking;
        }
    }
}
