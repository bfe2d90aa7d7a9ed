//! `AutoencoderKL`, mirroring `diffusers/models/autoencoders/autoencoder_kl.py`: the module
//! (`encoder`, `decoder`, `quant_conv`, `post_quant_conv`) and [`Vae`], which adds what the
//! diffusers object does around it: the checks on its inputs, slicing (`enable_slicing`) and
//! tiling (`enable_tiling`, `_tiled_encode`, `tiled_decode`, `blend_v`, `blend_h`).

use burn::module::Module;
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use reel_core::config::{join, load_component_config};
use reel_core::nn::{Activation, Conv2d};
use reel_core::npy::Array;
use reel_core::weights::Weights;
use reel_core::{Error, ModelRepo, Result};

use crate::config::AutoencoderKLConfig;
use crate::vae::{Decoder, DiagonalGaussianDistribution, Encoder};

/// diffusers' `AutoencoderKL` module tree (parameter paths are the checkpoint keys).
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
}

impl<B: Backend> AutoencoderKL<B> {
    /// Builds the (unloaded) module; `config` must pass [`AutoencoderKLConfig::validate`].
    pub fn new(config: &AutoencoderKLConfig, act_fn: Activation, device: &B::Device) -> Self {
        let c = config;
        let z = c.latent_channels;
        AutoencoderKL {
            encoder: Encoder::new(
                c.in_channels,
                z,
                &c.block_out_channels,
                c.layers_per_block,
                c.norm_num_groups,
                act_fn,
                true,
                c.mid_block_add_attention,
                device,
            ),
            decoder: Decoder::new(
                z,
                c.out_channels,
                &c.block_out_channels,
                c.layers_per_block,
                c.norm_num_groups,
                act_fn,
                c.mid_block_add_attention,
                device,
            ),
            quant_conv: c.use_quant_conv.then(|| Conv2d::new(2 * z, 2 * z, 1, 1, 0, device)),
            post_quant_conv: c.use_post_quant_conv.then(|| Conv2d::new(z, z, 1, 1, 0, device)),
        }
    }

    /// `encoder` then `quant_conv`: frames → moments `(n, 2 * latent_channels, h, w)`
    /// (diffusers' untiled `_encode`).
    pub fn encode_moments(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.encoder.forward(x);
        match &self.quant_conv {
            Some(conv) => conv.forward(h),
            None => h,
        }
    }

    /// `post_quant_conv` then `decoder` (diffusers' untiled `_decode`).
    pub fn decode_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        self.decoder.forward(z)
    }
}

/// diffusers' tiling attributes (`tile_sample_min_size`, `tile_latent_min_size`,
/// `tile_overlap_factor`), set on the object in Python and here through [`Vae::enable_tiling`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    /// Frame tile size (pixels); frames larger than this in H or W are encoded tile by tile.
    pub tile_sample_min_size: usize,
    /// Latent tile size; latents larger than this in h or w are decoded tile by tile.
    pub tile_latent_min_size: usize,
    pub tile_overlap_factor: f64,
}

impl Tiling {
    /// What `AutoencoderKL.__init__` sets: `sample_size`, `sample_size / 2^(len(block_out_channels) - 1)`
    /// and 0.25.
    pub fn from_config(config: &AutoencoderKLConfig) -> Self {
        let sample = config.sample_size.first();
        Tiling {
            tile_sample_min_size: sample,
            tile_latent_min_size: (sample as f64 / config.downsample_factor() as f64) as usize,
            tile_overlap_factor: 0.25,
        }
    }

