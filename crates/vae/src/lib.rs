//! reel-vae: diffusers' `AutoencoderKL`, loaded unchanged from a pipeline's `vae/` folder.
//!
//! - [`Vae`]: load (variants, shards, f16/bf16 weights), [`Vae::encode`] → the posterior
//!   ([`DiagonalGaussianDistribution`]: mean, clamped logvar, std, `sample(noise)`),
//!   [`Vae::decode`] → raw frames; slicing and tiling as diffusers computes them.
//! - [`AutoencoderKLConfig`]: `vae/config.json` field for field; `scaling_factor` lives there
//!   and is the pipeline's to apply.
//!
//! Files mirror diffusers: [`autoencoder_kl`] (`models/autoencoders/autoencoder_kl.py`),
//! [`vae`] (`models/autoencoders/vae.py`), [`unet_2d_blocks`] (`models/unets/unet_2d_blocks.py`);
//! the shared blocks (`ResnetBlock2D`, `Downsample2D`, `Upsample2D`, `Attention`) are in
//! `reel_core::blocks`.

pub mod autoencoder_kl;
pub mod config;
pub mod unet_2d_blocks;
pub mod vae;

pub use autoencoder_kl::{AutoencoderKL, Tiling, Vae};
pub use config::{AutoencoderKLConfig, SampleSize};
pub use vae::DiagonalGaussianDistribution;
