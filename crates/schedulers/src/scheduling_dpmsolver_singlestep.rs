//! `DPMSolverSinglestepScheduler` (singlestep DPM-Solver / DPM-Solver++, Lu et al. arXiv
//! 2206.00927 and 2211.01095), mirroring `diffusers/schedulers/scheduling_dpmsolver_singlestep.py`
//! (diffusers 0.42.1): `dpmsolver++`, `dpmsolver`, `sde-dpmsolver++`; orders 1–3; midpoint /
//! heun; `lower_order_final`; Karras / exponential / beta sigmas; `final_sigmas_type`;
//! `lambda_min_clipped`; thresholding.
//!
//! diffusers *mutates its config* in `set_timesteps` (`lower_order_final = True` when N is not
//! a multiple of `solver_order`, or with `final_sigmas_type = "zero"`), which then sticks for
//! later calls; here the effective value is computed per run and the shared config is never
//! modified. Precision as DPMSolverMultistep (float32 step scalars, int64 timesteps).

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result, SchedulerError};
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, FinalSigmasType, PredictionType, TimestepSpacing};
use crate::scheduling_ddim::{check_threshold, only_ddpm_betas};
use crate::scheduling_dpmsolver_multistep::{
    alpha_sigma, dpm_convert, f64_inf, lambda, multistep_schedule, push_history, AlgorithmType, ConvertOpts,
    LearnedVariance, MultistepParams, SolverType,
};
use crate::scheduling_euler_discrete::k_alphas_cumprod;

/// diffusers `DPMSolverSinglestepScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpmSolverSinglestepConfig {
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
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmasType,
    #[serde(with = "f64_inf")]
    pub lambda_min_clipped: f64,
    pub variance_type: Option<LearnedVariance>,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DpmSolverSinglestepConfig {
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
            lower_order_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
        }
    }
}

crate::register_scheduler!(
    DpmSolverSinglestepConfig,
    "DPMSolverSinglestepScheduler",
    "Singlestep DPM-Solver / DPM-Solver++ (arXiv 2206.00927, 2211.01095), orders 1-3"
);

impl DpmSolverSinglestepConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self)
    }
}

/// `get_order_list(N)` with the effective `lower_order_final`.
fn order_list(steps: usize, order: usize, lof: bool, final_zero: bool) -> Vec<usize> {
    let rep = |pat: &[usize], k: usize| -> Vec<usize> { pat.iter().cycle().take(pat.len() * k).cloned().collect() };
    let mut orders = if lof {
        match order {
            3 => match steps % 3 {
                0 => [rep(&[1, 2, 3], (steps / 3).saturating_sub(1)), vec![1, 2, 1]].concat(),
                1 => [rep(&[1, 2, 3], steps / 3), vec![1]].concat(),
                _ => [rep(&[1, 2, 3], steps / 3), vec![1, 2]].concat(),
            },
            2 => {
                if steps.is_multiple_of(2) {
                    [rep(&[1, 2], (steps / 2).saturating_sub(1)), vec![1, 1]].concat()
                } else {
                    [rep(&[1, 2], steps / 2), vec![1]].concat()
                }
            }
            _ => vec![1; steps],
        }
    } else {
        match order {
            3 => rep(&[1, 2, 3], steps / 3),
            2 => rep(&[1, 2], steps / 2),
            _ => vec![1; steps],
        }
    };
    if final_zero {
        if let Some(l) = orders.last_mut() {
            *l = 1;
        }
    }
    orders
}

