//! `Transformer2DModel` on continuous input with linear projections, mirroring
//! `diffusers/models/transformers/transformer_2d.py` (`use_linear_projection=True`, as the 3D
//! blocks build it): `norm` (GroupNorm, eps 1e-6 hard-coded) → tokens `(n, h·w, c)` →
//! `proj_in` (Linear) → `transformer_blocks` (self-attention, cross-attention on the text states,
//! GEGLU feed-forward) → `proj_out` (Linear) → `(n, c, h, w)` + input.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use reel_core::kernels::contiguous;
use reel_core::nn::{GroupNorm, Linear};

use crate::attention::{BasicTransformerBlock, BasicTransformerBlockConfig, FeedForwardChunking};

/// diffusers' `Transformer2DModel` (`norm`, `proj_in`, `transformer_blocks`, `proj_out`).
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Linear<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: Linear<B>,
}

impl<B: Backend> Transformer2DModel<B> {
    /// `Transformer2DModel(num_attention_heads, attention_head_dim, in_channels, num_layers=1,
    /// cross_attention_dim, norm_num_groups, use_linear_projection=True)`; inner width
    /// `heads · head_dim`.
    pub fn new(
        num_attention_heads: usize,
        attention_head_dim: usize,
        in_channels: usize,
        num_layers: usize,
        cross_attention_dim: Option<usize>,
        norm_num_groups: usize,
        device: &B::Device,
    ) -> Self {
        let inner = num_attention_heads * attention_head_dim;
        let mut block =
            BasicTransformerBlockConfig::new(inner, num_attention_heads, attention_head_dim);
        block.cross_attention_dim = cross_attention_dim;
        Transformer2DModel {
            norm: GroupNorm::new(norm_num_groups, in_channels, 1e-6, device),
            proj_in: Linear::new(in_channels, inner, true, device),
            transformer_blocks: (0..num_layers).map(|_| block.init(device)).collect(),
            proj_out: Linear::new(inner, in_channels, true, device),
        }
    }

    /// `(n, c, h, w)` and text states `(n, seq, cross_attention_dim)` → `(n, c, h, w)`.
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 4>,
        encoder_hidden_states: Option<Tensor<B, 3>>,
    ) -> Tensor<B, 4> {
        let [n, c, h, w] = hidden_states.dims();
        let residual = hidden_states.clone();
        let x = self.norm.forward(hidden_states);
        let x = contiguous(x.reshape([n, c, h * w]).swap_dims(1, 2));
        let mut x = self.proj_in.forward(x);
        for block in &self.transformer_blocks {
            x = block.forward(x, encoder_hidden_states.clone());
        }
        let x = self.proj_out.forward(x);
        contiguous(x.swap_dims(1, 2)).reshape([n, c, h, w]) + residual
    }

    pub fn set_chunk_feed_forward(&mut self, chunking: Option<FeedForwardChunking>) {
        for b in &mut self.transformer_blocks {
            b.chunking = chunking;
        }
    }
}
