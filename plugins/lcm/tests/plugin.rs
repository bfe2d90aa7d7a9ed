//! The LCM plugin: registered like a built-in, loads by `_class_name`, matches diffusers'
//! `LCMScheduler` traces (`tests/fixtures/schedulers/lcm_*.json`).

#[path = "../../../crates/schedulers/tests/common/mod.rs"]
mod common;

use common::*;
use reel_schedulers::{registry, SchedulerSpec};
use serde_json::json;

#[test]
fn plugin_is_registered_and_loads_by_name() {
    reel_scheduler_lcm::register();
    assert!(registry::known().contains(&"LCMScheduler"), "{:?}", registry::known());
    let spec = SchedulerSpec::from_json_value(&json!({"_class_name": "LCMScheduler", "_diffusers_version": "0.22.0",
        "original_inference_steps": 50, "timestep_spacing": "leading"}))
    .unwrap();
    assert_eq!(spec.class_name(), "LCMScheduler");
    assert!(registry::describe().contains("LCMScheduler"));
    // swapping from a DDIM checkpoint config works like for built-ins
    let ddim = SchedulerSpec::from_json_value(&json!({"_class_name": "DDIMScheduler", "steps_offset": 1,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})).unwrap();
    let lcm = ddim.swap("LCMScheduler", &Default::default()).unwrap();
    assert_eq!(lcm.config.to_json()["steps_offset"], 1);
    let g = lcm.config.generation::<B>(4).unwrap();
    assert_eq!(g.timesteps(), &[999.0, 759.0, 499.0, 259.0]);
}

#[test]
fn lcm_matches_diffusers() {
    reel_scheduler_lcm::register();
    for name in ["lcm_default.json", "lcm_sd_trailing.json"] {
        let fx = load(name);
        let rep = replay(&fx, 2e-5, 1e-6);
        println!("{rep:?}");
        assert!(rep.failures.is_empty(), "{name}: {:?}", rep.failures);
    }
}

#[test]
fn lcm_invalid_inputs_are_errors() {
    reel_scheduler_lcm::register();
    let spec = SchedulerSpec::from_json_value(&json!({"_class_name": "LCMScheduler"})).unwrap();
    assert!(spec.config.start(0).is_err());
    assert!(spec.config.start(51).is_err()); // > original_inference_steps
    assert!(SchedulerSpec::from_json_value(&json!({"_class_name": "LCMScheduler", "original_inference_steps": 5000})).is_err());
}
