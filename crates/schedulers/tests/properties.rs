//! Property tests over every registered scheduler (the registry is iterated, so a new built-in or
//! plugin scheduler is covered automatically): random configs and step counts.
//!
//! * timesteps non-increasing (strictly decreasing for first-order schedulers without converted
//!   sigmas and N < T; for order-2 schedulers the non-midpoint subsequence) and inside [0, num_train_timesteps)
//!   (+ steps_offset for `leading` spacing, where diffusers' sigma schedulers go there too);
//! * no NaN/inf in timesteps, sigmas, init_noise_sigma or any step's coefficients for N in
//!   1..=num_train_timesteps;
//! * shapes preserved by scale_model_input / step / add_noise;
//! * deterministic schedulers recover x0 from the exact noise of a known x0 (constant-epsilon
//!   oracle model, `leading` spacing where DDIM/PNDM's `t - T // N` stepping is consistent);
//! * add_noise at a (begin-index) timestep followed by one exact model call gives back x0 as
//!   pred_original_sample;
//! * config -> JSON / TOML -> config is lossless;
//! * invalid inputs give errors, never panics.

mod common;

use burn::tensor::{Distribution, Tensor};
use common::*;
use proptest::prelude::*;
use reel_schedulers::{registry, NoNoise, SchedulerConfig, SchedulerError, SchedulerSpec, StepContext, StepOptions};
use serde_json::{json, Map, Value};

fn classes() -> Vec<&'static str> {
    registry::known()
}

/// A random config of `class`: the class defaults with random values for the shared options it has.
fn random_config(class: &str, seed: u64, epsilon_leading: bool) -> Value {
    let mut rng = seed;
    let mut next = |n: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let defaults = registry::default_config(class).unwrap().to_json();
    let d = defaults.as_object().unwrap();
    let mut m = Map::new();
    m.insert("_class_name".into(), json!(class));
    let mut set = |k: &str, v: Value| {
        if d.contains_key(k) {
            m.insert(k.into(), v);
        }
    };
    set("beta_schedule", json!(["linear", "scaled_linear", "squaredcos_cap_v2"][next(3) as usize]));
    if next(2) == 0 {
        set("beta_start", json!(0.00085));
        set("beta_end", json!(0.012));
    }
    set("num_train_timesteps", json!([1000, 1000, 500, 100][next(4) as usize]));
    if epsilon_leading {
        set("prediction_type", json!("epsilon"));
        set("timestep_spacing", json!("leading"));
        set("steps_offset", json!(0));
    } else {
        set("prediction_type", json!(["epsilon", "v_prediction", "sample"][next(3) as usize]));
        set("timestep_spacing", json!(["leading", "trailing", "linspace"][next(3) as usize]));
        set("steps_offset", json!(next(2)));
        set("rescale_betas_zero_snr", json!(next(4) == 0));
    }
    set("clip_sample", json!(next(2) == 0));
    set("thresholding", json!(next(4) == 0));
    match next(5) {
        0 => set("use_karras_sigmas", json!(true)),
        1 => set("use_exponential_sigmas", json!(true)),
        2 => set("use_beta_sigmas", json!(true)),
        _ => {}
    }
    set("solver_order", json!(1 + next(3)));
    set("final_sigmas_type", json!(["zero", "sigma_min"][next(2) as usize]));
    set("lower_order_final", json!(next(2) == 0));
    Value::Object(m)
}

