//! Whole-pipeline parity with diffusers: every run the reference harness recorded
//! (`tools/reference/pipelines.py` → `tests/fixtures/reference/pipe-*/runs.json`): text-to-video
//! with every registered scheduler (swapped in like `Class.from_config`), fixed initial latents
//! and a seeded `torch.Generator("cpu")` for the stochastic steps, the extra runs (eta, no CFG,
//! negative prompt, clip_skip, a complete sde-dpmsolver++ config, seed-only runs), and
//! video-to-video with every scheduler and several strengths.
//!
//! Tolerances (f32 against torch f32 on CPU): frames (in [0, 1]) within 2e-4 absolute; the final
//! latents within 1e-4 of the reference's largest magnitude.
//!
//! The same runs (every fifth) also go through the vendor-kernel paths (`reel_core::kernels`:
//! linear layers, explicit attention, convolutions as im2col products or on a library
//! convolution, as cuBLAS and cuDNN run them on CUDA) with a host stand-in for the libraries, on a
//! backend type of their own so the other tests keep burn's kernels, and in 64 KiB pieces so the
//! grouped paths run.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use reel_core::npy;
use reel_core::testing::fixtures_dir;
use reel_core::{ModelRepo, ModelSource, HubSettings};
use reel_pipeline::{GenerateParams, TextToVideoSD, VideoToVideoSD};
use reel_schedulers::SchedulerSpec;
use serde_json::Value;

type B = NdArray<f32>;
/// The backend of the matrix-product runs: burn-ndarray again, as a distinct type (32-bit ints)
/// so the registration reaches these runs only.
type Hooked = NdArray<f32, i32>;

const FRAMES_TOL: f32 = 2e-4;
const LATENTS_REL_TOL: f32 = 1e-4;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

struct Fixture {
    repo: ModelRepo,
    refs: PathBuf,
    runs: Vec<Value>,
}

fn fixture(name: &str) -> Fixture {
    let root = fixtures_dir();
    let repo = ModelSource::Local(root.join("pipelines").join(name)).open(&HubSettings::from_env()).unwrap();
    let refs = root.join("reference").join(name);
    let runs: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(refs.join("runs.json")).unwrap()).unwrap();
    Fixture { repo, refs, runs }
}

fn params(run: &Value, refs: &Path) -> GenerateParams {
    let mut p = GenerateParams::text_to_video(run["prompt"].as_str().unwrap());
    p.negative_prompt = run["negative_prompt"].as_str().map(str::to_string);
    p.guidance_scale = run["guidance_scale"].as_f64().unwrap();
    p.num_inference_steps = run["num_inference_steps"].as_u64().unwrap() as usize;
    p.num_frames = run["num_frames"].as_u64().unwrap() as usize;
    p.height = Some(run["height"].as_u64().unwrap() as usize);
    p.width = Some(run["width"].as_u64().unwrap() as usize);
    p.eta = run["eta"].as_f64().unwrap();
    p.clip_skip = run["clip_skip"].as_u64().map(|c| c as usize);
    p.seed = run["seed"].as_u64().unwrap();
    p.latents = run["latents"].as_str().map(|f| npy::read(refs.join(f)).unwrap());
    if let Some(s) = run["strength"].as_f64() {
        p.strength = s;
    }
    p
}

/// The run's scheduler as the CLI builds it: the checkpoint's config swapped to the run's class
/// (`--scheduler`), or the complete config file (`--scheduler-config`).
fn scheduler(fx: &Fixture, run: &Value) -> SchedulerSpec {
    let file = fx.refs.join(run["scheduler_config"].as_str().unwrap());
    if run["scheduler_config_is_input"].as_bool() == Some(true) {
        return SchedulerSpec::from_json_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    }
    let base = std::fs::read_to_string(fx.repo.file("scheduler/scheduler_config.json").unwrap()).unwrap();
    let base = SchedulerSpec::from_json_str(&base).unwrap();
    base.swap(run["scheduler_class"].as_str().unwrap(), &Default::default()).unwrap()
}

