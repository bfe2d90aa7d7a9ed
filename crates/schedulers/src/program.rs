//! Step programs: the host-side description of one scheduler step, and the one backend-generic
//! executor that applies it to burn tensors.
//!
//! A scheduler's per-run state ([`crate::SchedulerRun`]) is non-generic; at every step it emits a
//! [`StepProgram`] — linear combinations with f64 coefficients over tensor registers, plus the few
//! nonlinear operations diffusers' schedulers use (clamp for `clip_sample`, dynamic thresholding,
//! a channel slice for learned variances, a standard-normal draw). [`execute`] runs it over
//! `(b*f, c, h, w)` latents on any `B: Backend`, in the tensor dtype. Registers that persist across
//! steps (DPM-Solver's previous model outputs, Heun's stored sample, ...) live in [`RunTensors`],
//! which belongs to one generation: two generations never share step state.
//!
//! The programs follow diffusers' operation order (e.g. `(sample - b * eps) / a`, not a folded
//! `sample / a - (b / a) * eps`) so float32 results match diffusers to rounding.

use burn::tensor::{backend::Backend, Distribution, Tensor};

use crate::error::{Result, SchedulerError};

/// A tensor register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reg {
    /// The `sample` passed to `step`.
    Sample,
    /// The `model_output` passed to `step`.
    Model,
    /// A temporary of this step (cleared after the step).
    T(u8),
    /// A register that persists across the steps of one run.
    S(u8),
}

/// One operation of a step program.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `dst = Σ cᵢ·srcᵢ`, each product rounded in the tensor dtype, summed left to right
    /// (a coefficient of exactly 1 is not multiplied).
    Lin { dst: Reg, terms: Vec<(f64, Reg)> },
    /// `dst = src / d` (a true division, as diffusers writes it).
    Div { dst: Reg, src: Reg, d: f64 },
    /// `reg = reg.clamp(min, max)` (`clip_sample`).
    Clamp { reg: Reg, min: f64, max: f64 },
    /// Dynamic thresholding (Imagen, arXiv 2205.11487) as in diffusers' `_threshold_sample`:
    /// per batch element, `s = clamp(quantile(|x|, ratio), 1, max_value)`, `x = clamp(x, -s, s) / s`.
    Threshold { reg: Reg, ratio: f64, max_value: f64 },
    /// `dst = src[:, :channels]` (learned-variance models output twice the channels).
    TakeChannels { dst: Reg, src: Reg, channels: usize },
    /// `dst = src[:, channels:]`.
    DropChannels { dst: Reg, src: Reg, channels: usize },
    /// If the model output has twice the sample's channels, split it: `Model = model[:, :C]`,
    /// `pv = model[:, C:]` (learned variances). Otherwise nothing happens (and `pv` stays unset).
    SplitLearned { pv: Reg },
    /// `dst = exp(src)` elementwise (DDPM's learned variance).
    Exp { dst: Reg, src: Reg },
    /// `dst = src * mul + add` (the multiplication is skipped for `mul == 1`, the addition for
    /// `add == 0`).
    Affine { dst: Reg, src: Reg, mul: f64, add: f64 },
    /// `dst = sqrt(src)` elementwise.
    Sqrt { dst: Reg, src: Reg },
    /// `dst = src * other` elementwise.
    Mul { dst: Reg, a: Reg, b: Reg },
    /// `dst` = a standard-normal draw of the sample's shape from the context's noise source.
    Noise { dst: Reg },
    /// Forget a persistent register.
    Clear { reg: Reg },
}

/// What one step does, in terms of registers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepProgram {
    /// Operations, in order.
    pub ops: Vec<Op>,
    /// The register holding `prev_sample` at the end.
    pub prev_sample: Option<Reg>,
    /// The register holding `pred_original_sample`, where diffusers returns one.
    pub pred_original_sample: Option<Reg>,
}

