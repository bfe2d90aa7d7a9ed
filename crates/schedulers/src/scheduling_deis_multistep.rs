//! `DEISMultistepScheduler` (Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential
//! Integrator", arXiv 2204.13902; log-rho multistep DEIS), mirroring
//! `diffusers/schedulers/scheduling_deis_multistep.py` (diffusers 0.42.1): orders 1–3,
//! `lower_order_final`, Karras / exponential / beta sigmas, thresholding, all spacings.
//!
//! Precision: int64 timesteps, float32 sigmas; step scalars (alpha, sigma, rho, the `ind_fn`
//! log-rho coefficients) are float32 like diffusers' 0-d tensors / numpy float32.
//! Not supported: flow-matching options.

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result};
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, FinalSigmasType, PredictionType, TimestepSpacing};
use crate::scheduling_ddim::{check_threshold, only_ddpm_betas};
use crate::scheduling_dpmsolver_multistep::{alpha_sigma, lambda, multistep_schedule, push_history, MultistepParams};

/// DEIS `algorithm_type` (diffusers maps `dpmsolver`/`dpmsolver++` to `deis`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeisAlgorithm {
    #[serde(alias = "dpmsolver", alias = "dpmsolver++")]
    Deis,
}

/// DEIS `solver_type` (diffusers maps `midpoint`/`heun`/`bh1`/`bh2` to `logrho`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeisSolverType {
    #[serde(alias = "midpoint", alias = "heun", alias = "bh1", alias = "bh2")]
    Logrho,
}

/// diffusers `DEISMultistepScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeisMultistepConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub algorithm_type: DeisAlgorithm,
    pub solver_type: DeisSolverType,
    pub lower_order_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DeisMultistepConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            algorithm_type: DeisAlgorithm::Deis,
            solver_type: DeisSolverType::Logrho,
            lower_order_final: true,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
        }
    }
}

crate::register_scheduler!(DeisMultistepConfig, "DEISMultistepScheduler", "DEIS log-rho multistep exponential integrator (arXiv 2204.13902), orders 1-3");

impl DeisMultistepConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self)
    }
}

