//! `HeunDiscreteScheduler` (Karras et al., arXiv 2206.00364, Algorithm 1 — Heun's 2nd-order
//! method), mirroring `diffusers/schedulers/scheduling_heun_discrete.py` (diffusers 0.42.1):
//! Karras / exponential / beta sigmas, `clip_sample`, `exp` betas, all spacings.
//!
//! `order = 2`: the timesteps interleave every timestep but the first twice; the pipeline calls
//! the model at each of them. Sigmas/timesteps are float32; step arithmetic float32.

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::Result;
use crate::k_common::interleave_inner;
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, KSigmaParams, PredictionType, TimestepSpacing};
use crate::scheduling_ddim::betas_allowed;
use crate::scheduling_euler_discrete::{emit_k_x0, k_init_noise_sigma};

/// diffusers `HeunDiscreteScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeunDiscreteConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for HeunDiscreteConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            clip_sample: false,
            clip_sample_range: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

crate::register_scheduler!(HeunDiscreteConfig, "HeunDiscreteScheduler", "Heun 2nd order (Karras et al. 2022, Algorithm 1); order 2: two model calls per step");

impl HeunDiscreteConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self)
    }
}

#[typetag::serde(name = "HeunDiscreteScheduler")]
impl SchedulerConfig for HeunDiscreteConfig {
    fn validate(&self) -> Result<()> {
        betas_allowed(self.beta_schedule, self.trained_betas.is_some(), &[BetaSchedule::Exp])?;
        schedule::betas(&self.beta_params())?;
        schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        Ok(())
    }
    fn order(&self) -> usize {
        2
    }
    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        self.validate()?;
        schedule::check_steps(n, self.num_train_timesteps)?;
        let ac = schedule::alphas_cumprod(&schedule::betas(&self.beta_params())?);
        let ts = schedule::k_timesteps(self.timestep_spacing, n, self.num_train_timesteps, self.steps_offset)?;
        let kind = schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        let (ts, sig) = schedule::k_sigmas(&KSigmaParams::plain(&ac, &ts, kind));
        let sigmas = interleave_inner(&sig);
        let mut timesteps = vec![ts[0]];
        for &t in &ts[1..] {
            timesteps.push(t);
            timesteps.push(t);
        }
        let init = k_init_noise_sigma(&sigmas, self.timestep_spacing);
        let n_steps = timesteps.len().div_ceil(2);
        Ok(Box::new(HeunRun {
            cfg: self.clone(),
            core: RunCore::with_sigmas(timesteps, sigmas, init).with_steps(2, n_steps),
            dt: None,
        }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct HeunRun {
    cfg: HeunDiscreteConfig,
    core: RunCore,
    /// `self.dt` (Some while in the second-order state).
    dt: Option<f32>,
}

impl SchedulerRun for HeunRun {
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
        let first = self.dt.is_none();
        let (sigma, sigma_next) = if first {
            (self.core.sigma_at(i)?, self.core.sigma_at(i + 1)?)
        } else {
            (self.core.sigma_at(i.wrapping_sub(1))?, self.core.sigma_at(i)?)
        };
        let sigma_hat = sigma;
        let sigma_input = if first { sigma_hat } else { sigma_next };
        let mut p = StepProgram::default();
        let (x0, d, out) = (Reg::T(0), Reg::T(1), Reg::T(2));
        let (stored_sample, prev_d) = (Reg::S(0), Reg::S(1));
        emit_k_x0(&mut p, self.cfg.prediction_type, sigma_input, sigma_input, x0, Reg::Sample);
        if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range;
            p.op(Op::Clamp { reg: x0, min: -r, max: r });
        }
        let dt;
        let base;
        if first {
            p.lin(d, &[(1.0, Reg::Sample), (-1.0, x0)]).div(d, d, sigma_hat as f64);
            dt = sigma_next - sigma_hat;
            p.lin(prev_d, &[(1.0, d)]).lin(stored_sample, &[(1.0, Reg::Sample)]);
            self.dt = Some(dt);
            base = Reg::Sample;
        } else {
            p.lin(d, &[(1.0, Reg::Sample), (-1.0, x0)]).div(d, d, sigma_next as f64);
            p.lin(d, &[(1.0, prev_d), (1.0, d)]).div(d, d, 2.0);
            dt = self.dt.take().unwrap_or(0.0);
            base = stored_sample;
        }
        p.lin(out, &[(1.0, base), (dt as f64, d)]);
        if !first {
            p.op(Op::Clear { reg: stored_sample }).op(Op::Clear { reg: prev_d });
        }
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
