//! `text_encoder/config.json`: transformers' `CLIPTextConfig`, field for field
//! (`transformers/models/clip/configuration_clip.py`, defaults included).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: Option<usize>,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub attention_dropout: f64,
    pub dropout: f64,
    pub initializer_range: f64,
    pub initializer_factor: f64,
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<serde_json::Value>,
    // transformers bookkeeping, kept so that real configs load without warnings
    pub architectures: Option<Vec<String>>,
    pub model_type: Option<String>,
    pub torch_dtype: Option<String>,
    pub dtype: Option<String>,
    pub transformers_version: Option<String>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: Some(512),
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            dropout: 0.0,
            initializer_range: 0.02,
            initializer_factor: 1.0,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(serde_json::json!(49407)),
            architectures: None,
            model_type: None,
            torch_dtype: None,
            dtype: None,
            transformers_version: None,
        }
    }
}
