//! `vae/config.json`: diffusers' `AutoencoderKL` config, field for field
//! (`diffusers/models/autoencoders/autoencoder_kl.py`, `AutoencoderKL.__init__`, defaults included).

use serde::{Deserialize, Serialize};

/// `sample_size`: an int, or (in some configs) a `[height, width]` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    List(Vec<usize>),
}

impl SampleSize {
    /// The size diffusers derives the tile sizes from (`sample_size[0]` for a list).
    pub fn first(&self) -> usize {
        match self {
            SampleSize::Square(n) => *n,
            SampleSize::List(v) => v.first().copied().unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: SampleSize,
    /// Latents are `z * scaling_factor` for the diffusion model; the pipeline applies it.
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub latents_mean: Option<Vec<f64>>,
    pub latents_std: Option<Vec<f64>>,
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        AutoencoderKLConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: SampleSize::Square(32),
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl AutoencoderKLConfig {
    /// The spatial downsampling factor between frames and latents, `2^(len(block_out_channels) - 1)`
    /// (the pipelines' `vae_scale_factor`).
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks what the model build relies on; the message is for an `InvalidConfig` error.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("block_out_channels is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "down_block_types ({}) and up_block_types ({}) must have one entry per block_out_channels entry ({n})",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self.down_block_types.iter().find(|t| t.as_str() != "DownEncoderBlock2D") {
            return Err(format!("down block type {t:?} is not supported (reel implements DownEncoderBlock2D)"));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| t.as_str() != "UpDecoderBlock2D") {
            return Err(format!("up block type {t:?} is not supported (reel implements UpDecoderBlock2D)"));
        }
        let g = self.norm_num_groups;
        if g == 0 || self.block_out_channels.iter().any(|c| *c == 0 || c % g != 0) {
            return Err(format!(
                "every block_out_channels entry ({:?}) must be a positive multiple of norm_num_groups ({g})",
                self.block_out_channels
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return Err("in_channels, out_channels and latent_channels must be positive".into());
        }
        if self.layers_per_block == 0 {
            return Err("layers_per_block must be positive".into());
        }
        Ok(())
    }
}
