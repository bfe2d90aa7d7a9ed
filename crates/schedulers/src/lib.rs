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

mod k_common;

pub mod scheduling_ddim;
pub mod scheduling_ddpm;
pub mod scheduling_deis_multistep;
pub mod scheduling_dpmsolver_multistep;
pub mod scheduling_dpmsolver_singlestep;
pub mod scheduling_euler_ancestral_discrete;
pub mod scheduling_euler_discrete;
pub mod scheduling_heun_discrete;
pub mod scheduling_k_dpm_2_discrete;
pub mod scheduling_lms_discrete;
pub mod scheduling_pndm;
pub mod scheduling_unipc_multistep;

/// Building blocks for scheduler implementations (built-in and plugins): DDPM-family x0/epsilon
/// programs, clipping/thresholding, table indexing, shared validation.
pub mod helpers {
    pub use crate::config::dry_run;
    pub use crate::schedule::{alphas_cumprod, betas, check_steps, index_for_timestep, BetaParams, Cursor};
    pub use crate::scheduling_ddim::{
        betas_allowed, check_int_timesteps, check_threshold, ddpm_add_noise, emit_clip, emit_x0, only_ddpm_betas,
        table_index,
    };
}

pub use config::{SchedulerConfig, SchedulerSpec};
pub use error::{Result, SchedulerError};
pub use program::{
    execute, BackendNoise, NoNoise, NoiseSource, Op, QueuedNoise, Reg, RunTensors, StepContext, StepOptions,
    StepOutput, StepProgram,
};
pub use run::{AddNoise, Generation, RunCore, SchedulerRun};
pub use schedule::{BetaSchedule, FinalSigmasType, PredictionType, TimestepSpacing};

#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use typetag;
