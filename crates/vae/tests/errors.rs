//! Bad inputs and bad folders give `reel_core::Error`s that say what is wrong, never a panic;
//! the edges diffusers accepts (odd frame sizes, tiny latents) work.

use std::path::{Path, PathBuf};

use burn::tensor::{Distribution, Tensor};
use reel_core::npy::{self, Array};
use reel_core::testing::{assert_close, fixtures_dir};
use reel_core::{Error, ModelRepo};
use reel_vae::{Tiling, Vae};

type B = burn::backend::NdArray<f32>;

fn vae_dir(name: &str) -> PathBuf {
    fixtures_dir().join("pipelines").join(name)
}

fn load(name: &str, variant: Option<&str>) -> Vae<B> {
    let repo = ModelRepo::local(vae_dir(name)).unwrap();
    Vae::load(&repo, "vae", variant, &Default::default(), None).unwrap()
}

fn rand(shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &Default::default())
}

#[track_caller]
fn input_error<T: std::fmt::Debug>(r: reel_core::Result<T>, needles: &[&str]) -> String {
    match r {
        Err(Error::Input(msg)) => {
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} should mention {n:?}");
            }
            eprintln!("ok: {msg}");
            msg
        }
        other => panic!("expected an Input error mentioning {needles:?}, got {other:?}"),
    }
}

#[test]
fn wrong_channels() {
    let vae = load("tiny-a", None);
    input_error(vae.encode(rand([1, 4, 16, 16])), &["encode", "3 channels", "[1, 4, 16, 16]"]);
    input_error(vae.decode(rand([1, 3, 4, 4])), &["decode", "4 channels", "[1, 3, 4, 4]"]);
    let c = load("tiny-c", None);
    input_error(c.decode(rand([1, 4, 4, 4])), &["decode", "8 channels"]);
}

#[test]
fn wrong_rank_from_arrays() {
    let vae = load("tiny-a", None);
    let a3 = Array { shape: vec![3, 16, 16], data: vec![0.0; 3 * 16 * 16] };
    input_error(vae.encode_array(&a3), &["encode", "4-dimensional", "[3, 16, 16]"]);
    let a5 = Array { shape: vec![1, 4, 2, 4, 4], data: vec![0.0; 128] };
    input_error(vae.decode_array(&a5), &["decode", "4-dimensional", "b·f"]);
}

#[test]
fn empty_batch() {
    let vae = load("tiny-a", None);
    input_error(vae.encode(Tensor::zeros([0, 3, 16, 16], &Default::default())), &["empty"]);
    input_error(vae.decode(Tensor::zeros([1, 4, 0, 4], &Default::default())), &["empty"]);
}

#[test]
fn frames_too_small_for_the_encoder() {
    // tiny-b downsamples by 4 (two padding-0 stride-2 convs): PyTorch raises below 4 pixels
    let vae = load("tiny-b", Some("fp16"));
    input_error(vae.encode(rand([1, 3, 3, 40])), &["3×40", "at least 4×4"]);
    input_error(vae.encode(rand([1, 3, 24, 1])), &["24×1"]);
    assert_eq!(vae.encode(rand([1, 3, 4, 4])).unwrap().mean.dims(), [1, 4, 1, 1]);
    // any latent size decodes
    assert_eq!(vae.decode(rand([1, 4, 1, 1])).unwrap().dims(), [1, 3, 4, 4]);
}

#[test]
fn odd_sizes_encode_like_diffusers() {
    // diffusers encodes sizes that are not multiples of the downsampling factor: each
    // pad(0,1,0,1) + stride-2 conv gives floor((n - 2) / 2) + 1 (checked against diffusers 0.42.1:
    // tiny-a 31×27 → 15×13, tiny-b → 7×6; 3 → 1, 7 → 3 on tiny-a)
    let a = load("tiny-a", None);
    assert_eq!(a.encode(rand([2, 3, 31, 27])).unwrap().mean.dims(), [2, 4, 15, 13]);
    assert_eq!(a.latent_size(7, 3).unwrap(), (3, 1));
    let b = load("tiny-b", Some("fp16"));
    assert_eq!(b.encode(rand([2, 3, 31, 27])).unwrap().mean.dims(), [2, 4, 7, 6]);
}

#[test]
fn noise_shape_must_match() {
    let vae = load("tiny-a", None);
    let post = vae.encode(rand([2, 3, 16, 16])).unwrap();
    input_error(post.sample(rand([2, 4, 8, 9])), &["noise", "[2, 4, 8, 9]", "[2, 4, 8, 8]"]);
}