    /// `(overlap_size, blend_extent, row_limit)` of diffusers' tiled encode (`encode == true`)
    /// or tiled decode: the tile stride in the input, the rows / columns blended in the
    /// output, and the output rows / columns each tile keeps.
    pub fn steps(&self, encode: bool) -> Result<(usize, usize, usize)> {
        let f = self.tile_overlap_factor;
        if !(0.0..1.0).contains(&f) {
            return Err(Error::input(format!("VAE tiling: tile_overlap_factor must be in [0, 1), got {f}")));
        }
        let (input_tile, output_tile) = if encode {
            (self.tile_sample_min_size, self.tile_latent_min_size)
        } else {
            (self.tile_latent_min_size, self.tile_sample_min_size)
        };
        // Python's int() truncates toward zero, as `as usize` does for these non-negative values.
        let overlap_size = (input_tile as f64 * (1.0 - f)) as usize;
        let blend_extent = (output_tile as f64 * f) as usize;
        if overlap_size == 0 {
            return Err(Error::input(format!(
                "VAE tiling: a {} tile of {input_tile} with overlap factor {f} gives a tile stride of 0 \
                 (diffusers fails the same way); use larger tiles or a smaller overlap",
                if encode { "tile_sample_min_size" } else { "tile_latent_min_size" }
            )));
        }
        Ok((overlap_size, blend_extent, output_tile - blend_extent))
    }
}

/// A loaded `AutoencoderKL` with its config and diffusers' runtime options (slicing, tiling).
///
/// Inputs are cast to the weights' dtype (as the diffusers pipelines do); outputs are in that
/// dtype too.
#[derive(Debug)]
pub struct Vae<B: Backend> {
    pub config: AutoencoderKLConfig,
    pub model: AutoencoderKL<B>,
    device: B::Device,
    dtype: DType,
    tiling: Option<Tiling>,
    slicing: Option<usize>,
}

/// diffusers' `_convert_deprecated_attention_blocks` renames: old checkpoints name the mid-block
/// attention projections `query`, `key`, `value`, `proj_attn`.
fn rename_deprecated_attention(key: &str) -> String {
    if key.contains(".mid_block.attentions.") {
        for (old, new) in [("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0")] {
            for leaf in ["weight", "bias"] {
                if let Some(prefix) = key.strip_suffix(&format!(".{old}.{leaf}")) {
                    return format!("{prefix}.{new}.{leaf}");
                }
            }
        }
    }
    key.to_string()
}

impl<B: Backend> Vae<B> {
    /// Loads `<subfolder>/config.json` (`_class_name` `AutoencoderKL`) and its weights
    /// (`diffusion_pytorch_model[.<variant>].safetensors`, possibly sharded), converted to `dtype`
    /// (the device's default float type when `None`).
    pub fn load(
        repo: &ModelRepo,
        subfolder: &str,
        variant: Option<&str>,
        device: &B::Device,
        dtype: Option<DType>,
    ) -> Result<Self> {
        let config: AutoencoderKLConfig = load_component_config(repo, subfolder, &["AutoencoderKL"])?;
        let config_path = || repo.describe(&join(subfolder, "config.json"));
        config.validate().map_err(|message| Error::InvalidConfig { path: config_path(), message })?;
        let act = Activation::from_name(&config.act_fn).ok_or_else(|| Error::InvalidConfig {
            path: config_path(),
            message: format!("unsupported act_fn {:?} (reel knows silu/swish, gelu, relu, ...)", config.act_fn),
        })?;
        let weights = Weights::open_component(repo, subfolder, "diffusion_pytorch_model", variant)?
            .rename_keys(|k| Some(rename_deprecated_attention(k)))?;
        let model = weights.load_module(AutoencoderKL::new(&config, act, device), device, dtype)?;
        Ok(Self::from_module(config, model, device))
    }

