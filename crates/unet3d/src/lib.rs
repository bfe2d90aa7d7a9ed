//! reel-unet3d: diffusers' `UNet3DConditionModel`, the denoiser of ModelScope
//! text-to-video-ms-1.7b and Zeroscope, configured from `unet/config.json` and loaded by
//! diffusers' key names (no remap table).
//!
//! - [`Unet3d`]: load (variants, shards, f16/bf16/f32 weights), [`Unet3d::forward`] with input
//!   checks (bad input is an [`reel_core::Error::Input`], never a panic), feed-forward chunking.
//! - [`Timestep`]: an integer or float timestep, or one per batch item.
//! - [`UNet3DConditionConfig`]: `unet/config.json` field for field.
//!
//! One file per diffusers file: [`unet_3d_condition`] (`models/unets/unet_3d_condition.py`),
//! [`unet_3d_blocks`] (`models/unets/unet_3d_blocks.py`), [`transformer_2d`],
//! [`transformer_temporal`] (`models/transformers/`), [`attention`] (`models/attention.py`),
//! [`activations`] (`GEGLU`), [`resnet`] (`TemporalConvLayer`), [`embeddings`] (`Timesteps`,
//! `TimestepEmbedding`); `ResnetBlock2D`, `Downsample2D`, `Upsample2D` and `Attention` are the
//! shared ones in `reel_core::blocks`. [`trace`] records block outputs for the parity tests.

pub mod activations;
pub mod attention;
pub mod config;
pub mod embeddings;
pub mod resnet;
pub mod trace;
pub mod transformer_2d;
pub mod transformer_temporal;
pub mod unet_3d_blocks;
pub mod unet_3d_condition;

use std::str::FromStr;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use reel_core::blocks::Downsample2D;
use reel_core::config::{join, load_component_config};
use reel_core::nn::{to_dtype, Activation};
use reel_core::npy::Array;
use reel_core::weights::Weights;
use reel_core::{Error, ModelRepo, Result};

pub use attention::FeedForwardChunking;
pub use config::UNet3DConditionConfig;
pub use trace::Trace;
pub use unet_3d_condition::UNet3DConditionModel;

/// The diffusion timestep given to the UNet: diffusers accepts an int, a float, or a tensor with
/// one value per batch item. All become f32 before the sinusoidal embedding
/// (`timesteps.float()`), so an integer and the equal float give the same result.
#[derive(Debug, Clone, PartialEq)]
pub enum Timestep {
    Int(i64),
    Float(f64),
    /// One per batch item (or a single one, broadcast).
    PerItem(Vec<f64>),
}

impl From<i64> for Timestep {
    fn from(t: i64) -> Self {
        Timestep::Int(t)
    }
}

impl From<i32> for Timestep {
    fn from(t: i32) -> Self {
        Timestep::Int(t as i64)
    }
}

impl From<u32> for Timestep {
    fn from(t: u32) -> Self {
        Timestep::Int(t as i64)
    }
}

impl From<f64> for Timestep {
    fn from(t: f64) -> Self {
        Timestep::Float(t)
    }
}

impl From<f32> for Timestep {
    fn from(t: f32) -> Self {
        Timestep::Float(t as f64)
    }
}

impl From<Vec<f64>> for Timestep {
    fn from(t: Vec<f64>) -> Self {
        Timestep::PerItem(t)
    }
}

impl FromStr for Timestep {
    type Err = Error;

    /// `"999"` → `Int`, `"12.5"` / `"1e3"` → `Float`; anything else is an input error.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Timestep::Int(i));
        }
        match s.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Timestep::Float(f)),
            _ => Err(Error::input(format!("timestep {s:?} is not a finite number (give an integer such as 999 or a float such as 12.5)"))),
        }
    }
}

impl Timestep {
    /// The f32 timestep of each of `batch` items, checked.
    pub fn per_item(&self, batch: usize) -> Result<Vec<f32>> {
        let values: Vec<f64> = match self {
            Timestep::Int(i) => vec![*i as f64; batch],
            Timestep::Float(f) => vec![*f; batch],
            Timestep::PerItem(v) if v.len() == batch => v.clone(),
            Timestep::PerItem(v) if v.len() == 1 => vec![v[0]; batch],
            Timestep::PerItem(v) => {
                return Err(Error::input(format!(
                    "{} timesteps given for a batch of {batch}: give one, or one per batch item",
                    v.len()
                )))
            }
        };
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::input(format!(
                "timestep {bad} is not a finite number"
            )));
        }
        Ok(values.into_iter().map(|v| v as f32).collect())
    }
}