#[test]
fn bad_tiling_and_slicing_options() {
    let mut vae = load("tiny-a", None);
    input_error(vae.enable_slicing(0), &["at least 1"]);
    let t = Tiling { tile_sample_min_size: 16, tile_latent_min_size: 8, tile_overlap_factor: 1.0 };
    vae.enable_tiling(Some(t));
    input_error(vae.encode(rand([1, 3, 32, 32])), &["tile_overlap_factor"]);
    // int(1 * (1 - 0.5)) == 0: diffusers' range() would get a zero step
    let t = Tiling { tile_sample_min_size: 16, tile_latent_min_size: 1, tile_overlap_factor: 0.5 };
    vae.enable_tiling(Some(t));
    input_error(vae.decode(rand([1, 4, 4, 4])), &["stride of 0"]);
    // a 25-wide frame with stride 12 leaves a 1-pixel edge tile, too small for the encoder
    let t = Tiling { tile_sample_min_size: 16, tile_latent_min_size: 8, tile_overlap_factor: 0.25 };
    vae.enable_tiling(Some(t));
    input_error(vae.encode(rand([1, 3, 16, 25])), &["tiled encode", "column 24", "16×1 pixels", "at least 2×2"]);
    // default tiling from the config: sample_size 32 → tiles of 32 / 16, nothing tiled at 32×32
    vae.enable_tiling(None);
    assert_eq!(
        vae.tiling(),
        Some(Tiling { tile_sample_min_size: 32, tile_latent_min_size: 16, tile_overlap_factor: 0.25 })
    );
}

/// Copies a fixture's `vae/` folder into a temp dir, letting `edit` change the config JSON.
fn copy_vae(name: &str, edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("vae");
    std::fs::create_dir(&dst).unwrap();
    for entry in std::fs::read_dir(vae_dir(name).join("vae")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    let cfg_path = dst.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    tmp
}

fn load_dir(dir: &Path) -> reel_core::Result<Vae<B>> {
    Vae::load(&ModelRepo::local(dir).unwrap(), "vae", None, &Default::default(), None)
}

#[test]
fn bad_configs() {
    let tmp = copy_vae("tiny-a", |c| c["_class_name"] = "AutoencoderKLTemporalDecoder".into());
    assert!(matches!(load_dir(tmp.path()), Err(Error::WrongClass { .. })));

    let tmp = copy_vae("tiny-a", |c| c["down_block_types"][0] = "AttnDownEncoderBlock2D".into());
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }) && err.to_string().contains("AttnDownEncoderBlock2D"), "{err}");

    let tmp = copy_vae("tiny-a", |c| c["norm_num_groups"] = 5.into());
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("norm_num_groups"), "{err}");

    let tmp = copy_vae("tiny-a", |c| c["act_fn"] = "mish".into());
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("mish"), "{err}");

    // config that does not belong to the weights
    let tmp = copy_vae("tiny-a", |c| c["latent_channels"] = 8.into());
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let tmp = copy_vae("tiny-a", |c| c["mid_block_add_attention"] = false.into());
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::UnusedTensor { .. }), "{err}");
}

/// Old diffusers checkpoints name the mid-block attention `query` / `key` / `value` /
/// `proj_attn`; diffusers renames them on load, and so does reel.
#[test]
fn deprecated_attention_keys_load() {
    let tmp = copy_vae("tiny-a", |_| {});
    let path = tmp.path().join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut renamed = 0;
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let mut key = k.clone();
            for (new, old) in [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")] {
                if k.contains(".attentions.") && k.contains(&format!(".{new}.")) {
                    key = k.replace(&format!(".{new}."), &format!(".{old}."));
                    renamed += 1;
                }
            }
            (key, v)
        })
        .collect();
    assert_eq!(renamed, 16, "2 attention blocks × 4 projections × weight/bias");
    std::fs::write(&path, safetensors::tensor::serialize(tensors, None).unwrap()).unwrap();
    let vae = load_dir(tmp.path()).unwrap();
    let refdir = fixtures_dir().join("reference/tiny-a");
    let x = npy::read(refdir.join("vae_x.npy")).unwrap();
    let want = npy::read(refdir.join("vae_mean.npy")).unwrap();
    let got = Array::from_tensor(vae.encode_array(&x).unwrap().mean).unwrap();
    assert_close("tiny-a with deprecated attention keys: mean", &got.shape, &got.data, &want.shape, &want.data, 1e-4);
}
