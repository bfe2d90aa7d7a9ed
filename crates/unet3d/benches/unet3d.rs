//! One forward of a small UNet3DConditionModel on the CPU (burn NdArray, f32), random weights.
//! `cargo bench -p reel-unet3d` (env `REEL_BENCH_RUNS`, default 5). The same config and input
//! sizes as `tools/reference/unet3d.py bench` (PyTorch) so the figures can stand side by side.

use std::time::Instant;

use burn::backend::NdArray;
use burn::module::{ModuleMapper, Param};
use burn::tensor::{Distribution, Tensor};
use reel_unet3d::{UNet3DConditionConfig, Unet3d};

type B = NdArray<f32>;

/// Replaces every parameter with uniform noise of its shape (scaled by 1/sqrt(fan-in)).
struct Randomize;

impl ModuleMapper<B> for Randomize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let shape = param.lazy_shape();
        let dims = shape.dims::<D>();
        let fan_in: usize = if D > 1 { dims[1..].iter().product() } else { 1 };
        let bound = 1.0 / (fan_in as f64).sqrt();
        let t = Tensor::<B, D>::random(
            dims,
            Distribution::Uniform(-bound, bound),
            &Default::default(),
        );
        Param::initialized(param.id, t)
    }
}

/// The benchmark config: the ms-1.7b layout at 1/10 width.
pub fn bench_config() -> UNet3DConditionConfig {
    serde_json::from_value(serde_json::json!({
        "block_out_channels": [32, 64, 128, 128],
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "attention_head_dim": 8,
        "cross_attention_dim": 128,
    }))
    .unwrap()
}

fn main() {
    use burn::module::Module;
    let runs: usize = std::env::var("REEL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let device = Default::default();
    let config = bench_config();
    let model = Unet3d::<B>::build(&config, &device)
        .unwrap()
        .map(&mut Randomize);
    let unet = Unet3d::from_module(config, model, &device);
    let (b, f, h, w) = (1, 8, 32, 32);
    let sample = Tensor::<B, 5>::random([b, 4, f, h, w], Distribution::Normal(0.0, 1.0), &device);
    let ehs = Tensor::<B, 3>::random([b, 77, 128], Distribution::Normal(0.0, 1.0), &device);
    let mut times = Vec::new();
    for i in 0..=runs {
        let t0 = Instant::now();
        let out = unet.forward(sample.clone(), 500i64, ehs.clone()).unwrap();
        let _ = out.into_data();
        let dt = t0.elapsed().as_secs_f64();
        if i > 0 {
            times.push(dt);
        }
        eprintln!(
            "run {i}{}: {:.3} s",
            if i == 0 { " (warm-up)" } else { "" },
            dt
        );
    }
    // where the time goes (NdArray is synchronous: time between block outputs), by block kind
    let mut trace = reel_unet3d::Trace::timings();
    let _ = unet
        .forward_traced(sample.clone(), 500i64, ehs.clone(), &mut trace)
        .unwrap();
    let mut by_kind: std::collections::BTreeMap<String, f64> = Default::default();
    for (path, secs) in &trace.times {
        let kind: Vec<&str> = path
            .split('.')
            .filter(|p| p.parse::<usize>().is_err())
            .collect();
        *by_kind.entry(kind.last().unwrap().to_string()).or_default() += secs;
    }
    let total: f64 = by_kind.values().sum();
    for (kind, secs) in &by_kind {
        eprintln!("  {kind:16} {:7.3} s ({:4.1}%)", secs, 100.0 * secs / total);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "reel unet3d forward (NdArray f32, blocks [32, 64, 128, 128], 2 layers, head 8, sample [{b}, 4, {f}, {h}, {w}], 77×128 text): median {:.3} s, min {:.3} s over {runs} runs",
        times[times.len() / 2],
        times[0]
    );
}
