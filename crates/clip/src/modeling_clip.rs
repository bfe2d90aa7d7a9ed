//! `CLIPTextModel`: the text transformer of CLIP (Radford et al. 2021), mirroring
//! `transformers/models/clip/modeling_clip.py` (`CLIPTextModel` → `CLIPTextTransformer`):
//! token + position embeddings, pre-LayerNorm encoder layers with causal self-attention and
//! an MLP (`gelu` / `quick_gelu`), and `final_layer_norm`. Parameter paths equal the
//! checkpoint keys (`text_model.encoder.layers.0.self_attn.q_proj.weight`, ...).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use reel_core::nn::{Activation, Embedding, LayerNorm, Linear};

use crate::config::ClipTextConfig;

#[derive(Module, Debug)]
pub struct ClipTextEmbeddings<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
}

#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub num_heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// Causal self-attention over `(b, s, d)`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out_proj.forward(self.heads(x))
    }

    /// `forward(x) + residual`, the residual added in `out_proj`'s product.
    pub fn forward_add(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out_proj.forward_add(self.heads(x), residual)
    }

    /// The projections and the attention, before `out_proj`.
    fn heads(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let q = self.q_proj.forward(x.clone());
        let k = self.k_proj.forward(x.clone());
        let v = self.v_proj.forward(x);
        reel_core::blocks::multi_head_attention(q, k, v, self.num_heads, true)
    }
}

#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    #[module(skip)]
    pub activation: Activation,
}

#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub self_attn: ClipAttention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.self_attn.forward_add(self.layer_norm1.forward(x.clone()), x);
        let h = self.layer_norm2.forward(x.clone());
        self.mlp.fc2.forward_add(self.mlp.activation.forward(self.mlp.fc1.forward(h)), x)
    }
}

#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    pub layers: Vec<ClipEncoderLayer<B>>,
}

#[derive(Module, Debug)]
pub struct ClipTextTransformer<B: Backend> {
    pub embeddings: ClipTextEmbeddings<B>,
    pub encoder: ClipEncoder<B>,
    pub final_layer_norm: LayerNorm<B>,
}

/// `CLIPTextModel` (the checkpoint's keys start with `text_model.`).
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    pub text_model: ClipTextTransformer<B>,
}

impl<B: Backend> ClipTextModel<B> {
    /// Builds the module tree (parameters unallocated until loaded).
    pub fn new(config: &ClipTextConfig, activation: Activation, device: &B::Device) -> Self {
        let d = config.hidden_size;
        let layer = || ClipEncoderLayer {
            self_attn: ClipAttention {
                q_proj: Linear::new(d, d, true, device),
                k_proj: Linear::new(d, d, true, device),
                v_proj: Linear::new(d, d, true, device),
                out_proj: Linear::new(d, d, true, device),
                num_heads: config.num_attention_heads,
            },
            layer_norm1: LayerNorm::new(d, config.layer_norm_eps, device),
            mlp: ClipMlp {
                fc1: Linear::new(d, config.intermediate_size, true, device),
                fc2: Linear::new(config.intermediate_size, d, true, device),
                activation,
            },
            layer_norm2: LayerNorm::new(d, config.layer_norm_eps, device),
        };
        ClipTextModel {
            text_model: ClipTextTransformer {
                embeddings: ClipTextEmbeddings {
                    token_embedding: Embedding::new(config.vocab_size, d, device),
                    position_embedding: Embedding::new(config.max_position_embeddings, d, device),
                },
                encoder: ClipEncoder { layers: (0..config.num_hidden_layers).map(|_| layer()).collect() },
                final_layer_norm: LayerNorm::new(d, config.layer_norm_eps, device),
            },
        }
    }

    pub fn num_layers(&self) -> usize {
        self.text_model.encoder.layers.len()
    }

    /// The prompt embeddings diffusers uses: `last_hidden_state` when `clip_skip` is `None`,
    /// else `final_layer_norm(hidden_states[-(clip_skip + 1)])` (diffusers'
    /// `TextToVideoSDPipeline.encode_prompt`), i.e. the output of the layer `clip_skip`
    /// layers before the last, normalised. `ids` is `(b, s)` with `s <= max_position_embeddings`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, clip_skip: Option<usize>) -> Tensor<B, 3> {
        let tm = &self.text_model;
        let [_, s] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..s as i64, &device).unsqueeze::<2>();
        let mut x = tm.embeddings.token_embedding.forward(ids)
            + tm.embeddings.position_embedding.forward(positions);
        let n = self.num_layers() - clip_skip.unwrap_or(0).min(self.num_layers());
        for layer in &tm.encoder.layers[..n] {
            x = layer.forward(x);
        }
        tm.final_layer_norm.forward(x)
    }
}
