//! The benchmark harness behind `reel bench`: full-size architectures built from `config.json`
//! files with random weights (no download), timed part by part — text encoder, one UNet step
//! with classifier-free guidance, one scheduler step, VAE decode, the whole pipeline — with
//! warm-up runs excluded and the device synchronised around every measurement. Shapes, steps,
//! scheduler and prompt ids are those of `benches/diffusers_baseline.py`, so the two JSON
//! reports compare directly (`benches/compare.py`).

use std::path::Path;
use std::time::Instant;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, DType, Distribution, Tensor, TensorData};
use reel_clip::{ClipTextConfig, ClipTextModel, TextEncoder};
use reel_core::config::load_component_config;
use reel_core::nn::{to_dtype, Activation, Conv2d, GroupNorm, LayerNorm, Linear};
use reel_core::profile::{self, Op};
use serde::Serialize;
use reel_core::{ModelRepo, ModelSource};
use reel_schedulers::{NoiseSource, SchedulerSpec, StepContext};
use reel_unet3d::{Timestep, UNet3DConditionConfig, Unet3d};
use reel_vae::{AutoencoderKL, AutoencoderKLConfig, Vae};

use crate::error::{Error, Result};
use crate::noise::TorchNoise;
use crate::pipeline_text_to_video_synth::{decode_latents, text_to_video_latents, GenerateParams};

/// Replaces every parameter with uniform noise in ±1/sqrt(fan-in), in `dtype`.
struct Randomize<'d, B: Backend> {
    device: &'d B::Device,
    dtype: Option<DType>,
}

impl<B: Backend> ModuleMapper<B> for Randomize<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dims = param.lazy_shape().dims::<D>();
        let fan_in: usize = if D > 1 { dims[1..].iter().product() } else { dims[0].max(1) };
        let bound = 1.0 / (fan_in as f64).sqrt();
        let t = Tensor::<B, D>::random(dims, Distribution::Uniform(-bound, bound), self.device);
        let t = match self.dtype {
            Some(d) => to_dtype(t, d),
            None => t,
        };
        Param::initialized(param.id, t)
    }
}

/// Random-weight parts of one architecture.
pub struct RandomParts<B: Backend> {
    pub text_encoder: TextEncoder<B>,
    pub unet: Unet3d<B>,
    pub vae: Vae<B>,
    pub scheduler: SchedulerSpec,
}

/// Every float parameter's values on the host, in the module's visiting order.
struct Download(Vec<TensorData>);

impl<B: Backend> ModuleVisitor<B> for Download {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().into_data());
    }
}

/// Sets every float parameter from host values in the visiting order of [`Download`] (each in
/// its own dtype).
struct Upload<'a, B: Backend> {
    device: &'a B::Device,
    values: std::slice::Iter<'a, TensorData>,
}

impl<B: Backend> ModuleMapper<B> for Upload<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let data = self.values.next().expect("one host value per parameter").clone();
        let dtype = data.dtype;
        Param::initialized(param.id, Tensor::from_data(data, (self.device, dtype)))
    }
}

fn download<B: Backend, M: Module<B>>(module: &M) -> Vec<TensorData> {
    let mut d = Download(Vec::new());
    module.visit(&mut d);
    d.0
}

fn upload<B: Backend, M: Module<B>>(module: M, values: &[TensorData], device: &B::Device) -> M {
    module.map(&mut Upload { device, values: values.iter() })
}

/// The parts' parameters held on the host, for model CPU offload (diffusers'
/// `enable_model_cpu_offload`): each model is uploaded for its part or pipeline phase and
/// released after it (the device synchronised and its unused memory returned), so the device
/// holds one model at a time.
pub struct HostParts {
    text_encoder: (reel_clip::ClipTextConfig, Vec<TensorData>),
    unet: (UNet3DConditionConfig, Vec<TensorData>),
    vae: (AutoencoderKLConfig, Vec<TensorData>),
    scheduler: SchedulerSpec,
    vae_slicing: bool,
}

impl<B: Backend> RandomParts<B> {
    /// Moves every parameter to the host (the device memory is released by the caller's
    /// `memory_cleanup`).
    pub fn into_host(self) -> HostParts {
        HostParts {
            text_encoder: (self.text_encoder.config.clone(), download(&self.text_encoder.model)),
            unet: (self.unet.config.clone(), download(&self.unet.model)),
            vae: (self.vae.config.clone(), download(&self.vae.model)),
            scheduler: self.scheduler,
            vae_slicing: false,
        }
    }
}

impl HostParts {
    fn text_encoder<B: Backend>(&self, device: &B::Device) -> Result<TextEncoder<B>> {
        let (config, values) = &self.text_encoder;
        let act = Activation::from_name(&config.hidden_act).ok_or_else(|| Error::input(format!("text_encoder: unsupported hidden_act {}", config.hidden_act)))?;
        let model = upload(ClipTextModel::new(config, act, device), values, device);
        Ok(TextEncoder { config: config.clone(), model })
    }

