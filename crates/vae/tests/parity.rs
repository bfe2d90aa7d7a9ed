//! Parity of `reel_vae::Vae` with diffusers 0.42.1's `AutoencoderKL` on every VAE fixture
//! (`tests/fixtures/reference/{tiny-a,tiny-b,tiny-c}`, written by `tools/reference/vae.py`):
//! posterior mean / logvar / std / sample, decode, tiled encode / decode with the tile
//! parameters recorded in `meta.json`, and slicing == the plain path.

use burn::tensor::Tensor;
use reel_core::npy::{self, Array};
use reel_core::testing::{assert_close, fixtures_dir};
use reel_core::ModelRepo;
use reel_vae::{Tiling, Vae};
use serde_json::Value;

type B = burn::backend::NdArray<f32>;

/// Max abs error ≤ TOL × the reference's largest magnitude.
const TOL: f32 = 1e-4;

const FIXTURES: [&str; 3] = ["tiny-a", "tiny-b", "tiny-c"];

struct Fixture {
    name: &'static str,
    meta: Value,
    vae: Vae<B>,
}

impl Fixture {
    fn load(name: &'static str) -> Self {
        let refdir = fixtures_dir().join("reference").join(name);
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(refdir.join("meta.json")).unwrap()).unwrap();
        let variant = meta["vae"]["variant"].as_str();
        let repo = ModelRepo::local(fixtures_dir().join("pipelines").join(name)).unwrap();
        let device = Default::default();
        let vae = Vae::<B>::load(&repo, "vae", variant, &device, None)
            .unwrap_or_else(|e| panic!("{name}: loading the VAE: {e}"));
        Fixture { name, meta, vae }
    }

    fn array(&self, file: &str) -> Array {
        npy::read(fixtures_dir().join("reference").join(self.name).join(file)).unwrap()
    }

    fn tensor(&self, file: &str) -> Tensor<B, 4> {
        self.array(file).to_tensor::<B, 4>(self.vae.device()).unwrap()
    }

    fn check(&self, what: &str, got: Tensor<B, 4>, file: &str) {
        let want = self.array(file);
        let got = Array::from_tensor(got).unwrap();
        assert_close(&format!("{} {what}", self.name), &got.shape, &got.data, &want.shape, &want.data, TOL);
    }

    fn tiling(&self) -> Tiling {
        let t = &self.meta["vae"]["tiling"];
        Tiling {
            tile_sample_min_size: t["tile_sample_min_size"].as_u64().unwrap() as usize,
            tile_latent_min_size: t["tile_latent_min_size"].as_u64().unwrap() as usize,
            tile_overlap_factor: t["tile_overlap_factor"].as_f64().unwrap(),
        }
    }
}

fn encode(name: &'static str) {
    let f = Fixture::load(name);
    assert_eq!(f.vae.scaling_factor(), f.meta["vae"]["scaling_factor"].as_f64().unwrap());
    let post = f.vae.encode(f.tensor("vae_x.npy")).unwrap();
    f.check("mean", post.mean.clone(), "vae_mean.npy");
    f.check("logvar", post.logvar.clone(), "vae_logvar.npy");
    f.check("std", post.std.clone(), "vae_std.npy");
    let sample = post.sample(f.tensor("vae_noise.npy")).unwrap();
    f.check("sample", sample, "vae_sample.npy");
    // the clamp: tiny-c pushes logvar channel 0 below -30
    let clamped = f.meta["vae"]["logvar_clamped_fraction"].as_f64().unwrap();
    let logvar = Array::from_tensor(post.logvar).unwrap();
    let at_min = logvar.data.iter().filter(|v| **v <= -30.0).count() as f64 / logvar.data.len() as f64;
    assert_eq!(at_min, clamped, "{name}: fraction of logvar at the clamp");
    assert!(logvar.data.iter().all(|v| (-30.0..=20.0).contains(v)));
}

fn decode(name: &'static str) {
    let f = Fixture::load(name);
    let dec = f.vae.decode(f.tensor("vae_z.npy")).unwrap();
    f.check("decode", dec, "vae_decode.npy");
}

