//! Runs a declared pipeline: its stages in order, each on the previous stage's frames, with the
//! user's overrides (the CLI flags) on top of the stage defaults, parts from the shared
//! [`ComponentStore`], per-stage timings for the summary.
//!
//! Which override reaches which stage: prompt, negative prompt, embeddings, clip_skip, steps,
//! guidance, eta, seed and the scheduler apply to every model stage (each model stage gets a
//! fresh `torch.Generator("cpu").manual_seed(seed)`, as two diffusers calls with the same
//! seed); `--latents` and `--num-frames` to the text-to-video stage; `--height`/`--width` to the
//! first stage; `--strength` to every video-to-video stage; `--video` is the first stage's input.

use std::time::Instant;

use burn::tensor::backend::Backend;
use reel_core::npy::Array;
use reel_schedulers::SchedulerSpec;
use reel_video::Frames;

use crate::config::{PartKind, Stage, StageKind};
use crate::error::{Error, Result};
use crate::pipeline_text_to_video_synth::{
    decode_latents, encode_prompt, text_to_video_latents, Event, GenerateParams, Phases,
};
use crate::pipeline_text_to_video_synth_img2img::{check_strength, VideoToVideoPlan};
use crate::store::{ComponentStore, LoadRecord, Loaded};

/// The user's settings for one run (every field optional: `None` keeps the stage default, then
/// diffusers' default).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub prompt_embeds: Option<Array>,
    pub negative_prompt_embeds: Option<Array>,
    pub seed: Option<u64>,
    pub latents: Option<Array>,
    pub num_inference_steps: Option<usize>,
    pub guidance_scale: Option<f64>,
    pub num_frames: Option<usize>,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub eta: Option<f64>,
    pub strength: Option<f64>,
    pub clip_skip: Option<usize>,
    /// `--scheduler CLASS`: swap like `Class.from_config(config)`.
    pub scheduler_class: Option<String>,
    /// `--scheduler-config FILE`: a complete diffusers scheduler config.
    pub scheduler_config: Option<SchedulerSpec>,
    /// The input video of the first stage.
    pub video: Option<Frames>,
    pub vae_slicing: bool,
    pub forward_chunk: Option<usize>,
}

/// A stage-level progress event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageEvent<'a> {
    pub stage: usize,
    pub stages: usize,
    pub kind: StageKind,
    pub event: Event<'a>,
}

/// What one stage did.
#[derive(Clone, Debug)]
pub struct StageReport {
    pub kind: StageKind,
    pub scheduler: Option<String>,
    pub num_inference_steps: Option<usize>,
    /// Model evaluations the loop ran.
    pub steps_run: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub seed: Option<u64>,
    /// Seconds per phase (`load_*`, `encode_prompt`, `encode_video`, `denoise`, `decode`, `resize`).
    pub timings: Vec<(String, f64)>,
    pub seconds: f64,
}

/// What a run did.
pub struct RunReport {
    pub pipeline: String,
    pub seed: u64,
    pub stages: Vec<StageReport>,
    pub loads: Vec<LoadRecord>,
    pub load_seconds: f64,
    pub seconds: f64,
}