    /// Wraps an already loaded module (its dtype is read from `encoder.conv_in.weight`).
    pub fn from_module(config: AutoencoderKLConfig, model: AutoencoderKL<B>, device: &B::Device) -> Self {
        let dtype = model.encoder.conv_in.weight.val().dtype();
        Vae { config, model, device: device.clone(), dtype, tiling: None, slicing: None }
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The dtype the weights were loaded in (inputs are cast to it).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `config.scaling_factor`: the pipeline multiplies encoded latents by it and divides latents
    /// by it before decoding. `encode` / `decode` never apply it.
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// `config.shift_factor` (`None` for the SD-style VAEs).
    pub fn shift_factor(&self) -> Option<f64> {
        self.config.shift_factor
    }

    /// Frames per latent pixel along H and W (the pipelines' `vae_scale_factor`).
    pub fn downsample_factor(&self) -> usize {
        self.config.downsample_factor()
    }

    /// diffusers' `enable_slicing`: encode / decode `frames_per_slice` frames of the batch at a
    /// time (diffusers uses 1) and concatenate. Same result as the plain path, less memory.
    pub fn enable_slicing(&mut self, frames_per_slice: usize) -> Result<()> {
        if frames_per_slice == 0 {
            return Err(Error::input("VAE slicing: frames_per_slice must be at least 1"));
        }
        self.slicing = Some(frames_per_slice);
        Ok(())
    }

    pub fn disable_slicing(&mut self) {
        self.slicing = None;
    }

    pub fn slicing(&self) -> Option<usize> {
        self.slicing
    }

    /// diffusers' `enable_tiling` with the tile parameters it would have (`Tiling::from_config`)
    /// or others set as one would set them on the Python object.
    pub fn enable_tiling(&mut self, tiling: Option<Tiling>) {
        self.tiling = Some(tiling.unwrap_or_else(|| Tiling::from_config(&self.config)));
    }

    pub fn disable_tiling(&mut self) {
        self.tiling = None;
    }

    pub fn tiling(&self) -> Option<Tiling> {
        self.tiling
    }

    /// The latent size `(h, w)` frames of `(height, width)` encode to, or an `Input` error where
    /// the encoder cannot run on them (diffusers / PyTorch raise there). Sizes need not be
    /// multiples of [`Self::downsample_factor`]: diffusers encodes odd sizes (each downsampling
    /// gives `floor((n - 2) / 2) + 1`), though the pipelines only feed multiples.
    pub fn latent_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let enc = &self.model.encoder;
        match (enc.output_size(height), enc.output_size(width)) {
            (Some(h), Some(w)) if h > 0 && w > 0 => Ok((h, w)),
            _ => {
                let min = self.min_frame_size();
                Err(Error::input(format!(
                    "VAE encode: frames of {height}×{width} pixels are too small for the encoder \
                     (it needs at least {min}×{min})"
                )))
            }
        }
    }

    /// The smallest frame side the encoder runs on (the downsampling factor for diffusers' VAEs).
    pub fn min_frame_size(&self) -> usize {
        let enc = &self.model.encoder;
        (1..=1 << 16).find(|n| enc.output_size(*n).is_some_and(|m| m > 0)).unwrap_or(1)
    }

    fn to_model_dtype(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        reel_core::nn::to_dtype(x, self.dtype)
    }

