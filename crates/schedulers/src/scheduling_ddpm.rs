//! `DDPMScheduler` (Ho et al., "Denoising Diffusion Probabilistic Models", arXiv 2006.11239),
//! mirroring `diffusers/schedulers/scheduling_ddpm.py` (diffusers 0.42.1): every variance type,
//! `sigmoid`/`laplace` betas, thresholding/clipping, all spacings.
//!
//! Precision: float32 `alphas_cumprod` and float32 step coefficients, as in diffusers; int64
//! timesteps. A noise draw happens at every step with `t > 0` (as diffusers).

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result, SchedulerError};
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, PredictionType, TimestepSpacing};
use crate::scheduling_ddim::{check_int_timesteps, check_threshold, ddpm_add_noise, emit_clip, emit_x0, table_index};

/// DDPM `variance_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
    FixedLargeLog,
    Learned,
    LearnedRange,
}

/// diffusers `DDPMScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdpmConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub variance_type: VarianceType,
    pub clip_sample: bool,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

crate::register_scheduler!(DdpmConfig, "DDPMScheduler", "DDPM (arXiv 2006.11239): ancestral sampling, stochastic at every step");

impl DdpmConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self, self.rescale_betas_zero_snr)
    }
}

#[typetag::serde(name = "DDPMScheduler")]
impl SchedulerConfig for DdpmConfig {
    fn validate(&self) -> Result<()> {
        crate::scheduling_ddim::betas_allowed(
            self.beta_schedule,
            self.trained_betas.is_some(),
            &[BetaSchedule::Sigmoid, BetaSchedule::Laplace],
        )?;
        schedule::betas(&self.beta_params())?;
        check_threshold(self.dynamic_thresholding_ratio, self.sample_max_value)?;
        if self.variance_type == VarianceType::FixedLargeLog {
            return opt_err(
                "variance_type",
                "fixed_large_log is not supported: diffusers computes sqrt(log(beta_t)), which is NaN",
            );
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
        let ac = schedule::alphas_cumprod(&schedule::betas(&self.beta_params())?);
        let timesteps = schedule::spaced_timesteps(self.timestep_spacing, n, t, self.steps_offset);
        check_int_timesteps(&timesteps, t)?;
        Ok(Box::new(DdpmRun { cfg: self.clone(), ac, core: RunCore::new(timesteps).with_steps(1, n) }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct DdpmRun {
    cfg: DdpmConfig,
    ac: Vec<f32>,
    core: RunCore,
}

impl SchedulerRun for DdpmRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        self.core.check_begin(begin_index)
    }
    fn plan_step(&mut self, timestep: f64, _o: &StepOptions) -> Result<StepProgram> {
        let c = &self.cfg;
        let t = table_index(timestep, self.ac.len())?;
        // previous_timestep: the next entry of the schedule, -1 after the last.
        let idx = self.core.timesteps.iter().position(|&x| x == timestep).ok_or_else(|| SchedulerError::InvalidTimestep {
            timestep,
            message: "not in the schedule".into(),
        })?;
        let prev_t: i64 = if idx + 1 == self.core.timesteps.len() { -1 } else { self.core.timesteps[idx + 1] as i64 };
        let learned = matches!(c.variance_type, VarianceType::Learned | VarianceType::LearnedRange);
        let mut p = StepProgram::default();
        let (pv, x0, out, noise, var) = (Reg::T(1), Reg::T(2), Reg::T(3), Reg::T(4), Reg::T(5));
        let ap = self.ac[t];
        let app = if prev_t >= 0 { self.ac[prev_t as usize] } else { 1.0 };
        let bp = 1.0 - ap;
        let bpp = 1.0 - app;
        let cur_alpha = ap / app;
        let cur_beta = 1.0 - cur_alpha;
        if learned {
            // model_output has 2·C channels: split off the predicted variance (diffusers'
            // `torch.split(model_output, sample.shape[1], dim=1)`).
            p.op(Op::SplitLearned { pv });
        }
        emit_x0(&mut p, c.prediction_type, ap, bp, x0, Reg::T(9), false);
        emit_clip(&mut p, x0, c.thresholding, c.dynamic_thresholding_ratio, c.sample_max_value, c.clip_sample, c.clip_sample_range);
        let x0_coeff = (app.sqrt() * cur_beta) / bp;
        let cur_coeff = cur_alpha.sqrt() * bpp / bp;
        p.lin(out, &[(x0_coeff as f64, x0), (cur_coeff as f64, Reg::Sample)]);
        if t > 0 {
            p.op(Op::Noise { dst: noise });
            let variance = ((bpp / bp) * cur_beta).max(1e-20);
            match c.variance_type {
                VarianceType::FixedSmall => {
                    p.lin(out, &[(1.0, out), (variance.sqrt() as f64, noise)]);
                }
                VarianceType::FixedSmallLog => {
                    let v = (0.5 * variance.ln()).exp();
                    p.lin(out, &[(1.0, out), (v as f64, noise)]);
                }
                VarianceType::FixedLarge => {
                    p.lin(out, &[(1.0, out), (cur_beta.sqrt() as f64, noise)]);
                }
                VarianceType::FixedLargeLog => {
                    return opt_err("variance_type", "fixed_large_log is not supported");
                }
                VarianceType::Learned => {
                    // learned without a split (C channels) keeps predicted_variance = None in
                    // diffusers, which fails; here it is an error too.
                    p.op(Op::Sqrt { dst: var, src: pv });
                    p.op(Op::Mul { dst: var, a: var, b: noise });
                    p.lin(out, &[(1.0, out), (1.0, var)]);
                }
                VarianceType::LearnedRange => {
                    let min_log = variance.ln() as f64;
                    let max_log = cur_beta.ln() as f64;
                    // frac = (pv + 1) / 2; v = frac * max_log + (1 - frac) * min_log
                    p.op(Op::Affine { dst: var, src: pv, mul: 1.0, add: 1.0 });
                    p.div(var, var, 2.0);
                    p.op(Op::Affine { dst: Reg::T(6), src: var, mul: -1.0, add: 1.0 });
                    p.lin(var, &[(max_log, var), (min_log, Reg::T(6))]);
                    p.op(Op::Affine { dst: var, src: var, mul: 0.5, add: 0.0 });
                    p.op(Op::Exp { dst: var, src: var });
                    p.op(Op::Mul { dst: var, a: var, b: noise });
                    p.lin(out, &[(1.0, out), (1.0, var)]);
                }
            }
        }
        p.prev_sample = Some(out);
        p.pred_original_sample = Some(x0);
        Ok(p)
    }
    fn add_noise(&self, timestep: f64) -> Result<AddNoise> {
        ddpm_add_noise(&self.ac, timestep)
    }
    fn clone_run(&self) -> Box<dyn SchedulerRun> {
        Box::new(self.clone())
    }
}