impl StepProgram {
    /// Append `dst = Σ cᵢ·srcᵢ`.
    pub fn lin(&mut self, dst: Reg, terms: &[(f64, Reg)]) -> &mut Self {
        self.ops.push(Op::Lin { dst, terms: terms.to_vec() });
        self
    }
    /// Append `dst = src / d`.
    pub fn div(&mut self, dst: Reg, src: Reg, d: f64) -> &mut Self {
        self.ops.push(Op::Div { dst, src, d });
        self
    }
    /// Append an operation.
    pub fn op(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }
    /// All f64 coefficients are finite.
    pub fn is_finite(&self) -> bool {
        self.ops.iter().all(|op| match op {
            Op::Lin { terms, .. } => terms.iter().all(|(c, _)| c.is_finite()),
            Op::Div { d, .. } => d.is_finite() && *d != 0.0,
            Op::Clamp { min, max, .. } => !min.is_nan() && !max.is_nan(),
            Op::Threshold { ratio, max_value, .. } => ratio.is_finite() && max_value.is_finite(),
            _ => true,
        })
    }
}

/// A source of standard-normal noise. Tests inject diffusers' recorded draws; a pipeline injects
/// seeded (e.g. torch-compatible) draws.
pub trait NoiseSource<B: Backend> {
    /// A standard-normal tensor of `shape` on `device`.
    fn randn(&mut self, shape: [usize; 4], device: &B::Device) -> Result<Tensor<B, 4>>;
}

/// Noise from burn's backend RNG (`Distribution::Normal(0, 1)`), seeded by `B::seed` if wanted.
#[derive(Clone, Copy, Debug, Default)]
pub struct BackendNoise;

impl<B: Backend> NoiseSource<B> for BackendNoise {
    fn randn(&mut self, shape: [usize; 4], device: &B::Device) -> Result<Tensor<B, 4>> {
        Ok(Tensor::random(shape, Distribution::Normal(0.0, 1.0), device))
    }
}

/// A noise source that hands out pre-recorded tensors in order (e.g. diffusers' draws).
pub struct QueuedNoise<B: Backend> {
    queue: std::collections::VecDeque<Tensor<B, 4>>,
}

impl<B: Backend> QueuedNoise<B> {
    /// Noise draws to hand out, first one first.
    pub fn new(draws: impl IntoIterator<Item = Tensor<B, 4>>) -> Self {
        Self { queue: draws.into_iter().collect() }
    }
    /// How many draws are left.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl<B: Backend> NoiseSource<B> for QueuedNoise<B> {
    fn randn(&mut self, shape: [usize; 4], _device: &B::Device) -> Result<Tensor<B, 4>> {
        let t = self.queue.pop_front().ok_or_else(|| SchedulerError::State("noise queue is empty".into()))?;
        if t.dims() != shape {
            return Err(SchedulerError::Shape(format!("queued noise has shape {:?}, expected {shape:?}", t.dims())));
        }
        Ok(t)
    }
}

/// A noise source for deterministic schedulers: any draw is an error.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNoise;

impl<B: Backend> NoiseSource<B> for NoNoise {
    fn randn(&mut self, _shape: [usize; 4], _device: &B::Device) -> Result<Tensor<B, 4>> {
        Err(SchedulerError::State("this step needs noise but the context has no noise source".into()))
    }
}

/// The per-step host options of diffusers' `step` keyword arguments, the same for every scheduler
/// (a scheduler ignores what it has no use for: there is no probing of signatures).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOptions {
    /// DDIM's `eta` (0 = deterministic DDIM, 1 = DDPM-like).
    pub eta: f64,
    /// DDIM's `use_clipped_model_output`.
    pub use_clipped_model_output: bool,
    /// Euler/Heun-style churn: `s_churn`, `s_tmin`, `s_tmax`, `s_noise`.
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self { eta: 0.0, use_clipped_model_output: false, s_churn: 0.0, s_tmin: 0.0, s_tmax: f64::INFINITY, s_noise: 1.0 }
    }
}

/// Everything a step needs besides the tensors: the options (eta, ...) and the noise source.
pub struct StepContext<'a, B: Backend> {
    /// Host options.
    pub options: StepOptions,
    /// Where standard-normal draws come from.
    pub noise: &'a mut dyn NoiseSource<B>,
}

impl<'a, B: Backend> StepContext<'a, B> {
    /// Default options with a noise source.
    pub fn new(noise: &'a mut dyn NoiseSource<B>) -> Self {
        Self { options: StepOptions::default(), noise }
    }
    /// Set `eta`.
    pub fn with_eta(mut self, eta: f64) -> Self {
        self.options.eta = eta;
        self
    }
}

