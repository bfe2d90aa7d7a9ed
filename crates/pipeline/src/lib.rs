//! reel's pipelines: diffusers' `TextToVideoSDPipeline` and `VideoToVideoSDPipeline` over the
//! component crates, declared in `pipelines.toml` ([`config`]) as stages over shared components
//! ([`store`]), run by [`runner`]. Randomness follows diffusers' `torch.Generator("cpu")`
//! ([`noise`]), so a seed gives diffusers' latents and noise.

pub mod bench;
pub mod config;
pub mod error;
pub mod memory;
pub mod noise;
pub mod pipeline_text_to_video_synth;
pub mod pipeline_text_to_video_synth_img2img;
pub mod runner;
pub mod store;
pub mod threads;

pub use config::{ComponentKind, PartKind, Pipeline, PipelineFile, Stage, StageKind};
pub use error::{Error, Result};
pub use pipeline_text_to_video_synth::{Event, GenerateParams, TextToVideoSD, VideoOutput};
pub use pipeline_text_to_video_synth_img2img::VideoToVideoSD;
pub use runner::{run, Overrides, RunReport, StageEvent, StageReport};
pub use store::{ComponentStore, StoreOptions};
