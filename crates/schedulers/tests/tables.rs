//! The float32 `alphas_cumprod` tables against diffusers' (torch) tables for the beta schedules
//! (`tests/fixtures/schedulers/tables.json`). torch.linspace's vectorised kernel is emulated by an
//! f64 linspace rounded to f32, so single betas may differ by 1 ulp; this test states the bound.

mod common;

use common::*;
use reel_schedulers::schedule::{alphas_cumprod, betas, BetaParams};
use reel_schedulers::BetaSchedule;

#[test]
fn alphas_cumprod_tables() {
    let fx = load("tables.json");
    for (name, t) in fx.as_object().unwrap() {
        let cfg = &t["config"];
        let sched = match cfg["beta_schedule"].as_str() {
            Some("scaled_linear") => BetaSchedule::ScaledLinear,
            Some("squaredcos_cap_v2") => BetaSchedule::SquaredcosCapV2,
            _ => BetaSchedule::Linear,
        };
        let p = BetaParams {
            num_train_timesteps: 1000,
            beta_start: cfg["beta_start"].as_f64().unwrap_or(0.0001),
            beta_end: cfg["beta_end"].as_f64().unwrap_or(0.02),
            beta_schedule: sched,
            trained_betas: None,
            rescale_betas_zero_snr: cfg["rescale_betas_zero_snr"].as_bool().unwrap_or(false),
        };
        let ours = alphas_cumprod(&betas(&p).unwrap());
        let theirs = f32s(&t["alphas_cumprod"]);
        let mut max_rel = 0.0f64;
        let mut mismatches = 0;
        for (a, b) in ours.iter().zip(&theirs) {
            if a != b {
                mismatches += 1;
            }
            max_rel = max_rel.max(((a - b) as f64).abs() / (*b as f64).abs());
        }
        println!("{name:14} mismatching entries {mismatches:4}/1000  max rel err {max_rel:.2e}");
        let bound = if p.rescale_betas_zero_snr { 1e-4 } else { 1e-6 };
        assert!(max_rel < bound, "{name}: {max_rel}");
    }
}
