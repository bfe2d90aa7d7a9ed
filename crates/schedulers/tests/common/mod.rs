//! Shared test harness: loads the diffusers traces written by `tools/reference/schedulers.py`
//! (`tests/fixtures/schedulers/*.json`) and replays them through reel-schedulers on NdArray.
//! Used by this crate's parity test and by scheduler plugins' tests (via `#[path]`).
#![allow(dead_code)]

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use reel_schedulers::{Generation, QueuedNoise, SchedulerSpec, StepContext, StepOptions};
use serde_json::Value;

pub type B = NdArray<f32>;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/schedulers")
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    }
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

pub fn f32s(v: &Value) -> Vec<f32> {
    b64_decode(v.as_str().expect("base64 string")).chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn tensor(v: &Value, shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(f32s(v), shape), &Default::default())
}

pub fn to_vec(t: &Tensor<B, 4>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

/// max |a - b| / max(1, max |b|): relative to the tensor's scale.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    rel_err_in(a, b, 1.0)
}

/// max |a - b| / max(1, max |b|, input_scale): relative to the larger of the result's and the
/// step input's scale (a step from a sample of scale 4096 to one of scale 1 cancels ~12 bits in
/// float32, in diffusers as much as here).
pub fn rel_err_in(a: &[f32], b: &[f32], input_scale: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(input_scale.max(1.0), |m, &x| m.max((x as f64).abs()));
    a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| m.max(((x as f64) - (y as f64)).abs())) / scale
}

pub fn load(name: &str) -> Value {
    let p = fixtures_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))).unwrap()
}

pub fn spec_for(fx: &Value) -> SchedulerSpec {
    let mut cfg = fx["config"].as_object().unwrap().clone();
    cfg.insert("_class_name".into(), fx["class"].clone());
    SchedulerSpec::from_json_value(&Value::Object(cfg)).unwrap_or_else(|e| panic!("{}: {e}", fx["case"]))
}

pub fn step_options(fx: &Value) -> StepOptions {
    let mut o = StepOptions::default();
    let k = &fx["step_kwargs"];
    if let Some(e) = k["eta"].as_f64() {
        o.eta = e;
    }
    if let Some(b) = k["use_clipped_model_output"].as_bool() {
        o.use_clipped_model_output = b;
    }
    if let Some(c) = k["s_churn"].as_f64() {
        o.s_churn = c;
    }
    o
}

/// Errors seen while replaying one fixture.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub case: String,
    pub max_schedule_err: f64,
    pub max_step_err: f64,
    pub max_x0_err: f64,
    pub max_add_noise_err: f64,
    pub max_img2img_err: f64,
    /// Step counts reel refuses up front where diffusers' full run fails or goes non-finite.
    pub refused: Vec<usize>,
    pub failures: Vec<String>,
}

/// The traces' fake model: `0.1 * input + sin(t)`; learned-variance cases (`_learned` in the
/// step kwargs) append `tanh(0.1 * input)` (its absolute value for `"abs"`) as C more channels.
fn fake_model(scaled: &Tensor<B, 4>, t: f64, learned: &Value) -> Tensor<B, 4> {
    let out = scaled.clone().mul_scalar(0.1f32).add_scalar(t.sin() as f32);
    if learned.is_null() {
        return out;
    }
    let mut v = scaled.clone().mul_scalar(0.1f32).tanh();
    if learned.as_str() == Some("abs") {
        v = v.abs();
    }
    Tensor::cat(vec![out, v], 1)
}

