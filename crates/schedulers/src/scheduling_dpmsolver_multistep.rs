//! `DPMSolverMultistepScheduler` (Lu et al., DPM-Solver, arXiv 2206.00927, and DPM-Solver++,
//! arXiv 2211.01095), mirroring `diffusers/schedulers/scheduling_dpmsolver_multistep.py`
//! (diffusers 0.42.1): `dpmsolver++`, `dpmsolver`, `sde-dpmsolver++`, `sde-dpmsolver`; orders
//! 1–3; `midpoint` / `heun` solver types; `lower_order_final`; `euler_at_final`; Karras /
//! exponential / beta / Lu-lambda sigmas; `final_sigmas_type`; `lambda_min_clipped`;
//! thresholding; all timestep spacings.
//!
//! Precision, as diffusers: timesteps int64 (Karras/Lu timesteps are `round`ed, exponential and
//! beta ones truncated by the int64 cast), sigmas float32 (numpy f64 math then `astype(float32)`);
//! every step coefficient (alpha_t, sigma_t, lambda, h, r0, exp(-h) ...) is float32 arithmetic
//! of 0-d torch tensors, reproduced here in f32.
//!
//! Not supported (clear errors): `use_flow_sigmas`, `flow_prediction`, `use_dynamic_shifting`
//! (flow-matching models), custom timesteps. `variance_type = learned*` takes the first C channels
//! of a 2·C-channel model output (diffusers hard-codes `[:, :3]`, meant for RGB pixel models).

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result, SchedulerError};
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, FinalSigmasType, PredictionType, SigmaKind, TimestepSpacing};
use crate::scheduling_ddim::{check_threshold, only_ddpm_betas};
use crate::scheduling_euler_discrete::k_alphas_cumprod;

/// `algorithm_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlgorithmType {
    /// DPM-Solver++ (data prediction). diffusers maps `deis` to this.
    #[serde(rename = "dpmsolver++", alias = "deis")]
    DpmSolverPlusPlus,
    /// DPM-Solver (noise prediction; deprecated in diffusers).
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    /// SDE variant of DPM-Solver++.
    #[serde(rename = "sde-dpmsolver++")]
    SdeDpmSolverPlusPlus,
    /// SDE variant of DPM-Solver (deprecated in diffusers).
    #[serde(rename = "sde-dpmsolver")]
    SdeDpmSolver,
}

impl AlgorithmType {
    pub(crate) fn is_sde(self) -> bool {
        matches!(self, Self::SdeDpmSolver | Self::SdeDpmSolverPlusPlus)
    }
    pub(crate) fn predicts_data(self) -> bool {
        matches!(self, Self::DpmSolverPlusPlus | Self::SdeDpmSolverPlusPlus)
    }
}

/// `solver_type` of the second-order update. diffusers maps UniPC/DEIS names to `midpoint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverType {
    #[serde(alias = "logrho", alias = "bh1", alias = "bh2")]
    Midpoint,
    Heun,
}

/// `variance_type` (learned-variance models).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearnedVariance {
    Learned,
    LearnedRange,
}

/// diffusers `DPMSolverMultistepScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpmSolverMultistepConfig {
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
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmasType,
    /// `-inf` by default; serialized as a number, or as the string "-inf" (JSON has no infinity).
    #[serde(with = "crate::scheduling_dpmsolver_multistep::f64_inf")]
    pub lambda_min_clipped: f64,
    pub variance_type: Option<LearnedVariance>,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub rescale_betas_zero_snr: bool,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DpmSolverMultistepConfig {
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
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
        }
    }
}

crate::register_scheduler!(
    DpmSolverMultistepConfig,
    "DPMSolverMultistepScheduler",
    "DPM-Solver / DPM-Solver++ multistep (arXiv 2206.00927, 2211.01095), ODE and SDE variants, orders 1-3"
);

/// (De)serialize an f64 that may be ±infinity: numbers, or the strings "inf" / "-inf"
/// ("-Infinity" as Python's json writes it is accepted too).
pub mod f64_inf {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_infinite() {
            s.serialize_str(if *v < 0.0 { "-inf" } else { "inf" })
        } else {
            s.serialize_f64(*v)
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        N(f64),
        S(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::N(x) => Ok(x),
            NumOrStr::S(s) => match s.trim().to_ascii_lowercase().as_str() {
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                "inf" | "infinity" | "+inf" => Ok(f64::INFINITY),
                other => other.parse::<f64>().map_err(serde::de::Error::custom),
            },
        }
    }
}

/// Shared schedule of the multistep solvers (DPM-Solver multistep / singlestep, DEIS, UniPC).
#[derive(Clone, Debug)]
pub(crate) struct MultistepSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
}