    fn unet<B: Backend>(&self, device: &B::Device) -> Result<Unet3d<B>> {
        let (config, values) = &self.unet;
        let model = Unet3d::<B>::build(config, device).map_err(|m| Error::input(format!("unet: {m}")))?;
        Ok(Unet3d::from_module(config.clone(), upload(model, values, device), device))
    }

    fn vae<B: Backend>(&self, device: &B::Device) -> Result<Vae<B>> {
        let (config, values) = &self.vae;
        let act = Activation::from_name(&config.act_fn).ok_or_else(|| Error::input(format!("vae: unsupported act_fn {}", config.act_fn)))?;
        let mut vae = Vae::from_module(config.clone(), upload(AutoencoderKL::new(config, act, device), values, device), device);
        if self.vae_slicing {
            vae.enable_slicing(1)?;
        }
        Ok(vae)
    }

    /// All parts on `device` again (for `--ops`, which times the resident models).
    pub fn to_device<B: Backend>(&self, device: &B::Device) -> Result<RandomParts<B>> {
        Ok(RandomParts { text_encoder: self.text_encoder(device)?, unet: self.unet(device)?, vae: self.vae(device)?, scheduler: self.scheduler.clone() })
    }
}

/// A model for one part: borrowed from resident parts, or uploaded from [`HostParts`].
pub enum Held<'a, T> {
    Resident(&'a T),
    Uploaded(T),
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Resident(t) => t,
            Held::Uploaded(t) => t,
        }
    }
}

/// Where [`run_bench`] gets its models: resident on the device ([`RandomParts`]) or uploaded
/// for each part and released after it ([`HostParts`], model CPU offload).
pub trait PartSource<B: Backend> {
    fn text_encoder(&self, device: &B::Device) -> Result<Held<'_, TextEncoder<B>>>;
    fn unet(&self, device: &B::Device) -> Result<Held<'_, Unet3d<B>>>;
    fn vae(&self, device: &B::Device) -> Result<Held<'_, Vae<B>>>;
    fn scheduler(&self) -> &SchedulerSpec;
    /// The VAE's architecture (its downsampling factor), without a model on the device.
    fn vae_config(&self) -> &AutoencoderKLConfig;
    fn unet_config(&self) -> &UNet3DConditionConfig;
    /// Decode one frame at a time from now on.
    fn enable_vae_slicing(&mut self) -> Result<()>;
    /// After a model was dropped: under offload, wait for the device and return the pool's
    /// unused memory (so the next model and the peak measured do not carry it).
    fn release(&self, device: &B::Device) -> Result<()>;
    fn offloaded(&self) -> bool;
}

impl<B: Backend> PartSource<B> for RandomParts<B> {
    fn text_encoder(&self, _: &B::Device) -> Result<Held<'_, TextEncoder<B>>> {
        Ok(Held::Resident(&self.text_encoder))
    }
    fn unet(&self, _: &B::Device) -> Result<Held<'_, Unet3d<B>>> {
        Ok(Held::Resident(&self.unet))
    }
    fn vae(&self, _: &B::Device) -> Result<Held<'_, Vae<B>>> {
        Ok(Held::Resident(&self.vae))
    }
    fn scheduler(&self) -> &SchedulerSpec {
        &self.scheduler
    }
    fn vae_config(&self) -> &AutoencoderKLConfig {
        &self.vae.config
    }
    fn unet_config(&self) -> &UNet3DConditionConfig {
        &self.unet.config
    }
    fn enable_vae_slicing(&mut self) -> Result<()> {
        Ok(self.vae.enable_slicing(1)?)
    }
    fn release(&self, _: &B::Device) -> Result<()> {
        Ok(())
    }
    fn offloaded(&self) -> bool {
        false
    }
}

impl<B: Backend> PartSource<B> for HostParts {
    fn text_encoder(&self, device: &B::Device) -> Result<Held<'_, TextEncoder<B>>> {
        Ok(Held::Uploaded(HostParts::text_encoder(self, device)?))
    }
    fn unet(&self, device: &B::Device) -> Result<Held<'_, Unet3d<B>>> {
        Ok(Held::Uploaded(HostParts::unet(self, device)?))
    }
    fn vae(&self, device: &B::Device) -> Result<Held<'_, Vae<B>>> {
        Ok(Held::Uploaded(HostParts::vae(self, device)?))
    }
    fn scheduler(&self) -> &SchedulerSpec {
        &self.scheduler
    }
    fn vae_config(&self) -> &AutoencoderKLConfig {
        &self.vae.0
    }
    fn unet_config(&self) -> &UNet3DConditionConfig {
        &self.unet.0
    }
    fn enable_vae_slicing(&mut self) -> Result<()> {
        self.vae_slicing = true;
        Ok(())
    }
    fn release(&self, device: &B::Device) -> Result<()> {
        crate::memory::release_device_memory::<B>(device)
    }
    fn offloaded(&self) -> bool {
        true
    }
}

