//! reel-scheduler-lcm: an out-of-tree reel scheduler — diffusers' `LCMScheduler` (Luo et al.,
//! "Latent Consistency Models", arXiv 2310.04378), mirroring
//! `diffusers/schedulers/scheduling_lcm.py` (diffusers 0.42.1).
//!
//! It registers itself with `inventory` exactly like a built-in scheduler, so
//! `{"_class_name": "LCMScheduler", ...}` loads through `reel_schedulers::SchedulerSpec`.
//! Binaries must reference this crate (call [`register`]) or the linker drops it.
//!
//! Precision: float32 `alphas_cumprod`, float32 boundary-condition scalings (`c_skip`, `c_out`
//! from the int64 timestep × `timestep_scaling`), int64 timesteps. One noise draw per step except
//! the last. `pred_original_sample` is LCM's `denoised`. `strength` (image-to-image) and custom
//! timesteps of diffusers' `set_timesteps` are not exposed; use `set_begin_index` instead.

use reel_schedulers::helpers::{
    alphas_cumprod, betas, check_steps, check_threshold, ddpm_add_noise, emit_clip, emit_x0, only_ddpm_betas,
    table_index, BetaParams,
};
use reel_schedulers::{
    AddNoise, BetaSchedule, Op, PredictionType, Reg, Result, RunCore, SchedulerConfig, SchedulerError, SchedulerRun,
    StepOptions, StepProgram, TimestepSpacing,
};
use serde::{Deserialize, Serialize};

/// Link this crate into a binary (its `inventory` registration is otherwise dropped).
pub fn register() {}

/// diffusers `LCMScheduler` config (same option names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LcmConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub original_inference_steps: usize,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub set_alpha_to_one: bool,
    pub steps_offset: i64,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub timestep_scaling: f64,
    pub rescale_betas_zero_snr: bool,
}

impl Default for LcmConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            trained_betas: None,
            original_inference_steps: 50,
            clip_sample: false,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            timestep_scaling: 10.0,
            rescale_betas_zero_snr: false,
        }
    }
}

reel_schedulers::register_scheduler!(LcmConfig, "LCMScheduler", "Latent Consistency Models (arXiv 2310.04378): 1-8 step sampling of LCM-distilled models [plugin]");

impl LcmConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        BetaParams {
            num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            trained_betas: self.trained_betas.as_deref(),
            rescale_betas_zero_snr: self.rescale_betas_zero_snr,
        }
    }
}

#[typetag::serde(name = "LCMScheduler")]
impl SchedulerConfig for LcmConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        betas(&self.beta_params())?;
        check_threshold(self.dynamic_thresholding_ratio, self.sample_max_value)?;
        let o = self.original_inference_steps;
        if o == 0 || o > self.num_train_timesteps {
            return Err(SchedulerError::InvalidOption {
                option: "original_inference_steps",
                message: format!("must be in 1..={}, got {o}", self.num_train_timesteps),
            });
        }
        Ok(())
    }
    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        self.validate()?;
        check_steps(n, self.num_train_timesteps)?;
        let orig = self.original_inference_steps;
        if n > orig {
            return Err(SchedulerError::InvalidSteps {
                steps: n,
                message: format!("cannot be larger than original_inference_steps = {orig}"),
            });
        }
        // lcm_origin_timesteps = arange(1, orig + 1) * k - 1, reversed; pick floor(linspace(0, len, N, endpoint=False))
        let k = self.num_train_timesteps / orig;
        let origin: Vec<i64> = (1..=orig as i64).rev().map(|i| i * k as i64 - 1).collect();
        let len = origin.len() as f64;
        let timesteps: Vec<f64> = (0..n).map(|i| origin[(i as f64 * (len / n as f64)).floor() as usize] as f64).collect();
        let ac = alphas_cumprod(&betas(&self.beta_params())?);
        let final_ac = if self.set_alpha_to_one { 1.0 } else { ac[0] };
        Ok(Box::new(LcmRun { cfg: self.clone(), ac, final_ac, core: RunCore::new(timesteps) }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct LcmRun {
    cfg: LcmConfig,
    ac: Vec<f32>,
    final_ac: f32,
    core: RunCore,
}

impl SchedulerRun for LcmRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn plan_step(&mut self, timestep: f64, _o: &StepOptions) -> Result<StepProgram> {
        let c = &self.cfg;
        let i = self.core.step_index_for(timestep)?;
        let t = table_index(timestep, self.ac.len())?;
        let prev_t = self.core.timesteps.get(i + 1).copied().unwrap_or(timestep) as usize;
        let ap = self.ac[t];
        let app = if prev_t < self.ac.len() { self.ac[prev_t] } else { self.final_ac };
        let (bp, bpp) = (1.0 - ap, 1.0 - app);
        // get_scalings_for_boundary_condition_discrete (float32)
        let st = t as f32 * c.timestep_scaling as f32;
        let c_skip = 0.25f32 / (st * st + 0.25);
        let c_out = st / (st * st + 0.25).sqrt();
        let mut p = StepProgram::default();
        let (x0, denoised, out, noise) = (Reg::T(0), Reg::T(1), Reg::T(2), Reg::T(3));
        emit_x0(&mut p, c.prediction_type, ap, bp, x0, Reg::T(9), false);
        emit_clip(&mut p, x0, c.thresholding, c.dynamic_thresholding_ratio, c.sample_max_value, c.clip_sample, c.clip_sample_range);
        p.lin(denoised, &[(c_out as f64, x0), (c_skip as f64, Reg::Sample)]);
        if i + 1 != self.core.timesteps.len() {
            p.op(Op::Noise { dst: noise });
            p.lin(out, &[(app.sqrt() as f64, denoised), (bpp.sqrt() as f64, noise)]);
        } else {
            p.lin(out, &[(1.0, denoised)]);
        }
        self.core.advance(i);
        p.prev_sample = Some(out);
        p.pred_original_sample = Some(denoised);
        Ok(p)
    }
    fn add_noise(&self, timestep: f64) -> Result<AddNoise> {
        ddpm_add_noise(&self.ac, timestep)
    }
    fn clone_run(&self) -> Box<dyn SchedulerRun> {
        Box::new(self.clone())
    }
}