    fn check_input(&self, what: &str, dims: [usize; 4], channels: usize, layout: &str) -> Result<()> {
        let [n, c, h, w] = dims;
        if c != channels {
            return Err(Error::input(format!(
                "VAE {what}: expected {layout} with {channels} channels, got shape {dims:?} ({c} channels)"
            )));
        }
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::input(format!("VAE {what}: got an empty tensor of shape {dims:?}")));
        }
        Ok(())
    }

    /// Applies `f` to the whole batch, or slice by slice with slicing enabled.
    fn sliced(&self, x: Tensor<B, 4>, f: impl Fn(Tensor<B, 4>) -> Result<Tensor<B, 4>>) -> Result<Tensor<B, 4>> {
        let n = x.dims()[0];
        match self.slicing {
            Some(k) if n > 1 && k < n => {
                let parts = x.split(k, 0).into_iter().map(&f).collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(parts, 0))
            }
            _ => f(x),
        }
    }

    /// diffusers' `encode(x).latent_dist`: frames `(n, in_channels, H, W)` (values in [-1, 1])
    /// → the posterior over latents `(n, latent_channels, h, w)`.
    pub fn encode(&self, x: Tensor<B, 4>) -> Result<DiagonalGaussianDistribution<B>> {
        let dims = x.dims();
        self.check_input("encode", dims, self.config.in_channels, "frames (n, channels, height, width)")?;
        let x = self.to_model_dtype(x);
        let moments = self.sliced(x, |x| self.encode_one(x))?;
        Ok(DiagonalGaussianDistribution::new(moments))
    }

    /// diffusers' `_encode`: tiled when tiling is on and the frames exceed the tile size.
    fn encode_one(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [_, _, h, w] = x.dims();
        if let Some(t) = self.tiling {
            if w > t.tile_sample_min_size || h > t.tile_sample_min_size {
                return self.tiled_encode_moments(x, &t);
            }
        }
        self.latent_size(h, w)?;
        Ok(self.model.encode_moments(x))
    }

    /// diffusers' `_tiled_encode` with the given tile parameters: moments
    /// `(n, 2 * latent_channels, h, w)`.
    pub fn tiled_encode_moments(&self, x: Tensor<B, 4>, tiling: &Tiling) -> Result<Tensor<B, 4>> {
        let [_, _, height, width] = x.dims();
        let (overlap_size, blend_extent, row_limit) = tiling.steps(true)?;
        let size = tiling.tile_sample_min_size;
        let mut rows = Vec::new();
        for i in (0..height).step_by(overlap_size) {
            let mut row = Vec::new();
            for j in (0..width).step_by(overlap_size) {
                let (th, tw) = (size.min(height - i), size.min(width - j));
                if self.latent_size(th, tw).is_err() {
                    let min = self.min_frame_size();
                    return Err(Error::input(format!(
                        "VAE tiled encode: the tile at row {i}, column {j} of the {height}×{width} frames is \
                         {th}×{tw} pixels, too small for the encoder (it needs at least {min}×{min}; diffusers \
                         fails here too); change tile_sample_min_size / tile_overlap_factor"
                    )));
                }
                let tile = x.clone().narrow(2, i, th).narrow(3, j, tw);
                row.push(self.model.encode_moments(tile));
            }
            rows.push(row);
        }
        Ok(blend_tiles(rows, blend_extent, row_limit))
    }

    /// diffusers' `decode(z).sample`: latents `(n, latent_channels, h, w)` → frames
    /// `(n, out_channels, 8h, 8w)` for the usual 4-block VAE (`downsample_factor` × h, w), raw:
    /// not clamped, no scaling factor applied.
    pub fn decode(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let dims = z.dims();
        self.check_input("decode", dims, self.config.latent_channels, "latents (n, channels, height, width)")?;
        let z = self.to_model_dtype(z);
        self.sliced(z, |z| self.decode_one(z))
    }

    /// diffusers' `_decode`: tiled when tiling is on and the latents exceed the tile size.
    fn decode_one(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [_, _, h, w] = z.dims();
        if let Some(t) = self.tiling {
            if w > t.tile_latent_min_size || h > t.tile_latent_min_size {
                return self.tiled_decode(z, &t);
            }
        }
        Ok(self.model.decode_latents(z))
    }

    /// diffusers' `tiled_decode` with the given tile parameters.
    pub fn tiled_decode(&self, z: Tensor<B, 4>, tiling: &Tiling) -> Result<Tensor<B, 4>> {
        let [_, _, height, width] = z.dims();
        let (overlap_size, blend_extent, row_limit) = tiling.steps(false)?;
        let size = tiling.tile_latent_min_size;
        let mut rows = Vec::new();
        for i in (0..height).step_by(overlap_size) {
            let mut row = Vec::new();
            for j in (0..width).step_by(overlap_size) {
                let tile = z.clone().narrow(2, i, size.min(height - i)).narrow(3, j, size.min(width - j));
                row.push(self.model.decode_latents(tile));
            }
            rows.push(row);
        }
        Ok(blend_tiles(rows, blend_extent, row_limit))
    }

    /// [`Self::encode`] for a host array, checking its rank.
    pub fn encode_array(&self, x: &Array) -> Result<DiagonalGaussianDistribution<B>> {
        self.encode(self.array_to_tensor("encode", x, "frames (n, channels, height, width)")?)
    }

    /// [`Self::decode`] for a host array, checking its rank.
    pub fn decode_array(&self, z: &Array) -> Result<Tensor<B, 4>> {
        self.decode(self.array_to_tensor("decode", z, "latents (n, channels, height, width)")?)
    }

    fn array_to_tensor(&self, what: &str, a: &Array, layout: &str) -> Result<Tensor<B, 4>> {
        if a.shape.len() != 4 {
            return Err(Error::input(format!(
                "VAE {what}: expected {layout}, a 4-dimensional array, got shape {:?}{}",
                a.shape,
                if a.shape.len() == 5 { " (for video, fold the frames into the batch: (b·f, c, h, w))" } else { "" }
            )));
        }
        a.to_tensor::<B, 4>(&self.device)
    }
}

