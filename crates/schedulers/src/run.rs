//! The per-generation side of a scheduler: [`SchedulerRun`] (host schedule and step state,
//! non-generic) and [`Generation`] (a run plus its backend tensors), speaking diffusers'
//! `SchedulerMixin` vocabulary: `timesteps`, `init_noise_sigma`, `scale_model_input`, `step`,
//! `add_noise`, `order`, `set_begin_index` (`diffusers/schedulers/scheduling_utils.py`).
//! Each generation owns its state, so two generations on two threads never share step state.

use std::fmt::Debug;

use burn::tensor::{backend::Backend, Tensor};

use crate::error::{Result, SchedulerError};
use crate::program::{execute, RunTensors, StepContext, StepOptions, StepOutput, StepProgram};
use crate::schedule::{index_for_timestep, Cursor};
use crate::scheduling_dpmsolver_multistep::alpha_sigma;

/// `add_noise` as coefficients: `noisy = a * original + b * noise` (`a == 1` is not multiplied).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddNoise {
    pub a: f64,
    pub b: f64,
}

/// The part of a run that every scheduler has: the schedule after `set_timesteps` and the
/// `_step_index`/`_begin_index` cursor. [`SchedulerRun`]'s accessors read it by default.
#[derive(Clone, Debug)]
pub struct RunCore {
    /// diffusers' `timesteps`.
    pub timesteps: Vec<f64>,
    /// diffusers' `sigmas` (float32 values as f64, including the final sigma); empty where the
    /// scheduler has none.
    pub sigmas: Vec<f64>,
    /// `init_noise_sigma`.
    pub init_noise_sigma: f64,
    /// `order` (class attribute).
    pub order: usize,
    /// `num_inference_steps` as diffusers stores it after `set_timesteps`.
    pub num_inference_steps: usize,
    /// `_step_index` / `_begin_index`.
    pub cursor: Cursor,
}

