//! reel-core: what every reel component shares.
//!
//! - [`source`]: where a model comes from: a local diffusers folder or a Hugging Face repo id,
//!   resolved through the standard HF cache (offline) or downloaded (`hf-hub`).
//! - [`config`]: `model_index.json` and component `config.json` files into structs that mirror
//!   diffusers' field names (unknown keys warn, `_class_name` is checked).
//! - [`weights`]: `*.safetensors` (variants, shards, f16/bf16/f32) loaded by name into burn modules,
//!   with errors naming the key and both shapes.
//! - [`nn`]: the PyTorch-layout building blocks (`Linear`, `Conv2d`, `GroupNorm`, ...) whose
//!   parameter names equal diffusers' attribute paths.
//! - [`kernels`]: a faster matrix product registered by the binary for one backend (cuBLAS on
//!   CUDA), which `Linear`, the convolutions and attention then run on.
//! - [`profile`]: the inventory of heavy operations a forward pass runs (for `reel bench --ops`).
//! - [`npy`]: numpy `.npy` reading and writing for the component tools and tests.

pub mod blocks;
pub mod config;
pub mod error;
pub mod files;
pub mod kernels;
pub mod nn;
pub mod npy;
pub mod profile;
pub mod source;
pub mod testing;
pub mod torch_rng;
pub mod weights;

pub use error::{Error, Result};
pub use source::{HubSettings, ModelRepo, ModelSource};
