//! Video-to-video as diffusers' `VideoToVideoSDPipeline` computes it
//! (`diffusers/pipelines/deprecated/text_to_video_synthesis/pipeline_text_to_video_synth_img2img.py`):
//! `preprocess_video` (frames in [0, 1] → [-1, 1]), `get_timesteps` (strength → the tail of the
//! schedule and `set_begin_index`), `prepare_latents` (VAE posterior sample with the generator,
//! times `scaling_factor`, then `add_noise` at the first timestep with noise from the same
//! generator), then the text-to-video loop and decoding.

use burn::tensor::{backend::Backend, Tensor, TensorData};
use reel_clip::{ClipTokenizer, TextEncoder};
use reel_schedulers::{Generation, SchedulerSpec};
use reel_unet3d::Unet3d;
use reel_vae::Vae;
use reel_video::Frames;

use crate::error::{Error, Result};
use crate::noise::TorchNoise;
use crate::pipeline_text_to_video_synth::{
    check_size, decode_latents, denoise, encode_prompt, from_frames, Event, GenerateParams, Phases, VideoOutput,
};

/// diffusers' `check_inputs` on strength: inside [0, 1].
pub fn check_strength(strength: f64) -> Result<()> {
    if (0.0..=1.0).contains(&strength) {
        Ok(())
    } else {
        Err(Error::input(format!("strength {strength} is outside [0, 1]; use e.g. 0.6 (1.0 ignores the input video)")))
    }
}

/// diffusers' `get_timesteps(num_inference_steps, strength)`: `(t_start · order, steps left)`.
/// `init_timestep = min(int(N · strength), N)`, `t_start = N - init_timestep`.
pub fn get_timesteps(num_inference_steps: usize, strength: f64, order: usize) -> Result<(usize, usize)> {
    check_strength(strength)?;
    let init_timestep = ((num_inference_steps as f64 * strength).floor() as usize).min(num_inference_steps);
    if init_timestep == 0 {
        return Err(Error::input(format!(
            "strength {strength} with {num_inference_steps} steps leaves no denoising step (int({num_inference_steps} × {strength}) = 0); raise --strength or --steps"
        )));
    }
    let t_start = num_inference_steps - init_timestep;
    Ok((t_start * order, num_inference_steps - t_start))
}

/// diffusers' `video_processor.preprocess_video` on float frames in [0, 1]: `(1, 3, f, H, W)` in
/// [-1, 1], frames folded into the batch as `(f, 3, H, W)`.
pub fn preprocess_video<B: Backend>(video: &Frames, device: &B::Device) -> Tensor<B, 4> {
    let data: Vec<f32> = video.data.iter().map(|&x| 2.0 * x - 1.0).collect();
    Tensor::<B, 4>::from_data(TensorData::new(data, [video.frames, video.height, video.width, 3]), device)
        .permute([0, 3, 1, 2])
}

/// diffusers' `prepare_latents` of video-to-video: `scaling_factor · posterior.sample(generator)`,
/// then `scheduler.add_noise(latents, randn_tensor(shape, generator), timesteps[0])`, as
/// `(1, c, f, h, w)`.
pub fn prepare_video_latents<B: Backend>(
    vae: &Vae<B>,
    video: &Frames,
    generation: &Generation<B>,
    first_timestep: f64,
    noise: &mut TorchNoise,
) -> Result<Tensor<B, 5>> {
    let device = vae.device().clone();
    let x = preprocess_video::<B>(video, &device);
    let posterior = vae.encode(x)?;
    let shape = posterior.mean.dims();
    let sample = posterior.sample(noise.randn::<B, 4>(shape, &device))?;
    let sample = reel_core::nn::to_dtype(sample, burn::tensor::DType::F32);
    let init = sample.mul_scalar(vae.scaling_factor());
    let eps = noise.randn::<B, 4>(shape, &device);
    let noisy = generation.add_noise(init, eps, first_timestep)?;
    Ok(from_frames(noisy, 1))
}

