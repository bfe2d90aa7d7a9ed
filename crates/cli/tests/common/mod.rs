//! Shared by the binary's integration tests: the `reel generate` arguments that replay one
//! recorded diffusers run (tests/fixtures/reference/<fixture>/runs.json).

use std::path::Path;

use serde_json::Value;

/// `reel generate` arguments for diffusers run `run` of fixture `pipe` (references in `refs`),
/// writing `out`.
pub fn args_for(run: &Value, pipe: &Path, refs: &Path, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["generate".into(), "--model".into(), pipe.display().to_string(), "--quiet".into()];
    let mut push = |k: &str, v: String| {
        a.push(k.into());
        a.push(v);
    };
    push("--prompt", run["prompt"].as_str().unwrap().into());
    if let Some(n) = run["negative_prompt"].as_str() {
        push("--negative-prompt", n.into());
    }
    push("--guidance-scale", run["guidance_scale"].to_string());
    push("--steps", run["num_inference_steps"].to_string());
    push("--eta", run["eta"].to_string());
    push("--seed", run["seed"].to_string());
    if let Some(c) = run["clip_skip"].as_u64() {
        push("--clip-skip", c.to_string());
    }
    let config = refs.join(run["scheduler_config"].as_str().unwrap());
    if run["scheduler_config_is_input"].as_bool() == Some(true) {
        push("--scheduler-config", config.display().to_string());
    } else {
        push("--scheduler", run["scheduler_class"].as_str().unwrap().into());
    }
    if run["mode"] == "v2v" {
        push("--video", refs.join(run["video"].as_str().unwrap()).display().to_string());
        push("--strength", run["strength"].to_string());
    } else {
        push("--num-frames", run["num_frames"].to_string());
        push("--height", run["height"].to_string());
        push("--width", run["width"].to_string());
        if let Some(l) = run["latents"].as_str() {
            push("--latents", refs.join(l).display().to_string());
        }
    }
    push("--output", out.display().to_string());
    a
}
