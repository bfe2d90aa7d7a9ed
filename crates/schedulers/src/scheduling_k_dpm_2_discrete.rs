//! `KDPM2DiscreteScheduler` and `KDPM2AncestralDiscreteScheduler` (k-diffusion `sample_dpm_2` /
//! `sample_dpm_2_ancestral`, DPM-Solver-2 in the sigma parameterisation, Karras et al. arXiv
//! 2206.00364), mirroring `diffusers/schedulers/scheduling_k_dpm_2_discrete.py` and
//! `scheduling_k_dpm_2_ancestral_discrete.py` (diffusers 0.42.1). The two files share everything
//! but the interpolated sigmas and the noise, so they live together here.
//!
//! `order = 2`: timesteps interleave the interpolated (midpoint) timesteps. Sigma tables are
//! float32; the log-space midpoints `exp(lerp(log a, log b, 0.5))` are float32 like torch's;
//! interpolated timesteps come from `_sigma_to_t`. `prediction_type = "sample"` is rejected (diffusers
//! raises NotImplementedError).

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{opt_err, Result, SchedulerError};
use crate::k_common::{interleave_all, log_mid, py_index};
use crate::program::{Op, Reg, StepOptions, StepProgram};
use crate::run::{AddNoise, RunCore, SchedulerRun};
use crate::schedule::{self, BetaParams, BetaSchedule, KSigmaParams, PredictionType, SigmaKind, TimestepSpacing};
use crate::scheduling_ddim::only_ddpm_betas;
use crate::scheduling_euler_discrete::{emit_k_x0, k_init_noise_sigma};

