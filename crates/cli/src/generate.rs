//! `reel generate` and `reel pipelines`: run a pipeline declared in `pipelines.toml` (or a bare
//! diffusers folder / hub repo with `--model`) and write the video atomically (.mp4, .gif, .npy
//! or a folder of png frames), with progress bars and a summary (`--json` for machines).
//!
//! The pipelines file is `--pipelines FILE`, else `$REEL_PIPELINES`, else `./pipelines.toml`,
//! else the copy built into the binary (its relative sources resolve against the source tree).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::DType;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reel_core::{npy, HubSettings};
use reel_pipeline::{run, ComponentStore, Event, Overrides, PipelineFile, StageEvent, StageKind, StoreOptions};
use reel_schedulers::SchedulerSpec;
use serde_json::json;

use crate::backend::{dispatch, DeviceArgs, DeviceKind, OnBackend};

const BUILTIN_PIPELINES: &str = include_str!("../../../pipelines.toml");

#[derive(Args, Debug, Clone)]
pub struct PipelinesFileArgs {
    /// The pipelines file (default: $REEL_PIPELINES, ./pipelines.toml, then the built-in one).
    #[arg(long, value_name = "FILE")]
    pub pipelines: Option<PathBuf>,
}

impl PipelinesFileArgs {
    pub fn load(&self) -> Result<PipelineFile> {
        let env = std::env::var_os("REEL_PIPELINES").map(PathBuf::from);
        let path = self.pipelines.clone().or(env).or_else(|| {
            let p = PathBuf::from("pipelines.toml");
            p.is_file().then_some(p)
        });
        match path {
            Some(p) => Ok(PipelineFile::load(&p)?),
            None => {
                let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
                Ok(PipelineFile::parse(BUILTIN_PIPELINES, Path::new("<built-in pipelines.toml>"), &base)?)
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A pipeline id from the pipelines file (see `reel pipelines`).
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    pub pipeline: Option<String>,
    /// A bare diffusers folder or hub repo id: text-to-video, or video-to-video with --video.
    #[arg(long)]
    pub model: Option<String>,
    /// Hub revision for --model.
    #[arg(long, requires = "model")]
    pub revision: Option<String>,
    /// Weights variant for --model (e.g. fp16).
    #[arg(long, requires = "model")]
    pub variant: Option<String>,
    #[command(flatten)]
    pub file: PipelinesFileArgs,
    /// What to generate.
    #[arg(long)]
    pub prompt: Option<String>,
    /// What to steer away from (used with guidance > 1; default: the empty prompt).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Precomputed prompt embeddings (1, 77, dim) .npy instead of --prompt.
    #[arg(long, value_name = "FILE")]
    pub prompt_embeds: Option<PathBuf>,
    /// Precomputed negative prompt embeddings (1, 77, dim) .npy.
    #[arg(long, value_name = "FILE")]
    pub negative_prompt_embeds: Option<PathBuf>,
    /// Seed of diffusers' torch.Generator("cpu").manual_seed(SEED) (random when omitted; the
    /// summary reports it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial latents (b, c, f, h, w) .npy, before the init_noise_sigma scaling (diffusers' `latents=`).
    #[arg(long, value_name = "FILE")]
    pub latents: Option<PathBuf>,
    /// num_inference_steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (guidance runs when > 1; diffusers' default 9, 15 for video-to-video).
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Frames to generate (text-to-video; diffusers' default 16).
    #[arg(long)]
    pub num_frames: Option<usize>,
    /// Height in pixels, a multiple of 8 (default: the pipeline's, else the UNet's sample_size × VAE scale).
    #[arg(long)]
    pub height: Option<usize>,
    /// Width in pixels, a multiple of 8.
    #[arg(long)]
    pub width: Option<usize>,
    /// DDIM's eta.
    #[arg(long)]
    pub eta: Option<f64>,
    /// Skip the last K CLIP layers for the prompt (diffusers' clip_skip).
    #[arg(long)]
    pub clip_skip: Option<usize>,
    /// Swap the scheduler class, like diffusers' `Class.from_config(pipe.scheduler.config)`.
    #[arg(long, value_name = "CLASS_NAME")]
    pub scheduler: Option<String>,
    /// A complete diffusers scheduler config (JSON with `_class_name`).
    #[arg(long, value_name = "FILE")]
    pub scheduler_config: Option<PathBuf>,
    /// Video-to-video strength in [0, 1].
    #[arg(long)]
    pub strength: Option<f64>,
    /// Input video for video-to-video: .mp4 (or another ffmpeg container), .gif, .npy, or a folder of png frames.
    #[arg(long, value_name = "FILE")]
    pub video: Option<PathBuf>,
    /// Output: .mp4, .gif, .npy (float (frames, H, W, 3) in [0, 1]) or a folder for png frames.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// Frames per second of mp4 / gif output (default: the pipeline's, else 8).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Float type of the VAE alone (f32 keeps an f16 pipeline's VAE from overflowing, as
    /// diffusers' `force_upcast`).
    #[arg(long, value_enum)]
    pub vae_dtype: Option<crate::backend::Precision>,
    /// diffusers' enable_vae_slicing(): decode one frame at a time.
    #[arg(long)]
    pub vae_slicing: bool,
    /// diffusers' unet.enable_forward_chunking(chunk_size=N, dim=1).
    #[arg(long, value_name = "N")]
    pub forward_chunk: Option<usize>,
    /// diffusers' enable_model_cpu_offload(): a model is loaded onto the device only while it runs.
    #[arg(long)]
    pub cpu_offload: bool,
    /// Print a JSON summary (per-stage timings, loads, peak memory) on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    // torch seeds are 64-bit; keep them short enough to retype.
    h.finish() % 1_000_000_000
}

struct Job {
    args: GenerateArgs,
    file: PipelineFile,
    pipeline: String,
    overrides: Overrides,
    seed: u64,
    fps: f64,
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    // Everything that can be checked without models is checked first: no work, no output.
    reel_video::Format::for_output(&args.output).map_err(|e| anyhow!("{e}"))?;
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("the output folder {} does not exist; create it first", parent.display());
        }
    }
    let (file, pipeline) = match (&args.pipeline, &args.model) {
        (Some(id), _) => {
            let file = args.file.load()?;
            file.pipeline(id)?;
            (file, id.clone())
        }
        (None, Some(model)) => {
            let kind = if args.video.is_some() { StageKind::VideoToVideo } else { StageKind::TextToVideo };
            (PipelineFile::for_model(model, args.revision.as_deref(), args.variant.as_deref(), kind)?, "model".to_string())
        }
        (None, None) => bail!("give --pipeline ID (see `reel pipelines`) or --model FOLDER_OR_REPO"),
    };
    if let Some(s) = &args.scheduler {
        reel_schedulers::registry::entry(s).map_err(|e| anyhow!("--scheduler: {e}"))?;
    }
    if let Some(fps) = args.fps {
        if !(fps.is_finite() && fps > 0.0) {
            bail!("--fps must be a positive number");
        }
    }
    let read_npy = |p: &Option<PathBuf>, what: &str| -> Result<Option<npy::Array>> {
        p.as_ref().map(|p| npy::read(p).with_context(|| format!("reading {what} {}", p.display()))).transpose()
    };
    let scheduler_config = match &args.scheduler_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading --scheduler-config {}", p.display()))?;
            Some(SchedulerSpec::from_json_str(&text).map_err(|e| anyhow!("--scheduler-config {}: {e}", p.display()))?)
        }
        None => None,
    };
    let video = match &args.video {
        Some(p) => Some(reel_video::read(p).map_err(|e| anyhow!("reading the input video: {e}"))?),
        None => None,
    };
    let overrides = Overrides {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        prompt_embeds: read_npy(&args.prompt_embeds, "--prompt-embeds")?,
        negative_prompt_embeds: read_npy(&args.negative_prompt_embeds, "--negative-prompt-embeds")?,
        seed: args.seed,
        latents: read_npy(&args.latents, "--latents")?,
        num_inference_steps: args.steps,
        guidance_scale: args.guidance_scale,
        num_frames: args.num_frames,
        height: args.height,
        width: args.width,
        eta: args.eta,
        strength: args.strength,
        clip_skip: args.clip_skip,
        scheduler_class: args.scheduler.clone(),
        scheduler_config,
        video,
        vae_slicing: args.vae_slicing,
        forward_chunk: args.forward_chunk,
    };
    let fps = args.fps.or(file.pipeline(&pipeline)?.fps).unwrap_or(8.0);
    let seed = args.seed.unwrap_or_else(random_seed);
    let device = args.device.clone();
    dispatch(&device, Job { args, file, pipeline, overrides, seed, fps })
}