/// The stage's generation parameters: overrides, then stage defaults, then diffusers' defaults.
pub fn stage_params(stage: &Stage, index: usize, o: &Overrides, seed: u64) -> GenerateParams {
    let d = &stage.defaults;
    let mut p = match stage.kind {
        StageKind::VideoToVideo => GenerateParams::video_to_video(""),
        _ => GenerateParams::text_to_video(""),
    };
    p.prompt = o.prompt.clone();
    p.prompt_embeds = o.prompt_embeds.clone();
    p.negative_prompt = o.negative_prompt.clone().or_else(|| d.negative_prompt.clone());
    p.negative_prompt_embeds = o.negative_prompt_embeds.clone();
    if p.negative_prompt_embeds.is_some() && o.negative_prompt.is_none() {
        p.negative_prompt = None;
    }
    let first = index == 0;
    p.height = if first { o.height.or(d.height) } else { d.height };
    p.width = if first { o.width.or(d.width) } else { d.width };
    if let Some(n) = o.num_frames.or(d.num_frames) {
        p.num_frames = n;
    }
    if let Some(n) = o.num_inference_steps.or(d.num_inference_steps) {
        p.num_inference_steps = n;
    }
    if let Some(g) = o.guidance_scale.or(d.guidance_scale) {
        p.guidance_scale = g;
    }
    if let Some(e) = o.eta.or(d.eta) {
        p.eta = e;
    }
    if let Some(s) = o.strength.or(d.strength) {
        p.strength = s;
    }
    p.clip_skip = o.clip_skip.or(d.clip_skip);
    p.seed = seed;
    p.latents = if stage.kind == StageKind::TextToVideo { o.latents.clone() } else { None };
    p
}

/// The stage's scheduler: the part's config (or `--scheduler-config`), swapped to the chosen
/// class with the stage's options, like diffusers' `Class.from_config(config, **options)`.
pub fn stage_scheduler(base: SchedulerSpec, stage: &Stage, o: &Overrides) -> Result<SchedulerSpec> {
    let base = o.scheduler_config.clone().unwrap_or(base);
    let class = o.scheduler_class.clone().or_else(|| stage.defaults.scheduler_class.clone());
    if class.is_none() && stage.defaults.scheduler_options.is_empty() {
        return Ok(base);
    }
    let class = class.unwrap_or_else(|| base.class_name().to_string());
    Ok(base.swap(&class, &stage.defaults.scheduler_options)?)
}

fn check_overrides(stages: &[Stage], o: &Overrides) -> Result<()> {
    let first = stages[0].kind;
    if first == StageKind::TextToVideo && o.video.is_some() {
        return Err(Error::input("this pipeline starts with text-to-video: --video is not used (drop it, or pick a video-to-video pipeline)"));
    }
    if first != StageKind::TextToVideo && o.video.is_none() {
        return Err(Error::input(format!("this pipeline starts with {}: give the input video with --video FILE", first.name())));
    }
    if o.latents.is_some() && first != StageKind::TextToVideo {
        return Err(Error::input("--latents sets the initial latents of text-to-video; this pipeline has no text-to-video stage"));
    }
    if o.strength.is_some() && !stages.iter().any(|s| s.kind == StageKind::VideoToVideo) {
        return Err(Error::input("--strength applies to video-to-video; this pipeline has no video-to-video stage"));
    }
    if let Some(s) = o.strength {
        check_strength(s)?;
    }
    let has_model = stages.iter().any(|s| s.parts.is_some());
    if has_model && o.prompt.is_none() && o.prompt_embeds.is_none() {
        return Err(Error::input("give a prompt (--prompt TEXT)"));
    }
    if o.num_frames == Some(0) {
        return Err(Error::input("--num-frames must be at least 1"));
    }
    if o.num_inference_steps == Some(0) {
        return Err(Error::input("--steps must be at least 1"));
    }
    for (name, v) in [("height", o.height), ("width", o.width)] {
        if let Some(v) = v {
            if v == 0 || v % 8 != 0 {
                let lo = v / 8 * 8;
                return Err(Error::input(format!(
                    "--{name} {v} is not a positive multiple of 8 (the VAE works on 8×8 pixel blocks); use e.g. {}{}",
                    if lo > 0 { format!("{lo} or ") } else { String::new() },
                    lo + 8
                )));
            }
        }
    }
    Ok(())
}

