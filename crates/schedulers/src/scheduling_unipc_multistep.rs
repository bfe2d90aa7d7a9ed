//! `UniPCMultistepScheduler` (Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for
//! Fast Sampling of Diffusion Models", arXiv 2302.04867), mirroring
//! `diffusers/schedulers/scheduling_unipc_multistep.py` (diffusers 0.42.1): bh1/bh2,
//! `predict_x0`, orders 1–3 (higher orders run too), `lower_order_final`, `disable_corrector`,
//! Karras / exponential / beta sigmas with `sigma_min`/`sigma_max`, `final_sigmas_type`,
//! thresholding, all spacings.
//!
//! Precision: int64 timesteps, float32 sigmas; all step scalars (lambda, h, `expm1`, the
//! `R`/`b` system) are float32 like diffusers' 0-d tensors. The small linear systems
//! (`torch.linalg.solve`, at most 3×3) are solved in f64 and rounded to f32.
//! Not supported: `solver_p`, flow-matching options (`use_flow_sigmas`, `flow_prediction`,
//! `use_dynamic_shifting`, `shift_terminal`).

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result, SchedulerError};
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, FinalSigmasType, PredictionType, TimestepSpacing};
use crate::scheduling_ddim::{check_threshold, only_ddpm_betas};
use crate::scheduling_dpmsolver_multistep::{alpha_sigma, lambda, multistep_schedule, push_history, MultistepParams};
use crate::scheduling_euler_discrete::k_alphas_cumprod;

/// UniPC `solver_type` (diffusers maps `midpoint`/`heun`/`logrho` to `bh2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UniPcSolverType {
    Bh1,
    #[serde(alias = "midpoint", alias = "heun", alias = "logrho")]
    Bh2,
}

/// diffusers `UniPCMultistepScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UniPcMultistepConfig {
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
    pub predict_x0: bool,
    pub solver_type: UniPcSolverType,
    pub lower_order_final: bool,
    pub disable_corrector: Vec<usize>,
    /// Must be null: a second scheduler object as predictor is not supported.
    pub solver_p: Option<serde_json::Value>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub final_sigmas_type: FinalSigmasType,
    pub rescale_betas_zero_snr: bool,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub shift_terminal: Option<f64>,
}

impl Default for UniPcMultistepConfig {
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
            predict_x0: true,
            solver_type: UniPcSolverType::Bh2,
            lower_order_final: true,
            disable_corrector: vec![],
            solver_p: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
            rescale_betas_zero_snr: false,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
            sigma_min: None,
            sigma_max: None,
            shift_terminal: None,
        }
    }
}

crate::register_scheduler!(
    UniPcMultistepConfig,
    "UniPCMultistepScheduler",
    "UniPC predictor-corrector (arXiv 2302.04867), bh1/bh2, multistep"
);

impl UniPcMultistepConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self, self.rescale_betas_zero_snr)
    }
}

