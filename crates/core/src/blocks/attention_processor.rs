//! diffusers' `Attention` run the way `AttnProcessor2_0` runs it, mirroring
//! `diffusers/models/attention_processor.py` (`class Attention`, `class AttnProcessor2_0`).
//!
//! `(b, c, h, w)` inputs are flattened to `(b, h·w, c)` tokens and back; `group_norm` (when
//! built with `norm_num_groups`) normalises the channels; `to_q`, `to_k`, `to_v` project, heads
//! split as `(b, heads, seq, head_dim)`; [`scaled_dot_product_attention`] (softmax scale
//! `1/sqrt(head_dim)`, as `F.scaled_dot_product_attention` with no `scale`); `to_out.0`
//! projects back (`to_out.1` is dropout, the identity here); then the optional residual and
//! `/ rescale_output_factor`.
//!
//! Not carried over (unused by the VAE and the text-to-video UNets' attention): attention masks,
//! `cross_attention_norm`, `spatial_norm`, `qk_norm`, added K/V projections, `kv_heads`,
//! `only_cross_attention`, `scale_qk=False`. `upcast_attention` / `upcast_softmax` do not change
//! `AttnProcessor2_0` either (SDPA ignores them).

use burn::module::Module;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{backend::Backend, Tensor};

use crate::nn::{GroupNorm, Linear};

/// The constructor arguments of diffusers' `Attention` that reel uses, defaults from [`Self::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionConfig {
    pub query_dim: usize,
    /// `None`: self-attention (`query_dim`).
    pub cross_attention_dim: Option<usize>,
    pub heads: usize,
    pub dim_head: usize,
    /// Bias on `to_q`, `to_k`, `to_v`.
    pub bias: bool,
    /// Bias on `to_out.0`.
    pub out_bias: bool,
    /// `Some(groups)`: a `group_norm` over the channels before the projections.
    pub norm_num_groups: Option<usize>,
    /// The `group_norm` epsilon.
    pub eps: f64,
    pub rescale_output_factor: f64,
    pub residual_connection: bool,
    /// `None`: `query_dim`. With it, `heads = out_dim / dim_head` (as diffusers).
    pub out_dim: Option<usize>,
}

impl AttentionConfig {
    /// diffusers' defaults: `heads=8, dim_head=64, bias=False, out_bias=True, eps=1e-5`,
    /// no group norm, no residual, `rescale_output_factor=1.0`.
    pub fn new(query_dim: usize) -> Self {
        AttentionConfig {
            query_dim,
            cross_attention_dim: None,
            heads: 8,
            dim_head: 64,
            bias: false,
            out_bias: true,
            norm_num_groups: None,
            eps: 1e-5,
            rescale_output_factor: 1.0,
            residual_connection: false,
            out_dim: None,
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let inner_dim = self.out_dim.unwrap_or(self.dim_head * self.heads);
        let heads = match self.out_dim {
            Some(out_dim) => out_dim / self.dim_head,
            None => self.heads,
        };
        let out_dim = self.out_dim.unwrap_or(self.query_dim);
        let kv_dim = self.cross_attention_dim.unwrap_or(self.query_dim);
        Attention {
            group_norm: self.norm_num_groups.map(|g| GroupNorm::new(g, self.query_dim, self.eps, device)),
            to_q: Linear::new(self.query_dim, inner_dim, self.bias, device),
            to_k: Linear::new(kv_dim, inner_dim, self.bias, device),
            to_v: Linear::new(kv_dim, inner_dim, self.bias, device),
            to_out: vec![Linear::new(inner_dim, out_dim, self.out_bias, device)],
            heads,
            rescale_output_factor: self.rescale_output_factor,
            residual_connection: self.residual_connection,
        }
    }
}

/// diffusers' `Attention` (parameters `group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub group_norm: Option<GroupNorm<B>>,
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    pub to_out: Vec<Linear<B>>,
    pub heads: usize,
    pub rescale_output_factor: f64,
    pub residual_connection: bool,
}

impl<B: Backend> Attention<B> {
    /// Tokens `(b, seq, query_dim)`, optional context `(b, seq_kv, cross_attention_dim)` (self-
    /// attention when `None`) → `(b, seq, out_dim)`.
    pub fn forward(&self, hidden_states: Tensor<B, 3>, encoder_hidden_states: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let residual = hidden_states.clone();
        let out = self.attend(hidden_states, encoder_hidden_states);
        self.finish(out, residual)
    }

    /// A feature map `(b, c, h, w)` attended over its `h·w` positions (AttnProcessor2_0's
    /// `input_ndim == 4` path) → `(b, out_dim, h, w)`.
    pub fn forward_spatial(&self, hidden_states: Tensor<B, 4>, encoder_hidden_states: Option<Tensor<B, 3>>) -> Tensor<B, 4> {
        let [b, c, h, w] = hidden_states.dims();
        let residual = hidden_states.clone();
        let tokens = hidden_states.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.attend(tokens, encoder_hidden_states);
        let c_out = out.dims()[2];
        let out = out.swap_dims(1, 2).reshape([b, c_out, h, w]);
        self.finish(out, residual)
    }

    /// group_norm → projections → attention → `to_out.0`, on tokens `(b, seq, c)`.
    fn attend(&self, hidden_states: Tensor<B, 3>, encoder_hidden_states: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let hidden_states = match &self.group_norm {
            Some(norm) => norm.forward(hidden_states.swap_dims(1, 2)).swap_dims(1, 2),
            None => hidden_states,
        };
        let query = self.to_q.forward(hidden_states.clone());
        let context = encoder_hidden_states.unwrap_or(hidden_states);
        let key = self.to_k.forward(context.clone());
        let value = self.to_v.forward(context);

        let [b, _, inner] = key.dims();
        let head_dim = inner / self.heads;
        let split = |t: Tensor<B, 3>| {
            let seq = t.dims()[1];
            t.reshape([b, seq, self.heads, head_dim]).swap_dims(1, 2)
        };
        let out = scaled_dot_product_attention(split(query), split(key), split(value));
        let seq = out.dims()[2];
        let out = out.swap_dims(1, 2).reshape([b, seq, self.heads * head_dim]);
        self.to_out[0].forward(out)
    }

    fn finish<const D: usize>(&self, out: Tensor<B, D>, residual: Tensor<B, D>) -> Tensor<B, D> {
        let out = if self.residual_connection { out + residual } else { out };
        if self.rescale_output_factor == 1.0 {
            out
        } else {
            out / self.rescale_output_factor
        }
    }
}

/// `softmax(q kᵀ / sqrt(head_dim)) v` over `(b, heads, seq, head_dim)` tensors, as
/// `F.scaled_dot_product_attention(q, k, v)` with no mask, dropout or explicit scale.
///
/// Runs `burn::tensor::module::attention` with `scale: None`, so backends with a fused
/// (flash-style) kernel use it; passing a scale, softcap or bias would force the unfused path.
pub fn scaled_dot_product_attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}
