//! Text-to-video as diffusers' `TextToVideoSDPipeline` computes it
//! (`diffusers/pipelines/deprecated/text_to_video_synthesis/pipeline_text_to_video_synth.py`):
//! `encode_prompt` (negative prompt first, CFG only when `guidance_scale > 1`, clip_skip on the
//! prompt only), `prepare_latents` (`randn_tensor` or given latents, times `init_noise_sigma`),
//! the denoising loop (scheduler `step` on `(b·f, c, h, w)`), `decode_latents` and the
//! `output_type="np"` post-processing. Each phase is a function of the parts it needs, so a
//! runner can load a part just before its phase (model CPU offload).

use std::time::Instant;

use burn::tensor::{backend::Backend, Tensor};
use reel_clip::{ClipTokenizer, TextEncoder};
use reel_core::npy::Array;
use reel_schedulers::{Generation, NoiseSource, SchedulerSpec, StepContext};
use reel_unet3d::{Timestep, Unet3d};
use reel_vae::Vae;
use reel_video::Frames;

use crate::error::{Error, Result};
use crate::noise::TorchNoise;

/// Progress of a pipeline call, for progress bars and logs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event<'a> {
    /// A phase starts (`encode_prompt`, `denoise`, `decode`, `encode_video`, ...).
    Phase(&'a str),
    /// The denoising loop will run `total` model evaluations.
    StepsStart { total: usize },
    /// Denoising iteration `index` (0-based) of `total` finished at `timestep` (diffusers'
    /// per-step `callback(step, timestep, latents)` without the latents).
    Step { index: usize, total: usize, timestep: f64 },
}

/// Inputs of one text-to-video or video-to-video call (diffusers' `__call__` arguments).
#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    /// Precomputed prompt embeddings `(1, seq, dim)` instead of `prompt`.
    pub prompt_embeds: Option<Array>,
    pub negative_prompt_embeds: Option<Array>,
    /// Default: `unet.config.sample_size * vae_scale_factor` (text-to-video), the input video's
    /// size (video-to-video).
    pub height: Option<usize>,
    pub width: Option<usize>,
    /// Text-to-video only (video-to-video takes the input's frame count).
    pub num_frames: usize,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    pub eta: f64,
    pub clip_skip: Option<usize>,
    /// The seed of diffusers' `torch.Generator("cpu").manual_seed(seed)`.
    pub seed: u64,
    /// Initial latents `(1, c, f, h, w)` before the `init_noise_sigma` scaling (text-to-video).
    pub latents: Option<Array>,
    /// Video-to-video strength in [0, 1].
    pub strength: f64,
}

impl GenerateParams {
    /// diffusers' defaults for `TextToVideoSDPipeline.__call__`.
    pub fn text_to_video(prompt: &str) -> Self {
        Self {
            prompt: Some(prompt.to_string()),
            negative_prompt: None,
            prompt_embeds: None,
            negative_prompt_embeds: None,
            height: None,
            width: None,
            num_frames: 16,
            num_inference_steps: 50,
            guidance_scale: 9.0,
            eta: 0.0,
            clip_skip: None,
            seed: 0,
            latents: None,
            strength: 0.6,
        }
    }

    /// diffusers' defaults for `VideoToVideoSDPipeline.__call__`.
    pub fn video_to_video(prompt: &str) -> Self {
        Self { guidance_scale: 15.0, strength: 0.6, ..Self::text_to_video(prompt) }
    }

    pub fn do_classifier_free_guidance(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// What a call produced.
pub struct VideoOutput<B: Backend> {
    /// `output_type="np"` frames: `(f, H, W, 3)` in [0, 1].
    pub frames: Frames,
    /// The latents given to `decode_latents`, `(1, c, f, h, w)`.
    pub latents: Tensor<B, 5>,
    /// The timesteps the loop visited.
    pub timesteps: Vec<f64>,
    /// Seconds per phase, in order.
    pub timings: Vec<(String, f64)>,
}

/// Records phase timings and reports phases.
pub struct Phases<'c> {
    pub timings: Vec<(String, f64)>,
    pub callback: &'c mut dyn FnMut(Event),
}

impl<'c> Phases<'c> {
    pub fn new(callback: &'c mut dyn FnMut(Event)) -> Self {
        Self { timings: Vec::new(), callback }
    }
    /// Run `f` as phase `name`, timing it.
    pub fn run<T>(&mut self, name: &str, f: impl FnOnce(&mut dyn FnMut(Event)) -> Result<T>) -> Result<T> {
        (self.callback)(Event::Phase(name));
        let t0 = Instant::now();
        let out = f(&mut *self.callback)?;
        self.timings.push((name.to_string(), t0.elapsed().as_secs_f64()));
        Ok(out)
    }
}

/// `check_inputs`: sizes divisible by 8 (diffusers' check) and by the VAE's scale factor.
pub fn check_size(height: usize, width: usize, vae_scale_factor: usize) -> Result<()> {
    let step = lcm(8, vae_scale_factor.max(1));
    for (name, v) in [("height", height), ("width", width)] {
        if v == 0 || v % step != 0 {
            let lo = (v / step) * step;
            let hi = lo + step;
            let hint = if lo == 0 { format!("e.g. {hi}") } else { format!("e.g. {lo} or {hi}") };
            return Err(Error::input(format!(
                "{name} {v} is not a positive multiple of {step} (the VAE works on {vae_scale_factor}×{vae_scale_factor} pixel blocks and diffusers requires multiples of 8); use {hint}"
            )));
        }
    }
    Ok(())
}

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    a / gcd(a, b) * b
}

