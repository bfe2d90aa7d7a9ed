//! Parity of `UNet3DConditionModel` with what diffusers 0.42.1 computed on the committed fixtures
//! (`tools/reference/unet3d.py`): the whole model's `.sample`, every recorded block output
//! (`act.<module path>.npy`, in execution order), and feed-forward chunking.
//!
//! Tolerance: max abs error ≤ 1e-4 × the reference's largest magnitude for the output and for
//! every block output along one forward (errors accumulate through the network), ≤ 1e-5 × for
//! each block run alone on diffusers' recorded input (f32 throughout; weights stored in f16/bf16
//! are exactly representable in f32 and the references were computed from the rounded values).

use burn::backend::NdArray;
use reel_core::npy;
use reel_core::testing::{assert_close, closeness, fixtures_dir};
use reel_core::ModelRepo;
use reel_unet3d::{Timestep, Trace, Unet3d};
use serde_json::Value;

type B = NdArray<f32>;
const TOL: f32 = 1e-4;
/// Blocks run alone on diffusers' recorded inputs (no accumulated error).
const ISOLATED_TOL: f32 = 1e-5;

fn reference(name: &str) -> std::path::PathBuf {
    fixtures_dir().join("reference").join(name)
}

fn meta(name: &str) -> Value {
    let path = reference(name).join("meta.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(name: &str) -> (Unet3d<B>, Value) {
    let meta = meta(name);
    let repo = ModelRepo::local(fixtures_dir().join("pipelines").join(name)).unwrap();
    let variant = meta["unet"]["variant"].as_str();
    let unet = Unet3d::<B>::load(&repo, "unet", variant, &Default::default(), None).unwrap();
    (unet, meta)
}

fn timestep(meta: &Value) -> Timestep {
    let t = &meta["unet"]["timestep"];
    match t["kind"].as_str().unwrap() {
        "int" => Timestep::Int(t["value"].as_i64().unwrap()),
        "float" => Timestep::Float(t["value"].as_f64().unwrap()),
        _ => Timestep::PerItem(
            t["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect(),
        ),
    }
}

fn inputs(name: &str) -> (npy::Array, npy::Array) {
    (
        npy::read(reference(name).join("unet_sample.npy")).unwrap(),
        npy::read(reference(name).join("unet_encoder_hidden_states.npy")).unwrap(),
    )
}

/// Whole model and every block against the references; returns the output.
fn check_model(name: &str) {
    let (unet, meta) = load(name);
    let (sample, ehs) = inputs(name);
    let device = Default::default();
    let mut trace = Trace::<B>::on();
    let out = unet
        .forward_traced(
            sample.to_tensor(&device).unwrap(),
            timestep(&meta),
            ehs.to_tensor(&device).unwrap(),
            &mut trace,
        )
        .unwrap();
    let out = npy::Array::from_tensor(out).unwrap();

    let names: Vec<&str> = meta["unet"]["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let got: Vec<&str> = trace.records.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        got, names,
        "{name}: recorded blocks (names and order) differ from diffusers'"
    );
    let mut worst = (0f32, String::new());
    for (path, shape, t) in trace.records {
        let want = npy::read(reference(name).join(format!("act.{path}.npy"))).unwrap();
        let data = t.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        assert_eq!(shape, want.shape, "{name} {path}: shape");
        let c = closeness(&data, &want.data);
        eprintln!(
            "{name} block {path:45} max abs err {:.3e} (ref max {:.3e}, rel {:.3e})",
            c.max_abs_err,
            c.ref_max_abs,
            c.rel()
        );
        assert!(
            c.rel() <= TOL,
            "{name} block {path}: relative error {:.3e} exceeds {TOL:.0e}",
            c.rel()
        );
        if c.rel() > worst.0 {
            worst = (c.rel(), path.clone());
        }
    }
    eprintln!(
        "{name}: worst block {} (rel {:.3e}) over {} blocks",
        worst.1,
        worst.0,
        names.len()
    );
    let want = npy::read(reference(name).join("unet_out.npy")).unwrap();
    assert_close(
        &format!("{name} unet_out"),
        &out.shape,
        &out.data,
        &want.shape,
        &want.data,
        TOL,
    );
}

/// Feed-forward chunking as the fixture asked diffusers for it: equal to the chunked reference,
/// and to reel's plain path.
fn check_chunking(name: &str) {
    let (mut unet, meta) = load(name);
    let (sample, ehs) = inputs(name);
    let plain = unet.forward_arrays(&sample, timestep(&meta), &ehs).unwrap();
    let c = &meta["unet"]["chunking"];
    unet.enable_forward_chunking(
        Some(c["chunk_size"].as_u64().unwrap() as usize),
        c["dim"].as_u64().unwrap() as usize,
    )
    .unwrap();
    let chunked = unet.forward_arrays(&sample, timestep(&meta), &ehs).unwrap();
    let want = npy::read(reference(name).join("unet_out_chunked.npy")).unwrap();
    assert_close(
        &format!("{name} chunked vs diffusers chunked"),
        &chunked.shape,
        &chunked.data,
        &want.shape,
        &want.data,
        TOL,
    );
    assert_close(
        &format!("{name} chunked vs reel plain"),
        &chunked.shape,
        &chunked.data,
        &plain.shape,
        &plain.data,
        1e-5,
    );
    // other chunkings, including ones diffusers refuses (size not a multiple): same result
    for (size, dim) in [(1, 0), (1, 1), (2, 1), (5, 0), (1000, 1)] {
        unet.enable_forward_chunking(Some(size), dim).unwrap();
        let other = unet.forward_arrays(&sample, timestep(&meta), &ehs).unwrap();
        assert_close(
            &format!("{name} chunk {size} dim {dim} vs plain"),
            &other.shape,
            &other.data,
            &plain.shape,
            &plain.data,
            1e-5,
        );
    }
    unet.disable_forward_chunking();
    let again = unet.forward_arrays(&sample, timestep(&meta), &ehs).unwrap();
    assert_eq!(
        again, plain,
        "{name}: disabling chunking restores the plain path"
    );
}

#[test]
fn unet_a_two_levels_int_timestep() {
    check_model("unet-a");
}

#[test]
fn unet_b_three_levels_odd_latents_fractional_timestep() {
    check_model("unet-b");
}

#[test]
fn unet_c_four_levels_fp16_variant_one_frame_per_item_timesteps() {
    check_model("unet-c");
}

#[test]
fn unet_d_sixteen_frames_odd_nonsquare_bf16() {
    check_model("unet-d");
}

#[test]
fn chunking_unet_a() {
    check_chunking("unet-a");
}

#[test]
fn chunking_unet_b() {
    check_chunking("unet-b");
}

#[test]
fn chunking_unet_c() {
    check_chunking("unet-c");
}

#[test]
fn chunking_unet_d() {
    check_chunking("unet-d");
}

/// Each block run on its own, on diffusers' recorded input (the previous block's reference
/// output, the skip states for up-block resnets, the reference time embedding), against diffusers'
/// output: per-block errors that do not accumulate.
fn check_blocks_isolated(name: &str) {
    use burn::tensor::Tensor;
    let (unet, meta) = load(name);
    let (sample, ehs) = inputs(name);
    let device = Default::default();
    let m = &unet.model;
    let [b, c, f, h, w] = sample.shape[..] else {
        panic!()
    };
    let act = |n: &str| npy::read(reference(name).join(format!("act.{n}.npy"))).unwrap();
    let t4 = |a: &npy::Array| a.to_tensor::<B, 4>(&device).unwrap();
    let emb = act("time_embedding").to_tensor::<B, 2>(&device).unwrap();
    let e = emb.dims()[1];
    let emb = emb
        .unsqueeze_dim::<3>(1)
        .repeat_dim(1, f)
        .reshape([b * f, e]);
    let ehs = ehs.to_tensor::<B, 3>(&device).unwrap();
    let [_, seq, dim] = ehs.dims();
    let ehs = ehs
        .unsqueeze_dim::<4>(1)
        .repeat_dim(1, f)
        .reshape([b * f, seq, dim]);
    let explicit = meta["unet"]["explicit_upsample_size"].as_bool().unwrap();

    let names: Vec<String> = meta["unet"]["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut skips: Vec<Tensor<B, 4>> = Vec::new();
    let mut prev: Option<String> = None;
    let mut worst = (0f32, String::new());
    for n in &names {
        let parts: Vec<&str> = n.split('.').collect();
        let input = || t4(&act(prev.as_deref().unwrap()));
        let got: Tensor<B, 4> = match parts[..] {
            ["time_proj"] => {
                let ts = timestep(&meta).per_item(b).unwrap();
                m.time_proj.forward::<B>(&ts, &device).unsqueeze()
            }
            ["time_embedding"] => m
                .time_embedding
                .forward(act("time_proj").to_tensor(&device).unwrap())
                .unsqueeze(),
            ["conv_in"] => m.conv_in.forward(
                sample
                    .to_tensor::<B, 5>(&device)
                    .unwrap()
                    .swap_dims(1, 2)
                    .reshape([b * f, c, h, w]),
            ),
            ["transformer_in"] => {
                let out = m.transformer_in.forward(input(), f);
                skips.push(t4(&act(n)));
                out
            }
            ["conv_norm_out"] => m.conv_norm_out.as_ref().unwrap().forward(input()),
            ["conv_out"] => m.conv_out.forward(burn::tensor::activation::silu(input())),
            _ => {
                // <down_blocks|up_blocks>.i.<kind>.j or mid_block.<kind>.j
                let (block, i, kind, j) = match parts[..] {
                    ["mid_block", kind, j] => ("mid_block", 0, kind, j.parse::<usize>().unwrap()),
                    [block, i, kind, j] => (block, i.parse().unwrap(), kind, j.parse().unwrap()),
                    _ => panic!("unexpected activation {n}"),
                };
                let (resnets, temp_convs, attentions, temp_attentions) = match block {
                    "down_blocks" => {
                        let bl = &m.down_blocks[i];
                        (
                            &bl.resnets,
                            &bl.temp_convs,
                            &bl.attentions,
                            &bl.temp_attentions,
                        )
                    }
                    "up_blocks" => {
                        let bl = &m.up_blocks[i];
                        (
                            &bl.resnets,
                            &bl.temp_convs,
                            &bl.attentions,
                            &bl.temp_attentions,
                        )
                    }
                    _ => (
                        &m.mid_block.resnets,
                        &m.mid_block.temp_convs,
                        &m.mid_block.attentions,
                        &m.mid_block.temp_attentions,
                    ),
                };
                let out = match kind {
                    "resnets" if block == "up_blocks" => {
                        let skip = skips.pop().unwrap();
                        resnets[j].forward(Tensor::cat(vec![input(), skip], 1), Some(emb.clone()))
                    }
                    "resnets" => resnets[j].forward(input(), Some(emb.clone())),
                    "temp_convs" => temp_convs[j].forward(input(), f),
                    "attentions" => attentions[j].forward(input(), Some(ehs.clone())),
                    "temp_attentions" => temp_attentions[j].forward(input(), f),
                    "downsamplers" => m.down_blocks[i].downsamplers[j].forward(input()),
                    "upsamplers" => {
                        let size = explicit.then(|| {
                            let [_, _, sh, sw] = skips.last().unwrap().dims();
                            [sh, sw]
                        });
                        m.up_blocks[i].upsamplers[j].forward(input(), size)
                    }
                    _ => panic!("unexpected activation {n}"),
                };
                // the states a down block hands to the up blocks: each layer's output, the downsampled one
                let layer_out = kind == "downsamplers"
                    || kind == "temp_attentions"
                    || (kind == "temp_convs" && attentions.is_empty());
                if block == "down_blocks" && layer_out {
                    skips.push(t4(&act(n)));
                }
                out
            }
        };
        let want = act(n);
        let got_shape = got.dims().to_vec();
        let data = got.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        let shape: Vec<usize> = if n == "time_proj" || n == "time_embedding" {
            got_shape[2..4].to_vec()
        } else {
            got_shape
        };
        assert_eq!(shape, want.shape, "{name} {n}: shape");
        let cl = closeness(&data, &want.data);
        eprintln!(
            "{name} isolated {n:45} max abs err {:.3e} (ref max {:.3e}, rel {:.3e})",
            cl.max_abs_err,
            cl.ref_max_abs,
            cl.rel()
        );
        assert!(
            cl.rel() <= ISOLATED_TOL,
            "{name} isolated block {n}: relative error {:.3e} exceeds {ISOLATED_TOL:.0e}",
            cl.rel()
        );
        if cl.rel() > worst.0 {
            worst = (cl.rel(), n.clone());
        }
        prev = Some(n.clone());
    }
    assert!(
        skips.is_empty(),
        "{name}: {} skip states left over",
        skips.len()
    );
    eprintln!(
        "{name}: isolated worst block {} (rel {:.3e}) over {} blocks",
        worst.1,
        worst.0,
        names.len()
    );
}

#[test]
fn isolated_blocks_unet_a() {
    check_blocks_isolated("unet-a");
}

#[test]
fn isolated_blocks_unet_b() {
    check_blocks_isolated("unet-b");
}

#[test]
fn isolated_blocks_unet_c() {
    check_blocks_isolated("unet-c");
}

#[test]
fn isolated_blocks_unet_d() {
    check_blocks_isolated("unet-d");
}
