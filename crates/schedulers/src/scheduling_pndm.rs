//! `PNDMScheduler` (Liu et al., "Pseudo Numerical Methods for Diffusion Models on Manifolds",
//! arXiv 2202.09778), mirroring `diffusers/schedulers/scheduling_pndm.py` (diffusers 0.42.1):
//! Runge–Kutta warm-up (PRK, 12 model calls) followed by linear multistep (PLMS), or PLMS only
//! with `skip_prk_steps` (as Stable Diffusion / ModelScope configs set).
//!
//! Precision: float32 `alphas_cumprod` and float32 coefficients of `_get_prev_sample`; int64
//! timesteps. diffusers' PNDM has no `set_begin_index`: here it is accepted and has no effect
//! (the step counter, not the timestep, selects PRK/PLMS — as in diffusers).

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result, SchedulerError};
use crate::program::{Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, PredictionType, TimestepSpacing};
use crate::scheduling_ddim::{check_int_timesteps, ddpm_add_noise, only_ddpm_betas, table_index};
use crate::scheduling_dpmsolver_multistep::push_history;

/// diffusers `PNDMScheduler` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PndmConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub skip_prk_steps: bool,
    pub set_alpha_to_one: bool,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
}

impl Default for PndmConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            skip_prk_steps: false,
            set_alpha_to_one: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

crate::register_scheduler!(PndmConfig, "PNDMScheduler", "PNDM (arXiv 2202.09778): Runge-Kutta warm-up then linear multistep (PLMS)");

const PNDM_ORDER: usize = 4;

impl PndmConfig {
    fn beta_params(&self) -> BetaParams<'_> {
        schedule::beta_params!(self)
    }
}

