//! `EulerDiscreteScheduler` (Karras et al., "Elucidating the Design Space of Diffusion-Based
//! Generative Models", arXiv 2206.00364, Algorithm 2), mirroring
//! `diffusers/schedulers/scheduling_euler_discrete.py` (diffusers 0.42.1): interpolation types,
//! Karras / exponential / beta sigmas, `sigma_min`/`sigma_max`, continuous timesteps,
//! `final_sigmas_type`, churn (`s_churn`, `s_tmin`, `s_tmax`, `s_noise`).
//!
//! Precision: sigmas are float32 (numpy f64 interpolation, then `astype(float32)`), timesteps are
//! float32; step coefficients (`sigma_hat`, `dt`) are float32 tensor arithmetic like diffusers.

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result};
use crate::program::{Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, FinalSigmasType, KSigmaParams, PredictionType, TimestepSpacing};
use crate::scheduling_ddim::only_ddpm_betas;

/// `interpolation_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationType {
    Linear,
    LogLinear,
}

/// `timestep_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepType {
    Discrete,
    Continuous,
}

/// diffusers `EulerDiscreteScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EulerDiscreteConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub interpolation_type: InterpolationType,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub timestep_spacing: TimestepSpacing,
    pub timestep_type: TimestepType,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
    pub final_sigmas_type: FinalSigmasType,
}

impl Default for EulerDiscreteConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            interpolation_type: InterpolationType::Linear,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_spacing: TimestepSpacing::Linspace,
            timestep_type: TimestepType::Discrete,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            final_sigmas_type: FinalSigmasType::Zero,
        }
    }
}

crate::register_scheduler!(EulerDiscreteConfig, "EulerDiscreteScheduler", "Euler (Karras et al. 2022, Algorithm 2) on the k-diffusion sigma schedule");

/// `alphas_cumprod` with the zero-SNR fix used by the sigma schedulers (`alphas_cumprod[-1] = 2**-24`).
pub(crate) fn k_alphas_cumprod(p: &BetaParams) -> Result<Vec<f32>> {
    let mut ac = schedule::alphas_cumprod(&schedule::betas(p)?);
    if p.rescale_betas_zero_snr {
        let n = ac.len();
        ac[n - 1] = 2f32.powi(-24);
    }
    Ok(ac)
}

/// `init_noise_sigma` of the k-diffusion schedulers (float32).
pub(crate) fn k_init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().cloned().fold(f64::MIN, f64::max) as f32;
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
    }
}

/// Emit x0 for the k-diffusion parameterisation (`sigma_hat` for epsilon, `sigma` for v).
pub(crate) fn emit_k_x0(p: &mut StepProgram, pred: PredictionType, sigma: f32, sigma_hat: f32, x0: Reg, sample: Reg) {
    match pred {
        PredictionType::Sample => {
            p.lin(x0, &[(1.0, Reg::Model)]);
        }
        PredictionType::Epsilon => {
            p.lin(x0, &[(1.0, sample), (-(sigma_hat as f64), Reg::Model)]);
        }
        PredictionType::VPrediction => {
            let s2 = sigma * sigma + 1.0;
            let c_out = -sigma / s2.sqrt();
            p.lin(Reg::T(30), &[(1.0, sample)]).div(Reg::T(30), Reg::T(30), s2 as f64);
            p.lin(x0, &[(c_out as f64, Reg::Model), (1.0, Reg::T(30))]);
        }
    }
}

impl EulerDiscreteConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self, self.rescale_betas_zero_snr)
    }
}