/// Progress bars: one per stage's denoising loop, a spinner for the other phases.
struct Progress {
    bar: Option<ProgressBar>,
    enabled: bool,
}

impl Progress {
    fn on(&mut self, e: StageEvent) {
        if !self.enabled {
            return;
        }
        let prefix = format!("[{}/{}] {}", e.stage + 1, e.stages, e.kind.name());
        match e.event {
            Event::Phase(name) => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                let b = ProgressBar::new_spinner();
                b.set_style(ProgressStyle::with_template("{prefix} {msg} {spinner} {elapsed}").unwrap());
                b.set_prefix(prefix);
                b.set_message(name.replace('_', " "));
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                self.bar = Some(b);
            }
            Event::StepsStart { total } => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                let b = ProgressBar::new(total as u64);
                b.set_style(
                    ProgressStyle::with_template("{prefix} denoise [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                        .unwrap()
                        .progress_chars("=> "),
                );
                b.set_prefix(prefix);
                self.bar = Some(b);
            }
            Event::Step { timestep, .. } => {
                if let Some(b) = &self.bar {
                    b.set_message(format!("t={timestep}"));
                    b.inc(1);
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl OnBackend for Job {
    fn run<B: Backend>(self, device: B::Device, dtype: Option<DType>) -> Result<()> {
        let Job { args, file, pipeline, overrides, seed, fps } = self;
        let run_device = args.device.device_name();
        let resolver_device = device.clone();
        let kind = args.device.device;
        let this_run = run_device.clone();
        // A component may name the run's own device (`cpu`, `cuda:N`, or plain `cuda`).
        let resolve = move |name: Option<&str>| -> std::result::Result<B::Device, String> {
            match name {
                None => Ok(resolver_device.clone()),
                Some(n) if n == this_run || (n == "cuda" && kind == DeviceKind::Cuda) => Ok(resolver_device.clone()),
                Some(n) => Err(format!(
                    "declared for device `{n}`, but this run uses {this_run}; remove `device` from the component or run with a matching --device/--gpu"
                )),
            }
        };
        let f32_only = args.device.f32_only();
        if f32_only && file.components.values().any(|c| c.dtype.is_some_and(|d| d != reel_pipeline::config::DTypeName::F32)) {
            log::warn!("the ndarray CPU backend computes in f32; component dtypes other than f32 need --cpu-backend flex or --device cuda");
        }
        let options = StoreOptions::<B> {
            hub: HubSettings::from_env(),
            dtype: if f32_only { None } else { dtype },
            vae_dtype: if f32_only { None } else { args.vae_dtype.map(crate::backend::Precision::to_dtype) },
            offload: args.cpu_offload,
            device: Box::new(resolve),
        };
        let mut file = file;
        if f32_only {
            for c in file.components.values_mut() {
                c.dtype = None;
            }
        }
        let mut store = ComponentStore::new(file, options);
        let mut progress = Progress { bar: None, enabled: !args.quiet && std::io::stderr().is_terminal() };
        let result = run(&mut store, &pipeline, &overrides, seed, &mut |e| progress.on(e));
        progress.finish();
        let (frames, report) = result?;
        let t_write = std::time::Instant::now();
        reel_video::write(&args.output, &frames, &reel_video::WriteOptions { fps }).map_err(|e| anyhow!("{e}"))?;
        let write_seconds = t_write.elapsed().as_secs_f64();
        let peak = reel_pipeline::memory::peak_rss_bytes();
        let device_memory = crate::backend::device_memory(&args.device);
        let summary = json!({
            "pipeline": report.pipeline,
            "output": args.output.display().to_string(),
            "frames": frames.frames,
            "height": frames.height,
            "width": frames.width,
            "fps": fps,
            "seed": seed,
            "device": run_device,
            "stages": report.stages.iter().map(|s| json!({
                "type": s.kind.name(),
                "scheduler": s.scheduler,
                "num_inference_steps": s.num_inference_steps,
                "steps_run": s.steps_run,
                "frames": s.frames,
                "height": s.height,
                "width": s.width,
                "seconds": s.seconds,
                "timings": s.timings.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "loads": report.loads.iter().map(|l| json!({"part": l.kind.folder(), "what": l.what, "seconds": l.seconds})).collect::<Vec<_>>(),
            "load_seconds": report.load_seconds,
            "write_seconds": write_seconds,
            "total_seconds": report.seconds + write_seconds,
            "peak_memory": {
                "host_rss_bytes": peak,
                // cubecl's pool after the run: it keeps what it grew to, so `reserved` is the
                // peak pool size (the CUDA context is not counted). Null on the CPU.
                "device_reserved_bytes": device_memory.map(|m| m.reserved),
                "device_in_use_bytes": device_memory.map(|m| m.in_use),
            },
        });
        if args.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            let mut mem = peak.map(|b| format!(", peak host memory {:.1} MiB", b as f64 / 1048576.0)).unwrap_or_default();
            if let Some(m) = device_memory {
                mem += &format!(", GPU memory pool {:.1} MiB", m.reserved as f64 / 1048576.0);
            }
            eprintln!(
                "wrote {} ({} frames, {}×{}, {} fps) in {:.1} s; seed {}{}",
                args.output.display(),
                frames.frames,
                frames.width,
                frames.height,
                fps,
                report.seconds + write_seconds,
                seed,
                mem
            );
            for (i, s) in report.stages.iter().enumerate() {
                let t: Vec<String> = s.timings.iter().map(|(k, v)| format!("{k} {v:.2} s")).collect();
                eprintln!("  stage {} {}: {}", i + 1, s.kind.name(), t.join(", "));
            }
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct PipelinesArgs {
    #[command(flatten)]
    pub file: PipelinesFileArgs,
}

/// `reel pipelines`: the declared pipelines with their stages and components.
pub fn list(args: PipelinesArgs) -> Result<()> {
    let file = args.file.load()?;
    let mut out = format!("pipelines in {}:\n", file.path.display());
    for (id, p) in &file.pipelines {
        out += &format!("\n{id}");
        if let Some(d) = &p.description {
            out += &format!(" — {d}");
        }
        out.push('\n');
        for (i, s) in p.stages.iter().enumerate() {
            out += &format!("  {}. {}", i + 1, s.kind.name());
            let d = &s.defaults;
            let mut opts = Vec::new();
            if let (Some(h), Some(w)) = (d.height, d.width) {
                opts.push(format!("{w}×{h}"));
            }
            if let Some(n) = d.num_frames {
                opts.push(format!("{n} frames"));
            }
            if let Some(n) = d.num_inference_steps {
                opts.push(format!("{n} steps"));
            }
            if let Some(g) = d.guidance_scale {
                opts.push(format!("guidance {g}"));
            }
            if let Some(s) = d.strength {
                opts.push(format!("strength {s}"));
            }
            if let Some(c) = &d.scheduler_class {
                opts.push(c.clone());
            }
            if !opts.is_empty() {
                out += &format!(" ({})", opts.join(", "));
            }
            out.push('\n');
            if let Some(parts) = &s.parts {
                let mut comps: Vec<String> = Vec::new();
                for r in parts.values() {
                    let c = &file.components[&r.component];
                    let line = format!("{} = {} ({})", r.kind.folder(), r.component, c.source.get_ref());
                    comps.push(line);
                }
                for c in comps {
                    out += &format!("       {c}\n");
                }
            }
        }
    }
    print!("{out}");
    Ok(())
}