#[typetag::serde(name = "PNDMScheduler")]
impl SchedulerConfig for PndmConfig {
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta_schedule, self.trained_betas.is_some())?;
        schedule::betas(&self.beta_params())?;
        if self.prediction_type == PredictionType::Sample {
            return opt_err("prediction_type", "PNDMScheduler supports `epsilon` and `v_prediction` only");
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
        // ascending `_timesteps`
        let mut base = schedule::spaced_timesteps(self.timestep_spacing, n, t, self.steps_offset);
        base.reverse();
        let half = (t / n / 2) as f64;
        let (prk, plms): (Vec<f64>, Vec<f64>) = if self.skip_prk_steps {
            let mut v: Vec<f64> = base[..n - 1].to_vec();
            if n >= 2 {
                v.push(base[n - 2]);
            }
            v.push(base[n - 1]);
            v.reverse();
            (vec![], v)
        } else {
            if n < PNDM_ORDER {
                return Err(SchedulerError::InvalidSteps {
                    steps: n,
                    message: format!("PNDM with Runge-Kutta steps needs at least {PNDM_ORDER} steps (diffusers fails too); set skip_prk_steps"),
                });
            }
            let last4 = &base[n - PNDM_ORDER..];
            let mut p: Vec<f64> = Vec::new();
            for &x in last4 {
                p.push(x);
                p.push(x + half);
            }
            p.pop(); // prk[:-1]
            let mut q: Vec<f64> = Vec::new();
            for &x in &p {
                q.push(x);
                q.push(x);
            }
            let mut q = q[1..q.len() - 1].to_vec();
            q.reverse();
            let mut plms = base[..n - 3].to_vec();
            plms.reverse();
            (q, plms)
        };
        let mut timesteps = prk.clone();
        timesteps.extend(&plms);
        check_int_timesteps(&timesteps, t)?;
        let final_ac = if self.set_alpha_to_one { 1.0 } else { ac[0] };
        Ok(Box::new(PndmRun {
            cfg: self.clone(),
            ac,
            final_ac,
            prk_len: prk.len(),
            prk_first: prk.first().copied(),
            prk,
            core: RunCore::new(timesteps).with_steps(1, n),
            counter: 0,
            ets: vec![false; PNDM_ORDER],
            cur_model_output: false,
            cur_sample: false,
        }))
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct PndmRun {
    cfg: PndmConfig,
    ac: Vec<f32>,
    final_ac: f32,
    core: RunCore,
    prk: Vec<f64>,
    prk_len: usize,
    prk_first: Option<f64>,
    counter: usize,
    /// which of the 4 `ets` slots S(0..4) hold a model output (newest in S(3))
    ets: Vec<bool>,
    /// `cur_model_output` is a tensor (S(4)) rather than 0
    cur_model_output: bool,
    /// `cur_sample` is set (S(5))
    cur_sample: bool,
}

const CUR_MO: Reg = Reg::S(4);
const CUR_SAMPLE: Reg = Reg::S(5);

impl PndmRun {
    fn ets_len(&self) -> usize {
        self.ets.iter().filter(|x| **x).count()
    }
    fn et(k: usize) -> Reg {
        // ets[-1 - k]
        Reg::S((PNDM_ORDER - 1 - k) as u8)
    }
    /// `_get_prev_sample(sample, timestep, prev_timestep, model_output)` into `out`.
    fn prev_sample(&self, p: &mut StepProgram, sample: Reg, t: i64, prev_t: i64, mo: Reg, out: Reg) -> Result<()> {
        let ti = table_index(t as f64, self.ac.len())?;
        let ap = self.ac[ti];
        let app = if prev_t >= 0 { self.ac[table_index(prev_t as f64, self.ac.len())?] } else { self.final_ac };
        let bp = 1.0 - ap;
        let bpp = 1.0 - app;
        let m = Reg::T(10);
        if self.cfg.prediction_type == PredictionType::VPrediction {
            p.lin(m, &[(ap.sqrt() as f64, mo), (bp.sqrt() as f64, sample)]);
        } else {
            p.lin(m, &[(1.0, mo)]);
        }
        let sample_coeff = (app / ap).sqrt();
        let denom = ap * bpp.sqrt() + (ap * bp * app).sqrt();
        let tmp = Reg::T(11);
        p.lin(tmp, &[((app - ap) as f64, m)]).div(tmp, tmp, denom as f64);
        p.lin(out, &[(sample_coeff as f64, sample), (-1.0, tmp)]);
        Ok(())
    }
}

impl SchedulerRun for PndmRun {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        if begin_index >= self.core.timesteps.len() {
            return Err(SchedulerError::State(format!("begin_index {begin_index} >= {} timesteps", self.core.timesteps.len())));
        }
        Ok(())
    }
    fn step_index(&self) -> Option<usize> {
        Some(self.counter)
    }
    fn plan_step(&mut self, timestep: f64, _o: &StepOptions) -> Result<StepProgram> {
        if timestep.fract() != 0.0 {
            return Err(SchedulerError::InvalidTimestep { timestep, message: "PNDM timesteps are integers".into() });
        }
        let t_in = timestep as i64;
        let tt = self.cfg.num_train_timesteps as i64;
        let ratio = tt / self.core.num_inference_steps as i64;
        let mut p = StepProgram::default();
        let out = Reg::T(0);
        if self.counter < self.prk_len && !self.cfg.skip_prk_steps {
            // step_prk
            let diff = if self.counter % 2 == 1 { 0 } else { ratio / 2 };
            let prev_t = t_in - diff;
            let t = self.prk[self.counter / 4 * 4] as i64;
            let _ = self.prk_first;
            let mo = Reg::T(1);
            p.lin(mo, &[(1.0, Reg::Model)]);
            let add = |p: &mut StepProgram, c: f64, had: bool| {
                if had {
                    p.lin(Reg::T(2), &[(c, Reg::Model)]);
                    p.lin(CUR_MO, &[(1.0, CUR_MO), (1.0, Reg::T(2))]);
                } else {
                    p.lin(CUR_MO, &[(c, Reg::Model)]);
                }
            };
            match self.counter % 4 {
                0 => {
                    add(&mut p, (1.0f64 / 6.0) as f32 as f64, self.cur_model_output);
                    self.cur_model_output = true;
                    let mut ets = std::mem::take(&mut self.ets);
                    push_history(&mut p, &mut ets, 0, Reg::Model);
                    self.ets = ets;
                    p.lin(CUR_SAMPLE, &[(1.0, Reg::Sample)]);
                    self.cur_sample = true;
                }
                1 | 2 => {
                    add(&mut p, (1.0f64 / 3.0) as f32 as f64, self.cur_model_output);
                    self.cur_model_output = true;
                }
                _ => {
                    p.lin(Reg::T(2), &[((1.0f64 / 6.0) as f32 as f64, Reg::Model)]);
                    if self.cur_model_output {
                        p.lin(mo, &[(1.0, CUR_MO), (1.0, Reg::T(2))]);
                    } else {
                        p.lin(mo, &[(1.0, Reg::T(2))]);
                    }
                    p.op(crate::program::Op::Clear { reg: CUR_MO });
                    self.cur_model_output = false;
                }
            }
            let cur = if self.cur_sample { CUR_SAMPLE } else { Reg::Sample };
            self.prev_sample(&mut p, cur, t, prev_t, mo, out)?;
        } else {
            // step_plms
            if !self.cfg.skip_prk_steps && self.ets_len() < 3 {
                return Err(SchedulerError::State("PLMS steps need 12 Runge-Kutta steps first".into()));
            }
            let mut prev_t = t_in - ratio;
            let mut t = t_in;
            if self.counter != 1 {
                // ets = ets[-3:] + [model_output]
                let mut ets = std::mem::take(&mut self.ets);
                push_history(&mut p, &mut ets, 0, Reg::Model);
                self.ets = ets;
            } else {
                prev_t = t_in;
                t = t_in + ratio;
            }
            let len = self.ets_len();
            let mo = Reg::T(1);
            let mut sample = Reg::Sample;
            if len == 1 && self.counter == 0 {
                p.lin(mo, &[(1.0, Reg::Model)]);
                p.lin(CUR_SAMPLE, &[(1.0, Reg::Sample)]);
                self.cur_sample = true;
            } else if len == 1 && self.counter == 1 {
                p.lin(mo, &[(1.0, Reg::Model), (1.0, Self::et(0))]).div(mo, mo, 2.0);
                if !self.cur_sample {
                    return Err(SchedulerError::State("PLMS second step without a stored sample".into()));
                }
                p.lin(Reg::T(3), &[(1.0, CUR_SAMPLE)]);
                sample = Reg::T(3);
                p.op(crate::program::Op::Clear { reg: CUR_SAMPLE });
                self.cur_sample = false;
            } else if len == 2 {
                p.lin(mo, &[(3.0, Self::et(0)), (-1.0, Self::et(1))]).div(mo, mo, 2.0);
            } else if len == 3 {
                p.lin(mo, &[(23.0, Self::et(0)), (-16.0, Self::et(1)), (5.0, Self::et(2))]).div(mo, mo, 12.0);
            } else {
                p.lin(mo, &[(55.0, Self::et(0)), (-59.0, Self::et(1)), (37.0, Self::et(2)), (-9.0, Self::et(3))]);
                p.lin(mo, &[((1.0f64 / 24.0) as f32 as f64, mo)]);
            }
            self.prev_sample(&mut p, sample, t, prev_t, mo, out)?;
        }
        self.counter += 1;
        p.prev_sample = Some(out);
        Ok(p)
    }
    fn add_noise(&self, timestep: f64) -> Result<AddNoise> {
        ddpm_add_noise(&self.ac, timestep)
    }
    fn clone_run(&self) -> Box<dyn SchedulerRun> {
        Box::new(self.clone())
    }
}