#[typetag::serde(name = "EulerDiscreteScheduler")]
impl SchedulerConfig for EulerDiscreteConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        schedule::betas(&self.beta_params())?;
        schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        if self.interpolation_type == InterpolationType::LogLinear
            && schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?
                != schedule::SigmaKind::Interpolated
        {
            return opt_err("interpolation_type", "log_linear together with converted sigmas is not supported");
        }
        Ok(())
    }
    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        self.validate()?;
        let t = self.num_train_timesteps;
        schedule::check_steps(n, t)?;
        let ac = k_alphas_cumprod(&self.beta_params())?;
        let ts = schedule::k_timesteps(self.timestep_spacing, n, t, self.steps_offset)?;
        let kind = schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        let (mut timesteps, sigmas) = schedule::k_sigmas(&KSigmaParams {
            alphas_cumprod: &ac,
            timesteps: &ts,
            kind,
            sigma_min: self.sigma_min,
            sigma_max: self.sigma_max,
            final_sigmas_type: self.final_sigmas_type,
            log_linear: self.interpolation_type == InterpolationType::LogLinear,
        });
        if self.timestep_type == TimestepType::Continuous && self.prediction_type == PredictionType::VPrediction {
            timesteps = sigmas[..sigmas.len() - 1].iter().map(|&s| (0.25 * (s as f32).ln()) as f64).collect();
        }
        let init = k_init_noise_sigma(&sigmas, self.timestep_spacing);
        Ok(Box::new(EulerRun { pred: self.prediction_type, core: RunCore::with_sigmas(timesteps, sigmas, init).with_steps(1, n) }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct EulerRun {
    pred: PredictionType,
    core: RunCore,
}

impl SchedulerRun for EulerRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn scale_model_input(&mut self, timestep: f64) -> Result<Option<f64>> {
        let i = self.core.step_index_for(timestep)?;
        let sigma = self.sigma_at(i)?;
        Ok(Some((sigma * sigma + 1.0).sqrt() as f64))
    }
    fn plan_step(&mut self, timestep: f64, o: &StepOptions) -> Result<StepProgram> {
        let i = self.core.step_index_for(timestep)?;
        let sigma = self.sigma_at(i)?;
        let sigma_next = self.sigma_at(i + 1)? ;
        let mut p = StepProgram::default();
        let (x0, d, out, noise, s) = (Reg::T(0), Reg::T(1), Reg::T(2), Reg::T(3), Reg::T(4));
        let gamma = churn_gamma(o, sigma as f64, self.core.sigmas.len() - 1);
        let sigma_hat = sigma * (gamma as f32 + 1.0);
        p.lin(s, &[(1.0, Reg::Sample)]);
        if gamma > 0.0 {
            p.op(crate::program::Op::Noise { dst: noise });
            let c = (sigma_hat * sigma_hat - sigma * sigma).sqrt();
            p.lin(noise, &[(o.s_noise, noise)]);
            p.lin(s, &[(1.0, s), (c as f64, noise)]);
        }
        emit_k_x0(&mut p, self.pred, sigma, sigma_hat, x0, s);
        p.lin(d, &[(1.0, s), (-1.0, x0)]).div(d, d, sigma_hat as f64);
        let dt = sigma_next - sigma_hat;
        p.lin(out, &[(1.0, s), (dt as f64, d)]);
        p.prev_sample = Some(out);
        p.pred_original_sample = Some(x0);
        self.core.advance(i);
        Ok(p)
    }
    fn add_noise(&self, timestep: f64) -> Result<AddNoise> {
        let i = self.core.add_noise_index(timestep)?;
        Ok(AddNoise { a: 1.0, b: self.sigma_at(i)? as f64 })
    }
    fn clone_run(&self) -> Box<dyn SchedulerRun> {
        Box::new(self.clone())
    }
}

impl EulerRun {
    fn sigma_at(&self, i: usize) -> Result<f32> {
        self.core.sigmas.get(i).map(|&s| s as f32).ok_or_else(|| crate::error::SchedulerError::State(format!(
            "step index {i} is past the end of the schedule ({} steps)",
            self.core.timesteps.len()
        )))
    }
}

/// Karras churn: `gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1)` inside `[s_tmin, s_tmax]`.
pub(crate) fn churn_gamma(o: &StepOptions, sigma: f64, n: usize) -> f64 {
    if o.s_tmin <= sigma && sigma <= o.s_tmax {
        (o.s_churn / n as f64).min(2f64.sqrt() - 1.0)
    } else {
        0.0
    }
}