fn embeds_tensor<B: Backend>(a: &Array, what: &str, device: &B::Device) -> Result<Tensor<B, 3>> {
    if a.shape.len() != 3 || a.shape[0] != 1 {
        return Err(Error::input(format!("{what}: expected (1, tokens, dim), got shape {:?}", a.shape)));
    }
    Ok(a.to_tensor::<B, 3>(device)?)
}

/// diffusers' `encode_prompt` + the CFG concatenation: the UNet's `encoder_hidden_states`,
/// `(2, seq, dim)` = `[negative, prompt]` with guidance, `(1, seq, dim)` without.
/// clip_skip applies to the prompt only (diffusers encodes the negative prompt plainly).
pub fn encode_prompt<B: Backend>(
    tokenizer: Option<&ClipTokenizer>,
    text_encoder: Option<&TextEncoder<B>>,
    params: &GenerateParams,
    device: &B::Device,
) -> Result<Tensor<B, 3>> {
    let cfg = params.do_classifier_free_guidance();
    let need_models = || -> Result<(&ClipTokenizer, &TextEncoder<B>)> {
        match (tokenizer, text_encoder) {
            (Some(t), Some(e)) => Ok((t, e)),
            _ => Err(Error::input("encoding a prompt needs the tokenizer and the text encoder")),
        }
    };
    let prompt = match (&params.prompt, &params.prompt_embeds) {
        (Some(_), Some(_)) => return Err(Error::input("give either a prompt or prompt embeddings, not both")),
        (None, Some(e)) => embeds_tensor::<B>(e, "prompt embeddings", device)?,
        (Some(p), None) => {
            let (tok, te) = need_models()?;
            if tok.is_truncated(p)? {
                log::warn!(
                    "the prompt is longer than the {} tokens CLIP can take; the rest is ignored (as diffusers does)",
                    tok.model_max_length
                );
            }
            te.encode(&[tok.encode(p)?], params.clip_skip, device)?
        }
        (None, None) => return Err(Error::input("give a prompt (or prompt embeddings)")),
    };
    if !cfg {
        return Ok(prompt);
    }
    let negative = match (&params.negative_prompt, &params.negative_prompt_embeds) {
        (Some(_), Some(_)) => return Err(Error::input("give either a negative prompt or negative prompt embeddings, not both")),
        (_, Some(e)) => embeds_tensor::<B>(e, "negative prompt embeddings", device)?,
        (n, None) => {
            let (tok, te) = need_models()?;
            let ids = tok.encode(n.as_deref().unwrap_or(""))?;
            if ids.len() != prompt.dims()[1] {
                return Err(Error::input(format!(
                    "prompt embeddings have {} tokens, the tokenizer pads to {}",
                    prompt.dims()[1],
                    ids.len()
                )));
            }
            te.encode(&[ids], None, device)?
        }
    };
    if negative.dims() != prompt.dims() {
        return Err(Error::input(format!(
            "prompt embeddings {:?} and negative prompt embeddings {:?} must have the same shape",
            prompt.dims(),
            negative.dims()
        )));
    }
    Ok(Tensor::cat(vec![negative, prompt], 0))
}