macro_rules! kdpm2_config {
    ($name:ident, $class:literal, $summary:literal) => {
        #[doc = concat!("diffusers `", $class, "` config.")]
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name {
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

        impl Default for $name {
            fn default() -> Self {
                Self {
                    num_train_timesteps: 1000,
                    beta_start: 0.00085,
                    beta_end: 0.012,
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

        crate::register_scheduler!($name, $class, $summary);

        impl $name {
            fn common(&self) -> Kdpm2Common {
                Kdpm2Common {
                    beta: (self.num_train_timesteps, self.beta_start, self.beta_end, self.beta_schedule, self.trained_betas.clone()),
                    kind: (self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas),
                    pred: self.prediction_type,
                    spacing: self.timestep_spacing,
                    steps_offset: self.steps_offset,
                }
            }
        }
    };
}

kdpm2_config!(Kdpm2DiscreteConfig, "KDPM2DiscreteScheduler", "DPM-Solver-2 in sigma space (k-diffusion sample_dpm_2); order 2");
kdpm2_config!(
    Kdpm2AncestralDiscreteConfig,
    "KDPM2AncestralDiscreteScheduler",
    "Ancestral DPM-Solver-2 (k-diffusion sample_dpm_2_ancestral); order 2, stochastic"
);

struct Kdpm2Common {
    beta: (usize, f64, f64, BetaSchedule, Option<Vec<f64>>),
    kind: (bool, bool, bool),
    pred: PredictionType,
    spacing: TimestepSpacing,
    steps_offset: i64,
}

impl Kdpm2Common {
    fn beta_params(&self) -> BetaParams<'_> {
        BetaParams {
            num_train_timesteps: self.beta.0,
            beta_start: self.beta.1,
            beta_end: self.beta.2,
            beta_schedule: self.beta.3,
            trained_betas: self.beta.4.as_deref(),
            rescale_betas_zero_snr: false,
        }
    }
    fn validate(&self) -> Result<()> {
        only_ddpm_betas(self.beta.3, self.beta.4.is_some())?;
        schedule::betas(&self.beta_params())?;
        schedule::sigma_kind(self.kind.0, self.kind.1, self.kind.2)?;
        if self.pred == PredictionType::Sample {
            return opt_err("prediction_type", "`sample` is not implemented for the KDPM2 schedulers (as in diffusers)");
        }
        Ok(())
    }
    fn start(&self, n: usize, ancestral: bool) -> Result<Box<dyn SchedulerRun>> {
        self.validate()?;
        let t = self.beta.0;
        schedule::check_steps(n, t)?;
        let ac = schedule::alphas_cumprod(&schedule::betas(&self.beta_params())?);
        let ts0 = schedule::k_timesteps(self.spacing, n, t, self.steps_offset)?;
        let kind = schedule::sigma_kind(self.kind.0, self.kind.1, self.kind.2)?;
        let (mut ts, sig) = schedule::k_sigmas(&KSigmaParams::plain(&ac, &ts0, kind));
        if kind == SigmaKind::Karras {
            ts.iter_mut().for_each(|x| *x = x.round_ties_even());
        }
        let log_sigmas: Vec<f32> = schedule::sigmas_f32(&ac).iter().map(|x| x.ln()).collect();
        let s: Vec<f32> = sig.iter().map(|&x| x as f32).collect(); // n + 1 values, last 0
        let m = s.len();
        let (interpol, up, down): (Vec<f32>, Vec<f32>, Vec<f32>) = if ancestral {
            let next: Vec<f32> = (0..m).map(|i| if i + 1 < m { s[i + 1] } else { 0.0 }).collect();
            let up: Vec<f32> = (0..m).map(|i| (next[i] * next[i] * (s[i] * s[i] - next[i] * next[i]) / (s[i] * s[i])).sqrt()).collect();
            let mut down: Vec<f32> = (0..m).map(|i| (next[i] * next[i] - up[i] * up[i]).sqrt()).collect();
            down[m - 1] = 0.0;
            let mut ip: Vec<f32> = (0..m).map(|i| log_mid(s[i], down[i])).collect();
            ip[m - 1] = 0.0;
            if m >= 2 {
                ip[m - 2] = 0.0;
            }
            (ip, up, down)
        } else {
            let ip: Vec<f32> = (0..m).map(|i| log_mid(s[i], s[(i + m - 1) % m])).collect();
            (ip, vec![0.0; m], vec![0.0; m])
        };
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let t_interp: Vec<f64> = interpol.iter().map(|&x| schedule::sigma_to_t_f32(x, &log_sigmas) as f64).collect();
        // interleave [t0, (ti, t) ...]
        let pick: Vec<f64> = if ancestral { t_interp[..m - 2].to_vec() } else { t_interp[1..m - 1].to_vec() };
        let mut timesteps = vec![ts[0]];
        for (k, &tk) in ts[1..].iter().enumerate() {
            timesteps.push(pick[k]);
            timesteps.push(tk);
        }
        let sigmas = interleave_all(&sig);
        let init = k_init_noise_sigma(&sigmas, self.spacing);
        let n_steps = timesteps.len().div_ceil(2);
        Ok(Box::new(Kdpm2Run {
            pred: self.pred,
            ancestral,
            interpol: interleave_all(&to64(&interpol)),
            up: interleave_all(&to64(&up)),
            down: interleave_all(&to64(&down)),
            core: RunCore::with_sigmas(timesteps, sigmas, init).with_steps(2, n_steps),
            in_second: false,
        }))
    }
}

#[typetag::serde(name = "KDPM2DiscreteScheduler")]
impl SchedulerConfig for Kdpm2DiscreteConfig {
    fn validate(&self) -> Result<()> {
        self.common().validate()
    }
    fn order(&self) -> usize {
        2
    }
    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        self.common().start(n, false)
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[typetag::serde(name = "KDPM2AncestralDiscreteScheduler")]
impl SchedulerConfig for Kdpm2AncestralDiscreteConfig {
    fn validate(&self) -> Result<()> {
        self.common().validate()
    }
    fn order(&self) -> usize {
        2
    }
    fn num_train_timesteps(&self) -> usize {
        self.num_train_timesteps
    }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        self.common().start(n, true)
    }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> {
        Box::new(self.clone())
    }
}

#[derive(Clone, Debug)]
struct Kdpm2Run {
    pred: PredictionType,
    ancestral: bool,
    core: RunCore,
    interpol: Vec<f64>,
    up: Vec<f64>,
    down: Vec<f64>,
    /// `self.sample is not None`.
    in_second: bool,
}

fn at(a: &[f64], i: isize) -> Result<f32> {
    py_index(a, i).map(|x| x as f32).ok_or_else(|| SchedulerError::State(format!("sigma index {i} outside the schedule")))
}

impl SchedulerRun for Kdpm2Run {
    fn core(&self) -> &RunCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut RunCore {
        &mut self.core
    }
    fn scale_model_input(&mut self, timestep: f64) -> Result<Option<f64>> {
        let i = self.core.step_index_for(timestep)? as isize;
        let s = if !self.in_second {
            at(&self.core.sigmas, i)?
        } else if self.ancestral {
            at(&self.interpol, i - 1)?
        } else {
            at(&self.interpol, i)?
        };
        Ok(Some((s * s + 1.0).sqrt() as f64))
    }
    fn plan_step(&mut self, timestep: f64, _o: &StepOptions) -> Result<StepProgram> {
        let i = self.core.step_index_for(timestep)? as isize;
        if i as usize >= self.core.timesteps.len() {
            return Err(SchedulerError::State("step past the end of the schedule".into()));
        }
        let first = !self.in_second;
        let (sigma, interpol, next_or_down, up) = match (self.ancestral, first) {
            (false, true) => (at(&self.core.sigmas, i)?, at(&self.interpol, i + 1)?, at(&self.core.sigmas, i + 1)?, 0.0),
            (false, false) => (at(&self.core.sigmas, i - 1)?, at(&self.interpol, i)?, at(&self.core.sigmas, i)?, 0.0),
            (true, true) => (at(&self.core.sigmas, i)?, at(&self.interpol, i)?, at(&self.down, i - 1)?, at(&self.up, i)?),
            (true, false) => (at(&self.core.sigmas, i - 1)?, at(&self.interpol, i - 1)?, at(&self.down, i - 1)?, at(&self.up, i - 1)?),
        };
        let sigma_hat = sigma;
        let sigma_input = if first { sigma_hat } else { interpol };
        let mut p = StepProgram::default();
        let (x0, d, out, noise, stored) = (Reg::T(0), Reg::T(1), Reg::T(2), Reg::T(3), Reg::S(0));
        emit_k_x0(&mut p, self.pred, sigma_input, sigma_input, x0, Reg::Sample);
        if first {
            p.lin(d, &[(1.0, Reg::Sample), (-1.0, x0)]).div(d, d, sigma_hat as f64);
            let dt = interpol - sigma_hat;
            p.lin(stored, &[(1.0, Reg::Sample)]);
            p.lin(out, &[(1.0, Reg::Sample), (dt as f64, d)]);
            self.in_second = true;
        } else {
            p.lin(d, &[(1.0, Reg::Sample), (-1.0, x0)]).div(d, d, interpol as f64);
            let dt = next_or_down - sigma_hat;
            p.lin(out, &[(1.0, stored), (dt as f64, d)]);
            if self.ancestral {
                p.op(Op::Noise { dst: noise });
                p.lin(out, &[(1.0, out), (up as f64, noise)]);
            }
            p.op(Op::Clear { reg: stored });
            self.in_second = false;
        }
        p.prev_sample = Some(out);
        p.pred_original_sample = Some(x0);
        self.core.advance(i as usize);
        Ok(p)
    }
    fn add_noise(&self, timestep: f64) -> Result<AddNoise> {
        let i = self.core.add_noise_index(timestep)?;
        Ok(AddNoise { a: 1.0, b: at(&self.core.sigmas, i as isize)? as f64 })
    }
    fn clone_run(&self) -> Box<dyn SchedulerRun> {
        Box::new(self.clone())
    }
}
