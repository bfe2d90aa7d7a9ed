//! Per-block CPU timings (burn NdArray, f32, random weights) at the first level of the
//! `unet3d` benchmark config (32 channels, 8 frames, 32×32 latents), to see where a forward's
//! time goes, and the spatial self-attention through burn's unfused attention vs
//! `reel_core::blocks::scaled_dot_product_attention` (which runs a fused host kernel on NdArray).
//! `cargo bench -p reel-unet3d --bench blocks`.

use std::time::Instant;

use burn::backend::NdArray;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};
use reel_core::blocks::{scaled_dot_product_attention, ResnetBlock2DConfig};
use reel_unet3d::resnet::TemporalConvLayer;
use reel_unet3d::transformer_2d::Transformer2DModel;
use reel_unet3d::transformer_temporal::TransformerTemporalModel;

type B = NdArray<f32>;

struct Randomize;

impl ModuleMapper<B> for Randomize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dims = param.lazy_shape().dims::<D>();
        let fan_in: usize = if D > 1 { dims[1..].iter().product() } else { 1 };
        let bound = 1.0 / (fan_in as f64).sqrt();
        let t = Tensor::random(
            dims,
            Distribution::Uniform(-bound, bound),
            &Default::default(),
        );
        Param::initialized(param.id, t)
    }
}

fn time(label: &str, runs: usize, mut f: impl FnMut() -> Tensor<B, 4>) -> Tensor<B, 4> {
    let out = f();
    let t0 = Instant::now();
    for _ in 0..runs {
        let _ = f().into_data();
    }
    println!(
        "  {label:32} {:9.2} ms",
        t0.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
    out
}

fn main() {
    let d = Default::default();
    let (b, f, c, h, w) = (1, 8, 32, 32, 32);
    let runs = 3;
    println!(
        "x [{}, {c}, {h}, {w}] ({b}×{f} frames), head size 8, text 77×128",
        b * f
    );
    let x = Tensor::<B, 4>::random([b * f, c, h, w], Distribution::Normal(0.0, 1.0), &d);
    let ehs = Tensor::<B, 3>::random([b * f, 77, 128], Distribution::Normal(0.0, 1.0), &d);
    let temb = Tensor::<B, 2>::random([b * f, 128], Distribution::Normal(0.0, 1.0), &d);

    let mut rc = ResnetBlock2DConfig::new(c);
    rc.temb_channels = Some(128);
    let resnet = rc.init::<B>(&d).map(&mut Randomize);
    time("ResnetBlock2D", runs, || {
        resnet.forward(x.clone(), Some(temb.clone()))
    });
    let tc = TemporalConvLayer::<B>::new(c, c, 32, &d).map(&mut Randomize);
    time("TemporalConvLayer", runs, || tc.forward(x.clone(), f));
    let t2 = Transformer2DModel::<B>::new(c / 8, 8, c, 1, Some(128), 32, &d).map(&mut Randomize);
    time("Transformer2DModel", runs, || {
        t2.forward(x.clone(), Some(ehs.clone()))
    });
    let tt = TransformerTemporalModel::<B>::new(c / 8, 8, c, 1, 32, &d).map(&mut Randomize);
    time("TransformerTemporalModel", runs, || {
        tt.forward(x.clone(), f)
    });
    let tin = TransformerTemporalModel::<B>::new(8, 8, c, 1, 32, &d).map(&mut Randomize);
    time("transformer_in (8 heads)", runs, || {
        tin.forward(x.clone(), f)
    });

    let q = Tensor::<B, 4>::random([b * f, c / 8, h * w, 8], Distribution::Normal(0.0, 1.0), &d);
    let opts = AttentionModuleOptions::default;
    let a = time("self-attn [8,4,1024,8] burn", runs, || {
        attention(q.clone(), q.clone(), q.clone(), None, None, opts())
    });
    let s = time("self-attn [8,4,1024,8] reel", runs, || {
        scaled_dot_product_attention(q.clone(), q.clone(), q.clone())
    });
    println!(
        "    max |burn - reel| {:.2e}",
        (a - s).abs().max().into_scalar()
    );
    let k = Tensor::<B, 4>::random([b * f, c / 8, 77, 8], Distribution::Normal(0.0, 1.0), &d);
    time("cross-attn [8,4,1024|77,8] burn", runs, || {
        attention(q.clone(), k.clone(), k.clone(), None, None, opts())
    });
    time("cross-attn [8,4,1024|77,8] reel", runs, || {
        scaled_dot_product_attention(q.clone(), k.clone(), k.clone())
    });
    let qt = Tensor::<B, 4>::random([b * h * w, c / 8, f, 8], Distribution::Normal(0.0, 1.0), &d);
    time("temporal attn [1024,4,8,8]", runs, || {
        scaled_dot_product_attention(qt.clone(), qt.clone(), qt.clone())
    });
    let tok = Tensor::<B, 3>::random([b * f, h * w, c], Distribution::Normal(0.0, 1.0), &d);
    let wt = Tensor::<B, 2>::random([c, 8 * c], Distribution::Normal(0.0, 1.0), &d);
    time("linear [8,1024,32]→256", runs, || {
        burn::tensor::module::linear(tok.clone(), wt.clone(), None).unsqueeze()
    });
    let g = Tensor::<B, 3>::random([b * f, h * w, 8 * c], Distribution::Normal(0.0, 1.0), &d);
    time("gelu [8,1024,256]", runs, || {
        burn::tensor::activation::gelu(g.clone()).unsqueeze()
    });
    time("silu [8,1024,256]", runs, || {
        burn::tensor::activation::silu(g.clone()).unsqueeze()
    });
    time("add [8,1024,256]", runs, || {
        (g.clone() + g.clone()).unsqueeze()
    });
    let gn = reel_core::nn::GroupNorm::<B>::new(32, c, 1e-5, &d).map(&mut Randomize);
    time("GroupNorm(32) [8,32,32,32]", runs, || gn.forward(x.clone()));
    let ln = reel_core::nn::LayerNorm::<B>::new(8 * c, 1e-5, &d).map(&mut Randomize);
    time("LayerNorm [8,1024,256]", runs, || {
        ln.forward(g.clone()).unsqueeze()
    });
}