/// Options of [`multistep_schedule`].
pub(crate) struct MultistepParams<'a> {
    pub ac: &'a [f32],
    pub n: usize,
    pub spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub lambda_min_clipped: f64,
    pub kind: SigmaKind,
    pub lu: bool,
    pub round_converted: bool,
    pub final_sigmas_type: FinalSigmasType,
    /// `sigma_min` / `sigma_max` config overrides of the sigma conversions (UniPC).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// UniPC: with converted sigmas, `final_sigmas_type = "sigma_min"` repeats the last
    /// converted sigma (instead of the table's first sigma).
    pub final_from_converted: bool,
}

/// `set_timesteps` of DPMSolverMultistepScheduler (also used by the other multistep solvers).
pub(crate) fn multistep_schedule(p: &MultistepParams) -> Result<MultistepSchedule> {
    let t = p.ac.len();
    let n = p.n;
    // lambda_t = log(alpha_t) - log(sigma_t) (float32), searchsorted on its flip.
    let clipped_idx = if p.lambda_min_clipped == f64::NEG_INFINITY {
        0
    } else {
        let lambdas: Vec<f32> = p.ac.iter().rev().map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln()).collect();
        lambdas.iter().position(|&l| l as f64 >= p.lambda_min_clipped).unwrap_or(lambdas.len())
    };
    let last_timestep = t - clipped_idx;
    if last_timestep < 1 {
        return opt_err("lambda_min_clipped", "clips every timestep");
    }
    let mut timesteps: Vec<f64> = match p.spacing {
        TimestepSpacing::Linspace => {
            let v = schedule::np_linspace(0.0, (last_timestep - 1) as f64, n + 1);
            v.iter().rev().take(n).map(|x| x.round_ties_even()).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (n + 1);
            (1..=n).rev().map(|i| (i * ratio) as f64 + p.steps_offset as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t as f64 / n as f64;
            schedule::np_arange_f64(last_timestep as f64, 0.0, -ratio).into_iter().map(|x| x.round_ties_even() - 1.0).collect()
        }
    };
    let table = schedule::sigmas_f32(p.ac);
    let log_sigmas: Vec<f32> = table.iter().map(|x| x.ln()).collect();
    let desc: Vec<f64> = table.iter().rev().map(|&x| x as f64).collect();
    let mut sigmas: Vec<f64>;
    if p.lu {
        let lmin = log_sigmas[0] as f64;
        let lmax = log_sigmas[t - 1] as f64;
        sigmas = schedule::np_linspace(0.0, 1.0, n).into_iter().map(|r| (lmax + r * (lmin - lmax)).exp()).collect();
        timesteps = sigmas.iter().map(|&s| schedule::sigma_to_t(s, &log_sigmas)).collect();
        if p.round_converted {
            timesteps.iter_mut().for_each(|x| *x = x.round_ties_even());
        }
    } else if p.kind != SigmaKind::Interpolated {
        sigmas = schedule::convert_sigmas(p.kind, &desc, n, p.sigma_min, p.sigma_max);
        timesteps = sigmas.iter().map(|&s| schedule::sigma_to_t(s, &log_sigmas)).collect();
        if p.kind == SigmaKind::Karras && p.round_converted {
            timesteps.iter_mut().for_each(|x| *x = x.round_ties_even());
        }
    } else {
        let table64: Vec<f64> = table.iter().map(|&x| x as f64).collect();
        sigmas = timesteps.iter().map(|&x| schedule::interp_index(x, &table64)).collect();
    }
    // int64 cast truncates toward zero
    let timesteps: Vec<f64> = timesteps.into_iter().map(f64::trunc).collect();
    let last = match p.final_sigmas_type {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin if p.final_from_converted && p.kind != SigmaKind::Interpolated => sigmas[sigmas.len() - 1],
        FinalSigmasType::SigmaMin => ((1.0 - p.ac[0]) / p.ac[0]).sqrt() as f64,
    };
    sigmas.push(last);
    let sigmas = sigmas.into_iter().map(|s| s as f32 as f64).collect();
    if let Some(bad) = timesteps.iter().find(|&&x| x < 0.0 || x >= t as f64) {
        return Err(SchedulerError::InvalidTimestep {
            timestep: *bad,
            message: format!("outside [0, {t}) (check steps_offset / timestep_spacing for this step count)"),
        });
    }
    Ok(MultistepSchedule { timesteps, sigmas })
}

/// `_sigma_to_alpha_sigma_t` in float32.
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha_t, sigma * alpha_t)
}