/// The tensor registers of one run (persistent across its steps).
pub struct RunTensors<B: Backend> {
    persistent: Vec<Option<Tensor<B, 4>>>,
}

impl<B: Backend> Default for RunTensors<B> {
    fn default() -> Self {
        Self { persistent: Vec::new() }
    }
}

impl<B: Backend> RunTensors<B> {
    /// Drop every persistent tensor.
    pub fn clear(&mut self) {
        self.persistent.clear();
    }
}

/// The outputs of one step.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// x_{t-1}: the next model input.
    pub prev_sample: Tensor<B, 4>,
    /// The predicted x₀, where the scheduler computes one.
    pub pred_original_sample: Option<Tensor<B, 4>>,
}

struct Regs<'r, B: Backend> {
    sample: Tensor<B, 4>,
    model: Tensor<B, 4>,
    temp: Vec<Option<Tensor<B, 4>>>,
    persistent: &'r mut Vec<Option<Tensor<B, 4>>>,
}

impl<B: Backend> Regs<'_, B> {
    fn get(&self, r: Reg) -> Result<Tensor<B, 4>> {
        let t = match r {
            Reg::Sample => Some(&self.sample),
            Reg::Model => Some(&self.model),
            Reg::T(i) => self.temp.get(i as usize).and_then(|x| x.as_ref()),
            Reg::S(i) => self.persistent.get(i as usize).and_then(|x| x.as_ref()),
        };
        t.cloned().ok_or_else(|| SchedulerError::State(format!("register {r:?} read before it was written")))
    }
    fn set(&mut self, r: Reg, t: Tensor<B, 4>) -> Result<()> {
        match r {
            Reg::Sample => self.sample = t,
            Reg::Model => self.model = t,
            Reg::T(i) => {
                let i = i as usize;
                if self.temp.len() <= i {
                    self.temp.resize(i + 1, None);
                }
                self.temp[i] = Some(t);
            }
            Reg::S(i) => {
                let i = i as usize;
                if self.persistent.len() <= i {
                    self.persistent.resize(i + 1, None);
                }
                self.persistent[i] = Some(t);
            }
        }
        Ok(())
    }
}

/// `torch.quantile(x, q, dim=1)` (linear interpolation) of a `[rows, n]` tensor → `[rows, 1]`.
fn quantile_rows<B: Backend>(x: Tensor<B, 2>, q: f64) -> Tensor<B, 2> {
    let [_, n] = x.dims();
    let sorted = x.sort(1);
    let pos = q * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil().min((n - 1) as f64) as usize;
    let w = pos - lo as f64;
    let vlo = sorted.clone().narrow(1, lo, 1);
    let vhi = sorted.narrow(1, hi, 1);
    // torch.lerp(a, b, w) = a + w * (b - a) for w < 0.5, b - (b - a) * (1 - w) otherwise
    if w < 0.5 {
        vlo.clone() + (vhi - vlo).mul_scalar(w)
    } else {
        vhi.clone() - (vhi - vlo).mul_scalar(1.0 - w)
    }
}

fn threshold<B: Backend>(x: Tensor<B, 4>, ratio: f64, max_value: f64) -> Tensor<B, 4> {
    let dims = x.dims();
    let rows = dims[0];
    let n = dims[1] * dims[2] * dims[3];
    let flat: Tensor<B, 2> = x.reshape([rows, n]);
    let s = quantile_rows(flat.clone().abs(), ratio).clamp(1.0, max_value);
    let s_full = s.expand([rows, n]);
    let out = flat.max_pair(s_full.clone().neg()).min_pair(s_full.clone()) / s_full;
    out.reshape(dims)
}