#[typetag::serde(name = "UniPCMultistepScheduler")]
impl SchedulerConfig for UniPcMultistepConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        schedule::betas(&self.beta_params())?;
        schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        check_threshold(self.dynamic_thresholding_ratio, self.sample_max_value)?;
        if self.solver_order == 0 || self.solver_order > 3 {
            return opt_err("solver_order", format!("must be 1, 2 or 3, got {}", self.solver_order));
        }
        if self.solver_p.as_ref().is_some_and(|v| !v.is_null()) {
            return opt_err("solver_p", "a separate predictor scheduler is not supported");
        }
        if self.use_flow_sigmas || self.use_dynamic_shifting || self.shift_terminal.is_some() {
            return opt_err("use_flow_sigmas", "flow-matching options are not supported by reel-schedulers");
        }
        // thresholding without predict_x0: diffusers ignores it; accepted, no effect.
        Ok(())
    }
    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        self.validate()?;
        schedule::check_steps(n, self.num_train_timesteps)?;
        let ac = k_alphas_cumprod(&self.beta_params())?;
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
            final_sigmas_type: self.final_sigmas_type,
            sigma_min: self.sigma_min,
            sigma_max: self.sigma_max,
            final_from_converted: true,
        })?;
        Ok(Box::new(UniPcRun {
            cfg: self.clone(),
            core: RunCore::with_sigmas(s.timesteps, s.sigmas, 1.0),
            lower_order_nums: 0,
            this_order: 0,
            filled: vec![false; self.solver_order],
            last_sample: false,
        }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct UniPcRun {
    cfg: UniPcMultistepConfig,
    core: RunCore,
    lower_order_nums: usize,
    this_order: usize,
    filled: Vec<bool>,
    last_sample: bool,
}

const LAST_SAMPLE: Reg = Reg::S(8);

/// Solve `a x = b` (n <= 3) by Gaussian elimination with partial pivoting, in f64.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        if a[piv][c] == 0.0 || !a[piv][c].is_finite() {
            return Err(SchedulerError::State("singular UniPC coefficient system".into()));
        }
        a.swap(c, piv);
        b.swap(c, piv);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            let pivot_row = a[c].clone();
            for (v, pv) in a[r].iter_mut().zip(pivot_row.iter()).skip(c) {
                *v -= f * pv;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Ok(x)
}

struct Coeffs {
    /// scale of x (sigma_t/sigma_s0 or alpha_t/alpha_s0)
    cx: f32,
    /// scale of m0 (alpha_t·h_phi_1 or sigma_t·h_phi_1)
    cm: f32,
    /// alpha_t·B_h (or sigma_t·B_h)
    cb: f32,
    rks: Vec<f32>,
    r: Vec<Vec<f32>>,
    b: Vec<f32>,
}

impl UniPcRun {
    /// The shared scalar part of the predictor (t = idx_t, s0 = idx_s0, previous points at
    /// `prev(i)` for i in 1..order).
    fn coeffs(&self, idx_t: isize, idx_s0: isize, prev: impl Fn(usize) -> isize, order: usize) -> Result<Coeffs> {
        let (alpha_t, sigma_t) = alpha_sigma(self.core.sig(idx_t)?);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.core.sig(idx_s0)?);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let h = lambda_t - lambda_s0;
        let mut rks = Vec::new();
        for i in 1..order {
            let (a, s) = alpha_sigma(self.core.sig(prev(i))?);
            rks.push((lambda(a, s) - lambda_s0) / h);
        }
        rks.push(1.0);
        let px0 = self.cfg.predict_x0;
        let hh = if px0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial: u64 = 1;
        let b_h = match self.cfg.solver_type {
            UniPcSolverType::Bh1 => hh,
            UniPcSolverType::Bh2 => hh.exp_m1(),
        };
        let mut r = Vec::new();
        let mut b = Vec::new();
        for i in 1..=order {
            r.push(rks.iter().map(|&x| x.powi(i as i32 - 1)).collect::<Vec<f32>>());
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i as u64 + 1;
            h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
        }
        let (cx, cm, cb) = if px0 {
            (sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h)
        } else {
            (alpha_t / alpha_s0, sigma_t * h_phi_1, sigma_t * b_h)
        };
        Ok(Coeffs { cx, cm, cb, rks, r, b })
    }

    fn solve_f32(r: &[Vec<f32>], b: &[f32], n: usize) -> Result<Vec<f32>> {
        let a: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| r[i][j] as f64).collect()).collect();
        let bb: Vec<f64> = b[..n].iter().map(|&x| x as f64).collect();
        Ok(solve(a, bb)?.into_iter().map(|x| x as f32).collect())
    }

    /// `convert_model_output` into `dst`.
    fn convert(&self, p: &mut StepProgram, i: usize, dst: Reg) -> Result<()> {
        let c = &self.cfg;
        let (alpha_t, sigma_t) = alpha_sigma(self.core.sig(i as isize)?);
        let (a, s) = (alpha_t as f64, sigma_t as f64);
        if c.predict_x0 {
            match c.prediction_type {
                PredictionType::Epsilon => {
                    p.lin(dst, &[(1.0, Reg::Sample), (-s, Reg::Model)]).div(dst, dst, a);
                }
                PredictionType::Sample => {
                    p.lin(dst, &[(1.0, Reg::Model)]);
                }
                PredictionType::VPrediction => {
                    p.lin(dst, &[(a, Reg::Sample), (-s, Reg::Model)]);
                }
            }
            if c.thresholding {
                p.op(Op::Threshold { reg: dst, ratio: c.dynamic_thresholding_ratio, max_value: c.sample_max_value });
            }
        } else {
            match c.prediction_type {
                PredictionType::Epsilon => {
                    p.lin(dst, &[(1.0, Reg::Model)]);
                }
                PredictionType::Sample => {
                    p.lin(dst, &[(1.0, Reg::Sample), (-a, Reg::Model)]).div(dst, dst, s);
                }
                PredictionType::VPrediction => {
                    p.lin(dst, &[(a, Reg::Model), (s, Reg::Sample)]);
                }
            }
        }
        Ok(())
    }
}

