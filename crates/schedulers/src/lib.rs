//! reel-schedulers: diffusers' noise schedulers in Rust, over burn tensors.
//!
//! * [`SchedulerConfig`] — the immutable, serialized side (typetag by `_class_name`, one struct
//!   per diffusers class, fields = `register_to_config` arguments); [`SchedulerSpec`] loads a
//!   `scheduler_config.json` and swaps classes like diffusers' `from_config`.
//! * [`SchedulerRun`] — one generation's host state (`set_timesteps`, step counters), emitting a
//!   [`StepProgram`] per step; [`Generation`] runs it on any `B: Backend`.
//! * [`registry`] — `inventory`-based registry of built-in and plugin schedulers.
//!
//! Mirrors `diffusers/schedulers/` of diffusers 0.42.1; see `docs/schedulers.md`.

pub mod config;
pub mod error;
pub mod program;
pub mod registry;
pub mod run;
pub mod schedule;

pub mod scheduling_ddim;
pub mod scheduling_ddpm;
pub mod scheduling_dpmsolver_multistep;
pub mod scheduling_euler_ancestral_discrete;
pub mod scheduling_euler_discrete;

pub use config::{SchedulerConfig, SchedulerSpec};
pub use error::{Result, SchedulerError};
pub use program::{
    execute, BackendNoise, NoNoise, NoiseSource, Op, QueuedNoise, Reg, RunTensors, StepContext, StepOptions,
    StepOutput, StepProgram,
};
pub use run::{AddNoise, Generation, SchedulerRun};
pub use schedule::{BetaSchedule, FinalSigmasType, PredictionType, TimestepSpacing};

#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use typetag;
