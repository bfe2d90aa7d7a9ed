//! `EulerAncestralDiscreteScheduler` (ancestral Euler sampling, k-diffusion `sample_euler_ancestral`,
//! Karras et al. arXiv 2206.00364), mirroring
//! `diffusers/schedulers/scheduling_euler_ancestral_discrete.py` (diffusers 0.42.1).
//!
//! Precision: float32 sigmas and timesteps; `sigma_up`, `sigma_down`, `dt` are float32 tensor
//! arithmetic. One noise draw per step. `prediction_type = "sample"` is rejected, as diffusers
//! raises NotImplementedError for it.

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result};
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, KSigmaParams, PredictionType, SigmaKind, TimestepSpacing};
use crate::scheduling_ddim::only_ddpm_betas;
use crate::scheduling_euler_discrete::{emit_k_x0, k_alphas_cumprod, k_init_noise_sigma};

/// diffusers `EulerAncestralDiscreteScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EulerAncestralDiscreteConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
}

impl Default for EulerAncestralDiscreteConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

crate::register_scheduler!(
    EulerAncestralDiscreteConfig,
    "EulerAncestralDiscreteScheduler",
    "Euler ancestral (k-diffusion sample_euler_ancestral): stochastic, one noise draw per step"
);

impl EulerAncestralDiscreteConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self, self.rescale_betas_zero_snr)
    }
}

#[typetag::serde(name = "EulerAncestralDiscreteScheduler")]
impl SchedulerConfig for EulerAncestralDiscreteConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        schedule::betas(&self.beta_params())?;
        if self.prediction_type == PredictionType::Sample {
            return opt_err("prediction_type", "`sample` is not implemented for EulerAncestralDiscreteScheduler (as in diffusers)");
        }
        Ok(())
    }
    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        self.validate()?;
        schedule::check_steps(n, self.num_train_timesteps)?;
        let ac = k_alphas_cumprod(&self.beta_params())?;
        let ts = schedule::k_timesteps(self.timestep_spacing, n, self.num_train_timesteps, self.steps_offset)?;
        let (timesteps, sigmas) = schedule::k_sigmas(&KSigmaParams::plain(&ac, &ts, SigmaKind::Interpolated));
        let init = k_init_noise_sigma(&sigmas, self.timestep_spacing);
        Ok(Box::new(EulerAncestralRun { pred: self.prediction_type, core: RunCore::with_sigmas(timesteps, sigmas, init) }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct EulerAncestralRun {
    pred: PredictionType,
    core: RunCore,
}

impl SchedulerRun for EulerAncestralRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn scale_model_input(&mut self, timestep: f64) -> Result<Option<f64>> {
        self.core.k_scale_model_input(timestep)
    }
    fn plan_step(&mut self, timestep: f64, _o: &StepOptions) -> Result<StepProgram> {
        let i = self.core.step_index_for(timestep)?;
        let sigma = self.core.sigma_at(i)?;
        let sigma_to = self.core.sigma_at(i + 1)?;
        let mut p = StepProgram::default();
        let (x0, d, out, noise) = (Reg::T(0), Reg::T(1), Reg::T(2), Reg::T(3));
        emit_k_x0(&mut p, self.pred, sigma, sigma, x0, Reg::Sample);
        let sf2 = sigma * sigma;
        let st2 = sigma_to * sigma_to;
        let sigma_up = (st2 * (sf2 - st2) / sf2).sqrt();
        let sigma_down = (st2 - sigma_up * sigma_up).sqrt();
        p.lin(d, &[(1.0, Reg::Sample), (-1.0, x0)]).div(d, d, sigma as f64);
        let dt = sigma_down - sigma;
        p.lin(out, &[(1.0, Reg::Sample), (dt as f64, d)]);
        p.op(Op::Noise { dst: noise });
        p.lin(out, &[(1.0, out), (sigma_up as f64, noise)]);
        p.prev_sample = Some(out);
        p.pred_original_sample = Some(x0);
        self.core.advance(i);
        Ok(p)
    }
    fn add_noise(&self, timestep: f64) -> Result<AddNoise> {
        self.core.k_add_noise(timestep)
    }
    fn clone_run(&self) -> Box<dyn SchedulerRun> {
        Box::new(self.clone())
    }
}