impl SchedulerRun for UniPcRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn plan_step(&mut self, timestep: f64, _o: &StepOptions) -> Result<StepProgram> {
        let n = self.core.timesteps.len();
        let i = self.core.multistep_index(timestep)?;
        let order_cfg = self.cfg.solver_order;
        let m = |k: usize| Reg::S((order_cfg - 1 - k) as u8); // model_outputs[-(k+1)]
        let mut p = StepProgram::default();
        let conv = Reg::T(0);
        self.convert(&mut p, i, conv)?;
        let use_corrector = i > 0 && !self.cfg.disable_corrector.contains(&(i - 1)) && self.last_sample;
        let mut sample = Reg::Sample;
        if use_corrector {
            // multistep_uni_c_bh_update(conv, last_sample, sample, order = this_order)
            let order = self.this_order;
            let ii = i as isize;
            let c = self.coeffs(ii, ii - 1, |k| ii - (k as isize + 1), order)?;
            let xt_ = Reg::T(1);
            p.lin(xt_, &[(c.cx as f64, LAST_SAMPLE), (-(c.cm as f64), m(0))]);
            let rhos = if order == 1 { vec![0.5f32] } else { Self::solve_f32(&c.r, &c.b, order)? };
            let d1t = Reg::T(2);
            p.lin(d1t, &[(1.0, conv), (-1.0, m(0))]);
            let inner = Reg::T(3);
            let mut terms = Vec::new();
            if order > 1 {
                let corr = Reg::T(4);
                let mut cterms = Vec::new();
                for k in 1..order {
                    let d = Reg::T(10 + k as u8);
                    p.lin(d, &[(1.0, m(k)), (-1.0, m(0))]).div(d, d, c.rks[k - 1] as f64);
                    cterms.push((rhos[k - 1] as f64, d));
                }
                p.lin(corr, &cterms);
                terms.push((1.0, corr));
            }
            terms.push((rhos[order - 1] as f64, d1t));
            p.lin(inner, &terms);
            let corrected = Reg::T(5);
            p.lin(corrected, &[(1.0, xt_), (-(c.cb as f64), inner)]);
            sample = corrected;
        }
        let mut filled = std::mem::take(&mut self.filled);
        push_history(&mut p, &mut filled, 0, conv);
        self.filled = filled;
        let this_order = if self.cfg.lower_order_final { order_cfg.min(n - i) } else { order_cfg };
        let this_order = this_order.min(self.lower_order_nums + 1);
        self.this_order = this_order;
        p.lin(LAST_SAMPLE, &[(1.0, sample)]);
        self.last_sample = true;
        // multistep_uni_p_bh_update(sample, order = this_order)
        let ii = i as isize;
        let c = self.coeffs(ii + 1, ii, |k| ii - k as isize, this_order)?;
        let xt_ = Reg::T(6);
        p.lin(xt_, &[(c.cx as f64, sample), (-(c.cm as f64), m(0))]);
        let out = Reg::T(7);
        if this_order > 1 {
            let rhos = if this_order == 2 { vec![0.5f32] } else { Self::solve_f32(&c.r, &c.b, this_order - 1)? };
            let pr = Reg::T(8);
            let mut terms = Vec::new();
            for k in 1..this_order {
                let d = Reg::T(20 + k as u8);
                p.lin(d, &[(1.0, m(k)), (-1.0, m(0))]).div(d, d, c.rks[k - 1] as f64);
                terms.push((rhos[k - 1] as f64, d));
            }
            p.lin(pr, &terms);
            p.lin(out, &[(1.0, xt_), (-(c.cb as f64), pr)]);
        } else {
            // x_t = x_t_ - coef * 0: NaN in diffusers when the coefficient is infinite (bh1 at a
            // zero final sigma); the dry run refuses that.
            let zero_term = c.cb * 0.0;
            if zero_term.is_finite() {
                p.lin(out, &[(1.0, xt_)]);
            } else {
                p.lin(out, &[(1.0, xt_), (zero_term as f64, xt_)]);
            }
        }
        if self.lower_order_nums < order_cfg {
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