/// diffusers' `prepare_latents`: the given latents or `randn_tensor(shape, generator)`, times the
/// scheduler's `init_noise_sigma`.
pub fn prepare_latents<B: Backend>(
    shape: [usize; 5],
    latents: Option<&Array>,
    noise: &mut TorchNoise,
    init_noise_sigma: f64,
    device: &B::Device,
) -> Result<Tensor<B, 5>> {
    let x = match latents {
        Some(a) => {
            if a.shape != shape {
                return Err(Error::input(format!(
                    "initial latents have shape {:?}, but this run needs {:?} (batch, channels, frames, height/scale, width/scale)",
                    a.shape, shape
                )));
            }
            a.to_tensor::<B, 5>(device)?
        }
        None => noise.randn::<B, 5>(shape, device),
    };
    Ok(if init_noise_sigma == 1.0 { x } else { x.mul_scalar(init_noise_sigma) })
}

/// `(b, c, f, h, w)` → `(b·f, c, h, w)`, the layout the scheduler steps on.
pub fn to_frames<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 4> {
    let [b, c, f, h, w] = x.dims();
    x.permute([0, 2, 1, 3, 4]).reshape([b * f, c, h, w])
}

/// `(b·f, c, h, w)` → `(b, c, f, h, w)`.
pub fn from_frames<B: Backend>(x: Tensor<B, 4>, b: usize) -> Tensor<B, 5> {
    let [bf, c, h, w] = x.dims();
    x.reshape([b, bf / b, c, h, w]).permute([0, 2, 1, 3, 4])
}

/// The denoising loop over `timesteps` (diffusers' `for i, t in enumerate(timesteps)`).
#[allow(clippy::too_many_arguments)]
pub fn denoise<B: Backend>(
    unet: &Unet3d<B>,
    generation: &mut Generation<B>,
    timesteps: &[f64],
    encoder_hidden_states: Tensor<B, 3>,
    mut latents: Tensor<B, 5>,
    guidance_scale: f64,
    eta: f64,
    noise: &mut dyn NoiseSource<B>,
    callback: &mut dyn FnMut(Event),
) -> Result<Tensor<B, 5>> {
    let cfg = encoder_hidden_states.dims()[0] == 2 * latents.dims()[0];
    let device = unet.device().clone();
    let ehs = encoder_hidden_states.to_device(&device);
    latents = latents.to_device(&device);
    let total = timesteps.len();
    callback(Event::StepsStart { total });
    for (i, &t) in timesteps.iter().enumerate() {
        let b = latents.dims()[0];
        let input = if cfg { Tensor::cat(vec![latents.clone(), latents.clone()], 0) } else { latents.clone() };
        let dims = input.dims();
        let flat = input.reshape([dims[0] * dims[1], dims[2], dims[3], dims[4]]);
        let input = generation.scale_model_input(flat, t)?.reshape(dims);
        let mut noise_pred = reel_core::nn::to_dtype(unet.forward(input, Timestep::Float(t), ehs.clone())?, latents.dtype());
        if cfg {
            let mut halves = noise_pred.chunk(2, 0).into_iter();
            let (uncond, text) = (halves.next().unwrap(), halves.next().unwrap());
            noise_pred = uncond.clone() + (text - uncond).mul_scalar(guidance_scale);
        }
        let mut ctx = StepContext::new(noise).with_eta(eta);
        let out = generation.step(to_frames(noise_pred), t, to_frames(latents), &mut ctx)?;
        latents = from_frames(out.prev_sample, b);
        callback(Event::Step { index: i, total, timestep: t });
    }
    Ok(latents)
}

/// diffusers' `decode_latents` + `postprocess_video(output_type="np")`: latents `(1, c, f, h, w)`
/// → frames `(f, H, W, 3)` in [0, 1]. NaN or infinite values are an error (never a black video).
pub fn decode_latents<B: Backend>(vae: &Vae<B>, latents: Tensor<B, 5>) -> Result<Frames> {
    let [b, _, f, _, _] = latents.dims();
    if b != 1 {
        return Err(Error::input(format!("decoding one video at a time, got a batch of {b}")));
    }
    let z = to_frames(latents.to_device(vae.device())).div_scalar(vae.scaling_factor());
    let image = vae.decode(z)?; // (f, 3, H, W)
    let [_, c, h, w] = image.dims();
    if c != 3 {
        return Err(Error::input(format!("the VAE decodes to {c} channels; video output needs 3 (RGB)")));
    }
    let image = reel_core::nn::to_dtype(image, burn::tensor::DType::F32);
    let data: Vec<f32> = image
        .permute([0, 2, 3, 1])
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| Error::input(format!("reading decoded frames: {e:?}")))?;
    check_finite(&data, "decoded frames")?;
    let data = data.into_iter().map(|x| (x / 2.0 + 0.5).clamp(0.0, 1.0)).collect();
    Ok(Frames::new(f, h, w, data)?)
}