impl RunCore {
    /// A schedule without sigmas: order 1, `init_noise_sigma` 1, `num_inference_steps` =
    /// `timesteps.len()`, no step index yet.
    pub fn new(timesteps: Vec<f64>) -> Self {
        let num_inference_steps = timesteps.len();
        Self { timesteps, sigmas: Vec::new(), init_noise_sigma: 1.0, order: 1, num_inference_steps, cursor: Cursor::default() }
    }
    /// A schedule with sigmas (the sigma-based and multistep schedulers).
    pub fn with_sigmas(timesteps: Vec<f64>, sigmas: Vec<f64>, init_noise_sigma: f64) -> Self {
        Self { sigmas, init_noise_sigma, ..Self::new(timesteps) }
    }
    /// Set `order` (and `num_inference_steps`, which differs from `timesteps.len()` for the
    /// two-evaluation samplers and a few spacings).
    pub fn with_steps(self, order: usize, num_inference_steps: usize) -> Self {
        Self { order, num_inference_steps, ..self }
    }
    /// `set_begin_index`, checked against the schedule length.
    pub fn set_begin(&mut self, begin_index: usize) -> Result<()> {
        self.cursor.set_begin(begin_index, self.timesteps.len())
    }
    /// `set_begin_index` of the schedulers that have no begin index (DDIM, DDPM): checked, no
    /// effect.
    pub fn check_begin(&self, begin_index: usize) -> Result<()> {
        if begin_index >= self.timesteps.len() {
            return Err(SchedulerError::State(format!("begin_index {begin_index} >= {} steps", self.timesteps.len())));
        }
        Ok(())
    }
    /// `_init_step_index(timestep)` if not yet known; the current step index (a timestep not in
    /// the schedule is an error).
    pub fn step_index_for(&mut self, timestep: f64) -> Result<usize> {
        self.cursor.init(&self.timesteps, timestep)
    }
    /// The `step` prologue of the multistep solvers: the current step index (a timestep not in
    /// the schedule maps to the last index), which must be inside the schedule.
    pub fn multistep_index(&mut self, timestep: f64) -> Result<usize> {
        let n = self.timesteps.len();
        let i = self.cursor.init_or_last(&self.timesteps, timestep);
        if i >= n {
            return Err(SchedulerError::State(format!("step {i} is past the end of the schedule ({n} steps)")));
        }
        Ok(i)
    }
    /// `_step_index += 1` after step `i`.
    pub fn advance(&mut self, i: usize) {
        self.cursor.step_index = Some(i + 1);
    }
    /// The index `add_noise` uses.
    pub fn add_noise_index(&self, timestep: f64) -> Result<usize> {
        self.cursor.add_noise_index(&self.timesteps, timestep)
    }
    /// `sigmas[i]` as float32 for the multistep solvers' signed indices (outside the schedule is
    /// an error).
    pub fn sig(&self, i: isize) -> Result<f32> {
        if i < 0 || i as usize >= self.sigmas.len() {
            return Err(SchedulerError::State(format!("sigma index {i} outside the schedule")));
        }
        Ok(self.sigmas[i as usize] as f32)
    }
    /// The multistep solvers' `add_noise`: `alpha_t · original + sigma_t · noise`, where a
    /// timestep not in the schedule maps to the last index.
    pub fn multistep_add_noise(&self, timestep: f64) -> Result<AddNoise> {
        let i = match (self.cursor.begin_index, self.cursor.step_index) {
            (None, _) => index_for_timestep(&self.timesteps, timestep).unwrap_or(self.timesteps.len() - 1),
            (Some(_), Some(s)) => s,
            (Some(b), None) => b,
        };
        let (a, s) = alpha_sigma(self.sig(i as isize)?);
        Ok(AddNoise { a: a as f64, b: s as f64 })
    }
    /// `sigmas[i]` as float32 (an index past the end is an error).
    pub fn sigma_at(&self, i: usize) -> Result<f32> {
        self.sigmas
            .get(i)
            .map(|&s| s as f32)
            .ok_or_else(|| SchedulerError::State(format!("step index {i} is past the end of the schedule")))
    }
    /// The k-diffusion `scale_model_input`: `sample / sqrt(sigma² + 1)` at the current step.
    pub fn k_scale_model_input(&mut self, timestep: f64) -> Result<Option<f64>> {
        let i = self.step_index_for(timestep)?;
        let s = self.sigma_at(i)?;
        Ok(Some((s * s + 1.0).sqrt() as f64))
    }
    /// The k-diffusion `add_noise`: `original + sigma · noise`.
    pub fn k_add_noise(&self, timestep: f64) -> Result<AddNoise> {
        let i = self.add_noise_index(timestep)?;
        Ok(AddNoise { a: 1.0, b: self.sigma_at(i)? as f64 })
    }
}

/// Host-side state of one generation: the schedule (after `set_timesteps`) and the step counters.
/// Tensor state lives in [`RunTensors`]; the run emits a [`StepProgram`] per step.
///
/// A run holds a [`RunCore`] and returns it from `core`/`core_mut`; the accessors below default
/// to reading it (override where diffusers differs, e.g. PNDM's `step_index`).
pub trait SchedulerRun: Send + Sync + Debug {
    /// The shared schedule and cursor.
    fn core(&self) -> &RunCore;
    /// The shared schedule and cursor, mutable.
    fn core_mut(&mut self) -> &mut RunCore;
    /// diffusers' `timesteps` (integer-valued where diffusers uses int64; float32 values as f64
    /// where diffusers uses float32).
    fn timesteps(&self) -> &[f64] {
        &self.core().timesteps
    }
    /// diffusers' `sigmas` (float32 values as f64, including the final sigma) where the scheduler
    /// has them.
    fn sigmas(&self) -> Option<&[f64]> {
        let s = &self.core().sigmas;
        (!s.is_empty()).then_some(s.as_slice())
    }
    /// `init_noise_sigma`: the standard deviation of the initial noise.
    fn init_noise_sigma(&self) -> f64 {
        self.core().init_noise_sigma
    }
    /// `order` (class attribute).
    fn order(&self) -> usize {
        self.core().order
    }
    /// `num_inference_steps` as diffusers stores it after `set_timesteps`.
    fn num_inference_steps(&self) -> usize {
        self.core().num_inference_steps
    }
    /// `set_begin_index` (video-to-video strength: start mid-schedule).
    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        self.core_mut().set_begin(begin_index)
    }
    /// `begin_index`, when set.
    fn begin_index(&self) -> Option<usize> {
        self.core().cursor.begin_index
    }
    /// `step_index` (the index of the next step), once known.
    fn step_index(&self) -> Option<usize> {
        self.core().cursor.step_index
    }
    /// `scale_model_input`: `None` = identity, `Some(d)` = `sample / d`.
    fn scale_model_input(&mut self, _timestep: f64) -> Result<Option<f64>> {
        Ok(None)
    }
    /// Plan `step(model_output, timestep, sample, ...)` and advance the host state.
    fn plan_step(&mut self, timestep: f64, options: &StepOptions) -> Result<StepProgram>;
    /// `add_noise(original, noise, timestep)` coefficients.
    fn add_noise(&self, timestep: f64) -> Result<AddNoise>;
    /// Clone the host state (e.g. to branch a generation).
    fn clone_run(&self) -> Box<dyn SchedulerRun>;
}