/// Builds the parts described by `<dir>/{text_encoder,unet,vae,scheduler}/` config files.
pub fn random_parts<B: Backend>(dir: &Path, device: &B::Device, dtype: Option<DType>) -> Result<RandomParts<B>> {
    let repo: ModelRepo = ModelSource::Local(dir.to_path_buf()).open(&reel_core::HubSettings::from_env())?;
    let bad = |what: &str, m: String| Error::input(format!("{}/{what}: {m}", dir.display()));
    let te_config: ClipTextConfig = load_component_config(&repo, "text_encoder", &["CLIPTextModel"])?;
    let act = Activation::from_name(&te_config.hidden_act).ok_or_else(|| bad("text_encoder", "unsupported hidden_act".into()))?;
    let model = ClipTextModel::new(&te_config, act, device).map(&mut Randomize { device, dtype });
    let text_encoder = TextEncoder { config: te_config, model };
    let unet_config: UNet3DConditionConfig = load_component_config(&repo, "unet", &["UNet3DConditionModel"])?;
    let model = Unet3d::<B>::build(&unet_config, device).map_err(|m| bad("unet", m))?.map(&mut Randomize { device, dtype });
    let unet = Unet3d::from_module(unet_config, model, device);
    let vae_config: AutoencoderKLConfig = load_component_config(&repo, "vae", &["AutoencoderKL"])?;
    vae_config.validate().map_err(|m| bad("vae", m))?;
    let act = Activation::from_name(&vae_config.act_fn).ok_or_else(|| bad("vae", "unsupported act_fn".into()))?;
    let model = AutoencoderKL::new(&vae_config, act, device).map(&mut Randomize { device, dtype });
    let vae = Vae::from_module(vae_config, model, device);
    let path = repo.file("scheduler/scheduler_config.json")?;
    let text = std::fs::read_to_string(&path).map_err(|e| reel_core::Error::io(&path, e))?;
    let scheduler = SchedulerSpec::from_json_str(&text).map_err(|e| bad("scheduler", e.to_string()))?;
    Ok(RandomParts { text_encoder, unet, vae, scheduler })
}

/// The prompt ids both harnesses use: BOS, 320..=330, EOS, padded with EOS to 77; the
/// unconditional row is BOS, EOS, padding.
pub fn bench_ids() -> Vec<Vec<u32>> {
    let mut cond = vec![49406];
    cond.extend(320..=330);
    cond.push(49407);
    cond.resize(77, 49407);
    let mut uncond = vec![49406, 49407];
    uncond.resize(77, 49407);
    vec![uncond, cond]
}

/// What to time.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    pub scheduler: Option<String>,
    pub guidance_scale: f64,
    pub runs: usize,
    pub warmup: usize,
    pub vae_slicing: bool,
    /// Which of [`PARTS`] to time; empty = all. (A GPU's first use of a part compiles its
    /// kernels, which can take minutes: a short device call times only what it needs.)
    pub parts: Vec<String>,
    /// With the per-operation list: time only operations of these kinds
    /// ([`reel_core::profile::KINDS`]); empty = all.
    pub ops_only: Vec<String>,
}

/// The parts `run_bench` times, in order.
pub const PARTS: [&str; 5] = ["text_encoder", "unet_step", "scheduler_step", "vae_decode", "pipeline"];

impl BenchSpec {
    /// Whether `part` (one of [`PARTS`]) is timed.
    pub fn times(&self, part: &str) -> bool {
        self.parts.is_empty() || self.parts.iter().any(|p| p == part)
    }

    /// Whether the per-operation list times operations of `kind` ([`BenchSpec::ops_only`]).
    pub fn times_op(&self, kind: &str) -> bool {
        self.ops_only.is_empty() || self.ops_only.iter().any(|k| k == kind)
    }
}

/// Checks `names` against the `known` ones; an unknown one is an error naming it (`what`) and
/// listing the known ones (`whats`).
fn check_names(names: &[String], known: &[&str], what: &str, whats: &str) -> Result<()> {
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        Some(n) => Err(Error::input(format!("unknown {what} '{n}'; the {whats} are {}", known.join(", ")))),
        None => Ok(()),
    }
}

/// Checks bench part names against [`PARTS`].
pub fn check_parts(parts: &[String]) -> Result<()> {
    check_names(parts, &PARTS, "bench part", "parts")
}

/// Checks `--ops-only` operation kinds against [`reel_core::profile::KINDS`].
pub fn check_op_kinds(kinds: &[String]) -> Result<()> {
    check_names(kinds, &profile::KINDS, "operation kind", "kinds")
}

