//! `DDIMScheduler` (Song et al., "Denoising Diffusion Implicit Models", arXiv 2010.02502),
//! mirroring `diffusers/schedulers/scheduling_ddim.py` (diffusers 0.42.1) option for option.
//!
//! Precision: like diffusers, `alphas_cumprod` is a float32 table and every step coefficient
//! (`alpha_prod_t ** 0.5`, the variance, the direction coefficient) is float32 arithmetic; the
//! timesteps are int64 (exact integers here).

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result, SchedulerError};
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, PredictionType, TimestepSpacing};

/// diffusers `DDIMScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdimConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub clip_sample: bool,
    pub set_alpha_to_one: bool,
    pub steps_offset: i64,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
        }
    }
}

impl DdimConfig {
    pub(crate) fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self, self.rescale_betas_zero_snr)
    }
}

crate::register_scheduler!(DdimConfig, "DDIMScheduler", "DDIM (arXiv 2010.02502): deterministic for eta = 0, DDPM-like for eta = 1");

/// Shared validation of the x0 post-processing options (`thresholding`, `clip_sample`).
pub fn check_threshold(ratio: f64, max_value: f64) -> Result<()> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return opt_err("dynamic_thresholding_ratio", format!("must be in (0, 1], got {ratio}"));
    }
    if max_value.is_nan() || max_value < 1.0 || !max_value.is_finite() {
        return opt_err("sample_max_value", format!("must be a finite value >= 1, got {max_value}"));
    }
    Ok(())
}

