//! The per-generation side of a scheduler: [`SchedulerRun`] (host schedule and step state,
//! non-generic) and [`Generation`] (a run plus its backend tensors), speaking diffusers'
//! `SchedulerMixin` vocabulary: `timesteps`, `init_noise_sigma`, `scale_model_input`, `step`,
//! `add_noise`, `order`, `set_begin_index` (`diffusers/schedulers/scheduling_utils.py`).
//! Each generation owns its state, so two generations on two threads never share step state.

use std::fmt::Debug;

use burn::tensor::{backend::Backend, Tensor};

use crate::error::{Result, SchedulerError};
use crate::program::{execute, RunTensors, StepContext, StepOptions, StepOutput, StepProgram};

/// `add_noise` as coefficients: `noisy = a * original + b * noise` (`a == 1` is not multiplied).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddNoise {
    pub a: f64,
    pub b: f64,
}

/// Host-side state of one generation: the schedule (after `set_timesteps`) and the step counters.
/// Tensor state lives in [`RunTensors`]; the run emits a [`StepProgram`] per step.
pub trait SchedulerRun: Send + Sync + Debug {
    /// diffusers' `timesteps` (integer-valued where diffusers uses int64; float32 values as f64
    /// where diffusers uses float32).
    fn timesteps(&self) -> &[f64];
    /// diffusers' `sigmas` (float32 values as f64, including the final sigma) where the scheduler
    /// has them.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }
    /// `init_noise_sigma`: the standard deviation of the initial noise.
    fn init_noise_sigma(&self) -> f64;
    /// `order` (class attribute).
    fn order(&self) -> usize;
    /// `num_inference_steps` as diffusers stores it after `set_timesteps`.
    fn num_inference_steps(&self) -> usize;
    /// `set_begin_index` (video-to-video strength: start mid-schedule).
    fn set_begin_index(&mut self, begin_index: usize) -> Result<()>;
    /// `begin_index`, when set.
    fn begin_index(&self) -> Option<usize>;
    /// `step_index` (the index of the next step), once known.
    fn step_index(&self) -> Option<usize>;
    /// `scale_model_input`: `None` = identity, `Some(d)` = `sample / d`.
    fn scale_model_input(&mut self, timestep: f64) -> Result<Option<f64>>;
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
