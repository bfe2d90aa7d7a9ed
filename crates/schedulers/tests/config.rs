//! Config loading, swapping (diffusers' `from_config`), serialization round trips, registry
//! listing and invalid-input errors.

mod common;

use common::*;
use reel_schedulers::{registry, SchedulerConfig, SchedulerError, SchedulerSpec};
use serde_json::{json, Map, Value};

fn swap_fixture() -> Value {
    load("swap.json")
}

/// Every option reel knows must equal what diffusers' swapped config holds, `_use_default_values`
/// must agree, and the N = 25 timesteps must match.
#[test]
fn from_config_swaps_match_diffusers() {
    let fx = swap_fixture();
    let ddim = SchedulerSpec::from_json_value(&fx["source"]).unwrap();
    assert_eq!(ddim.class_name(), "DDIMScheduler");
    // DDIM loaded from the ModelScope file: same options and defaults list as diffusers.
    let ours = ddim.to_diffusers_json();
    for (k, v) in ours.as_object().unwrap() {
        if k == "_diffusers_version" {
            continue;
        }
        assert_eq!(Some(v), fx["ddim_config"].get(k), "DDIM key {k}");
    }
    for (name, expect) in fx["swaps"].as_object().unwrap() {
        let chain: Vec<&str> = match name.as_str() {
            "Euler_then_DPM" => vec!["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"],
            "DPM_then_DDIM" => vec!["DPMSolverMultistepScheduler", "DDIMScheduler"],
            c => vec![c],
        };
        let mut spec = ddim.clone();
        for c in &chain {
            spec = spec.swap(c, &Map::new()).unwrap();
        }
        let ours = spec.to_diffusers_json();
        let theirs = &expect["config"];
        for (k, v) in ours.as_object().unwrap() {
            let t = theirs.get(k).unwrap_or_else(|| panic!("{name}: diffusers has no key {k}"));
            if k == "_use_default_values" {
                let mut a: Vec<&str> = v.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
                let mut b: Vec<&str> = t.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
                a.sort();
                b.sort();
                assert_eq!(a, b, "{name}: _use_default_values");
            } else if let (Some(x), Some(y)) = (v.as_f64(), t.as_f64()) {
                assert_eq!(x, y, "{name}: {k}");
            } else {
                assert_eq!(v, t, "{name}: {k}");
            }
        }
        let gen = spec.config.generation::<B>(25).unwrap();
        let ts: Vec<f64> = expect["timesteps_25"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(gen.timesteps(), &ts[..], "{name}: timesteps");
    }
}

#[test]
fn ddim_to_dpm_keeps_file_keys_but_takes_dpm_spacing() {
    let file = json!({
        "_class_name": "DDIMScheduler", "_diffusers_version": "0.15.0.dev0",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": false, "num_train_timesteps": 1000, "prediction_type": "epsilon",
        "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null
    });
    let ddim = SchedulerSpec::from_json_value(&file).unwrap();
    assert_eq!(ddim.config.to_json()["timestep_spacing"], "leading");
    let dpm = ddim.swap("DPMSolverMultistepScheduler", &Map::new()).unwrap();
    let j = dpm.config.to_json();
    assert_eq!(j["timestep_spacing"], "linspace");
    assert_eq!(j["steps_offset"], 1);
    assert_eq!(j["beta_schedule"], "scaled_linear");
    // an override becomes explicit and survives the next swap
    let mut o = Map::new();
    o.insert("timestep_spacing".into(), json!("trailing"));
    let dpm2 = ddim.swap("DPMSolverMultistepScheduler", &o).unwrap();
    let back = dpm2.swap("DDIMScheduler", &Map::new()).unwrap();
    assert_eq!(back.config.to_json()["timestep_spacing"], "trailing");
}

#[test]
fn unknown_keys_are_ignored() {
    let v = json!({"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.30.0",
                   "clip_sample_range": 2.0, "something_new": [1, 2], "steps_offset": 1});
    let s = SchedulerSpec::from_json_value(&v).unwrap();
    assert_eq!(s.config.to_json()["steps_offset"], 1);
}

#[test]
fn unknown_class_lists_known_ones() {
    let err = SchedulerSpec::from_json_value(&json!({"_class_name": "FancyScheduler"})).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SchedulerError::UnknownClass { .. }));
    assert!(msg.contains("DDIMScheduler") && msg.contains("DPMSolverMultistepScheduler"), "{msg}");
    assert!(SchedulerSpec::from_json_value(&json!({"beta_start": 0.1})).is_err());
    assert!(SchedulerSpec::from_json_str("not json").is_err());
}