/// A loaded `UNet3DConditionModel` with its config. Inputs are cast to the weights' dtype, as the
/// diffusers pipelines do; the output is in that dtype.
#[derive(Debug)]
pub struct Unet3d<B: Backend> {
    pub config: UNet3DConditionConfig,
    pub model: UNet3DConditionModel<B>,
    device: B::Device,
    dtype: DType,
    chunking: Option<FeedForwardChunking>,
}

impl<B: Backend> Unet3d<B> {
    /// Loads `<subfolder>/config.json` (`_class_name` `UNet3DConditionModel`) and its weights
    /// (`diffusion_pytorch_model[.<variant>].safetensors`, possibly sharded), converted to `dtype`
    /// (the device's default float type when `None`).
    pub fn load(
        repo: &ModelRepo,
        subfolder: &str,
        variant: Option<&str>,
        device: &B::Device,
        dtype: Option<DType>,
    ) -> Result<Self> {
        let config: UNet3DConditionConfig =
            load_component_config(repo, subfolder, &["UNet3DConditionModel"])?;
        let config_path = || repo.describe(&join(subfolder, "config.json"));
        let model = Self::build(&config, device).map_err(|message| Error::InvalidConfig {
            path: config_path(),
            message,
        })?;
        let weights = Weights::open_component(repo, subfolder, "diffusion_pytorch_model", variant)?;
        let model = weights.load_module(model, device, dtype)?;
        Ok(Self::from_module(config, model, device))
    }

    /// The module tree of `config`, unloaded (parameters allocate only when used or loaded).
    /// The message is for an `InvalidConfig` error.
    pub fn build(
        config: &UNet3DConditionConfig,
        device: &B::Device,
    ) -> Result<UNet3DConditionModel<B>, String> {
        config.validate()?;
        let act = Activation::from_name(&config.act_fn).ok_or_else(|| {
            format!(
                "unsupported act_fn {:?} (reel knows silu/swish, gelu, relu, ...)",
                config.act_fn
            )
        })?;
        Ok(UNet3DConditionModel::new(config, act, device))
    }

