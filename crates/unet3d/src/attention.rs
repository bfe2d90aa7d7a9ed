//! `BasicTransformerBlock` and `FeedForward`, mirroring `diffusers/models/attention.py`
//! (`class BasicTransformerBlock` with `norm_type="layer_norm"`, `class FeedForward` with
//! `activation_fn="geglu"`, `_chunked_feed_forward`).
//!
//! `norm1 → attn1 (self) → + residual`, `norm2 → attn2 → + residual` (cross-attention on the text
//! states, or with `double_self_attention` a second self-attention), `norm3 → ff → + residual`.
//! The attentions are `reel_core::blocks::Attention`, one implementation for spatial self-,
//! cross- and temporal attention, whose math is `reel_core::blocks::scaled_dot_product_attention`
//! (a fused kernel can replace it there without touching these blocks). Dropout is the identity
//! (inference). Not carried over (unused by the text-to-video UNets): ada norms, positional
//! embeddings, `only_cross_attention`, GLIGEN, attention masks.
//!
//! Feed-forward chunking (`enable_forward_chunking(chunk_size, dim)`) runs the feed-forward on
//! slices of `chunk_size` along the batch (`dim = 0`) or sequence (`dim = 1`) axis and
//! concatenates them: the same result with the `4·dim`-wide GEGLU activations of one slice alive
//! at a time. diffusers raises when the chunked size is not a multiple of `chunk_size`; reel runs
//! a shorter last slice instead (the result is the same as unchunked).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use reel_core::blocks::{Attention, AttentionConfig};
use reel_core::nn::{LayerNorm, Linear};

use crate::activations::Geglu;

/// Feed-forward chunking: slices of `chunk_size` along `dim` (0: batch, 1: sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedForwardChunking {
    pub chunk_size: usize,
    pub dim: usize,
}

/// diffusers' `FeedForward` with GEGLU: `net.0` (GEGLU), `net.1` (dropout), `net.2` (Linear).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `nn.ModuleList([GEGLU, Dropout, Linear])`; the dropout slot holds no parameters (its
    /// name is kept so that the linear layer is `net.2`, as in the checkpoints).
    pub net: (Geglu<B>, String, Linear<B>),
}

impl<B: Backend> FeedForward<B> {
    /// `FeedForward(dim, mult=4, activation_fn="geglu", bias)`: inner width `4·dim`, out `dim`.
    pub fn new(dim: usize, bias: bool, device: &B::Device) -> Self {
        let inner = dim * 4;
        FeedForward {
            net: (
                Geglu::new(dim, inner, bias, device),
                "Dropout".into(),
                Linear::new(inner, dim, bias, device),
            ),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.net.2.forward(self.net.0.forward(x))
    }

    /// `forward(x) + residual`, the residual added in the output projection's product.
    pub fn forward_add(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        self.net.2.forward_add(self.net.0.forward(x), residual)
    }

    /// [`Self::forward`] on slices of `chunking.chunk_size` along `chunking.dim`, concatenated.
    pub fn forward_chunked(&self, x: Tensor<B, 3>, chunking: FeedForwardChunking) -> Tensor<B, 3> {
        let FeedForwardChunking { chunk_size, dim } = chunking;
        if chunk_size == 0 || x.dims()[dim] <= chunk_size {
            return self.forward(x);
        }
        let parts: Vec<Tensor<B, 3>> = x
            .split(chunk_size, dim)
            .into_iter()
            .map(|p| self.forward(p))
            .collect();
        Tensor::cat(parts, dim)
    }
}

/// diffusers' `BasicTransformerBlock` (`norm_type="layer_norm"`, GEGLU feed-forward).
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn1: Attention<B>,
    /// Present with a `cross_attention_dim` or `double_self_attention` (always, in the UNet3D).
    pub norm2: Option<LayerNorm<B>>,
    pub attn2: Option<Attention<B>>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
    #[module(skip)]
    pub chunking: Option<FeedForwardChunking>,
}

/// The constructor arguments of `BasicTransformerBlock` that the text-to-video UNets vary.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicTransformerBlockConfig {
    pub dim: usize,
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub cross_attention_dim: Option<usize>,
    pub attention_bias: bool,
    pub double_self_attention: bool,
    /// The LayerNorm epsilon (`norm_eps`, 1e-5 by default).
    pub norm_eps: f64,
}

impl BasicTransformerBlockConfig {
    pub fn new(dim: usize, num_attention_heads: usize, attention_head_dim: usize) -> Self {
        BasicTransformerBlockConfig {
            dim,
            num_attention_heads,
            attention_head_dim,
            cross_attention_dim: None,
            attention_bias: false,
            double_self_attention: false,
            norm_eps: 1e-5,
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> BasicTransformerBlock<B> {
        let attention = |cross: Option<usize>| {
            let mut c = AttentionConfig::new(self.dim);
            c.heads = self.num_attention_heads;
            c.dim_head = self.attention_head_dim;
            c.bias = self.attention_bias;
            c.out_bias = true;
            c.cross_attention_dim = cross;
            c.init(device)
        };
        let has_attn2 = self.cross_attention_dim.is_some() || self.double_self_attention;
        let attn2_cross = if self.double_self_attention {
            None
        } else {
            self.cross_attention_dim
        };
        BasicTransformerBlock {
            norm1: LayerNorm::new(self.dim, self.norm_eps, device),
            attn1: attention(None),
            norm2: has_attn2.then(|| LayerNorm::new(self.dim, self.norm_eps, device)),
            attn2: has_attn2.then(|| attention(attn2_cross)),
            norm3: LayerNorm::new(self.dim, self.norm_eps, device),
            ff: FeedForward::new(self.dim, true, device),
            chunking: None,
        }
    }
}

impl<B: Backend> BasicTransformerBlock<B> {
    /// Tokens `(n, seq, dim)`; `encoder_hidden_states` `(n, seq_kv, cross_attention_dim)` go to
    /// `attn2` (self-attention when `None`).
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        encoder_hidden_states: Option<Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        // Each residual add happens in the output projection's product when the registered
        // kernels offer it (`Linear::forward_add`).
        let norm = self.norm1.forward(hidden_states.clone());
        let mut hidden_states = self.attn1.forward_add(norm, None, hidden_states);
        if let (Some(norm2), Some(attn2)) = (&self.norm2, &self.attn2) {
            let norm = norm2.forward(hidden_states.clone());
            hidden_states = attn2.forward_add(norm, encoder_hidden_states, hidden_states);
        }
        let norm = self.norm3.forward(hidden_states.clone());
        match self.chunking {
            Some(c) => self.ff.forward_chunked(norm, c) + hidden_states,
            None => self.ff.forward_add(norm, hidden_states),
        }
    }
}