/// Run a step program. `sample` and `model_output` are `(b*f, c, h, w)`; a learned-variance model
/// output may have more channels when the program slices them.
pub fn execute<B: Backend>(
    tensors: &mut RunTensors<B>,
    program: &StepProgram,
    sample: Tensor<B, 4>,
    model_output: Tensor<B, 4>,
    noise: &mut dyn NoiseSource<B>,
) -> Result<StepOutput<B>> {
    let shape = sample.dims();
    let device = sample.device();
    let mut regs = Regs { sample, model: model_output, temp: Vec::new(), persistent: &mut tensors.persistent };
    for op in &program.ops {
        match op {
            Op::Lin { dst, terms } => {
                let mut acc: Option<Tensor<B, 4>> = None;
                for (c, r) in terms {
                    let t = regs.get(*r)?;
                    let term = if *c == 1.0 { t } else { t.mul_scalar(*c) };
                    acc = Some(match acc {
                        None => term,
                        Some(a) => {
                            if a.dims() != term.dims() {
                                return Err(SchedulerError::Shape(format!(
                                    "cannot combine tensors of shapes {:?} and {:?}",
                                    a.dims(),
                                    term.dims()
                                )));
                            }
                            a + term
                        }
                    });
                }
                let acc = acc.ok_or_else(|| SchedulerError::State("empty linear combination".into()))?;
                regs.set(*dst, acc)?;
            }
            Op::Div { dst, src, d } => {
                let t = regs.get(*src)?.div_scalar(*d);
                regs.set(*dst, t)?;
            }
            Op::Clamp { reg, min, max } => {
                let t = regs.get(*reg)?.clamp(*min, *max);
                regs.set(*reg, t)?;
            }
            Op::Threshold { reg, ratio, max_value } => {
                let t = threshold(regs.get(*reg)?, *ratio, *max_value);
                regs.set(*reg, t)?;
            }
            Op::TakeChannels { dst, src, channels } => {
                let t = regs.get(*src)?;
                let c = t.dims()[1];
                if *channels > c {
                    return Err(SchedulerError::Shape(format!("cannot take {channels} of {c} channels")));
                }
                regs.set(*dst, t.narrow(1, 0, *channels))?;
            }
            Op::DropChannels { dst, src, channels } => {
                let t = regs.get(*src)?;
                let c = t.dims()[1];
                if *channels >= c {
                    return Err(SchedulerError::Shape(format!(
                        "model output has {c} channels; a learned variance needs more than {channels}"
                    )));
                }
                regs.set(*dst, t.narrow(1, *channels, c - channels))?;
            }
            Op::SplitLearned { pv } => {
                let m = regs.get(Reg::Model)?;
                let (c, cm) = (shape[1], m.dims()[1]);
                if cm == 2 * c {
                    regs.set(*pv, m.clone().narrow(1, c, c))?;
                    regs.set(Reg::Model, m.narrow(1, 0, c))?;
                }
            }
            Op::Exp { dst, src } => {
                let t = regs.get(*src)?.exp();
                regs.set(*dst, t)?;
            }
            Op::Affine { dst, src, mul, add } => {
                let mut t = regs.get(*src)?;
                if *mul != 1.0 {
                    t = t.mul_scalar(*mul);
                }
                if *add != 0.0 {
                    t = t.add_scalar(*add);
                }
                regs.set(*dst, t)?;
            }
            Op::Sqrt { dst, src } => {
                let t = regs.get(*src)?.sqrt();
                regs.set(*dst, t)?;
            }
            Op::Mul { dst, a, b } => {
                let t = regs.get(*a)? * regs.get(*b)?;
                regs.set(*dst, t)?;
            }
            Op::Noise { dst } => {
                let n = noise.randn(shape, &device)?;
                regs.set(*dst, n)?;
            }
            Op::Clear { reg } => {
                if let Reg::S(i) = reg {
                    if let Some(slot) = regs.persistent.get_mut(*i as usize) {
                        *slot = None;
                    }
                }
            }
        }
    }
    let prev_reg = program.prev_sample.ok_or_else(|| SchedulerError::State("step program has no output".into()))?;
    let prev_sample = regs.get(prev_reg)?;
    if prev_sample.dims() != shape {
        return Err(SchedulerError::Shape(format!(
            "step produced shape {:?} from a sample of shape {shape:?}",
            prev_sample.dims()
        )));
    }
    let pred_original_sample = match program.pred_original_sample {
        Some(r) => Some(regs.get(r)?),
        None => None,
    };
    Ok(StepOutput { prev_sample, pred_original_sample })
}