/// One generation over backend `B`: a [`SchedulerRun`] and its tensor registers.
#[derive()]
pub struct Generation<B: Backend> {
    run: Box<dyn SchedulerRun>,
    tensors: RunTensors<B>,
}

impl<B: Backend> Debug for Generation<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation").field("run", &self.run).finish()
    }
}

fn check_4d_same<B: Backend>(a: &Tensor<B, 4>, b: &Tensor<B, 4>, what: &str) -> Result<()> {
    let (da, db) = (a.dims(), b.dims());
    if da[0] != db[0] || da[2..] != db[2..] || db[1] < da[1] {
        return Err(SchedulerError::Shape(format!("{what}: sample {da:?} vs {db:?}")));
    }
    Ok(())
}

impl<B: Backend> Generation<B> {
    /// Wrap a run with empty tensor state.
    pub fn new(run: Box<dyn SchedulerRun>) -> Self {
        Self { run, tensors: RunTensors::default() }
    }
    /// The host run.
    pub fn run(&self) -> &dyn SchedulerRun {
        self.run.as_ref()
    }
    /// `timesteps`.
    pub fn timesteps(&self) -> &[f64] {
        self.run.timesteps()
    }
    /// `sigmas`, where the scheduler has them.
    pub fn sigmas(&self) -> Option<&[f64]> {
        self.run.sigmas()
    }
    /// `init_noise_sigma`.
    pub fn init_noise_sigma(&self) -> f64 {
        self.run.init_noise_sigma()
    }
    /// `order`.
    pub fn order(&self) -> usize {
        self.run.order()
    }
    /// `set_begin_index`.
    pub fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        self.run.set_begin_index(begin_index)
    }
    /// `scale_model_input(sample, timestep)`.
    pub fn scale_model_input(&mut self, sample: Tensor<B, 4>, timestep: f64) -> Result<Tensor<B, 4>> {
        Ok(match self.run.scale_model_input(timestep)? {
            None => sample,
            Some(d) => sample.div_scalar(d),
        })
    }
    /// `step(model_output, timestep, sample, eta/noise in ctx)`.
    pub fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        timestep: f64,
        sample: Tensor<B, 4>,
        ctx: &mut StepContext<'_, B>,
    ) -> Result<StepOutput<B>> {
        check_4d_same(&sample, &model_output, "model_output does not fit the sample")?;
        let program = self.run.plan_step(timestep, &ctx.options)?;
        if !program.is_finite() {
            return Err(SchedulerError::State(format!("non-finite step coefficients at timestep {timestep}")));
        }
        execute(&mut self.tensors, &program, sample, model_output, ctx.noise)
    }
    /// `add_noise(original_samples, noise, timestep)`.
    pub fn add_noise(&self, original: Tensor<B, 4>, noise: Tensor<B, 4>, timestep: f64) -> Result<Tensor<B, 4>> {
        if original.dims() != noise.dims() {
            return Err(SchedulerError::Shape(format!(
                "add_noise: original {:?} vs noise {:?}",
                original.dims(),
                noise.dims()
            )));
        }
        let AddNoise { a, b } = self.run.add_noise(timestep)?;
        let x = if a == 1.0 { original } else { original.mul_scalar(a) };
        Ok(x + noise.mul_scalar(b))
    }
}
