//! The plugin example of `docs/schedulers.md`, compiled and exercised verbatim (a second
//! scheduler registered from outside reel-schedulers).
#![allow(dead_code)]

use reel_schedulers::helpers::{alphas_cumprod, betas, check_steps, ddpm_add_noise, emit_x0, table_index, BetaParams};
use reel_schedulers::*;
use serde::{Deserialize, Serialize};

pub fn register() {} // binaries call this so the linker keeps the crate

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct MyConfig { pub num_train_timesteps: usize, pub beta_start: f64, pub beta_end: f64, pub prediction_type: PredictionType }
impl Default for MyConfig {
    fn default() -> Self { Self { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, prediction_type: PredictionType::Epsilon } }
}
register_scheduler!(MyConfig, "MyScheduler", "deterministic DDIM, my way");

#[typetag::serde(name = "MyScheduler")]
impl SchedulerConfig for MyConfig {
    fn validate(&self) -> Result<()> { Ok(()) }
    fn num_train_timesteps(&self) -> usize { self.num_train_timesteps }
    fn clone_box(&self) -> Box<dyn SchedulerConfig> { Box::new(self.clone()) }
    fn start(&self, n: usize) -> Result<Box<dyn SchedulerRun>> {
        check_steps(n, self.num_train_timesteps)?;
        let ac = alphas_cumprod(&betas(&BetaParams { num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start, beta_end: self.beta_end, beta_schedule: BetaSchedule::ScaledLinear,
            trained_betas: None, rescale_betas_zero_snr: false })?);
        let ratio = self.num_train_timesteps / n;
        let timesteps = (0..n).rev().map(|i| (i * ratio) as f64).collect();
        Ok(Box::new(MyRun { pred: self.prediction_type, ac, core: RunCore::new(timesteps), ratio }))
    }
}

#[derive(Clone, Debug)]
struct MyRun { pred: PredictionType, ac: Vec<f32>, core: RunCore, ratio: usize }

impl SchedulerRun for MyRun {
    fn core(&self) -> &RunCore { &self.core } // timesteps, order, set_begin_index, ... default to it
    fn core_mut(&mut self) -> &mut RunCore { &mut self.core }
    fn add_noise(&self, t: f64) -> Result<AddNoise> { ddpm_add_noise(&self.ac, t) }
    fn clone_run(&self) -> Box<dyn SchedulerRun> { Box::new(self.clone()) }
    fn plan_step(&mut self, t: f64, _o: &StepOptions) -> Result<StepProgram> {
        let i = table_index(t, self.ac.len())?;
        let ap = self.ac[i];
        let app = if i >= self.ratio { self.ac[i - self.ratio] } else { 1.0 };
        let (x0, eps, out) = (Reg::T(0), Reg::T(1), Reg::T(2));
        let mut p = StepProgram::default();
        emit_x0(&mut p, self.pred, ap, 1.0 - ap, x0, eps, true);           // x0 and eps registers
        p.lin(out, &[(app.sqrt() as f64, x0), ((1.0 - app).sqrt() as f64, eps)]);
        p.prev_sample = Some(out);
        p.pred_original_sample = Some(x0);
        Ok(p)
    }
}

#[test]
fn doc_example_plugin_works() {
    register();
    assert!(registry::known().contains(&"MyScheduler"));
    let spec = SchedulerSpec::from_json_value(&serde_json::json!({"_class_name": "MyScheduler"})).unwrap();
    let mut g = spec.config.generation::<burn::backend::NdArray<f32>>(10).unwrap();
    let dev = Default::default();
    let x0 = burn::tensor::Tensor::<burn::backend::NdArray<f32>, 4>::ones([1, 4, 2, 2], &dev).mul_scalar(0.5);
    let eps = burn::tensor::Tensor::<burn::backend::NdArray<f32>, 4>::ones([1, 4, 2, 2], &dev);
    let ts = g.timesteps().to_vec();
    let mut x = g.add_noise(x0.clone(), eps.clone(), ts[0]).unwrap();
    let mut nn = NoNoise;
    for &t in &ts {
        let mut ctx = StepContext::new(&mut nn);
        x = g.step(eps.clone(), t, x, &mut ctx).unwrap().prev_sample;
    }
    let d: f32 = (x - x0).abs().max().into_scalar();
    assert!(d < 1e-4, "{d}");
}