#[typetag::serde(name = "DPMSolverSinglestepScheduler")]
impl SchedulerConfig for DpmSolverSinglestepConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        schedule::betas(&self.beta_params())?;
        schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        check_threshold(self.dynamic_thresholding_ratio, self.sample_max_value)?;
        if !(1..=3).contains(&self.solver_order) {
            return opt_err("solver_order", format!("must be 1, 2 or 3, got {}", self.solver_order));
        }
        if self.algorithm_type == AlgorithmType::SdeDpmSolver {
            return opt_err("algorithm_type", "sde-dpmsolver is not implemented for DPMSolverSinglestepScheduler (as in diffusers)");
        }
        if self.algorithm_type == AlgorithmType::DpmSolver && self.final_sigmas_type == FinalSigmasType::Zero {
            return opt_err("final_sigmas_type", "`zero` is not supported for algorithm_type dpmsolver; choose `sigma_min`");
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
        let ac = k_alphas_cumprod(&self.beta_params())?;
        let kind = schedule::sigma_kind(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)?;
        let s = multistep_schedule(&MultistepParams {
            ac: &ac,
            n,
            spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            lambda_min_clipped: self.lambda_min_clipped,
            kind,
            lu: false,
            round_converted: true,
            final_sigmas_type: self.final_sigmas_type,
            sigma_min: None,
            sigma_max: None,
            final_from_converted: false,
        })?;
        let final_zero = self.final_sigmas_type == FinalSigmasType::Zero;
        let lof = self.lower_order_final || !n.is_multiple_of(self.solver_order) || final_zero;
        let orders = order_list(n, self.solver_order, lof, final_zero);
        if orders.len() < s.timesteps.len() {
            return Err(SchedulerError::InvalidSteps { steps: n, message: "order list shorter than the schedule".into() });
        }
        Ok(Box::new(SingleRun {
            cfg: self.clone(),
            core: RunCore::with_sigmas(s.timesteps, s.sigmas, 1.0),
            orders,
            filled: vec![false; self.solver_order],
            has_sample: false,
        }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct SingleRun {
    cfg: DpmSolverSinglestepConfig,
    core: RunCore,
    orders: Vec<usize>,
    filled: Vec<bool>,
    has_sample: bool,
}

const STORED: Reg = Reg::S(8);

impl SchedulerRun for SingleRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn plan_step(&mut self, timestep: f64, _o: &StepOptions) -> Result<StepProgram> {
        let i = self.core.multistep_index(timestep)?;
        let c = self.cfg.clone();
        let mut p = StepProgram::default();
        let conv = Reg::T(0);
        let opts = ConvertOpts {
            algorithm_type: c.algorithm_type,
            prediction_type: c.prediction_type,
            thresholding: c.thresholding,
            dynamic_thresholding_ratio: c.dynamic_thresholding_ratio,
            sample_max_value: c.sample_max_value,
            learned_variance: c.variance_type.is_some(),
        };
        dpm_convert(&opts, self.core.sig(i as isize)?, &mut p, conv);
        let so = c.solver_order;
        let mut filled = std::mem::take(&mut self.filled);
        push_history(&mut p, &mut filled, 0, conv);
        self.filled = filled;
        let noise = Reg::T(1);
        if c.algorithm_type.is_sde() {
            p.op(Op::Noise { dst: noise });
        }
        let mut order = self.orders[i];
        while order > 1 && !self.filled[so - order] {
            order -= 1;
        }
        if order == 1 {
            p.lin(STORED, &[(1.0, Reg::Sample)]);
            self.has_sample = true;
        }
        if !self.has_sample {
            return Err(SchedulerError::State("singlestep update without a stored sample".into()));
        }
        let m = |k: usize| Reg::S((so - 1 - k) as u8);
        let f = |x: f32| x as f64;
        let ii = i as isize;
        let (alpha_t, sigma_t) = alpha_sigma(self.core.sig(ii + 1)?);
        let lambda_t = lambda(alpha_t, sigma_t);
        let out = Reg::T(2);
        let alg = c.algorithm_type;
        // anchor: the sample `order - 1` steps back (s0 for order 1, s1 for 2, s2 for 3)
        let (alpha_a, sigma_a) = alpha_sigma(self.core.sig(ii - (order as isize - 1))?);
        let lambda_a = lambda(alpha_a, sigma_a);
        let h = lambda_t - lambda_a;
        let em1 = (-h).exp() - 1.0;
        let ep1 = h.exp() - 1.0;
        let e2 = 1.0 - (-2.0 * h).exp();
        let sample_coef = match alg {
            AlgorithmType::DpmSolverPlusPlus => sigma_t / sigma_a,
            AlgorithmType::DpmSolver => alpha_t / alpha_a,
            _ => sigma_t / sigma_a * (-h).exp(),
        };
        let noise_term = (f(sigma_t * e2.sqrt()), noise);
        let mut terms: Vec<(f64, Reg)> = vec![(f(sample_coef), STORED)];
        match order {
            1 => match alg {
                AlgorithmType::DpmSolverPlusPlus => terms.push((-f(alpha_t * em1), m(0))),
                AlgorithmType::DpmSolver => terms.push((-f(sigma_t * ep1), m(0))),
                _ => {
                    terms.push((f(alpha_t * e2), m(0)));
                    terms.push(noise_term);
                }
            },
            2 => {
                let (alpha_s0, sigma_s0) = alpha_sigma(self.core.sig(ii)?);
                let h_0 = lambda(alpha_s0, sigma_s0) - lambda_a;
                let r0 = h_0 / h;
                let (d1, tmp) = (Reg::T(3), Reg::T(4));
                p.lin(tmp, &[(1.0, m(0)), (-1.0, m(1))]).lin(d1, &[(f(1.0 / r0), tmp)]);
                let d0 = m(1);
                match (alg, c.solver_type) {
                    (AlgorithmType::DpmSolverPlusPlus, SolverType::Midpoint) => {
                        terms.push((-f(alpha_t * em1), d0));
                        terms.push((-f(0.5 * (alpha_t * em1)), d1));
                    }
                    (AlgorithmType::DpmSolverPlusPlus, SolverType::Heun) => {
                        terms.push((-f(alpha_t * em1), d0));
                        terms.push((f(alpha_t * (em1 / h + 1.0)), d1));
                    }
                    (AlgorithmType::DpmSolver, SolverType::Midpoint) => {
                        terms.push((-f(sigma_t * ep1), d0));
                        terms.push((-f(0.5 * (sigma_t * ep1)), d1));
                    }
                    (AlgorithmType::DpmSolver, SolverType::Heun) => {
                        terms.push((-f(sigma_t * ep1), d0));
                        terms.push((-f(sigma_t * (ep1 / h - 1.0)), d1));
                    }
                    (_, SolverType::Midpoint) => {
                        terms.push((f(alpha_t * e2), d0));
                        terms.push((f(0.5 * (alpha_t * e2)), d1));
                        terms.push(noise_term);
                    }
                    (_, SolverType::Heun) => {
                        terms.push((f(alpha_t * e2), d0));
                        terms.push((f(alpha_t * (e2 / (-2.0 * h) + 1.0)), d1));
                        terms.push(noise_term);
                    }
                }
            }
            _ => {
                let (alpha_s0, sigma_s0) = alpha_sigma(self.core.sig(ii)?);
                let (alpha_s1, sigma_s1) = alpha_sigma(self.core.sig(ii - 1)?);
                let h_0 = lambda(alpha_s0, sigma_s0) - lambda_a;
                let h_1 = lambda(alpha_s1, sigma_s1) - lambda_a;
                let (r0, r1) = (h_0 / h, h_1 / h);
                let (d1_0, d1_1, d1, d2, tmp) = (Reg::T(5), Reg::T(6), Reg::T(7), Reg::T(8), Reg::T(9));
                p.lin(tmp, &[(1.0, m(1)), (-1.0, m(2))]).lin(d1_0, &[(f(1.0 / r1), tmp)]);
                p.lin(tmp, &[(1.0, m(0)), (-1.0, m(2))]).lin(d1_1, &[(f(1.0 / r0), tmp)]);
                // D1 and D2 are only used by the heun variants (diffusers computes them always;
                // with a duplicated timestep they are inf/NaN there but unused by midpoint)
                if c.solver_type == SolverType::Heun {
                    p.lin(d1, &[(f(r0), d1_0), (-f(r1), d1_1)]).div(d1, d1, f(r0 - r1));
                    p.lin(tmp, &[(1.0, d1_1), (-1.0, d1_0)]).lin(d2, &[(2.0, tmp)]).div(d2, d2, f(r0 - r1));
                }
                let d0 = m(2);
                match (alg, c.solver_type) {
                    (AlgorithmType::DpmSolverPlusPlus, SolverType::Midpoint) => {
                        terms.push((-f(alpha_t * em1), d0));
                        terms.push((f(alpha_t * (em1 / h + 1.0)), d1_1));
                    }
                    (AlgorithmType::DpmSolverPlusPlus, SolverType::Heun) => {
                        terms.push((-f(alpha_t * em1), d0));
                        terms.push((f(alpha_t * (em1 / h + 1.0)), d1));
                        terms.push((-f(alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5)), d2));
                    }
                    (AlgorithmType::DpmSolver, SolverType::Midpoint) => {
                        terms.push((-f(sigma_t * ep1), d0));
                        terms.push((-f(sigma_t * (ep1 / h - 1.0)), d1_1));
                    }
                    (AlgorithmType::DpmSolver, SolverType::Heun) => {
                        terms.push((-f(sigma_t * ep1), d0));
                        terms.push((-f(sigma_t * (ep1 / h - 1.0)), d1));
                        terms.push((-f(sigma_t * ((h.exp() - 1.0 - h) / (h * h) - 0.5)), d2));
                    }
                    (_, SolverType::Midpoint) => {
                        terms.push((f(alpha_t * e2), d0));
                        terms.push((f(alpha_t * (e2 / (-2.0 * h) + 1.0)), d1_1));
                        terms.push(noise_term);
                    }
                    (_, SolverType::Heun) => {
                        terms.push((f(alpha_t * e2), d0));
                        terms.push((f(alpha_t * (e2 / (-2.0 * h) + 1.0)), d1));
                        let m2h = -2.0 * h;
                        terms.push((f(alpha_t * ((1.0 - (-2.0 * h).exp() + m2h) / (m2h * m2h) - 0.5)), d2));
                        terms.push(noise_term);
                    }
                }
            }
        }
        p.lin(out, &terms);
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