#[typetag::serde(name = "DDIMScheduler")]
impl SchedulerConfig for DdimConfig {
    fn validate(&self) -> Result<()> {
        schedule::betas(&self.beta_params())?;
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        check_threshold(self.dynamic_thresholding_ratio, self.sample_max_value)?;
        if self.clip_sample_range.is_nan() || self.clip_sample_range <= 0.0 {
            return opt_err("clip_sample_range", "must be positive");
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
        let betas = schedule::betas(&self.beta_params())?;
        let ac = schedule::alphas_cumprod(&betas);
        let final_ac = if self.set_alpha_to_one { 1.0 } else { ac[0] };
        let timesteps = schedule::spaced_timesteps(self.timestep_spacing, n, t, self.steps_offset);
        check_int_timesteps(&timesteps, t)?;
        Ok(Box::new(DdimRun { cfg: self.clone(), ac, final_ac, core: RunCore::new(timesteps).with_steps(1, n) }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

/// `sigmoid` and `laplace` betas exist only in DDPMScheduler, `exp` only in HeunDiscreteScheduler
/// (others raise NotImplementedError): the common three plus `extra` are allowed.
pub fn betas_allowed(b: BetaSchedule, trained: bool, extra: &[BetaSchedule]) -> Result<()> {
    let common = matches!(b, BetaSchedule::Linear | BetaSchedule::ScaledLinear | BetaSchedule::SquaredcosCapV2);
    if !trained && !common && !extra.contains(&b) {
        return opt_err("beta_schedule", format!("{b:?} betas are not implemented for this scheduler"));
    }
    Ok(())
}

/// Only linear, scaled_linear and squaredcos_cap_v2 betas.
pub fn only_ddpm_betas(b: BetaSchedule, trained: bool) -> Result<()> {
    betas_allowed(b, trained, &[])
}

/// Every timestep must index the training tables (diffusers would fail with an IndexError at the
/// first step; here `set_timesteps` reports it, e.g. `leading` spacing with `steps_offset` that
/// pushes the first timestep to `num_train_timesteps`).
pub fn check_int_timesteps(ts: &[f64], t: usize) -> Result<()> {
    if let Some(bad) = ts.iter().find(|&&x| x < 0.0 || x >= t as f64) {
        return Err(SchedulerError::InvalidTimestep {
            timestep: *bad,
            message: format!("outside [0, {t}) (check steps_offset / timestep_spacing for this step count)"),
        });
    }
    Ok(())
}

/// `int(timestep)` as a table index, with a clear error for anything else.
pub fn table_index(timestep: f64, len: usize) -> Result<usize> {
    if timestep.fract() != 0.0 || timestep < 0.0 || timestep >= len as f64 {
        return Err(SchedulerError::InvalidTimestep {
            timestep,
            message: format!("expected an integer timestep in [0, {len})"),
        });
    }
    Ok(timestep as usize)
}

/// Emit `x0` / `eps` registers for a DDPM-family prediction (float32 coefficients, diffusers'
/// operation order). Returns (x0 register, eps register (if computed)).
pub fn emit_x0(p: &mut StepProgram, pred: PredictionType, alpha_prod_t: f32, beta_prod_t: f32, x0: Reg, eps: Reg, want_eps: bool) {
    let sa = alpha_prod_t.sqrt() as f64;
    let sb = beta_prod_t.sqrt() as f64;
    match pred {
        PredictionType::Epsilon => {
            p.lin(x0, &[(1.0, Reg::Sample), (-sb, Reg::Model)]).div(x0, x0, sa);
            if want_eps {
                p.lin(eps, &[(1.0, Reg::Model)]);
            }
        }
        PredictionType::Sample => {
            p.lin(x0, &[(1.0, Reg::Model)]);
            if want_eps {
                p.lin(eps, &[(1.0, Reg::Sample), (-sa, x0)]).div(eps, eps, sb);
            }
        }
        PredictionType::VPrediction => {
            p.lin(x0, &[(sa, Reg::Sample), (-sb, Reg::Model)]);
            if want_eps {
                p.lin(eps, &[(sa, Reg::Model), (sb, Reg::Sample)]);
            }
        }
    }
}

/// Emit `thresholding` / `clip_sample` on the predicted x0.
pub fn emit_clip(p: &mut StepProgram, x0: Reg, thresholding: bool, ratio: f64, max_value: f64, clip: bool, range: f64) {
    if thresholding {
        p.op(Op::Threshold { reg: x0, ratio, max_value });
    } else if clip {
        p.op(Op::Clamp { reg: x0, min: -range, max: range });
    }
}

/// DDPM-family `add_noise`: `sqrt(a) * x0 + sqrt(1 - a) * noise`, float32.
pub fn ddpm_add_noise(ac: &[f32], timestep: f64) -> Result<AddNoise> {
    let i = table_index(timestep, ac.len())?;
    let a = ac[i];
    Ok(AddNoise { a: a.sqrt() as f64, b: (1.0 - a).sqrt() as f64 })
}

#[derive(Clone, Debug)]
struct DdimRun {
    cfg: DdimConfig,
    ac: Vec<f32>,
    final_ac: f32,
    core: RunCore,
}

impl SchedulerRun for DdimRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        self.core.check_begin(begin_index)
    }
    fn plan_step(&mut self, timestep: f64, o: &StepOptions) -> Result<StepProgram> {
        let c = &self.cfg;
        let t = table_index(timestep, self.ac.len())?;
        let prev_t = t as i64 - (c.num_train_timesteps / self.core.num_inference_steps) as i64;
        let ap = self.ac[t];
        let app = if prev_t >= 0 { self.ac[prev_t as usize] } else { self.final_ac };
        let bp = 1.0 - ap;
        let mut p = StepProgram::default();
        let (x0, eps, out, noise) = (Reg::T(0), Reg::T(1), Reg::T(2), Reg::T(3));
        emit_x0(&mut p, c.prediction_type, ap, bp, x0, eps, true);
        emit_clip(&mut p, x0, c.thresholding, c.dynamic_thresholding_ratio, c.sample_max_value, c.clip_sample, c.clip_sample_range);
        let bpp = 1.0 - app;
        let variance = (bpp / bp) * (1.0 - ap / app);
        let std_dev_t = o.eta as f32 * variance.sqrt();
        if o.use_clipped_model_output {
            p.lin(eps, &[(1.0, Reg::Sample), (-(ap.sqrt() as f64), x0)]).div(eps, eps, bp.sqrt() as f64);
        }
        let dir = (1.0 - app - std_dev_t * std_dev_t).sqrt();
        p.lin(out, &[(app.sqrt() as f64, x0), (dir as f64, eps)]);
        if o.eta > 0.0 {
            p.op(Op::Noise { dst: noise });
            p.lin(out, &[(1.0, out), (std_dev_t as f64, noise)]);
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