fn tiled(name: &'static str) {
    let mut f = Fixture::load(name);
    let tiling = f.tiling();
    f.vae.enable_tiling(Some(tiling));
    let t = &f.meta["vae"]["tiling"];
    let x_file = t["x_file"].as_str().unwrap().to_string();
    let z_file = t["z_file"].as_str().unwrap().to_string();
    let (overlap, blend, limit) = tiling.steps(true).unwrap();
    assert_eq!(
        [overlap, blend, limit],
        ["encode_overlap_size", "encode_blend_extent", "encode_row_limit"].map(|k| t[k].as_u64().unwrap() as usize)
    );
    let (overlap, blend, limit) = tiling.steps(false).unwrap();
    assert_eq!(
        [overlap, blend, limit],
        ["decode_overlap_size", "decode_blend_extent", "decode_row_limit"].map(|k| t[k].as_u64().unwrap() as usize)
    );
    let mean = f.vae.encode(f.tensor(&x_file)).unwrap().mean;
    f.check("tiled mean", mean, "vae_tiled_mean.npy");
    let dec = f.vae.decode(f.tensor(&z_file)).unwrap();
    f.check("tiled decode", dec, "vae_tiled_decode.npy");
    // tiling and slicing together (diffusers slices first, then tiles each slice)
    f.vae.enable_slicing(1).unwrap();
    let dec = f.vae.decode(f.tensor(&z_file)).unwrap();
    f.check("tiled + sliced decode", dec, "vae_tiled_decode.npy");
}

fn slicing(name: &'static str) {
    let mut f = Fixture::load(name);
    let x = f.tensor("vae_x.npy");
    let z = f.tensor("vae_z.npy");
    let n = x.dims()[0];
    let plain_mean = Array::from_tensor(f.vae.encode(x.clone()).unwrap().mean).unwrap();
    let plain_dec = Array::from_tensor(f.vae.decode(z.clone()).unwrap()).unwrap();
    for k in [1, 2] {
        f.vae.enable_slicing(k).unwrap();
        let what = format!("{name} sliced by {k} of {n}");
        let mean = Array::from_tensor(f.vae.encode(x.clone()).unwrap().mean).unwrap();
        assert_close(&format!("{what}: mean"), &mean.shape, &mean.data, &plain_mean.shape, &plain_mean.data, TOL);
        let dec = Array::from_tensor(f.vae.decode(z.clone()).unwrap()).unwrap();
        assert_close(&format!("{what}: decode"), &dec.shape, &dec.data, &plain_dec.shape, &plain_dec.data, TOL);
        // and against diffusers' (unsliced) reference
        f.check(&format!("sliced by {k}: mean"), f.vae.encode(x.clone()).unwrap().mean, "vae_mean.npy");
    }
    f.vae.disable_slicing();
}

macro_rules! fixture_tests {
    ($($module:ident => $name:literal),*) => {$(
        mod $module {
            #[test]
            fn encode() { super::encode($name) }
            #[test]
            fn decode() { super::decode($name) }
            #[test]
            fn tiled() { super::tiled($name) }
            #[test]
            fn slicing() { super::slicing($name) }
        }
    )*};
}

fixture_tests!(tiny_a => "tiny-a", tiny_b => "tiny-b", tiny_c => "tiny-c");

#[test]
fn every_vae_fixture_is_tested() {
    for name in FIXTURES {
        let meta = fixtures_dir().join("reference").join(name).join("meta.json");
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(meta).unwrap()).unwrap();
        let files: Vec<&str> = meta["files"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        for f in ["vae_x.npy", "vae_mean.npy", "vae_logvar.npy", "vae_std.npy", "vae_noise.npy", "vae_sample.npy",
            "vae_z.npy", "vae_decode.npy", "vae_tiled_mean.npy", "vae_tiled_decode.npy"]
        {
            assert!(files.contains(&f), "{name}: meta.json lists no {f}");
        }
    }
    // no other fixture has VAE references
    for entry in std::fs::read_dir(fixtures_dir().join("reference")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.path().join("vae_mean.npy").exists() {
            assert!(FIXTURES.contains(&name.as_str()), "fixture {name} has VAE references but no test");
        }
    }
}
