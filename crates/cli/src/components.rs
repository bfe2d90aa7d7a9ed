//! Component tools: one component of a diffusers checkpoint on the user's own inputs, with
//! `.npy` (float32, C order) in and out, so results can be compared with Python directly.
//! The interface is fixed (outside checks use it):
//! `reel tokenize --model M -- PROMPT...`,
//! `reel encode-prompt --model M --output OUT.npy -- PROMPT...`,
//! `reel vae decode --model M --input Z.npy --output OUT.npy`,
//! `reel vae encode --model M --input X.npy --output OUT.npy`,
//! `reel unet --model M --sample S.npy --timestep T --encoder-hidden-states E.npy --output OUT.npy`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::DType;
use clap::{Args, Subcommand};
use reel_core::{npy, HubSettings, ModelRepo, ModelSource};

use crate::backend::{dispatch, DeviceArgs, OnBackend};

/// Which checkpoint to read.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A diffusers pipeline folder (the one holding model_index.json) or a Hugging Face repo id.
    #[arg(long)]
    pub model: String,
    /// Hub revision (branch, tag or commit) for a repo id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Weights variant, e.g. `fp16` for `*.fp16.safetensors`.
    #[arg(long)]
    pub variant: Option<String>,
}

impl ModelArgs {
    pub fn open(&self) -> Result<ModelRepo> {
        let source = ModelSource::parse(&self.model, self.revision.as_deref());
        source.open(&HubSettings::from_env()).with_context(|| format!("opening model `{source}`"))
    }
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompts (after `--`).
    #[arg(last = true, required = true)]
    pub prompts: Vec<String>,
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let repo = args.model.open()?;
    let tok = reel_clip::ClipTokenizer::load(&repo, "tokenizer")?;
    let mut out = String::new();
    for p in &args.prompts {
        out += &serde_json::to_string(&tok.encode(p)?)?;
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

#[derive(Args, Debug)]
pub struct EncodePromptArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Where to write the states, shape (n, 77, hidden), float32.
    #[arg(long)]
    pub output: PathBuf,
    /// Use the states `clip_skip` layers before the last (then final_layer_norm), as diffusers.
    #[arg(long)]
    pub clip_skip: Option<usize>,
    /// The prompts (after `--`).
    #[arg(last = true, required = true)]
    pub prompts: Vec<String>,
}

pub fn encode_prompt(args: EncodePromptArgs) -> Result<()> {
    let device = args.device.clone();
    dispatch(&device, args)
}

impl OnBackend for EncodePromptArgs {
    fn run<B: Backend>(self, device: B::Device, dtype: Option<DType>) -> Result<()> {
        let repo = self.model.open()?;
        let tok = reel_clip::ClipTokenizer::load(&repo, "tokenizer")?;
        for p in &self.prompts {
            if tok.is_truncated(p)? {
                log::warn!("prompt truncated to {} tokens: {p:?}", tok.model_max_length);
            }
        }
        let ids = tok.encode_batch(&self.prompts)?;
        let enc = reel_clip::TextEncoder::<B>::load(&repo, "text_encoder", self.model.variant.as_deref(), &device, dtype)?;
        let states = enc.encode(&ids, self.clip_skip, &device)?;
        let arr = npy::Array::from_tensor(states)?;
        npy::write(&self.output, &arr.shape, &arr.data)?;
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum VaeCommand {
    /// Decode latents Z (n, latent_channels, h, w), as given to diffusers' `vae.decode` (no
    /// scaling applied), into the raw `.sample` (n, 3, H, W), not clamped.
    Decode(VaeArgs),
    /// Encode images X (n, 3, H, W) in [-1, 1] into the posterior mean (n, latent_channels,
    /// h, w), unscaled.
    Encode(VaeArgs),
}

#[derive(Args, Debug)]
pub struct VaeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Input .npy (float32).
    #[arg(long)]
    pub input: PathBuf,
    /// Output .npy (float32).
    #[arg(long)]
    pub output: PathBuf,
    /// Process this many images at a time (diffusers' VAE slicing uses 1).
    #[arg(long)]
    pub slice: Option<usize>,
    /// Tiled encode / decode for large frames (diffusers' `enable_tiling`).
    #[arg(long)]
    pub tiling: bool,
}

struct VaeJob {
    args: VaeArgs,
    decode: bool,
}

pub fn vae(command: VaeCommand) -> Result<()> {
    let (args, decode) = match command {
        VaeCommand::Decode(a) => (a, true),
        VaeCommand::Encode(a) => (a, false),
    };
    let device = args.device.clone();
    dispatch(&device, VaeJob { args, decode })
}

impl OnBackend for VaeJob {
    fn run<B: Backend>(self, device: B::Device, dtype: Option<DType>) -> Result<()> {
        let a = &self.args;
        let input = npy::read(&a.input)?;
        let repo = a.model.open()?;
        let mut vae = reel_vae::Vae::<B>::load(&repo, "vae", a.model.variant.as_deref(), &device, dtype)?;
        if let Some(n) = a.slice {
            vae.enable_slicing(n)?;
        }
        if a.tiling {
            vae.enable_tiling(None);
        }
        let what = |e: reel_core::Error| anyhow::anyhow!("{}: {e}", a.input.display());
        let y = if self.decode {
            vae.decode_array(&input).map_err(what)?
        } else {
            vae.encode_array(&input).map_err(what)?.mean
        };
        let arr = npy::Array::from_tensor(y)?;
        npy::write(&a.output, &arr.shape, &arr.data)?;
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct UnetArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Noisy latents (b, c, f, h, w), float32 .npy.
    #[arg(long)]
    pub sample: PathBuf,
    /// The timestep: an integer (e.g. 999) or a float (e.g. 12.5).
    #[arg(long, allow_hyphen_values = true)]
    pub timestep: String,
    /// Text states (b, 77, cross_attention_dim), float32 .npy.
    #[arg(long)]
    pub encoder_hidden_states: PathBuf,
    /// Where to write the predicted `.sample` (b, c, f, h, w).
    #[arg(long)]
    pub output: PathBuf,
    /// Feed-forward chunking as diffusers' `enable_forward_chunking(chunk_size, dim=1)`.
    #[arg(long)]
    pub forward_chunk: Option<usize>,
}

pub fn unet(args: UnetArgs) -> Result<()> {
    let device = args.device.clone();
    dispatch(&device, args)
}

impl OnBackend for UnetArgs {
    fn run<B: Backend>(self, device: B::Device, dtype: Option<DType>) -> Result<()> {
        let timestep: reel_unet3d::Timestep = self.timestep.parse()?;
        let sample = npy::read(&self.sample)?;
        let ehs = npy::read(&self.encoder_hidden_states)?;
        let repo = self.model.open()?;
        let mut unet = reel_unet3d::Unet3d::<B>::load(&repo, "unet", self.model.variant.as_deref(), &device, dtype)?;
        if let Some(chunk) = self.forward_chunk {
            unet.enable_forward_chunking(Some(chunk), 1)?;
        }
        let out = unet.forward_arrays(&sample, timestep, &ehs)?;
        npy::write(&self.output, &out.shape, &out.data)?;
        Ok(())
    }
}
