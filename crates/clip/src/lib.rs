//! reel-clip: the prompt side of the text-to-video pipelines.
//!
//! - [`ClipTokenizer`]: transformers 5's `CLIPTokenizer` (from `vocab.json` + `merges.txt` or
//!   `tokenizer.json`), producing 77-id rows exactly as diffusers tokenizes prompts.
//! - [`TextEncoder`]: `CLIPTextModel` loaded from a diffusers pipeline's `text_encoder/`,
//!   giving `last_hidden_state` or the `clip_skip` states diffusers uses.

pub mod config;
pub mod modeling_clip;
pub mod tokenizer;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use reel_core::config::load_component_config;
use reel_core::nn::Activation;
use reel_core::weights::Weights;
use reel_core::{Error, ModelRepo, Result};

pub use config::ClipTextConfig;
pub use modeling_clip::ClipTextModel;
pub use tokenizer::ClipTokenizer;

/// A loaded `CLIPTextModel` with its config.
#[derive(Debug)]
pub struct TextEncoder<B: Backend> {
    pub config: ClipTextConfig,
    pub model: ClipTextModel<B>,
}

impl<B: Backend> TextEncoder<B> {
    /// Loads `<subfolder>/config.json` and its safetensors weights (`model[.<variant>].safetensors`).
    pub fn load(
        repo: &ModelRepo,
        subfolder: &str,
        variant: Option<&str>,
        device: &B::Device,
        dtype: Option<DType>,
    ) -> Result<Self> {
        let config: ClipTextConfig = load_component_config(repo, subfolder, &["CLIPTextModel"])?;
        let activation = Activation::from_name(&config.hidden_act).ok_or_else(|| Error::InvalidConfig {
            path: repo.describe(&reel_core::config::join(subfolder, "config.json")),
            message: format!("unsupported hidden_act {:?} (reel knows gelu, quick_gelu, gelu_new, silu, relu)", config.hidden_act),
        })?;
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(Error::InvalidConfig {
                path: repo.describe(&reel_core::config::join(subfolder, "config.json")),
                message: format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            });
        }
        // transformers 4 checkpoints (all real hub repos) store `text_model.`-prefixed keys and
        // the `text_model.embeddings.position_ids` buffer; transformers 5 writes neither.
        let weights = Weights::open_component(repo, subfolder, "model", variant)?.rename_keys(|k| {
            let k = k.strip_prefix("text_model.").unwrap_or(k);
            (k != "embeddings.position_ids").then(|| format!("text_model.{k}"))
        })?;
        let model = ClipTextModel::new(&config, activation, device);
        let model = weights.load_module(model, device, dtype)?;
        Ok(TextEncoder { config, model })
    }

    /// Encodes `(n, s)` token ids (each row `s` ≤ max_position_embeddings) into `(n, s, hidden)`.
    pub fn encode(&self, ids: &[Vec<u32>], clip_skip: Option<usize>, device: &B::Device) -> Result<Tensor<B, 3>> {
        let n = ids.len();
        let s = ids.first().map_or(0, Vec::len);
        if n == 0 || s == 0 || ids.iter().any(|r| r.len() != s) {
            return Err(Error::input("token id rows must be non-empty and of equal length"));
        }
        if s > self.config.max_position_embeddings {
            return Err(Error::input(format!(
                "{s} tokens exceed the text encoder's {} positions",
                self.config.max_position_embeddings
            )));
        }
        if let Some(bad) = ids.iter().flatten().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(Error::input(format!(
                "token id {bad} is outside the text encoder's vocabulary of {}; do the tokenizer and text_encoder belong together?",
                self.config.vocab_size
            )));
        }
        if let Some(k) = clip_skip {
            if k > self.model.num_layers() {
                return Err(Error::input(format!(
                    "clip_skip {k} is more than the text encoder's {} layers",
                    self.model.num_layers()
                )));
            }
        }
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [n, s]), device);
        Ok(self.model.forward(ids, clip_skip))
    }
}
