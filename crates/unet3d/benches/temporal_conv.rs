//! The `(3, 1, 1)` temporal convolution of `TemporalConvLayer` three ways on the CPU (burn
//! NdArray, f32): `conv3d` on `(b, c, f, h, w)`, `conv2d` with a `(3, 1)` kernel on
//! `(b, c, f, h·w)` (what `resnet::TemporalConv3d` runs), and three shifted matmuls.
//! `cargo bench -p reel-unet3d --bench temporal_conv`.

use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::module::{conv2d, conv3d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};

type B = NdArray<f32>;

fn time(label: &str, runs: usize, mut f: impl FnMut() -> Tensor<B, 4>) -> Tensor<B, 4> {
    let out = f();
    let t0 = Instant::now();
    for _ in 0..runs {
        let _ = f().into_data();
    }
    println!(
        "  {label:10} {:8.3} ms",
        t0.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
    out
}

fn main() {
    let d = Default::default();
    for (b, c, f, h, w) in [
        (1, 32, 8, 32, 32),
        (1, 64, 8, 16, 16),
        (1, 128, 8, 8, 8),
        (2, 320, 16, 8, 8),
    ] {
        println!("x [{b}, {c}, {f}, {h}, {w}], weight [{c}, {c}, 3, 1, 1]");
        let x = Tensor::<B, 5>::random([b, c, f, h, w], Distribution::Normal(0.0, 1.0), &d);
        let wt = Tensor::<B, 5>::random([c, c, 3, 1, 1], Distribution::Normal(0.0, 0.1), &d);
        let bias = Tensor::<B, 1>::random([c], Distribution::Normal(0.0, 0.1), &d);
        let runs = 10;
        let a = time("conv3d", runs, || {
            conv3d(
                x.clone(),
                wt.clone(),
                Some(bias.clone()),
                ConvOptions::new([1, 1, 1], [1, 0, 0], [1, 1, 1], 1),
            )
            .reshape([b, c, f, h * w])
        });
        let x4 = x.clone().reshape([b, c, f, h * w]);
        let w4 = wt.clone().reshape([c, c, 3, 1]);
        let b2 = time("conv2d", runs, || {
            conv2d(
                x4.clone(),
                w4.clone(),
                Some(bias.clone()),
                ConvOptions::new([1, 1], [1, 0], [1, 1], 1),
            )
        });
        let m = time("matmul", runs, || {
            // (b, f, c, n): out[t] = W0 x[t-1] + W1 x[t] + W2 x[t+1]
            let xt = x4.clone().swap_dims(1, 2);
            let zeros = Tensor::<B, 4>::zeros([b, 1, c, h * w], &d);
            let padded = Tensor::cat(vec![zeros.clone(), xt, zeros], 1);
            let mut out = bias.clone().reshape([1, 1, c, 1]);
            let mut acc: Option<Tensor<B, 4>> = None;
            for k in 0..3 {
                let wk = wt.clone().narrow(2, k, 1).reshape([1, 1, c, c]);
                let term = wk.matmul(padded.clone().narrow(1, k, f));
                acc = Some(match acc {
                    Some(a) => a + term,
                    None => term,
                });
            }
            out = out + acc.unwrap();
            out.swap_dims(1, 2)
        });
        let e1 = (a.clone() - b2).abs().max().into_scalar();
        let e2 = (a - m).abs().max().into_scalar();
        println!("  max |conv3d - conv2d| {e1:.2e}, max |conv3d - matmul| {e2:.2e}");
    }
}