/// `lambda = log(alpha) - log(sigma)` in float32.
pub(crate) fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

impl DpmSolverMultistepConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self, self.rescale_betas_zero_snr)
    }
}

#[typetag::serde(name = "DPMSolverMultistepScheduler")]
impl SchedulerConfig for DpmSolverMultistepConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        schedule::betas(&self.beta_params())?;
        schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        check_threshold(self.dynamic_thresholding_ratio, self.sample_max_value)?;
        if !(1..=3).contains(&self.solver_order) {
            return opt_err("solver_order", format!("must be 1, 2 or 3, got {}", self.solver_order));
        }
        if !self.algorithm_type.predicts_data() && self.final_sigmas_type == FinalSigmasType::Zero {
            return opt_err(
                "final_sigmas_type",
                format!("`zero` is not supported for algorithm_type {:?}; choose `sigma_min`", self.algorithm_type),
            );
        }
        if self.use_flow_sigmas {
            return opt_err("use_flow_sigmas", "flow-matching sigmas are not supported by reel-schedulers");
        }
        if self.use_dynamic_shifting {
            return opt_err("use_dynamic_shifting", "dynamic shifting (flow matching) is not supported");
        }
        if self.algorithm_type == AlgorithmType::SdeDpmSolver && self.solver_order == 3 {
            // diffusers has no third-order sde-dpmsolver update (it would return None).
            return opt_err("solver_order", "sde-dpmsolver has no third-order update in diffusers");
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
        let kind = schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        let s = multistep_schedule(&MultistepParams {
            ac: &ac,
            n,
            spacing: self.timestep_spacing,
            steps_offset: self.steps_offset,
            lambda_min_clipped: self.lambda_min_clipped,
            kind,
            lu: self.use_lu_lambdas,
            round_converted: self.beta_schedule != BetaSchedule::SquaredcosCapV2,
            final_sigmas_type: self.final_sigmas_type,
            sigma_min: None,
            sigma_max: None,
            final_from_converted: false,
        })?;
        Ok(Box::new(DpmRun {
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
struct DpmRun {
    cfg: DpmSolverMultistepConfig,
    core: RunCore,
    lower_order_nums: usize,
    /// Which `model_outputs[k]` (persistent register S(k)) are set.
    filled: Vec<bool>,
}

/// Emit the shift of a model-output history of `len` persistent registers S(0..len) and store
/// `new` in the last one (`model_outputs[i] = model_outputs[i + 1]; model_outputs[-1] = new`).
pub(crate) fn push_history(p: &mut StepProgram, filled: &mut [bool], base: u8, new: Reg) {
    let len = filled.len();
    for k in 0..len.saturating_sub(1) {
        let dst = Reg::S(base + k as u8);
        if filled[k + 1] {
            p.lin(dst, &[(1.0, Reg::S(base + k as u8 + 1))]);
        } else {
            p.op(Op::Clear { reg: dst });
        }
        filled[k] = filled[k + 1];
    }
    p.lin(Reg::S(base + len as u8 - 1), &[(1.0, new)]);
    filled[len - 1] = true;
}

impl DpmRun {
    /// `convert_model_output` into register `dst`.
    fn convert(&self, p: &mut StepProgram, i: usize, dst: Reg) -> Result<()> {
        let c = &self.cfg;
        let opts = ConvertOpts {
            algorithm_type: c.algorithm_type,
            prediction_type: c.prediction_type,
            thresholding: c.thresholding,
            dynamic_thresholding_ratio: c.dynamic_thresholding_ratio,
            sample_max_value: c.sample_max_value,
            learned_variance: c.variance_type.is_some(),
        };
        dpm_convert(&opts, self.core.sig(i as isize)?, p, dst);
        Ok(())
    }
}

/// Options of DPM-Solver's `convert_model_output` (shared by the multistep and singlestep
/// solvers).
pub(crate) struct ConvertOpts {
    pub algorithm_type: AlgorithmType,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub learned_variance: bool,
}

/// DPM-Solver's `convert_model_output` at noise level `sigma` into register `dst`: x0 for the
/// `++` algorithms, epsilon otherwise (thresholding applied on x0).
pub(crate) fn dpm_convert(c: &ConvertOpts, sigma: f32, p: &mut StepProgram, dst: Reg) {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    let (a, s) = (alpha_t as f64, sigma_t as f64);
    if c.learned_variance {
        p.op(Op::SplitLearned { pv: Reg::T(29) });
    }
    let thresh = Op::Threshold { reg: dst, ratio: c.dynamic_thresholding_ratio, max_value: c.sample_max_value };
    if c.algorithm_type.predicts_data() {
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
            p.op(thresh);
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
        if c.thresholding {
            let x0 = Reg::T(28);
            p.lin(x0, &[(1.0, Reg::Sample), (-s, dst)]).div(x0, x0, a);
            p.op(Op::Threshold { reg: x0, ratio: c.dynamic_thresholding_ratio, max_value: c.sample_max_value });
            p.lin(dst, &[(1.0, Reg::Sample), (-a, x0)]).div(dst, dst, s);
        }
    }
}

impl SchedulerRun for DpmRun {
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
        let lower_order_final = i == n - 1
            && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i + 2 == n && c.lower_order_final && n < 15;
        let mut p = StepProgram::default();
        let conv = Reg::T(0);
        self.convert(&mut p, i, conv)?;
        let order = c.solver_order;
        let mut filled = std::mem::take(&mut self.filled);
        push_history(&mut p, &mut filled, 0, conv);
        self.filled = filled;
        let noise = Reg::T(1);
        if c.algorithm_type.is_sde() {
            p.op(Op::Noise { dst: noise });
        }
        let out = Reg::T(2);
        let m = |k: usize| Reg::S((order - 1 - k) as u8); // m0 = newest
        let sig_t = self.core.sig(i as isize + 1)?;
        let sig_s0 = self.core.sig(i as isize)?;
        let (alpha_t, sigma_t) = alpha_sigma(sig_t);
        let (alpha_s0, sigma_s0) = alpha_sigma(sig_s0);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let h = lambda_t - lambda_s0;
        let f = |x: f32| x as f64;
        let alg = c.algorithm_type;
        if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            match alg {
                AlgorithmType::DpmSolverPlusPlus => {
                    p.lin(out, &[(f(sigma_t / sigma_s0), Reg::Sample), (-f(alpha_t * ((-h).exp() - 1.0)), conv)]);
                }
                AlgorithmType::DpmSolver => {
                    p.lin(out, &[(f(alpha_t / alpha_s0), Reg::Sample), (-f(sigma_t * (h.exp() - 1.0)), conv)]);
                }
                AlgorithmType::SdeDpmSolverPlusPlus => {
                    p.lin(out, &[
                        (f(sigma_t / sigma_s0 * (-h).exp()), Reg::Sample),
                        (f(alpha_t * (1.0 - (-2.0 * h).exp())), conv),
                        (f(sigma_t * (1.0 - (-2.0 * h).exp()).sqrt()), noise),
                    ]);
                }
                AlgorithmType::SdeDpmSolver => {
                    p.lin(out, &[
                        (f(alpha_t / alpha_s0), Reg::Sample),
                        (-f(2.0 * (sigma_t * (h.exp() - 1.0))), conv),
                        (f(sigma_t * ((2.0 * h).exp() - 1.0).sqrt()), noise),
                    ]);
                }
            }
        } else {
            let sig_s1 = self.core.sig(i as isize - 1)?;
            let (alpha_s1, sigma_s1) = alpha_sigma(sig_s1);
            let lambda_s1 = lambda(alpha_s1, sigma_s1);
            let h_0 = lambda_s0 - lambda_s1;
            let r0 = h_0 / h;
            let (d1, tmp) = (Reg::T(3), Reg::T(4));
            if order == 2 || self.lower_order_nums < 2 || lower_order_second {
                p.lin(tmp, &[(1.0, m(0)), (-1.0, m(1))]).lin(d1, &[(f(1.0 / r0), tmp)]);
                let em1 = (-h).exp() - 1.0;
                let ep1 = h.exp() - 1.0;
                let e2 = 1.0 - (-2.0 * h).exp();
                let terms: Vec<(f64, Reg)> = match (alg, c.solver_type) {
                    (AlgorithmType::DpmSolverPlusPlus, SolverType::Midpoint) => vec![
                        (f(sigma_t / sigma_s0), Reg::Sample),
                        (-f(alpha_t * em1), m(0)),
                        (-f(0.5 * (alpha_t * em1)), d1),
                    ],
                    (AlgorithmType::DpmSolverPlusPlus, SolverType::Heun) => vec![
                        (f(sigma_t / sigma_s0), Reg::Sample),
                        (-f(alpha_t * em1), m(0)),
                        (f(alpha_t * (em1 / h + 1.0)), d1),
                    ],
                    (AlgorithmType::DpmSolver, SolverType::Midpoint) => vec![
                        (f(alpha_t / alpha_s0), Reg::Sample),
                        (-f(sigma_t * ep1), m(0)),
                        (-f(0.5 * (sigma_t * ep1)), d1),
                    ],
                    (AlgorithmType::DpmSolver, SolverType::Heun) => vec![
                        (f(alpha_t / alpha_s0), Reg::Sample),
                        (-f(sigma_t * ep1), m(0)),
                        (-f(sigma_t * (ep1 / h - 1.0)), d1),
                    ],
                    (AlgorithmType::SdeDpmSolverPlusPlus, SolverType::Midpoint) => vec![
                        (f(sigma_t / sigma_s0 * (-h).exp()), Reg::Sample),
                        (f(alpha_t * e2), m(0)),
                        (f(0.5 * (alpha_t * e2)), d1),
                        (f(sigma_t * e2.sqrt()), noise),
                    ],
                    (AlgorithmType::SdeDpmSolverPlusPlus, SolverType::Heun) => vec![
                        (f(sigma_t / sigma_s0 * (-h).exp()), Reg::Sample),
                        (f(alpha_t * e2), m(0)),
                        (f(alpha_t * (e2 / (-2.0 * h) + 1.0)), d1),
                        (f(sigma_t * e2.sqrt()), noise),
                    ],
                    (AlgorithmType::SdeDpmSolver, SolverType::Midpoint) => vec![
                        (f(alpha_t / alpha_s0), Reg::Sample),
                        (-f(2.0 * (sigma_t * ep1)), m(0)),
                        (-f(sigma_t * ep1), d1),
                        (f(sigma_t * ((2.0 * h).exp() - 1.0).sqrt()), noise),
                    ],
                    (AlgorithmType::SdeDpmSolver, SolverType::Heun) => vec![
                        (f(alpha_t / alpha_s0), Reg::Sample),
                        (-f(2.0 * (sigma_t * ep1)), m(0)),
                        (-f(2.0 * (sigma_t * (ep1 / h - 1.0))), d1),
                        (f(sigma_t * ((2.0 * h).exp() - 1.0).sqrt()), noise),
                    ],
                };
                p.lin(out, &terms);
            } else {
                let sig_s2 = self.core.sig(i as isize - 2)?;
                let (alpha_s2, sigma_s2) = alpha_sigma(sig_s2);
                let lambda_s2 = lambda(alpha_s2, sigma_s2);
                let h_1 = lambda_s1 - lambda_s2;
                let r1 = h_1 / h;
                let (d1_0, d1_1, diff, d2) = (Reg::T(5), Reg::T(6), Reg::T(7), Reg::T(8));
                p.lin(tmp, &[(1.0, m(0)), (-1.0, m(1))]).lin(d1_0, &[(f(1.0 / r0), tmp)]);
                p.lin(tmp, &[(1.0, m(1)), (-1.0, m(2))]).lin(d1_1, &[(f(1.0 / r1), tmp)]);
                p.lin(diff, &[(1.0, d1_0), (-1.0, d1_1)]);
                p.lin(d1, &[(1.0, d1_0), (f(r0 / (r0 + r1)), diff)]);
                p.lin(d2, &[(f(1.0 / (r0 + r1)), diff)]);
                let terms: Vec<(f64, Reg)> = match alg {
                    AlgorithmType::DpmSolverPlusPlus => {
                        let em1 = (-h).exp() - 1.0;
                        vec![
                            (f(sigma_t / sigma_s0), Reg::Sample),
                            (-f(alpha_t * em1), m(0)),
                            (f(alpha_t * (em1 / h + 1.0)), d1),
                            (-f(alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5)), d2),
                        ]
                    }
                    AlgorithmType::DpmSolver => {
                        let ep1 = h.exp() - 1.0;
                        vec![
                            (f(alpha_t / alpha_s0), Reg::Sample),
                            (-f(sigma_t * ep1), m(0)),
                            (-f(sigma_t * (ep1 / h - 1.0)), d1),
                            (-f(sigma_t * ((h.exp() - 1.0 - h) / (h * h) - 0.5)), d2),
                        ]
                    }
                    AlgorithmType::SdeDpmSolverPlusPlus => {
                        let e2 = 1.0 - (-2.0 * h).exp();
                        vec![
                            (f(sigma_t / sigma_s0 * (-h).exp()), Reg::Sample),
                            (f(alpha_t * e2), m(0)),
                            (f(alpha_t * (e2 / (-2.0 * h) + 1.0)), d1),
                            (f(alpha_t * ((1.0 - (-2.0 * h).exp() - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5)), d2),
                            (f(sigma_t * e2.sqrt()), noise),
                        ]
                    }
                    AlgorithmType::SdeDpmSolver => {
                        return opt_err("solver_order", "sde-dpmsolver has no third-order update");
                    }
                };
                p.lin(out, &terms);
            }
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