    /// Wraps an already loaded module (its dtype is read from `conv_in.weight`).
    pub fn from_module(
        config: UNet3DConditionConfig,
        model: UNet3DConditionModel<B>,
        device: &B::Device,
    ) -> Self {
        let dtype = model.conv_in.weight.val().dtype();
        Unet3d {
            config,
            model,
            device: device.clone(),
            dtype,
            chunking: None,
        }
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The dtype the weights were loaded in (inputs are cast to it).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// diffusers' `enable_forward_chunking(chunk_size, dim)`: every transformer block's
    /// feed-forward runs on slices of `chunk_size` (`None`: 1, as diffusers) along `dim`
    /// (0: batch, 1: sequence). Same result, lower peak memory. A size that is not a multiple of
    /// `chunk_size` gets a shorter last slice (diffusers raises there).
    pub fn enable_forward_chunking(&mut self, chunk_size: Option<usize>, dim: usize) -> Result<()> {
        if dim > 1 {
            return Err(Error::input(format!(
                "forward chunking dim must be 0 (batch) or 1 (sequence), not {dim}"
            )));
        }
        let chunking = FeedForwardChunking {
            chunk_size: chunk_size.unwrap_or(1).max(1),
            dim,
        };
        self.model.set_chunk_feed_forward(Some(chunking));
        self.chunking = Some(chunking);
        Ok(())
    }

    pub fn disable_forward_chunking(&mut self) {
        self.model.set_chunk_feed_forward(None);
        self.chunking = None;
    }

    pub fn forward_chunking(&self) -> Option<FeedForwardChunking> {
        self.chunking
    }

    /// The `.sample` of diffusers' `UNet3DConditionModel.forward(sample, timestep,
    /// encoder_hidden_states)`: `sample (b, in_channels, f, h, w)`, `encoder_hidden_states
    /// (b, seq, cross_attention_dim)` (77 tokens for the CLIP prompts) → `(b, out_channels, f, h, w)`.
    pub fn forward(
        &self,
        sample: Tensor<B, 5>,
        timestep: impl Into<Timestep>,
        encoder_hidden_states: Tensor<B, 3>,
    ) -> Result<Tensor<B, 5>> {
        self.forward_traced(sample, timestep, encoder_hidden_states, &mut Trace::off())
    }

    /// [`Self::forward`], recording every block output in `trace`.
    pub fn forward_traced(
        &self,
        sample: Tensor<B, 5>,
        timestep: impl Into<Timestep>,
        encoder_hidden_states: Tensor<B, 3>,
        trace: &mut Trace<B>,
    ) -> Result<Tensor<B, 5>> {
        let timesteps = self.check_inputs(
            &sample.dims(),
            &timestep.into(),
            &encoder_hidden_states.dims(),
        )?;
        let (sample, ehs) = (to_dtype(sample, self.dtype), to_dtype(encoder_hidden_states, self.dtype));
        Ok(self.model.forward(sample, &timesteps, ehs, trace))
    }

    /// [`Self::forward`] on host arrays (what `reel unet` reads from `.npy` files), checking their
    /// ranks: `sample (b, c, f, h, w)`, `encoder_hidden_states (b, seq, dim)`.
    pub fn forward_arrays(
        &self,
        sample: &Array,
        timestep: impl Into<Timestep>,
        encoder_hidden_states: &Array,
    ) -> Result<Array> {
        if sample.shape.len() != 5 {
            return Err(Error::input(format!(
                "UNet sample: expected latents (batch, channels, frames, height, width), a 5-dimensional array, got shape {:?}{}",
                sample.shape,
                if sample.shape.len() == 4 { " (for a single video add the batch axis; frames are axis 2)" } else { "" }
            )));
        }
        if encoder_hidden_states.shape.len() != 3 {
            return Err(Error::input(format!(
                "UNet encoder_hidden_states: expected text states (batch, tokens, {}), a 3-dimensional array, got shape {:?}",
                self.config.cross_attention_dim, encoder_hidden_states.shape
            )));
        }
        let s = sample.to_tensor::<B, 5>(&self.device)?;
        let e = encoder_hidden_states.to_tensor::<B, 3>(&self.device)?;
        Array::from_tensor(self.forward(s, timestep, e)?)
    }

    /// Checks the inputs against the config; returns the f32 timestep per batch item.
    pub fn check_inputs(
        &self,
        sample: &[usize],
        timestep: &Timestep,
        encoder_hidden_states: &[usize],
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let &[b, c, f, h, w] = sample else {
            return Err(Error::input(format!(
                "UNet sample: expected 5 dimensions (b, c, f, h, w), got {sample:?}"
            )));
        };
        if c != cfg.in_channels {
            return Err(Error::input(format!(
                "UNet sample has {c} channels (axis 1 of (b, c, f, h, w) {sample:?}), but the UNet's in_channels is {}",
                cfg.in_channels
            )));
        }
        if b == 0 || f == 0 || h == 0 || w == 0 {
            return Err(Error::input(format!(
                "UNet sample {sample:?} (b, c, f, h, w) has an empty axis"
            )));
        }
        // spatial sizes through the downsamplers
        let (mut sh, mut sw) = (h, w);
        for (i, block) in self.model.down_blocks.iter().enumerate() {
            for down in &block.downsamplers {
                match (size_after(down, sh), size_after(down, sw)) {
                    (Some(nh), Some(nw)) => (sh, sw) = (nh, nw),
                    _ => {
                        return Err(Error::input(format!(
                            "UNet sample latents {h}×{w} are too small: down block {i} gets {sh}×{sw}, which its stride-2 convolution (downsample_padding {}) cannot reduce",
                            cfg.downsample_padding
                        )))
                    }
                }
            }
        }
        let &[eb, _seq, ed] = encoder_hidden_states else {
            return Err(Error::input(format!("UNet encoder_hidden_states: expected 3 dimensions (b, seq, dim), got {encoder_hidden_states:?}")));
        };
        if ed != cfg.cross_attention_dim {
            return Err(Error::input(format!(
                "UNet encoder_hidden_states have width {ed} (shape {encoder_hidden_states:?}), but the UNet's cross_attention_dim is {}; does the text encoder belong to this UNet?",
                cfg.cross_attention_dim
            )));
        }
        if eb != b {
            return Err(Error::input(format!(
                "UNet encoder_hidden_states have batch {eb} but the sample has batch {b} (for classifier-free guidance both hold the unconditional and conditional halves)"
            )));
        }
        if encoder_hidden_states[1] == 0 {
            return Err(Error::input("UNet encoder_hidden_states have no tokens"));
        }
        timestep.per_item(b)
    }
}

fn size_after<B: Backend>(down: &Downsample2D<B>, n: usize) -> Option<usize> {
    down.output_size(n).filter(|&m| m > 0)
}
