//! `LMSDiscreteScheduler` (linear multistep, k-diffusion `sample_lms`), mirroring
//! `diffusers/schedulers/scheduling_lms_discrete.py` (diffusers 0.42.1): Karras / exponential /
//! beta sigmas, all spacings, order-4 history (diffusers' `step(order=4)` default).
//!
//! diffusers integrates each Lagrange basis polynomial with `scipy.integrate.quad(epsrel=1e-4)`,
//! evaluating the integrand with float32 sigma tensors. The integrand is a polynomial of degree
//! <= 3, so here it is integrated exactly (4-point Gauss–Legendre, f64): the coefficients agree
//! with scipy's to ~1e-7 relative (the float32 rounding inside diffusers' integrand).

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{Result, SchedulerError};
use crate::k_common::py_index;
use crate::program::{Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, KSigmaParams, PredictionType, TimestepSpacing};
use crate::scheduling_ddim::only_ddpm_betas;
use crate::scheduling_dpmsolver_multistep::push_history;
use crate::scheduling_euler_discrete::{emit_k_x0, k_init_noise_sigma};

/// diffusers `LMSDiscreteScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LmsDiscreteConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for LmsDiscreteConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

crate::register_scheduler!(LmsDiscreteConfig, "LMSDiscreteScheduler", "Linear multistep (k-diffusion sample_lms), order-4 history of derivatives");

/// LMS history length (diffusers' `step(..., order=4)` default).
const LMS_ORDER: usize = 4;

impl LmsDiscreteConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self)
    }
}

#[typetag::serde(name = "LMSDiscreteScheduler")]
impl SchedulerConfig for LmsDiscreteConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        schedule::betas(&self.beta_params())?;
        schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        Ok(())
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
        let (timesteps, sigmas) = schedule::k_sigmas(&KSigmaParams::plain(&ac, &ts, kind));
        let init = k_init_noise_sigma(&sigmas, self.timestep_spacing);
        Ok(Box::new(LmsRun {
            pred: self.prediction_type,
            core: RunCore::with_sigmas(timesteps, sigmas, init),
            filled: vec![false; LMS_ORDER],
        }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct LmsRun {
    pred: PredictionType,
    core: RunCore,
    filled: Vec<bool>,
}

/// `get_lms_coefficient(order, t, current_order)`: ∫_{σ_t}^{σ_{t+1}} Π_{k≠j} (τ - σ_{t-k}) /
/// (σ_{t-j} - σ_{t-k}) dτ, with Python's negative indexing of the sigma table.
fn lms_coefficient(sigmas: &[f64], order: usize, t: usize, current: usize) -> Result<f64> {
    let at = |i: isize| {
        py_index(sigmas, i).ok_or_else(|| SchedulerError::State(format!("LMS sigma index {i} out of range")))
    };
    let t = t as isize;
    let nodes: Vec<f64> = (0..order).map(|k| at(t - k as isize)).collect::<Result<_>>()?;
    let sj = at(t - current as isize)?;
    let basis = |tau: f64| {
        let mut prod = 1.0;
        for (k, &sk) in nodes.iter().enumerate() {
            if k != current {
                prod *= (tau - sk) / (sj - sk);
            }
        }
        prod
    };
    let (a, b) = (at(t)?, at(t + 1)?);
    // 4-point Gauss–Legendre: exact for polynomials of degree <= 7.
    const X: [f64; 4] = [-0.861_136_311_594_052_6, -0.339_981_043_584_856_3, 0.339_981_043_584_856_3, 0.861_136_311_594_052_6];
    const W: [f64; 4] = [0.347_854_845_137_453_9, 0.652_145_154_862_546_1, 0.652_145_154_862_546_1, 0.347_854_845_137_453_9];
    let (m, h) = ((a + b) / 2.0, (b - a) / 2.0);
    Ok(X.iter().zip(W.iter()).map(|(x, w)| w * basis(m + h * x)).sum::<f64>() * h)
}

impl SchedulerRun for LmsRun {
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
        let _ = self.core.sigma_at(i + 1)?;
        let mut p = StepProgram::default();
        let (x0, d, acc, out) = (Reg::T(0), Reg::T(1), Reg::T(2), Reg::T(3));
        emit_k_x0(&mut p, self.pred, sigma, sigma, x0, Reg::Sample);
        p.lin(d, &[(1.0, Reg::Sample), (-1.0, x0)]).div(d, d, sigma as f64);
        let mut filled = std::mem::take(&mut self.filled);
        push_history(&mut p, &mut filled, 0, d);
        let available = filled.iter().filter(|f| **f).count();
        self.filled = filled;
        let order = (i + 1).min(LMS_ORDER);
        let mut terms = Vec::new();
        for k in 0..order.min(available) {
            let c = lms_coefficient(&self.core.sigmas, order, i, k)? as f32;
            terms.push((c as f64, Reg::S((LMS_ORDER - 1 - k) as u8)));
        }
        p.lin(acc, &terms);
        p.lin(out, &[(1.0, Reg::Sample), (1.0, acc)]);
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