/// diffusers' `blend_v`: the first `extent` rows of `b` become
/// `a[-extent + y] * (1 - y / extent) + b[y] * (y / extent)`, with `extent = min(a.h, b.h, extent)`.
pub fn blend_v<B: Backend>(a: &Tensor<B, 4>, b: Tensor<B, 4>, blend_extent: usize) -> Tensor<B, 4> {
    blend(a, b, blend_extent, 2)
}

/// diffusers' `blend_h`: `blend_v` along the width.
pub fn blend_h<B: Backend>(a: &Tensor<B, 4>, b: Tensor<B, 4>, blend_extent: usize) -> Tensor<B, 4> {
    blend(a, b, blend_extent, 3)
}

fn blend<B: Backend>(a: &Tensor<B, 4>, b: Tensor<B, 4>, blend_extent: usize, dim: usize) -> Tensor<B, 4> {
    let (na, nb) = (a.dims()[dim], b.dims()[dim]);
    let e = blend_extent.min(na).min(nb);
    if e == 0 {
        return b;
    }
    // Python computes `1 - y / e` and `y / e` in double; PyTorch multiplies an f32 tensor by a
    // Python float in f32, so the weights are those doubles rounded to f32.
    let wa: Vec<f32> = (0..e).map(|y| (1.0 - y as f64 / e as f64) as f32).collect();
    let wb: Vec<f32> = (0..e).map(|y| (y as f64 / e as f64) as f32).collect();
    let mut shape = [1usize; 4];
    shape[dim] = e;
    let device = b.device();
    let weight = |w: Vec<f32>| {
        reel_core::nn::to_dtype(Tensor::<B, 4>::from_data(TensorData::new(w, shape), &device), b.dtype())
    };
    let (wa, wb) = (weight(wa), weight(wb));
    let blended = a.clone().narrow(dim, na - e, e) * wa + b.clone().narrow(dim, 0, e) * wb;
    if e == nb {
        blended
    } else {
        Tensor::cat(vec![blended, b.narrow(dim, e, nb - e)], dim)
    }
}

/// The second half of diffusers' tiled encode / decode: visits the tiles row by row, left to
/// right, blending the tile above (`blend_v`) and then the tile to the left (`blend_h`) into each
/// tile *in place* (so later tiles read already-blended neighbours, as in diffusers), keeps the
/// first `row_limit` rows and columns of each, and concatenates.
fn blend_tiles<B: Backend>(mut rows: Vec<Vec<Tensor<B, 4>>>, blend_extent: usize, row_limit: usize) -> Tensor<B, 4> {
    let mut result_rows = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let mut result_row = Vec::with_capacity(rows[i].len());
        for j in 0..rows[i].len() {
            let mut tile = rows[i][j].clone();
            if i > 0 {
                tile = blend_v(&rows[i - 1][j], tile, blend_extent);
            }
            if j > 0 {
                tile = blend_h(&rows[i][j - 1], tile, blend_extent);
            }
            rows[i][j] = tile.clone();
            let [_, _, h, w] = tile.dims();
            result_row.push(tile.narrow(2, 0, row_limit.min(h)).narrow(3, 0, row_limit.min(w)));
        }
        result_rows.push(Tensor::cat(result_row, 3));
    }
    Tensor::cat(result_rows, 2)
}
