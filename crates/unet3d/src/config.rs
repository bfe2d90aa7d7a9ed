//! `unet/config.json`: diffusers' `UNet3DConditionModel` config, field for field
//! (`diffusers/models/unets/unet_3d_condition.py`, `UNet3DConditionModel.__init__`, defaults
//! included), and the checks the model build relies on.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The down-block kinds `down_block_types` may name.
pub const DOWN_BLOCK_TYPES: [&str; 2] = ["CrossAttnDownBlock3D", "DownBlock3D"];
/// The up-block kinds `up_block_types` may name.
pub const UP_BLOCK_TYPES: [&str; 2] = ["CrossAttnUpBlock3D", "UpBlock3D"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet3DConditionConfig {
    /// Not used by the model (diffusers keeps it for the pipelines' default size).
    pub sample_size: Option<Value>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    /// `None` (JSON `null`) is refused: diffusers' resnets cannot be built without groups.
    pub norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    /// The head *size* in the 3D blocks (`heads = channels / attention_head_dim`), and the head
    /// size of `transformer_in` (which has 8 heads). diffusers' misnomer, kept. An int; a
    /// per-block list is refused (diffusers' `transformer_in` cannot be built from one).
    pub attention_head_dim: Value,
    /// Must be `null`: diffusers raises `NotImplementedError` for it.
    pub num_attention_heads: Option<Value>,
    /// `time_embedding.cond_proj` (a `timestep_cond` projection), unused by the pipelines.
    pub time_cond_proj_dim: Option<usize>,
}

impl Default for UNet3DConditionConfig {
    fn default() -> Self {
        UNet3DConditionConfig {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            down_block_types: [
                "CrossAttnDownBlock3D",
                "CrossAttnDownBlock3D",
                "CrossAttnDownBlock3D",
                "DownBlock3D",
            ]
            .map(String::from)
            .to_vec(),
            up_block_types: [
                "UpBlock3D",
                "CrossAttnUpBlock3D",
                "CrossAttnUpBlock3D",
                "CrossAttnUpBlock3D",
            ]
            .map(String::from)
            .to_vec(),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: 1024,
            attention_head_dim: Value::from(64),
            num_attention_heads: None,
            time_cond_proj_dim: None,
        }
    }
}

impl UNet3DConditionConfig {
    /// `attention_head_dim` as an int (after [`Self::validate`] succeeded).
    pub fn head_dim(&self) -> usize {
        self.attention_head_dim.as_u64().unwrap_or(0) as usize
    }

    /// `norm_num_groups` (after [`Self::validate`] succeeded).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(0)
    }

    /// The time-embedding width, `4 * block_out_channels[0]`.
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Whether down block `i` has attentions.
    pub fn down_has_attention(&self, i: usize) -> bool {
        self.down_block_types[i] == "CrossAttnDownBlock3D"
    }

    /// Whether up block `i` has attentions.
    pub fn up_has_attention(&self, i: usize) -> bool {
        self.up_block_types[i] == "CrossAttnUpBlock3D"
    }

    /// The latent size factor between the input and the innermost level, `2^(levels - 1)`.
    pub fn upsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks what the model build relies on (what diffusers would raise on, or where its
    /// forward would fail); the message is for an `InvalidConfig` error.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("block_out_channels is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        for t in &self.down_block_types {
            if !DOWN_BLOCK_TYPES.contains(&t.as_str()) {
                return Err(format!(
                    "unsupported down block type {t:?} (reel knows {DOWN_BLOCK_TYPES:?})"
                ));
            }
        }
        for t in &self.up_block_types {
            if !UP_BLOCK_TYPES.contains(&t.as_str()) {
                return Err(format!(
                    "unsupported up block type {t:?} (reel knows {UP_BLOCK_TYPES:?})"
                ));
            }
        }
        if self
            .num_attention_heads
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err("num_attention_heads must be null for UNet3DConditionModel (diffusers raises NotImplementedError; use attention_head_dim)".into());
        }
        let head_dim = match self.attention_head_dim.as_u64() {
            Some(d) if d > 0 => d as usize,
            _ => {
                return Err(format!(
                    "attention_head_dim must be a positive integer, got {} (per-block lists cannot build diffusers' transformer_in)",
                    self.attention_head_dim
                ))
            }
        };
        let groups = match self.norm_num_groups {
            Some(g) if g > 0 => g,
            _ => return Err("norm_num_groups must be a positive integer (null is not supported: diffusers' 3D blocks need groups)".into()),
        };
        if self.in_channels == 0 || self.out_channels == 0 || self.cross_attention_dim == 0 {
            return Err(
                "in_channels, out_channels and cross_attention_dim must be positive".into(),
            );
        }
        if self.layers_per_block == 0 {
            return Err("layers_per_block must be at least 1".into());
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || c % groups != 0 {
                return Err(format!("block_out_channels[{i}] = {c} is not a positive multiple of norm_num_groups {groups}"));
            }
            let attends =
                self.down_has_attention(i) || self.up_has_attention(n - 1 - i) || i == n - 1;
            if attends && c % head_dim != 0 {
                return Err(format!(
                    "block_out_channels[{i}] = {c} is not a multiple of attention_head_dim {head_dim} (the head size), which its attention layers need"
                ));
            }
        }
        if !self.mid_block_scale_factor.is_finite() || self.mid_block_scale_factor == 0.0 {
            return Err(format!(
                "mid_block_scale_factor must be finite and non-zero, got {}",
                self.mid_block_scale_factor
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(format!(
                "norm_eps must be a non-negative number, got {}",
                self.norm_eps
            ));
        }
        Ok(())
    }
}
