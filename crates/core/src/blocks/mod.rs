//! diffusers' building blocks, one file per diffusers file, shared by the VAE and the UNets.
//!
//! - [`resnet`]: `ResnetBlock2D` (`diffusers/models/resnet.py`), with the optional time-embedding
//!   projection the UNets use.
//! - [`downsampling`]: `Downsample2D` (`diffusers/models/downsampling.py`).
//! - [`upsampling`]: `Upsample2D` (`diffusers/models/upsampling.py`).
//! - [`attention_processor`]: `Attention` run as `AttnProcessor2_0` does
//!   (`diffusers/models/attention_processor.py`), its attention math in
//!   [`attention_processor::multi_head_attention`] (heads on the token layout; a registered
//!   fused kernel takes them there) and [`attention_processor::scaled_dot_product_attention`].
//!
//! Parameter paths equal diffusers' attribute paths (`norm1.weight`, `to_out.0.bias`, ...), so a
//! module tree built from these loads diffusers checkpoints by name.

pub mod attention_processor;
pub mod downsampling;
pub mod resnet;
pub mod upsampling;

pub use attention_processor::{attention_by_heads, multi_head_attention, scaled_dot_product_attention, Attention, AttentionConfig};
pub use downsampling::Downsample2D;
pub use resnet::{ResnetBlock2D, ResnetBlock2DConfig, TimeEmbeddingNorm};
pub use upsampling::Upsample2D;

#[cfg(test)]
mod tests;
