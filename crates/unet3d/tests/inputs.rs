//! Bad input and bad configs give clear `reel_core::Error`s, never a panic; edge sizes that
//! diffusers accepts (1×1 latents, 1 frame) run.

use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use reel_core::npy::Array;
use reel_core::testing::fixtures_dir;
use reel_core::{Error, ModelRepo};
use reel_unet3d::{Timestep, Unet3d};

type B = NdArray<f32>;

fn unet_a() -> Unet3d<B> {
    let repo = ModelRepo::local(fixtures_dir().join("pipelines/unet-a")).unwrap();
    Unet3d::load(&repo, "unet", None, &Default::default(), None).unwrap()
}

fn randn<const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

fn input_err(r: reel_core::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::Input(m)) => m,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn wrong_channels_rank_width_batch_timesteps() {
    let unet = unet_a(); // in_channels 4, cross_attention_dim 12
    let ehs = || randn([2, 77, 12]);

    let e = input_err(unet.forward(randn([2, 3, 2, 4, 6]), 5i64, ehs()));
    assert!(
        e.contains("3 channels") && e.contains("in_channels is 4"),
        "{e}"
    );

    let e = input_err(unet.forward(randn([2, 4, 2, 4, 6]), 5i64, randn([2, 77, 16])));
    assert!(
        e.contains("width 16") && e.contains("cross_attention_dim is 12"),
        "{e}"
    );

    let e = input_err(unet.forward(randn([2, 4, 2, 4, 6]), 5i64, randn([1, 77, 12])));
    assert!(e.contains("batch 1") && e.contains("batch 2"), "{e}");

    let e = input_err(unet.forward(
        randn([2, 4, 2, 4, 6]),
        Timestep::PerItem(vec![1.0, 2.0, 3.0]),
        ehs(),
    ));
    assert!(e.contains("3 timesteps given for a batch of 2"), "{e}");

    let e = input_err(unet.forward(randn([2, 4, 2, 4, 6]), f64::NAN, ehs()));
    assert!(e.contains("not a finite number"), "{e}");

    let e = input_err(unet.forward(randn([2, 4, 0, 4, 6]), 5i64, ehs()));
    assert!(e.contains("empty axis"), "{e}");

    let e = input_err(unet.forward(randn([2, 4, 2, 4, 6]), 5i64, randn([2, 0, 12])));
    assert!(e.contains("no tokens"), "{e}");

    // host arrays of the wrong rank
    let sample4 = Array {
        shape: vec![4, 2, 4, 6],
        data: vec![0.0; 4 * 2 * 4 * 6],
    };
    let ehs3 = Array {
        shape: vec![1, 77, 12],
        data: vec![0.0; 77 * 12],
    };
    let e = input_err(unet.forward_arrays(&sample4, 5i64, &ehs3));
    assert!(
        e.contains("5-dimensional") && e.contains("[4, 2, 4, 6]"),
        "{e}"
    );
    let sample5 = Array {
        shape: vec![1, 4, 2, 4, 6],
        data: vec![0.0; 4 * 2 * 4 * 6],
    };
    let ehs2 = Array {
        shape: vec![77, 12],
        data: vec![0.0; 77 * 12],
    };
    let e = input_err(unet.forward_arrays(&sample5, 5i64, &ehs2));
    assert!(e.contains("3-dimensional"), "{e}");

    let e = input_err("ten".parse::<Timestep>());
    assert!(e.contains("not a finite number"), "{e}");
    assert_eq!("999".parse::<Timestep>().unwrap(), Timestep::Int(999));
    assert_eq!("12.5".parse::<Timestep>().unwrap(), Timestep::Float(12.5));
    assert!("inf".parse::<Timestep>().is_err());
}