/// Runs pipeline `id` of the store's file. `seed` is the generator seed (the caller picks a
/// random one when the user gave none, and reports it).
pub fn run<B: Backend>(
    store: &mut ComponentStore<B>,
    id: &str,
    overrides: &Overrides,
    seed: u64,
    callback: &mut dyn FnMut(StageEvent),
) -> Result<(Frames, RunReport)> {
    let t_run = Instant::now();
    let stages = store.file.pipeline(id)?.stages.clone();
    check_overrides(&stages, overrides)?;
    let loads_before = store.loads.len();
    let t_load = Instant::now();
    store.preload(id)?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    let mut video = overrides.video.clone();
    let mut reports = Vec::new();
    let n = stages.len();
    for (i, stage) in stages.iter().enumerate() {
        let t0 = Instant::now();
        let mut cb = |event: Event| callback(StageEvent { stage: i, stages: n, kind: stage.kind, event });
        let (frames, mut report) = match stage.kind {
            StageKind::Resize => {
                let input = video.take().ok_or_else(|| Error::input("resize needs an input video"))?;
                let (h, w) = (stage.defaults.height.unwrap_or(input.height), stage.defaults.width.unwrap_or(input.width));
                let (h, w) = if i == 0 { (overrides.height.unwrap_or(h), overrides.width.unwrap_or(w)) } else { (h, w) };
                cb(Event::Phase("resize"));
                let t = Instant::now();
                let out = reel_video::resize(&input, h, w);
                let report = StageReport {
                    kind: stage.kind,
                    scheduler: None,
                    num_inference_steps: None,
                    steps_run: 0,
                    frames: out.frames,
                    height: h,
                    width: w,
                    seed: None,
                    timings: vec![("resize".into(), t.elapsed().as_secs_f64())],
                    seconds: 0.0,
                };
                (out, report)
            }
            StageKind::TextToVideo | StageKind::VideoToVideo => {
                let params = stage_params(stage, i, overrides, seed);
                run_model_stage(store, stage, &params, overrides, video.take(), &mut cb)?
            }
        };
        report.seconds = t0.elapsed().as_secs_f64();
        reports.push(report);
        video = Some(frames);
    }
    let frames = video.ok_or_else(|| Error::input("the pipeline produced no video"))?;
    let report = RunReport {
        pipeline: id.to_string(),
        seed,
        stages: reports,
        loads: store.loads[loads_before..].to_vec(),
        load_seconds,
        seconds: t_run.elapsed().as_secs_f64(),
    };
    Ok((frames, report))
}

/// A part from the store: under offload it is loaded now, timed as phase `name`; otherwise it
/// was preloaded and comes from the cache.
fn fetch<B: Backend, T>(
    store: &mut ComponentStore<B>,
    phases: &mut Phases,
    name: &str,
    get: impl FnOnce(&mut ComponentStore<B>) -> Result<T>,
) -> Result<T> {
    if store.offload() {
        phases.run(name, |_| get(store))
    } else {
        get(store)
    }
}

/// Drops a model its phase is done with; under offload the device's unused memory is then given
/// back ([`crate::memory::release_device_memory`]).
fn done<B: Backend, T>(store: &ComponentStore<B>, model: Loaded<T, B::Device>) -> Result<()> {
    let device = model.device.clone();
    drop(model);
    if store.offload() {
        crate::memory::release_device_memory::<B>(&device)?;
    }
    Ok(())
}