#[typetag::serde(name = "DEISMultistepScheduler")]
impl SchedulerConfig for DeisMultistepConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        schedule::betas(&self.beta_params())?;
        schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        check_threshold(self.dynamic_thresholding_ratio, self.sample_max_value)?;
        if !(1..=3).contains(&self.solver_order) {
            return opt_err("solver_order", format!("must be 1, 2 or 3, got {}", self.solver_order));
        }
        if self.use_flow_sigmas || self.use_dynamic_shifting {
            return opt_err("use_flow_sigmas", "flow-matching options are not supported by reel-schedulers");
        }
        Ok(())
    }
    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        self.validate()?;
        schedule::check_steps(n, self.num_train_timesteps)?;
        let ac = schedule::alphas_cumprod(&schedule::betas(&self.beta_params())?);
        let kind = schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        let s = multistep_schedule(&MultistepParams {
            ac: &ac,
            n,
            spacing: self.timestep_spacing,
            steps_offset: self.steps_offset,
            lambda_min_clipped: f64::NEG_INFINITY,
            kind,
            lu: false,
            round_converted: true,
            final_sigmas_type: FinalSigmasType::SigmaMin,
            sigma_min: None,
            sigma_max: None,
            final_from_converted: true,
        })?;
        Ok(Box::new(DeisRun {
            cfg: self.clone(),
            core: RunCore::with_sigmas(s.timesteps, s.sigmas, 1.0),
            lower_order_nums: 0,
            filled: vec![false; self.solver_order],
        }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct DeisRun {
    cfg: DeisMultistepConfig,
    core: RunCore,
    lower_order_nums: usize,
    filled: Vec<bool>,
}

fn ind2(t: f32, b: f32, c: f32) -> f32 {
    t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln())
}

fn ind3(t: f32, b: f32, c: f32, d: f32) -> f32 {
    let (lt, lc, ld, lb) = (t.ln(), c.ln(), d.ln(), b.ln());
    let numerator = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
    let denominator = (lb - lc) * (lb - ld);
    numerator / denominator
}

impl SchedulerRun for DeisRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn plan_step(&mut self, timestep: f64, _o: &StepOptions) -> Result<StepProgram> {
        let n = self.core.timesteps.len();
        let i = self.core.multistep_index(timestep)?;
        let c = self.cfg.clone();
        let lof = c.lower_order_final && n < 15;
        let lower_order_final = i + 1 == n && lof;
        let lower_order_second = i + 2 == n && lof;
        let ii = i as isize;
        let mut p = StepProgram::default();
        // convert_model_output: x0, thresholding, back to epsilon
        let (alpha_s, sigma_s) = alpha_sigma(self.core.sig(ii)?);
        let (x0, conv) = (Reg::T(0), Reg::T(1));
        let (a, s) = (alpha_s as f64, sigma_s as f64);
        match c.prediction_type {
            PredictionType::Epsilon => {
                p.lin(x0, &[(1.0, Reg::Sample), (-s, Reg::Model)]).div(x0, x0, a);
            }
            PredictionType::Sample => {
                p.lin(x0, &[(1.0, Reg::Model)]);
            }
            PredictionType::VPrediction => {
                p.lin(x0, &[(a, Reg::Sample), (-s, Reg::Model)]);
            }
        }
        if c.thresholding {
            p.op(Op::Threshold { reg: x0, ratio: c.dynamic_thresholding_ratio, max_value: c.sample_max_value });
        }
        p.lin(conv, &[(1.0, Reg::Sample), (-a, x0)]).div(conv, conv, s);
        let order = c.solver_order;
        let mut filled = std::mem::take(&mut self.filled);
        push_history(&mut p, &mut filled, 0, conv);
        self.filled = filled;
        let m = |k: usize| Reg::S((order - 1 - k) as u8);
        let out = Reg::T(2);
        let (alpha_t, sigma_t) = alpha_sigma(self.core.sig(ii + 1)?);
        if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
            p.lin(out, &[((alpha_t / alpha_s) as f64, Reg::Sample), (-((sigma_t * (h.exp() - 1.0)) as f64), conv)]);
        } else {
            let (alpha_s1, sigma_s1) = alpha_sigma(self.core.sig(ii - 1)?);
            let (rho_t, rho_s0, rho_s1) = (sigma_t / alpha_t, sigma_s / alpha_s, sigma_s1 / alpha_s1);
            let tmp = Reg::T(3);
            p.lin(tmp, &[(1.0, Reg::Sample)]).div(tmp, tmp, alpha_s as f64);
            if order == 2 || self.lower_order_nums < 2 || lower_order_second {
                let coef1 = ind2(rho_t, rho_s0, rho_s1) - ind2(rho_s0, rho_s0, rho_s1);
                let coef2 = ind2(rho_t, rho_s1, rho_s0) - ind2(rho_s0, rho_s1, rho_s0);
                p.lin(tmp, &[(1.0, tmp), (coef1 as f64, m(0)), (coef2 as f64, m(1))]);
            } else {
                let (alpha_s2, sigma_s2) = alpha_sigma(self.core.sig(ii - 2)?);
                let rho_s2 = sigma_s2 / alpha_s2;
                let coef1 = ind3(rho_t, rho_s0, rho_s1, rho_s2) - ind3(rho_s0, rho_s0, rho_s1, rho_s2);
                let coef2 = ind3(rho_t, rho_s1, rho_s2, rho_s0) - ind3(rho_s0, rho_s1, rho_s2, rho_s0);
                let coef3 = ind3(rho_t, rho_s2, rho_s0, rho_s1) - ind3(rho_s0, rho_s2, rho_s0, rho_s1);
                p.lin(tmp, &[(1.0, tmp), (coef1 as f64, m(0)), (coef2 as f64, m(1)), (coef3 as f64, m(2))]);
            }
            p.lin(out, &[(alpha_t as f64, tmp)]);
        }
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.core.advance(i);
        p.prev_sample = Some(out);
        Ok(p)
    }
    fn add_noise(&self, timestep: f64) -> Result<AddNoise> {
        self.core.multistep_add_noise(timestep)
    }
    fn clone_run(&self) -> Box<dyn SchedulerRun> {
        Box::new(self.clone())
    }
}