/// Replay a fixture; `tol` is the allowed relative error of tensors, `sched_tol` of float
/// timesteps/sigmas (integer timesteps must match exactly).
pub fn replay(fx: &Value, tol: f64, sched_tol: f64) -> Report {
    let case = fx["case"].as_str().unwrap().to_owned();
    let mut rep = Report { case: case.clone(), ..Default::default() };
    let spec = spec_for(fx);
    let shape: Vec<usize> = fx["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let shape = [shape[0], shape[1], shape[2], shape[3]];
    let opts = step_options(fx);
    for run in fx["runs"].as_array().unwrap() {
        let n = run["n"].as_u64().unwrap() as usize;
        let start = spec.config.start(n);
        if run.get("error").is_some() {
            if start.is_ok() {
                rep.failures.push(format!("N={n}: diffusers fails ({}) but reel accepted", run["error"]));
            }
            continue;
        }
        let full_ok = run["full_run"].as_str() == Some("ok");
        let schedule_run = match start {
            Ok(r) => r,
            Err(e) => {
                // diffusers would fail at a step (e.g. timestep == num_train_timesteps)
                if !full_ok {
                    rep.refused.push(n);
                    continue;
                }
                rep.failures.push(format!("N={n}: reel error {e}"));
                continue;
            }
        };
        let mut gen: Option<Generation<B>> = match spec.config.generation::<B>(n) {
            Ok(g) => Some(g),
            Err(e) => {
                if full_ok {
                    rep.failures.push(format!("N={n}: reel refuses ({e}) but diffusers runs"));
                } else {
                    rep.refused.push(n);
                }
                None
            }
        };
        if gen.is_some() && !full_ok {
            rep.failures.push(format!("N={n}: diffusers fails ({}) but reel accepts", run["full_run"]));
        }
        let stride = run["stride"].as_u64().unwrap_or(1) as usize;
        let sub = |v: &[f64]| -> Vec<f64> {
            v.iter().enumerate().filter(|(i, _)| i % stride == 0 || *i == v.len() - 1).map(|(_, x)| *x).collect()
        };
        // timesteps
        let ts_ref: Vec<f64> = f32s(&run["timesteps"]).into_iter().map(|x| x as f64).collect();
        let ts = schedule_run.timesteps().to_vec();
        if ts.len() != run["num_timesteps"].as_u64().unwrap() as usize {
            rep.failures.push(format!("N={n}: {} timesteps, diffusers {}", ts.len(), run["num_timesteps"]));
            continue;
        }
        let int_ts = run["timesteps_dtype"].as_str() == Some("int64");
        for (a, b) in sub(&ts).iter().zip(&ts_ref) {
            if int_ts {
                if a != b {
                    rep.failures.push(format!("N={n}: timestep {a} != {b}"));
                    break;
                }
            } else {
                // float timesteps: relative to max(|t|, 100) (an interpolated timestep near 0
                // differs by ~1e-5 absolute between float32 evaluation orders)
                let e = (a - b).abs() / b.abs().max(100.0);
                rep.max_schedule_err = rep.max_schedule_err.max(e);
                if e > sched_tol {
                    rep.failures.push(format!("N={n}: timestep {a} vs {b}"));
                    break;
                }
            }
        }
        if let Some(sr) = run.get("sigmas") {
            let sref: Vec<f64> = f32s(sr).into_iter().map(|x| x as f64).collect();
            match schedule_run.sigmas() {
                None => rep.failures.push(format!("N={n}: no sigmas")),
                Some(s) => {
                    if s.len() != run["num_sigmas"].as_u64().unwrap() as usize {
                        rep.failures.push(format!("N={n}: {} sigmas, diffusers {}", s.len(), run["num_sigmas"]));
                    } else {
                        for (a, b) in sub(s).iter().zip(&sref) {
                            let e = (a - b).abs() / b.abs().max(1.0);
                            rep.max_schedule_err = rep.max_schedule_err.max(e);
                            if e > sched_tol {
                                rep.failures.push(format!("N={n}: sigma {a} vs {b}"));
                                break;
                            }
                        }
                    }
                }
            }
        }
        let ins = run["init_noise_sigma"].as_f64().unwrap();
        let e = (schedule_run.init_noise_sigma() - ins).abs() / ins.abs().max(1.0);
        rep.max_schedule_err = rep.max_schedule_err.max(e);
        if e > sched_tol {
            rep.failures.push(format!("N={n}: init_noise_sigma {} vs {ins}", schedule_run.init_noise_sigma()));
        }
        let Some(mut gen) = gen.take() else { continue };
        // steps
        let draws: Vec<Tensor<B, 4>> = run["noise"].as_array().unwrap().iter().map(|v| tensor(v, shape)).collect();
        let mut noise = QueuedNoise::new(draws);
        let mut sample = tensor(&run["sample0"], shape);
        for st in run["steps"].as_array().unwrap() {
            let i = st["i"].as_u64().unwrap() as usize;
            let t = ts[i];
            let scaled = match gen.scale_model_input(sample.clone(), t) {
                Ok(s) => s,
                Err(e) => {
                    rep.failures.push(format!("N={n} step {i}: {e}"));
                    break;
                }
            };
            if let Some(sc) = st.get("scaled") {
                let e = rel_err(&to_vec(&scaled), &f32s(sc));
                rep.max_step_err = rep.max_step_err.max(e);
            }
            let mo = fake_model(&scaled, t, &fx["step_kwargs"]["_learned"]);
            let in_scale = to_vec(&sample).iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
            let mut ctx = StepContext { options: opts, noise: &mut noise };
            let out = match gen.step(mo, t, sample.clone(), &mut ctx) {
                Ok(o) => o,
                Err(e) => {
                    rep.failures.push(format!("N={n} step {i}: {e}"));
                    break;
                }
            };
            if let Some(p) = st.get("prev") {
                let e = rel_err_in(&to_vec(&out.prev_sample), &f32s(p), in_scale);
                rep.max_step_err = rep.max_step_err.max(e);
                if e > tol {
                    rep.failures.push(format!("N={n} step {i} (t={t}): prev_sample rel err {e:.3e}"));
                }
            }
            if let (Some(x), Some(ours)) = (st.get("x0"), out.pred_original_sample.as_ref()) {
                let e = rel_err_in(&to_vec(ours), &f32s(x), in_scale);
                rep.max_x0_err = rep.max_x0_err.max(e);
                if e > tol {
                    rep.failures.push(format!("N={n} step {i}: pred_original_sample rel err {e:.3e}"));
                }
            }
            sample = out.prev_sample;
        }
        if run.get("step_error").is_some() {
            rep.failures.push(format!("N={n}: diffusers step failed ({}) — check", run["step_error"]));
        }
        // add_noise and image-to-image
        if let Some(an) = run.get("add_noise") {
            let g2 = spec.config.generation::<B>(n).unwrap();
            let x0 = tensor(&run["x0_clean"], shape);
            let nz = tensor(&run["noise_clean"], shape);
            // our own timesteps[3] (float timesteps may differ from diffusers' by rounding)
            let t = ts[3];
            match g2.add_noise(x0, nz, t) {
                Ok(y) => {
                    let e = rel_err(&to_vec(&y), &f32s(an));
                    rep.max_add_noise_err = rep.max_add_noise_err.max(e);
                    if e > tol {
                        rep.failures.push(format!("N={n}: add_noise rel err {e:.3e}"));
                    }
                }
                Err(e) => rep.failures.push(format!("N={n}: add_noise {e}")),
            }
        }
        if let Some(i2i) = run.get("img2img") {
            let mut g3 = spec.config.generation::<B>(n).unwrap();
            let begin = i2i["begin"].as_u64().unwrap() as usize;
            g3.set_begin_index(begin).unwrap();
            let x0 = tensor(&run["x0_clean"], shape);
            let nz = tensor(&run["noise_clean"], shape);
            let tb = g3.timesteps()[begin];
            let mut smp = g3.add_noise(x0, nz, tb).unwrap();
            let e = rel_err(&to_vec(&smp), &f32s(&i2i["start"]));
            rep.max_img2img_err = rep.max_img2img_err.max(e);
            let draws: Vec<Tensor<B, 4>> = i2i["noise"].as_array().unwrap().iter().map(|v| tensor(v, shape)).collect();
            let mut noise = QueuedNoise::new(draws);
            let tss = g3.timesteps()[begin..].to_vec();
            for (k, st) in i2i["steps"].as_array().unwrap().iter().enumerate() {
                let t = tss[k];
                let scaled = g3.scale_model_input(smp.clone(), t).unwrap();
                let mo = fake_model(&scaled, t, &fx["step_kwargs"]["_learned"]);
                let mut ctx = StepContext { options: opts, noise: &mut noise };
                match g3.step(mo, t, smp.clone(), &mut ctx) {
                    Ok(o) => smp = o.prev_sample,
                    Err(e) => {
                        rep.failures.push(format!("img2img step {k}: {e}"));
                        break;
                    }
                }
                if let Some(pv) = st.get("prev") {
                    let e = rel_err(&to_vec(&smp), &f32s(pv));
                    rep.max_img2img_err = rep.max_img2img_err.max(e);
                }
            }
            if rep.max_img2img_err > tol {
                rep.failures.push(format!("img2img rel err {:.3e}", rep.max_img2img_err));
            }
        }
    }
    rep
}

/// All fixture files of registered classes (case file names).
pub fn fixture_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != "swap.json" && n != "tables.json")
        .collect();
    v.sort();
    v
}