#[test]
fn edge_sizes_run() {
    let unet = unet_a();
    // 1×1 latents (every level 1×1, explicit upsample size 1×1), one frame, one token
    let out = unet
        .forward(randn([1, 4, 1, 1, 1]), 0i64, randn([1, 1, 12]))
        .unwrap();
    assert_eq!(out.dims(), [1, 4, 1, 1, 1]);
    // odd, non-square, per-item timesteps, float and int timesteps agree when equal
    let s = randn([2, 4, 3, 5, 3]);
    let e = randn([2, 7, 12]);
    let a = unet
        .forward(s.clone(), 7i64, e.clone())
        .unwrap()
        .into_data();
    let b = unet
        .forward(s.clone(), 7.0f64, e.clone())
        .unwrap()
        .into_data();
    let c = unet
        .forward(s, Timestep::PerItem(vec![7.0]), e)
        .unwrap()
        .into_data();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

fn copy_fixture(dst: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let src = fixtures_dir().join("pipelines/unet-a/unet");
    std::fs::create_dir_all(dst.join("unet")).unwrap();
    std::fs::copy(
        src.join("diffusion_pytorch_model.safetensors"),
        dst.join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(
        dst.join("unet/config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
}

fn load_err(edit: impl Fn(&mut serde_json::Value)) -> String {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path(), edit);
    let repo = ModelRepo::local(dir.path()).unwrap();
    Unet3d::<B>::load(&repo, "unet", None, &Default::default(), None)
        .unwrap_err()
        .to_string()
}

#[test]
fn too_small_for_downsample_padding_zero() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path(), |c| c["downsample_padding"] = 0.into());
    let repo = ModelRepo::local(dir.path()).unwrap();
    let unet = Unet3d::<B>::load(&repo, "unet", None, &Default::default(), None).unwrap();
    let e = input_err(unet.forward(randn([1, 4, 1, 1, 2]), 1i64, randn([1, 77, 12])));
    assert!(
        e.contains("too small") && e.contains("downsample_padding 0"),
        "{e}"
    );
    // 2×2 is reducible with padding 0 (to 1×1)
    assert_eq!(
        unet.forward(randn([1, 4, 1, 2, 2]), 1i64, randn([1, 77, 12]))
            .unwrap()
            .dims(),
        [1, 4, 1, 2, 2]
    );
}

#[test]
fn bad_configs_are_config_errors() {
    let e = load_err(|c| c["attention_head_dim"] = 3.into());
    assert!(e.contains("not a multiple of attention_head_dim 3"), "{e}");
    let e = load_err(|c| c["attention_head_dim"] = serde_json::json!([4, 4]));
    assert!(
        e.contains("attention_head_dim must be a positive integer"),
        "{e}"
    );
    let e = load_err(|c| c["num_attention_heads"] = 2.into());
    assert!(e.contains("num_attention_heads must be null"), "{e}");
    let e = load_err(|c| c["down_block_types"][1] = "SimpleDownBlock3D".into());
    assert!(
        e.contains("unsupported down block type \"SimpleDownBlock3D\""),
        "{e}"
    );
    let e = load_err(|c| c["up_block_types"] = serde_json::json!(["UpBlock3D"]));
    assert!(e.contains("must have the same length"), "{e}");
    let e = load_err(|c| c["norm_num_groups"] = 3.into());
    assert!(
        e.contains("not a positive multiple of norm_num_groups 3"),
        "{e}"
    );
    let e = load_err(|c| c["act_fn"] = "mish".into());
    assert!(e.contains("unsupported act_fn"), "{e}");
    let e = load_err(|c| c["_class_name"] = "UNet2DConditionModel".into());
    assert!(e.contains("UNet2DConditionModel"), "{e}");
    // a config that does not belong to the weights
    let e = load_err(|c| c["cross_attention_dim"] = 16.into());
    assert!(
        e.contains("attn2.to_k.weight") && e.contains("[12, 16]") || e.contains("has shape"),
        "{e}"
    );
    let e = load_err(|c| c["layers_per_block"] = 2.into());
    assert!(e.contains("missing"), "{e}");
}