/// Median milliseconds of each timed part (`None`: not selected in [`BenchSpec::parts`]).
#[derive(Clone, Debug, Default)]
pub struct BenchTimes {
    pub text_encoder: Option<f64>,
    pub unet_step: Option<f64>,
    pub scheduler_step: Option<f64>,
    pub vae_decode: Option<f64>,
    pub pipeline: Option<f64>,
    /// Each part's first warm-up call in ms, in [`PARTS`] order: on a GPU this holds the kernel
    /// compilation and autotuning of a first use (none when the kernel cache already has them).
    pub first_use_ms: Vec<(&'static str, f64)>,
    /// Each part's median ms until its call returned, before the device was synchronised: the
    /// host's share (queueing the operations; on a lazy or asynchronous backend the device works
    /// meanwhile). Close to the part's time means the host, not the device, sets the pace.
    pub host_ms: Vec<(&'static str, f64)>,
    /// Each part's busiest threads and their CPU ms a timed run ([`crate::threads`]): on a GPU,
    /// whether the caller's thread, burn-fusion's or cubecl's device thread is busy for the
    /// whole part (then host work, not the GPU, sets the pace).
    pub thread_cpu_ms: Vec<(&'static str, Vec<(String, f64)>)>,
    /// Set when the whole-pipeline run decoded NaN / inf frames (random weights in f16 can
    /// overflow): the time still counts, the frames would have been refused.
    pub nonfinite_output: Option<String>,
}

/// One distinct operation of a model call: how often the call runs it and its median time alone.
#[derive(Clone, Debug, Serialize)]
pub struct OpTime {
    pub model: &'static str,
    #[serde(flatten)]
    pub op: Op,
    pub count: usize,
    /// Median ms alone; `None` when timing it failed (then `error` says why).
    pub ms: Option<f64>,
    /// With a check (`reel bench --check-ops`): the largest difference from the same operation
    /// in f32 on the CPU, relative to the reference's largest magnitude (first items only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rel_err: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| Error::input(format!("device sync failed: {e:?}")))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `f` `warmup` times untimed, then `runs` times timed (device synchronised before and
/// after each); the median in ms. Each result is kept alive until after the synchronisation, so a
/// lazy backend (burn's fusion) cannot skip work whose output nobody reads.
fn time<B: Backend, T>(device: &B::Device, warmup: usize, runs: usize, f: impl FnMut() -> Result<T>) -> Result<f64> {
    Ok(time_with_first::<B, T>(device, warmup, runs, f, &mut |_| {})?.median)
}

/// What [`time_with_first`] measured, in ms.
struct Timed {
    /// Median of the timed runs, synchronised before and after.
    median: f64,
    /// Median time until the call returned, before the closing synchronisation.
    host: f64,
    /// The first warm-up call (`None` without warm-up).
    first: Option<f64>,
    /// The busiest threads' CPU ms a timed run ([`crate::threads::busiest`]).
    threads: Vec<(String, f64)>,
}

/// [`time`], also measuring the host's share of each run and the first warm-up call, which it
/// passes to `on_first` as soon as it is known.
fn time_with_first<B: Backend, T>(
    device: &B::Device,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<T>,
    on_first: &mut dyn FnMut(f64),
) -> Result<Timed> {
    let mut first = None;
    for _ in 0..warmup {
        sync::<B>(device)?;
        let t0 = Instant::now();
        let out = f()?;
        sync::<B>(device)?;
        if first.is_none() {
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            first = Some(ms);
            on_first(ms);
        }
        drop(out);
    }
    let (mut times, mut host) = (Vec::new(), Vec::new());
    let before = crate::threads::snapshot();
    for _ in 0..runs.max(1) {
        sync::<B>(device)?;
        let t0 = Instant::now();
        let out = f()?;
        host.push(t0.elapsed().as_secs_f64() * 1e3);
        sync::<B>(device)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    let threads = crate::threads::busiest(&before, &crate::threads::snapshot(), runs.max(1), 4);
    Ok(Timed { median: median(times), host: median(host), first, threads })
}

/// Progress of [`run_bench`], for a caller that reports as it goes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BenchEvent<'a> {
    /// A part starts.
    Start(&'a str),
    /// A part's first (warm-up) call took this many ms.
    FirstCall(&'a str, f64),
    /// A part's timed runs ended with this median ms.
    Done(&'a str, f64),
}

/// Times every part of `parts` for `spec`, telling `on_part` each [`BenchEvent`] as it happens,
/// so a caller can report progress and keep
/// what was measured if a later part fails.
pub fn run_bench<B: Backend>(
    parts: &mut dyn PartSource<B>,
    spec: &BenchSpec,
    device: &B::Device,
    on_part: &mut dyn FnMut(BenchEvent),
) -> Result<BenchTimes> {
    check_parts(&spec.parts)?;
    let scale = parts.vae_config().downsample_factor();
    crate::pipeline_text_to_video_synth::check_size(spec.height, spec.width, scale)?;
    if spec.vae_slicing {
        parts.enable_vae_slicing()?;
    }
    let parts: &dyn PartSource<B> = parts;
    let scheduler = match &spec.scheduler {
        Some(c) => parts.scheduler().swap(c, &Default::default())?,
        None => parts.scheduler().clone(),
    };
    let ids = bench_ids();
    let (h, w) = (spec.height / scale, spec.width / scale);
    let c = parts.unet_config().in_channels;
    let mut times = BenchTimes::default();

    // One timed part: skipped unless selected; its median and first call recorded. Each call's
    // output is returned (boxed, whatever its type) so `time` keeps it alive past the sync.
    type Out = Box<dyn std::any::Any>;
    let (mut first_use, mut host_ms, mut thread_cpu_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut part = |name: &'static str, warmup: usize, f: &mut dyn FnMut() -> Result<Out>| -> Result<Option<f64>> {
        if !spec.times(name) {
            return Ok(None);
        }
        on_part(BenchEvent::Start(name));
        let timed = time_with_first::<B, Out>(device, warmup, spec.runs, &mut *f, &mut |first| {
            on_part(BenchEvent::FirstCall(name, first))
        })?;
        if let Some(first) = timed.first {
            first_use.push((name, first));
        }
        host_ms.push((name, timed.host));
        thread_cpu_ms.push((name, timed.threads));
        on_part(BenchEvent::Done(name, timed.median));
        Ok(Some(timed.median))
    };

    // Under offload each part's model is uploaded before its timed runs and released after.
    let te = parts.text_encoder(device)?;
    times.text_encoder = part("text_encoder", spec.warmup, &mut || Ok(Box::new(te.encode(&ids, None, device)?)))?;
    let ehs = te.encode(&ids, None, device)?;
    drop(te);
    parts.release(device)?;

    if spec.times("unet_step") {
        let unet = parts.unet(device)?;
        let latents = Tensor::<B, 5>::random([2, c, spec.frames, h, w], Distribution::Normal(0.0, 1.0), device);
        times.unet_step = part("unet_step", spec.warmup, &mut || {
            Ok(Box::new(unet.forward(latents.clone(), Timestep::Int(999), ehs.clone())?))
        })?;
        drop(unet);
        parts.release(device)?;
    }

    let x = Tensor::<B, 4>::random([spec.frames, c, h, w], Distribution::Normal(0.0, 1.0), device);
    let eps = Tensor::<B, 4>::random([spec.frames, c, h, w], Distribution::Normal(0.0, 1.0), device);
    let mut noise = TorchNoise::new(0, DType::F32);
    times.scheduler_step = part("scheduler_step", spec.warmup, &mut || {
        let mut g = scheduler.config.generation::<B>(spec.steps)?;
        let t = g.timesteps()[0];
        let mut ctx = StepContext::new(&mut noise as &mut dyn NoiseSource<B>);
        Ok(Box::new(g.step(eps.clone(), t, x.clone(), &mut ctx)?))
    })?;

    if spec.times("vae_decode") {
        let vae = parts.vae(device)?;
        let z = Tensor::<B, 4>::random([spec.frames, c, h, w], Distribution::Normal(0.0, 1.0), device);
        times.vae_decode = part("vae_decode", spec.warmup, &mut || Ok(Box::new(vae.decode(z.clone())?)))?;
        drop(vae);
        parts.release(device)?;
    }

    let mut nonfinite = None;
    let mut params = GenerateParams::text_to_video("");
    params.prompt = None;
    params.num_frames = spec.frames;
    params.height = Some(spec.height);
    params.width = Some(spec.width);
    params.num_inference_steps = spec.steps;
    params.guidance_scale = spec.guidance_scale;
    // The whole pipeline; under offload each model is uploaded for its phase inside the timed
    // run (as diffusers' offload hooks move them) and released after it.
    times.pipeline = part("pipeline", spec.warmup.min(1), &mut || {
        let ids = if spec.guidance_scale > 1.0 { ids.clone() } else { ids[1..].to_vec() };
        let te = parts.text_encoder(device)?;
        let ehs = te.encode(&ids, None, device)?;
        drop(te);
        parts.release(device)?;
        let unet = parts.unet(device)?;
        let (latents, _) = text_to_video_latents(&unet, &scheduler, scale, ehs, &params, device, &mut |_| {})?;
        drop(unet);
        parts.release(device)?;
        let vae = parts.vae(device)?;
        let frames = decode_latents(&vae, latents);
        drop(vae);
        parts.release(device)?;
        match frames {
            Err(Error::NonFinite(m)) => {
                nonfinite = Some(m);
                Ok(Box::new(()))
            }
            r => Ok(Box::new(r?)),
        }
    })?;
    times.nonfinite_output = nonfinite;
    times.first_use_ms = first_use;
    times.host_ms = host_ms;
    times.thread_cpu_ms = thread_cpu_ms;

    Ok(times)
}

/// Operations queued back to back in one chain for [`dispatch_us`].
pub const DISPATCH_CHAIN: usize = 200;

/// The cost of one operation in a long dependent chain, in µs: [`DISPATCH_CHAIN`] linear layers
/// `(8, 64) · (64, 64)ᵀ` in `dtype`, each on the previous one's output, queued without any
/// synchronisation and then waited for once (median of `runs`). The arithmetic is a few
/// microseconds of device time, so on a GPU this is what queueing and launching one layer costs
/// the host — the floor under every operation of a step (the isolated `--ops` timings add a
/// synchronisation to it).
pub fn dispatch_us<B: Backend>(dtype: DType, device: &B::Device, runs: usize) -> Result<f64> {
    let layer = Linear { weight: Param::from_tensor(noise::<B, 2>([64, 64], 1, dtype, device)), bias: None };
    let x = noise::<B, 2>([8, 64], 10, dtype, device);
    let ms = time::<B, _>(device, 1, runs.max(3), || {
        let mut y = x.clone();
        for _ in 0..DISPATCH_CHAIN {
            y = layer.forward(y);
        }
        Ok(y)
    })?;
    Ok(ms * 1e3 / DISPATCH_CHAIN as f64)
}

/// Records the heavy operations of one UNet step and one VAE decode at
/// the spec's shapes and times each distinct one alone ([`time_op`]); called after [`run_bench`]
/// so a report of the parts can be written first (a device call cut short keeps it). Each entry
/// is one distinct operation of the UNet (`"unet"`) or the VAE decoder (`"vae"`). With
/// `reference` (a device of backend `R`, the CPU), each is also checked against it
/// ([`check_op`]).
pub fn run_ops<B: Backend, R: Backend>(
    parts: &RandomParts<B>,
    spec: &BenchSpec,
    device: &B::Device,
    reference: Option<&R::Device>,
) -> Result<Vec<OpTime>> {
    let scale = parts.vae.downsample_factor();
    let (h, w) = (spec.height / scale, spec.width / scale);
    let c = parts.unet.config.in_channels;
    let (te, unet, vae) = (&parts.text_encoder, &parts.unet, &parts.vae);
    let ehs = te.encode(&bench_ids(), None, device)?;
    let latents = Tensor::<B, 5>::random([2, c, spec.frames, h, w], Distribution::Normal(0.0, 1.0), device);
    let z = Tensor::<B, 4>::random([spec.frames, c, h, w], Distribution::Normal(0.0, 1.0), device);
    let mut out = Vec::new();
    let (r, unet_ops) = profile::recording(|| unet.forward(latents.clone(), Timestep::Int(999), ehs.clone()));
    r?;
    let (r, vae_ops) = profile::recording(|| vae.decode(z.clone()));
    r?;
    // One operation failing (an error, or a backend panic on an unusual shape) is recorded and
    // the list goes on: a one-shot device run keeps everything else.
    let guarded = |f: &mut dyn FnMut() -> Result<f64>| -> std::result::Result<f64, String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(p) => Err(format!("panicked: {}", panic_message(&*p))),
        }
    };
    for (model, dtype, ops) in [("unet", unet.dtype(), unet_ops), ("vae", vae.dtype(), vae_ops)] {
        for (op, count) in profile::tally(&ops) {
            if !spec.times_op(op.kind()) {
                continue;
            }
            let timed = guarded(&mut || time_op::<B>(&op, dtype, device, spec.warmup, spec.runs.max(OP_RUNS)));
            let checked = reference.map(|r| guarded(&mut || check_op::<B, R>(&op, dtype, device, r)));
            let mut errors = Vec::new();
            let ms = timed.map_err(|e| errors.push(e)).ok();
            let max_rel_err = checked.and_then(|c| c.map_err(|e| errors.push(format!("check: {e}"))).ok());
            let error = (!errors.is_empty()).then(|| errors.join("; "));
            out.push(OpTime { model, op, count, ms, max_rel_err, error });
        }
    }
    Ok(out)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// How many leading items a per-operation check compares: 64 rows of a row-wise operation
/// (linear, layer norm, GEGLU), 2 images or batch entries of the others; little enough for the
/// f32 CPU reference at full-size shapes, and the device still runs the whole input.
fn check_items(op: &Op) -> usize {
    match op {
        Op::Linear { .. } | Op::LayerNorm { .. } | Op::Geglu { .. } => 64,
        _ => 2,
    }
}

/// Uniform noise in ±1 of `shape`, drawn on the host from stream `stream` (a splitmix64 sequence
/// in row-major order, so a tensor cut to its first items along axis 0 is the prefix of the
/// full one), in `dtype` on `device`.
fn noise<B: Backend, const D: usize>(shape: [usize; D], stream: u64, dtype: DType, device: &B::Device) -> Tensor<B, D> {
    let len: usize = shape.iter().product();
    let mut state = stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let values: Vec<f32> = (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    to_dtype(Tensor::<B, D>::from_data(TensorData::new(values, shape), device), dtype)
}

/// Axis 0 of `shape` cut to `limit` items.
fn cut<const D: usize>(mut shape: [usize; D], limit: Option<usize>) -> [usize; D] {
    if let Some(l) = limit {
        shape[0] = shape[0].min(l);
    }
    shape
}

/// One recorded operation built at its shape through the same reel code the models run (the
/// `nn` layers, `multi_head_attention` (heads on the token layout, as the blocks call it), the temporal convolution, `upsample_nearest`,
/// `geglu_gate`), on host-drawn noise (parameters, then inputs, each its own stream), so two
/// backends build the same one. With `limit`, the inputs keep only their first items along
/// axis 0 (the parameters stay whole).
enum Instance<B: Backend> {
    Linear(Linear<B>, Tensor<B, 2>),
    Conv2d(Conv2d<B>, Tensor<B, 4>, [usize; 4]),
    TemporalConv(reel_unet3d::resnet::TemporalConv3d<B>, Tensor<B, 4>),
    GroupNorm(GroupNorm<B>, Tensor<B, 3>),
    LayerNorm(LayerNorm<B>, Tensor<B, 2>),
    /// q, k, v on the token layout `(batch, seq, heads·head_dim)`, and the heads.
    Attention(Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>, usize),
    Upsample(Tensor<B, 4>, [usize; 2]),
    Geglu(Tensor<B, 2>),
}

/// An operation's output, whatever its rank.
enum Output<B: Backend> {
    D2(Tensor<B, 2>),
    D3(Tensor<B, 3>),
    D4(Tensor<B, 4>),
}

impl<B: Backend> Output<B> {
    /// The first `limit` items along axis 0 (all without a limit), as host f32 values.
    fn host(self, limit: Option<usize>) -> Result<Vec<f32>> {
        fn first<B: Backend, const D: usize>(t: Tensor<B, D>, limit: Option<usize>) -> Tensor<B, D> {
            let n = t.dims()[0];
            match limit {
                Some(l) if l < n => t.narrow(0, 0, l),
                _ => t,
            }
        }
        let data = match self {
            Output::D2(t) => to_dtype(first(t, limit), DType::F32).into_data(),
            Output::D3(t) => to_dtype(first(t, limit), DType::F32).into_data(),
            Output::D4(t) => to_dtype(first(t, limit), DType::F32).into_data(),
        };
        data.into_vec::<f32>().map_err(|e| Error::input(format!("reading an operation's output: {e:?}")))
    }
}

impl<B: Backend> Instance<B> {
    fn new(op: &Op, dtype: DType, device: &B::Device, limit: Option<usize>) -> Self {
        let d = device;
        let param = |shape: &[usize], stream: u64| -> Param<Tensor<B, 1>> {
            Param::from_tensor(noise::<B, 1>([shape.iter().product()], stream, dtype, d))
        };
        let param2 = |shape: [usize; 2], stream| Param::from_tensor(noise::<B, 2>(shape, stream, dtype, d));
        let param4 = |shape: [usize; 4], stream| Param::from_tensor(noise::<B, 4>(shape, stream, dtype, d));
        match *op {
            Op::Linear { rows, d_in, d_out, bias } => Instance::Linear(
                Linear { weight: param2([d_out, d_in], 1), bias: bias.then(|| param(&[d_out], 2)) },
                noise(cut([rows, d_in], limit), 10, dtype, d),
            ),
            Op::Conv2d { n, c_in, h, w, c_out, kh, kw, stride, pad } => Instance::Conv2d(
                Conv2d { weight: param4([c_out, c_in, kh, kw], 1), bias: Some(param(&[c_out], 2)), stride, padding: pad[0] },
                noise(cut([n, c_in, h, w], limit), 10, dtype, d),
                pad,
            ),
            Op::TemporalConv { b, c_in, f, pixels, c_out } => {
                let weight = Param::from_tensor(noise::<B, 5>([c_out, c_in, 3, 1, 1], 1, dtype, d));
                let conv = reel_unet3d::resnet::TemporalConv3d { weight, bias: param(&[c_out], 2) };
                Instance::TemporalConv(conv, noise(cut([b, c_in, f, pixels], limit), 10, dtype, d))
            }
            Op::GroupNorm { n, c, rest, groups } => Instance::GroupNorm(
                GroupNorm { weight: param(&[c], 1), bias: param(&[c], 2), num_groups: groups, eps: 1e-5 },
                noise(cut([n, c, rest], limit), 10, dtype, d),
            ),
            Op::LayerNorm { rows, dim } => Instance::LayerNorm(
                LayerNorm { weight: param(&[dim], 1), bias: param(&[dim], 2), eps: 1e-5 },
                noise(cut([rows, dim], limit), 10, dtype, d),
            ),
            Op::Attention { batch, heads, seq_q, seq_kv, head_dim } => Instance::Attention(
                noise(cut([batch, seq_q, heads * head_dim], limit), 10, dtype, d),
                noise(cut([batch, seq_kv, heads * head_dim], limit), 11, dtype, d),
                noise(cut([batch, seq_kv, heads * head_dim], limit), 12, dtype, d),
                heads,
            ),
            Op::Upsample { n, c, h, w, h_out, w_out } => {
                Instance::Upsample(noise(cut([n, c, h, w], limit), 10, dtype, d), [h_out, w_out])
            }
            Op::Geglu { rows, dim } => Instance::Geglu(noise(cut([rows, 2 * dim], limit), 10, dtype, d)),
        }
    }

    fn forward(&self) -> Output<B> {
        match self {
            Instance::Linear(layer, x) => Output::D2(layer.forward(x.clone())),
            Instance::Conv2d(conv, x, pad) => Output::D4(conv.forward_padded(x.clone(), *pad)),
            Instance::TemporalConv(conv, x) => Output::D4(conv.forward(x.clone())),
            Instance::GroupNorm(norm, x) => Output::D3(norm.forward(x.clone())),
            Instance::LayerNorm(norm, x) => Output::D2(norm.forward(x.clone())),
            Instance::Attention(q, k, v, heads) => {
                Output::D3(reel_core::blocks::multi_head_attention(q.clone(), k.clone(), v.clone(), *heads, false))
            }
            Instance::Upsample(x, size) => Output::D4(reel_core::blocks::upsampling::upsample_nearest(x.clone(), *size)),
            Instance::Geglu(x) => Output::D2(reel_unet3d::activations::geglu_gate(x.clone())),
        }
    }
}

/// Each operation of `--ops` is timed at least this many times (median): one operation's
/// synchronised time moves by ±0.1 ms between runs on a GPU (docs/performance.md, sixth
/// session), and the runs cost milliseconds. `benches/diffusers_baseline.py` uses the same.
pub const OP_RUNS: usize = 10;

/// Median ms of `op` alone at its recorded shape, on noise inputs in `dtype`.
pub fn time_op<B: Backend>(op: &Op, dtype: DType, device: &B::Device, warmup: usize, runs: usize) -> Result<f64> {
    let instance = Instance::<B>::new(op, dtype, device, None);
    time::<B, _>(device, warmup, runs, || Ok(instance.forward()))
}

/// `op` at its recorded shape in `dtype` on `device` against the same operation in f32 on the
/// reference backend `R` (the CPU), on the same inputs, over the first items of axis 0
/// ([`check_items`]): the largest absolute difference relative to the reference's largest
/// magnitude.
pub fn check_op<B: Backend, R: Backend>(op: &Op, dtype: DType, device: &B::Device, reference: &R::Device) -> Result<f64> {
    let items = check_items(op);
    let ours = Instance::<B>::new(op, dtype, device, None).forward().host(Some(items))?;
    let theirs = Instance::<R>::new(op, DType::F32, reference, Some(items)).forward().host(None)?;
    if ours.len() != theirs.len() {
        return Err(Error::input(format!("{} values against the reference's {}", ours.len(), theirs.len())));
    }
    let c = reel_core::testing::closeness(&ours, &theirs);
    Ok(if c.max_abs_err.is_finite() { c.rel() as f64 } else { f64::INFINITY })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    /// Model CPU offload in the bench: the weights moved to the host and uploaded again give
    /// the same models (same outputs, bit for bit), and the offloaded source uploads a model per
    /// request.
    #[test]
    fn host_parts_upload_the_same_models() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/configs/small");
        let device = Default::default();
        let parts = random_parts::<B>(&dir, &device, None).unwrap();
        let ids = bench_ids();
        let c = parts.unet.config.in_channels;
        let latents = Tensor::<B, 5>::random([2, c, 1, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        let z = Tensor::<B, 4>::random([1, c, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        let outputs = |source: &dyn PartSource<B>| {
            let ehs = source.text_encoder(&device).unwrap().encode(&ids, None, &device).unwrap();
            let eps = source.unet(&device).unwrap().forward(latents.clone(), Timestep::Int(999), ehs.clone()).unwrap();
            let frames = source.vae(&device).unwrap().decode(z.clone()).unwrap();
            [ehs.into_data(), eps.into_data(), frames.into_data()]
        };
        let resident = outputs(&parts);
        let host = parts.into_host();
        assert!(PartSource::<B>::offloaded(&host));
        let offloaded = outputs(&host);
        for (what, (a, b)) in ["text encoder", "UNet", "VAE"].iter().zip(resident.iter().zip(&offloaded)) {
            assert_eq!(a, b, "{what} after the round trip through the host");
        }
        assert!(matches!(PartSource::<B>::unet(&host, &device).unwrap(), Held::Uploaded(_)));
    }
}