#[test]
fn invalid_configs_are_errors() {
    let bad = [
        json!({"_class_name": "DDIMScheduler", "beta_schedule": "cubic"}),
        json!({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 4}),
        json!({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 0}),
        json!({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver"}),
        json!({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true, "use_beta_sigmas": true}),
        json!({"_class_name": "DDIMScheduler", "prediction_type": "flow"}),
        json!({"_class_name": "DDIMScheduler", "num_train_timesteps": "many"}),
        json!({"_class_name": "DDIMScheduler", "num_train_timesteps": 1}),
        json!({"_class_name": "DDIMScheduler", "trained_betas": [0.1, 0.2]}),
        json!({"_class_name": "DDIMScheduler", "beta_start": -1.0, "beta_end": 0.02}),
        json!({"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"}),
    ];
    for b in bad {
        let r = SchedulerSpec::from_json_value(&b);
        assert!(r.is_err(), "accepted {b}");
        println!("{b} -> {}", r.unwrap_err());
    }
}

#[test]
fn invalid_step_counts_are_errors() {
    for class in registry::known() {
        let cfg = registry::default_config(class).unwrap();
        let t = cfg.num_train_timesteps();
        let e0 = cfg.start(0).unwrap_err();
        assert!(matches!(e0, SchedulerError::InvalidSteps { .. }), "{class}: {e0}");
        assert!(cfg.start(t + 1).is_err(), "{class}: N > T accepted");
    }
}

#[test]
fn default_configs_round_trip_json_and_toml() {
    for class in registry::known() {
        let cfg = registry::default_config(class).unwrap();
        assert_eq!(cfg.class_name(), class, "registry name vs typetag name");
        let js = serde_json::to_string(&cfg).unwrap();
        let back: Box<dyn SchedulerConfig> = serde_json::from_str(&js).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&cfg).unwrap(), "{class} json");
        let tm = toml::to_string(&cfg).unwrap();
        let back: Box<dyn SchedulerConfig> = toml::from_str(&tm).unwrap_or_else(|e| panic!("{class}: {e}\n{tm}"));
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&cfg).unwrap(), "{class} toml");
    }
}

#[test]
fn describe_lists_every_scheduler_with_defaults() {
    let d = registry::describe();
    for class in registry::known() {
        assert!(d.contains(class));
    }
    assert!(d.contains("solver_order = 2"), "{d}");
    let l = registry::list();
    assert!(l.iter().any(|i| i.class_name == "DDIMScheduler" && i.options.iter().any(|(k, _)| k == "steps_offset")));
}

#[test]
fn generations_are_independent_and_shareable() {
    let spec = SchedulerSpec::default_for("DPMSolverMultistepScheduler").unwrap();
    let cfg = spec.config.clone();
    let handles: Vec<_> = (0..2)
        .map(|k| {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let g = cfg.generation::<B>(10 + k).unwrap();
                g.timesteps().len()
            })
        })
        .collect();
    let lens: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(lens, vec![10, 11]);

    // two generations of one shared config stepping concurrently give the same result as one
    // generation alone (no shared step state)
    fn denoise(cfg: std::sync::Arc<dyn SchedulerConfig>) -> Vec<f32> {
        use burn::tensor::{Tensor, TensorData};
        let mut g = cfg.generation::<B>(12).unwrap();
        let data: Vec<f32> = (0..48).map(|i| ((i as f32) * 0.37).sin()).collect();
        let mut x: Tensor<B, 4> = Tensor::from_data(TensorData::new(data, [2, 4, 2, 3]), &Default::default());
        let mut nn = reel_schedulers::NoNoise;
        for t in g.timesteps().to_vec() {
            let m = g.scale_model_input(x.clone(), t).unwrap().mul_scalar(0.1).add_scalar(t.sin() as f32);
            let mut ctx = reel_schedulers::StepContext::new(&mut nn);
            x = g.step(m, t, x, &mut ctx).unwrap().prev_sample;
        }
        to_vec(&x)
    }
    let alone = denoise(cfg.clone());
    let threads: Vec<_> = (0..2).map(|_| {
        let cfg = cfg.clone();
        std::thread::spawn(move || denoise(cfg))
    }).collect();
    for h in threads {
        assert_eq!(h.join().unwrap(), alone);
    }
}