/// The five parts of a video-to-video call, borrowed.
pub struct VideoToVideoSD<'a, B: Backend> {
    pub tokenizer: &'a ClipTokenizer,
    pub text_encoder: &'a TextEncoder<B>,
    pub unet: &'a Unet3d<B>,
    pub vae: &'a Vae<B>,
    pub scheduler: &'a SchedulerSpec,
}

impl<B: Backend> VideoToVideoSD<'_, B> {
    /// `VideoToVideoSDPipeline.__call__(prompt, video=..., strength=..., output_type="np")` with
    /// the generator `torch.Generator("cpu").manual_seed(params.seed)`. `video` must already have
    /// the working size (see [`crate::runner`] for resizing).
    pub fn call(&self, video: &Frames, params: &GenerateParams, callback: &mut dyn FnMut(Event)) -> Result<VideoOutput<B>> {
        let mut phases = Phases::new(callback);
        let device = self.unet.device().clone();
        let ehs = phases.run("encode_prompt", |_| encode_prompt(Some(self.tokenizer), Some(self.text_encoder), params, &device))?;
        let mut plan = VideoToVideoPlan::new(self.unet.dtype(), self.scheduler, self.vae.downsample_factor(), video, params)?;
        let latents = phases.run("encode_video", |_| plan.prepare_latents(self.vae, video))?;
        let latents = phases.run("denoise", |cb| plan.denoise(self.unet, ehs, latents, params, cb))?;
        let frames = phases.run("decode", |_| decode_latents(self.vae, latents.clone()))?;
        Ok(VideoOutput { frames, latents, timesteps: plan.timesteps, timings: phases.timings })
    }
}

/// The scheduler side of one video-to-video call, split so that the VAE encode and the UNet
/// loop can run with different parts loaded.
pub struct VideoToVideoPlan<B: Backend> {
    pub generation: Generation<B>,
    /// The timesteps the loop will visit (`timesteps[t_start · order:]`).
    pub timesteps: Vec<f64>,
    pub noise: TorchNoise,
}

impl<B: Backend> VideoToVideoPlan<B> {
    /// Checks the inputs, sets the timesteps and the begin index. `dtype` is the pipeline's
    /// (the UNet's) float type, which the generator draws in.
    pub fn new(
        dtype: burn::tensor::DType,
        scheduler: &SchedulerSpec,
        vae_scale_factor: usize,
        video: &Frames,
        params: &GenerateParams,
    ) -> Result<Self> {
        check_size(video.height, video.width, vae_scale_factor)?;
        if params.num_inference_steps == 0 {
            return Err(Error::input("the number of inference steps must be at least 1"));
        }
        let (start, _) = get_timesteps(params.num_inference_steps, params.strength, scheduler.config.order())?;
        let mut generation = scheduler.config.generation::<B>(params.num_inference_steps)?;
        let all = generation.timesteps().to_vec();
        if start >= all.len() {
            return Err(Error::input(format!(
                "strength {} leaves no denoising step of the {} scheduled; raise --strength or --steps",
                params.strength,
                all.len()
            )));
        }
        generation.set_begin_index(start)?;
        Ok(Self { generation, timesteps: all[start..].to_vec(), noise: TorchNoise::new(params.seed, dtype) })
    }

    /// The noisy initial latents from the input video.
    pub fn prepare_latents(&mut self, vae: &Vae<B>, video: &Frames) -> Result<Tensor<B, 5>> {
        prepare_video_latents(vae, video, &self.generation, self.timesteps[0], &mut self.noise)
    }

    /// The denoising loop from the first remaining timestep.
    pub fn denoise(
        &mut self,
        unet: &Unet3d<B>,
        encoder_hidden_states: Tensor<B, 3>,
        latents: Tensor<B, 5>,
        params: &GenerateParams,
        callback: &mut dyn FnMut(Event),
    ) -> Result<Tensor<B, 5>> {
        let timesteps = self.timesteps.clone();
        denoise(
            unet,
            &mut self.generation,
            &timesteps,
            encoder_hidden_states,
            latents,
            params.guidance_scale,
            params.eta,
            &mut self.noise,
            callback,
        )
    }
}