/// NaN / inf in a result is an error with advice (f16 overflow is the usual cause).
pub fn check_finite(data: &[f32], what: &str) -> Result<()> {
    let bad = data.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        return Err(Error::NonFinite(format!(
            "{what}: {bad} of {} values are NaN or infinite (typically an f16/bf16 overflow); nothing was written. Run the VAE in f32 (--vae-dtype f32, or `dtype = \"f32\"` on a vae component), or everything with --dtype f32",
            data.len()
        )));
    }
    Ok(())
}

/// The five parts of a text-to-video call, borrowed.
pub struct TextToVideoSD<'a, B: Backend> {
    pub tokenizer: &'a ClipTokenizer,
    pub text_encoder: &'a TextEncoder<B>,
    pub unet: &'a Unet3d<B>,
    pub vae: &'a Vae<B>,
    pub scheduler: &'a SchedulerSpec,
}

impl<B: Backend> TextToVideoSD<'_, B> {
    /// `TextToVideoSDPipeline.__call__(..., output_type="np")` for one prompt, with the
    /// generator `torch.Generator("cpu").manual_seed(params.seed)`.
    pub fn call(&self, params: &GenerateParams, callback: &mut dyn FnMut(Event)) -> Result<VideoOutput<B>> {
        let mut phases = Phases::new(callback);
        let device = self.unet.device().clone();
        let ehs = phases.run("encode_prompt", |_| {
            encode_prompt(Some(self.tokenizer), Some(self.text_encoder), params, &device)
        })?;
        let (latents, timesteps) = phases.run("denoise", |cb| {
            text_to_video_latents(self.unet, self.scheduler, self.vae.downsample_factor(), ehs, params, &device, cb)
        })?;
        let frames = phases.run("decode", |_| decode_latents(self.vae, latents.clone()))?;
        Ok(VideoOutput { frames, latents, timesteps, timings: phases.timings })
    }
}

/// diffusers' default `unet.config.sample_size * vae_scale_factor` (an int or `[h, w]`).
fn default_size(sample_size: &Option<serde_json::Value>, vae_scale_factor: usize) -> Result<(usize, usize)> {
    use serde_json::Value;
    let n = |v: &Value| v.as_u64().map(|x| x as usize * vae_scale_factor);
    let size = match sample_size {
        Some(Value::Array(a)) if a.len() == 2 => n(&a[0]).zip(n(&a[1])),
        Some(v) => n(v).map(|s| (s, s)),
        None => None,
    };
    size.ok_or_else(|| Error::input("the UNet config has no usable sample_size for a default size; give --height and --width"))
}

/// Everything between `encode_prompt` and `decode_latents` for text-to-video: sizes, timesteps,
/// initial latents, the loop. Returns the final latents and the visited timesteps.
pub fn text_to_video_latents<B: Backend>(
    unet: &Unet3d<B>,
    scheduler: &SchedulerSpec,
    vae_scale_factor: usize,
    encoder_hidden_states: Tensor<B, 3>,
    params: &GenerateParams,
    device: &B::Device,
    callback: &mut dyn FnMut(Event),
) -> Result<(Tensor<B, 5>, Vec<f64>)> {
    let (height, width) = match (params.height, params.width) {
        (Some(h), Some(w)) => (h, w),
        (h, w) => {
            let (dh, dw) = default_size(&unet.config.sample_size, vae_scale_factor)?;
            (h.unwrap_or(dh), w.unwrap_or(dw))
        }
    };
    check_size(height, width, vae_scale_factor)?;
    if params.num_frames == 0 {
        return Err(Error::input("num_frames must be at least 1"));
    }
    if params.num_inference_steps == 0 {
        return Err(Error::input("the number of inference steps must be at least 1"));
    }
    let mut generation = scheduler.config.generation::<B>(params.num_inference_steps)?;
    let timesteps = generation.timesteps().to_vec();
    let shape = [1, unet.config.in_channels, params.num_frames, height / vae_scale_factor, width / vae_scale_factor];
    let mut noise = TorchNoise::new(params.seed, unet.dtype());
    let latents = prepare_latents::<B>(shape, params.latents.as_ref(), &mut noise, generation.init_noise_sigma(), device)?;
    let latents = denoise(
        unet,
        &mut generation,
        &timesteps,
        encoder_hidden_states,
        latents,
        params.guidance_scale,
        params.eta,
        &mut noise,
        callback,
    )?;
    Ok((latents, timesteps))
}