fn check_no_panic_start(cfg: &dyn SchedulerConfig, n: usize) -> Option<Box<dyn reel_schedulers::SchedulerRun>> {
    match cfg.generation::<B>(n) {
        Ok(g) => Some(g.run().clone_run()),
        Err(e) => {
            // a clear error, e.g. leading spacing + steps_offset pushing a timestep to T
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// Sanity of the generator itself: most random configs must load and start.
#[test]
fn random_configs_mostly_load() {
    let mut ok = 0;
    let mut total = 0;
    for class in classes() {
        for seed in 0..40u64 {
            total += 1;
            let v = random_config(class, seed * 7919 + 1, seed % 2 == 0);
            match SchedulerSpec::from_json_value(&v) {
                Ok(spec) => {
                    if spec.config.generation::<B>(10).is_ok() {
                        ok += 1;
                    }
                }
                Err(e) => println!("{class}: {e}"),
            }
        }
    }
    println!("{ok}/{total} random configs start");
    assert!(ok * 2 > total, "{ok}/{total}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn schedules_are_sane(ci in 0usize..64, seed in any::<u64>(), frac in 0.0f64..1.0) {
        let cls = classes();
        let class = cls[ci % cls.len()];
        let v = random_config(class, seed, false);
        let spec = match SchedulerSpec::from_json_value(&v) { Ok(s) => s, Err(_) => return Ok(()) };
        let t = spec.config.num_train_timesteps();
        // N over the whole range 1..=T, biased to the ends
        let n = match seed % 4 { 0 => 1, 1 => t, _ => 1 + ((t - 1) as f64 * frac) as usize };
        let Some(mut run) = check_no_panic_start(spec.config.as_ref(), n) else { return Ok(()) };
        let ts = run.timesteps().to_vec();
        prop_assert!(!ts.is_empty());
        let converted = ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"].iter().any(|k| v[*k] == json!(true));
        // order-2 schedulers interleave midpoint timesteps (KDPM2-ancestral's can sit a float32
        // ulp above the next one, as in diffusers): check the main subsequence there
        let main: Vec<f64> = if run.order() == 2 { ts.iter().step_by(2).cloned().collect() } else { ts.clone() };
        for w in main.windows(2) {
            prop_assert!(w[1] <= w[0], "{class} N={n}: timesteps increase {} -> {}", w[0], w[1]);
            // at N = T the multistep solvers' (N+1)-point linspace repeats a timestep, as in diffusers
            if run.order() == 1 && !converted && !class.contains("PNDM") && n < t {
                prop_assert!(w[1] < w[0], "{class} N={n}: repeated timestep {}", w[0]);
            }
        }
        // `leading` + steps_offset shifts the top timestep past T-1 in diffusers too (the sigma
        // schedulers interpolate there; the integer ones refuse it up front)
        let offset = v.get("steps_offset").and_then(|x| x.as_f64()).unwrap_or(0.0);
        for &x in &ts {
            prop_assert!(x.is_finite() && x >= 0.0 && x < t as f64 + offset, "{class} N={n}: timestep {x}");
        }
        if let Some(s) = run.sigmas() {
            prop_assert!(s.iter().all(|x| x.is_finite() && *x >= 0.0), "{class}: sigmas {s:?}");
        }
        prop_assert!(run.init_noise_sigma().is_finite() && run.init_noise_sigma() > 0.0);
        // every step's coefficients finite (host only: plan all steps)
        let o = StepOptions::default();
        for &x in &ts {
            match run.scale_model_input(x) {
                Ok(Some(d)) => prop_assert!(d.is_finite() && d > 0.0),
                Ok(None) => {}
                Err(e) => prop_assert!(false, "{class} N={n}: scale_model_input {e}"),
            }
            let p = run.plan_step(x, &o);
            prop_assert!(p.is_ok(), "{class} N={n} t={x}: {:?}", p.err());
            prop_assert!(p.unwrap().is_finite(), "{class} N={n} t={x}: non-finite coefficients");
        }
    }

    #[test]
    fn steps_preserve_shapes_and_recover_x0(ci in 0usize..64, seed in any::<u64>(), n in 1usize..30,
                                            b in 1usize..3, c in 1usize..5, h in 1usize..4, w in 1usize..4) {
        let cls = classes();
        let class = cls[ci % cls.len()];
        let v = random_config(class, seed, true);
        let spec = match SchedulerSpec::from_json_value(&v) { Ok(s) => s, Err(_) => return Ok(()) };
        let n = n.min(spec.config.num_train_timesteps());
        let Ok(mut g) = spec.config.generation::<B>(n) else { return Ok(()) };
        let dev = Default::default();
        let x0: Tensor<B, 4> = Tensor::random([b, c, h, w], Distribution::Uniform(-0.9, 0.9), &dev);
        let eps: Tensor<B, 4> = Tensor::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &dev);
        let ts = g.timesteps().to_vec();
        let an = g.run().add_noise(ts[0]).unwrap();
        // f32 rounding of x0 = (x - b·eps) / a grows with the noise-to-signal ratio b / a
        let tol = 2e-4 * (an.b / an.a).max(1.0);
        let mut sample = g.add_noise(x0.clone(), eps.clone(), ts[0]).unwrap();
        prop_assert_eq!(sample.dims(), [b, c, h, w]);
        let mut last_x0 = None;
        let mut stochastic = false;
        for &t in &ts {
            let scaled = g.scale_model_input(sample.clone(), t).unwrap();
            prop_assert_eq!(scaled.dims(), [b, c, h, w]);
            let mut nn = NoNoise;
            let mut ctx = StepContext::new(&mut nn);
            match g.step(eps.clone(), t, sample.clone(), &mut ctx) {
                Ok(out) => {
                    prop_assert_eq!(out.prev_sample.dims(), [b, c, h, w]);
                    let vals = to_vec(&out.prev_sample);
                    prop_assert!(vals.iter().all(|x| x.is_finite()), "{class}: non-finite sample");
                    last_x0 = out.pred_original_sample;
                    sample = out.prev_sample;
                }
                Err(SchedulerError::State(m)) if m.contains("noise") => { stochastic = true; break; }
                Err(e) => prop_assert!(false, "{class} N={n}: {e}"),
            }
        }
        if stochastic { return Ok(()); }
        let x0v = to_vec(&x0);
        if let Some(p) = last_x0 {
            let e = rel_err(&to_vec(&p), &x0v);
            prop_assert!(e < tol, "{class} N={n} {v}: pred x0 error {e}");
        } else if g.sigmas().map(|s| *s.last().unwrap() == 0.0).unwrap_or(false) {
            let e = rel_err(&to_vec(&sample), &x0v);
            prop_assert!(e < tol, "{class} N={n} {v}: final sample error {e}");
        }
    }

    #[test]
    fn add_noise_then_exact_model_gives_x0(ci in 0usize..64, seed in any::<u64>(), n in 2usize..40, k in 0usize..40) {
        let cls = classes();
        let class = cls[ci % cls.len()];
        let mut v = random_config(class, seed, false);
        v.as_object_mut().unwrap().insert("prediction_type".into(), json!("epsilon"));
        v.as_object_mut().unwrap().insert("rescale_betas_zero_snr".into(), json!(false));
        let spec = match SchedulerSpec::from_json_value(&v) { Ok(s) => s, Err(_) => return Ok(()) };
        let Ok(mut g) = spec.config.generation::<B>(n) else { return Ok(()) };
        let begin = k % g.timesteps().len();
        g.set_begin_index(begin).unwrap();
        let t = g.timesteps()[begin];
        let an = g.run().add_noise(t).unwrap();
        let tol = 2e-4 * (an.b / an.a).max(1.0);
        let dev = Default::default();
        let x0: Tensor<B, 4> = Tensor::random([2, 4, 2, 3], Distribution::Uniform(-0.9, 0.9), &dev);
        let eps: Tensor<B, 4> = Tensor::random([2, 4, 2, 3], Distribution::Normal(0.0, 1.0), &dev);
        let x = g.add_noise(x0.clone(), eps.clone(), t).unwrap();
        let _ = g.scale_model_input(x.clone(), t).unwrap();
        let mut nn = NoNoise;
        let mut ctx = StepContext::new(&mut nn);
        if let Ok(out) = g.step(eps, t, x, &mut ctx) {
            if let Some(p) = out.pred_original_sample {
                let e = rel_err(&to_vec(&p), &to_vec(&x0));
                prop_assert!(e < tol, "{class} {v} N={n} begin={begin}: {e} (tol {tol})");
            }
        }
    }

    #[test]
    fn configs_round_trip(ci in 0usize..64, seed in any::<u64>()) {
        let cls = classes();
        let class = cls[ci % cls.len()];
        let v = random_config(class, seed, false);
        let Ok(spec) = SchedulerSpec::from_json_value(&v) else { return Ok(()) };
        let cfg: &dyn SchedulerConfig = spec.config.as_ref();
        let j = serde_json::to_string(cfg).unwrap();
        let back: Box<dyn SchedulerConfig> = serde_json::from_str(&j).unwrap();
        prop_assert_eq!(back.to_json(), cfg.to_json());
        let t = toml::to_string(cfg).unwrap();
        let back: Box<dyn SchedulerConfig> = toml::from_str(&t).unwrap();
        prop_assert_eq!(back.to_json(), cfg.to_json());
        // and through SchedulerSpec (what a pipeline does with a scheduler_config.json)
        let again = SchedulerSpec::from_json_str(&j).unwrap();
        prop_assert_eq!(again.config.to_json(), cfg.to_json());
    }

    #[test]
    fn garbage_never_panics(class_i in 0usize..64, key_i in 0usize..64, val_i in 0usize..8, n in 0usize..2000) {
        let cls = classes();
        let class = cls[class_i % cls.len()];
        let keys = ["beta_schedule", "solver_order", "num_train_timesteps", "prediction_type", "timestep_spacing",
                    "beta_start", "beta_end", "steps_offset", "trained_betas", "algorithm_type", "solver_type",
                    "final_sigmas_type", "sigma_min", "variance_type", "use_karras_sigmas", "dynamic_thresholding_ratio"];
        let vals = [json!(null), json!(-1), json!(0), json!(4), json!("bogus"), json!(1e30), json!([0.5]), json!(true)];
        let mut m = Map::new();
        m.insert("_class_name".into(), json!(class));
        m.insert(keys[key_i % keys.len()].into(), vals[val_i].clone());
        if let Ok(spec) = SchedulerSpec::from_json_value(&Value::Object(m)) {
            if let Ok(mut run) = spec.config.start(n) {
                let ts = run.timesteps().to_vec();
                for &t in ts.iter().take(3) {
                    let _ = run.scale_model_input(t);
                    let _ = run.plan_step(t, &StepOptions::default());
                }
                let _ = run.plan_step(-5.0, &StepOptions::default());
            }
        }
    }
}