fn run_model_stage<B: Backend>(
    store: &mut ComponentStore<B>,
    stage: &Stage,
    params: &GenerateParams,
    overrides: &Overrides,
    input: Option<Frames>,
    cb: &mut dyn FnMut(Event),
) -> Result<(Frames, StageReport)> {
    let parts = stage.parts.as_ref().expect("model stage has parts");
    let part = |k: PartKind| parts[&k].clone();
    let scheduler = stage_scheduler(store.scheduler(&part(PartKind::Scheduler))?, stage, overrides)?;
    let tokenizer = store.tokenizer(&part(PartKind::Tokenizer))?;
    let mut phases = Phases::new(cb);

    // Text encoder (loaded for this phase only under offload).
    let needs_text = params.prompt_embeds.is_none()
        || (params.do_classifier_free_guidance() && params.negative_prompt_embeds.is_none());
    let ehs = if needs_text {
        let te = fetch(store, &mut phases, "load_text_encoder", |s| s.text_encoder(&part(PartKind::TextEncoder)))?;
        let ehs = phases.run("encode_prompt", |_| encode_prompt(Some(&tokenizer), Some(&te.part), params, &te.device))?;
        done(store, te)?;
        ehs
    } else {
        let device = store.device_of(&part(PartKind::TextEncoder))?;
        phases.run("encode_prompt", |_| encode_prompt::<B>(None, None, params, &device))?
    };

    let load_unet = |store: &mut ComponentStore<B>, phases: &mut Phases| {
        let u = fetch(store, phases, "load_unet", |s| s.unet(&part(PartKind::Unet)))?;
        let chunk = overrides.forward_chunk.or(stage.defaults.forward_chunk);
        match chunk {
            Some(c) => u.part.borrow_mut().enable_forward_chunking(Some(c), 1)?,
            None => u.part.borrow_mut().disable_forward_chunking(),
        }
        Ok::<_, Error>(u)
    };
    let load_vae = |store: &mut ComponentStore<B>, phases: &mut Phases| {
        let v = fetch(store, phases, "load_vae", |s| s.vae(&part(PartKind::Vae)))?;
        if overrides.vae_slicing || stage.defaults.vae_slicing {
            v.part.borrow_mut().enable_slicing(1)?;
        } else {
            v.part.borrow_mut().disable_slicing();
        }
        Ok::<_, Error>(v)
    };

    let (latents, timesteps) = match stage.kind {
        StageKind::TextToVideo => {
            let unet = load_unet(store, &mut phases)?;
            let vae_scale = store.vae_scale_factor(&part(PartKind::Vae))?;
            let device = unet.device.clone();
            let (latents, timesteps) = phases.run("denoise", |cb| {
                text_to_video_latents(&unet.part.borrow(), &scheduler, vae_scale, ehs, params, &device, cb)
            })?;
            done(store, unet)?;
            (latents, timesteps)
        }
        StageKind::VideoToVideo => {
            let input = input.ok_or_else(|| Error::input("video-to-video needs an input video"))?;
            let (h, w) = (params.height.unwrap_or(input.height), params.width.unwrap_or(input.width));
            let video = if (h, w) != (input.height, input.width) {
                phases.run("resize", |_| Ok(reel_video::resize(&input, h, w)))?
            } else {
                input
            };
            let dtype = store.dtype_of(&part(PartKind::Unet))?;
            let vae_scale = store.vae_scale_factor(&part(PartKind::Vae))?;
            let mut plan = VideoToVideoPlan::new(dtype, &scheduler, vae_scale, &video, params)?;
            let vae = load_vae(store, &mut phases)?;
            let latents = phases.run("encode_video", |_| plan.prepare_latents(&vae.part.borrow(), &video))?;
            done(store, vae)?;
            let unet = load_unet(store, &mut phases)?;
            let latents = phases.run("denoise", |cb| plan.denoise(&unet.part.borrow(), ehs, latents, params, cb))?;
            done(store, unet)?;
            let timesteps = plan.timesteps.clone();
            (latents, timesteps)
        }
        StageKind::Resize => unreachable!("resize has no model parts"),
    };
    let vae = load_vae(store, &mut phases)?;
    let frames = phases.run("decode", |_| decode_latents(&vae.part.borrow(), latents))?;
    done(store, vae)?;
    let report = StageReport {
        kind: stage.kind,
        scheduler: Some(scheduler.class_name().to_string()),
        num_inference_steps: Some(params.num_inference_steps),
        steps_run: timesteps.len(),
        frames: frames.frames,
        height: frames.height,
        width: frames.width,
        seed: Some(params.seed),
        timings: phases.timings,
        seconds: 0.0,
    };
    Ok((frames, report))
}