/// Checks every `every`-th recorded run of the fixture on backend `B`.
fn check_fixture<B: Backend>(name: &str, every: usize) {
    reel_scheduler_lcm::register();
    let fx = fixture(name);
    let device = Default::default();
    let tokenizer = reel_clip::ClipTokenizer::load(&fx.repo, "tokenizer").unwrap();
    let variant = if name == "pipe-b" { Some("fp16") } else { None };
    let text_encoder = reel_clip::TextEncoder::<B>::load(&fx.repo, "text_encoder", variant, &device, None).unwrap();
    let unet = reel_unet3d::Unet3d::<B>::load(&fx.repo, "unet", variant, &device, None).unwrap();
    let vae = reel_vae::Vae::<B>::load(&fx.repo, "vae", variant, &device, None).unwrap();
    let video = reel_video::read(&fx.refs.join("video.npy")).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for run in fx.runs.iter().step_by(every) {
        let id = run["id"].as_str().unwrap();
        if !run["error"].is_null() {
            eprintln!("{name}/{id}: diffusers failed ({}); not compared", run["error"]);
            continue;
        }
        let spec = scheduler(&fx, run);
        let p = params(run, &fx.refs);
        let mut steps = 0;
        let mut cb = |e: reel_pipeline::Event| {
            if let reel_pipeline::Event::Step { .. } = e {
                steps += 1
            }
        };
        let out = match run["mode"].as_str().unwrap() {
            "t2v" => TextToVideoSD { tokenizer: &tokenizer, text_encoder: &text_encoder, unet: &unet, vae: &vae, scheduler: &spec }
                .call(&p, &mut cb),
            _ => VideoToVideoSD { tokenizer: &tokenizer, text_encoder: &text_encoder, unet: &unet, vae: &vae, scheduler: &spec }
                .call(&video, &p, &mut cb),
        };
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{id}: reel failed: {e}"));
                continue;
            }
        };
        let ts: Vec<f64> = run["timesteps"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
        if out.timesteps.len() != ts.len() || out.timesteps.iter().zip(&ts).any(|(a, b)| (a - b).abs() > 1e-3) {
            failures.push(format!("{id}: timesteps {:?} vs diffusers {:?}", out.timesteps, ts));
        }
        assert_eq!(steps, ts.len(), "{id}: one callback per loop iteration");
        let frames = npy::read(fx.refs.join(run["output"].as_str().unwrap())).unwrap();
        assert_eq!(frames.shape, vec![out.frames.frames, out.frames.height, out.frames.width, 3], "{id}: frame shape");
        let d = max_abs_diff(&out.frames.data, &frames.data);
        let lat = npy::read(fx.refs.join(run["final_latents"].as_str().unwrap())).unwrap();
        let ours = npy::Array::from_tensor(out.latents).unwrap();
        let dl = max_abs_diff(&ours.data, &lat.data) / max_abs(&lat.data);
        eprintln!("{name}/{id}: frames max abs diff {d:.2e}, latents max rel diff {dl:.2e}");
        if d > FRAMES_TOL || dl > LATENTS_REL_TOL || !d.is_finite() || !dl.is_finite() {
            failures.push(format!("{id}: frames diff {d:.3e} (tol {FRAMES_TOL:.0e}), latents rel diff {dl:.3e} (tol {LATENTS_REL_TOL:.0e})"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{name}: {} of {} runs differ from diffusers:\n{}", failures.len(), checked, failures.join("\n"));
    assert!(checked >= 30 / every, "{name}: only {checked} runs compared");
}

#[test]
fn pipe_a_matches_diffusers() {
    check_fixture::<B>("pipe-a", 1);
}

#[test]
fn pipe_b_matches_diffusers() {
    check_fixture::<B>("pipe-b", 1);
}

#[test]
fn pipe_a_matches_diffusers_on_vendor_kernels() {
    use std::sync::atomic::Ordering::Relaxed;
    // Small pieces, so the grouped im2col and attention paths run too.
    reel_core::kernels::set_chunk_bytes(64 << 10);
    // Convolutions as im2col products, burn's norms and attention as products around burn's
    // softmax; then a library convolution (im2col only for the asymmetric padding of the VAE
    // encoder's downsamplers), reel's own norm and GEGLU kernels and the fused attention on the
    // token layout (reel's own softmax is checked in crates/core/tests/kernels.rs).
    for conv in [false, true] {
        let (own, attention) = (conv, conv);
        let kernels = std::sync::Arc::new(reel_core::testing::HostKernels { conv, own, attention, ..Default::default() });
        reel_core::kernels::register::<Hooked>(kernels.clone());
        check_fixture::<Hooked>("pipe-a", 5);
        let (calls, convs, norm_calls) = (kernels.calls.load(Relaxed), kernels.conv_calls.load(Relaxed), kernels.norm_calls.load(Relaxed));
        let (softmax_calls, attention_calls) = (kernels.softmax_calls.load(Relaxed), kernels.attention_calls.load(Relaxed));
        eprintln!(
            "library convolution and own kernels {conv}: {calls} products, {convs} convolutions, {norm_calls} norms, {softmax_calls} softmaxes, {attention_calls} fused attentions"
        );
        assert!(calls > 0, "the layers did not use the registered matrix product");
        assert_eq!(convs > 0, conv, "library convolutions used: {convs}");
        assert_eq!(norm_calls > 0, own, "reel's own norms used: {norm_calls}");
        assert_eq!(attention_calls > 0, attention, "fused attentions used: {attention_calls}");
        let (geglu_calls, linears_calls) = (kernels.geglu_calls.load(Relaxed), kernels.linears_calls.load(Relaxed));
        let linear_add_calls = kernels.linear_add_calls.load(Relaxed);
        eprintln!("  {geglu_calls} GEGLUs, {linears_calls} multi-projections, {linear_add_calls} linear layers onto their residual");
        assert_eq!(linear_add_calls > 0, own, "residual adds inside the products: {linear_add_calls}");
        let conv_add_calls = kernels.conv_add_calls.load(Relaxed);
        assert_eq!(conv_add_calls > 0, conv && own, "resnet shortcuts added inside the convolutions: {conv_add_calls}");
        assert_eq!(geglu_calls > 0, own, "reel's own GEGLU used: {geglu_calls}");
        assert_eq!(linears_calls > 0, own, "q, k, v projections as one operation: {linears_calls}");
        assert_eq!(softmax_calls, 0, "every attention went through the products with burn's softmax or the fused kernel");
    }
}
