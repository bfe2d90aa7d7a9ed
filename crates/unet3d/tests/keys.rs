//! The full-size text-to-video-ms-1.7b UNet built from its config (no weights, no forward) has
//! exactly the parameter names and shapes of diffusers' model for the same config
//! (`tests/fixtures/unet3d/ms-1.7b-keys.tsv`, written by `tools/reference/unet3d.py` from
//! `UNet3DConditionModel(**config)` on the meta device), so the real checkpoints load by name.

use std::collections::BTreeMap;

use burn::backend::NdArray;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use reel_core::config::{check_class, parse_config};
use reel_core::testing::fixtures_dir;
use reel_unet3d::{UNet3DConditionConfig, Unet3d};

type B = NdArray<f32>;

#[derive(Default)]
struct Shapes {
    path: Vec<String>,
    out: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor<B> for Shapes {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let key = self.path.join(".");
        assert!(
            self.out
                .insert(key.clone(), param.lazy_shape().dims::<D>().to_vec())
                .is_none(),
            "duplicate {key}"
        );
    }
}

fn diffusers_keys() -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixtures_dir().join("unet3d/ms-1.7b-keys.tsv")).unwrap();
    text.lines()
        .map(|l| {
            let (k, s) = l.split_once('\t').unwrap();
            (
                k.to_string(),
                s.split(',').map(|d| d.parse().unwrap()).collect(),
            )
        })
        .collect()
}

#[test]
fn ms_1_7b_parameter_names_and_shapes_equal_diffusers() {
    let path = fixtures_dir().join("unet3d/ms-1.7b-config.json");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    check_class(&path, &value, &["UNet3DConditionModel"]).unwrap();
    let config: UNet3DConditionConfig = parse_config(&path, value).unwrap();
    assert_eq!(config.block_out_channels, [320, 640, 1280, 1280]);
    let model = Unet3d::<B>::build(&config, &Default::default()).unwrap();
    let mut shapes = Shapes::default();
    model.visit(&mut shapes);
    let ours = shapes.out;
    let want = diffusers_keys();
    let missing: Vec<_> = want.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from reel: {missing:?}\nnot in diffusers: {extra:?}"
    );
    for (k, s) in &want {
        assert_eq!(&ours[k], s, "shape of {k}");
    }
    let params: usize = want.values().map(|s| s.iter().product::<usize>()).sum();
    eprintln!(
        "{} tensors, {params} parameters: names and shapes equal diffusers'",
        want.len()
    );
    assert_eq!(want.len(), 1480);
}

#[test]
fn default_config_is_ms_1_7b() {
    // diffusers' UNet3DConditionModel defaults are the ms-1.7b architecture
    let path = fixtures_dir().join("unet3d/ms-1.7b-config.json");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut from_file: UNet3DConditionConfig = parse_config(&path, value).unwrap();
    from_file.sample_size = None;
    assert_eq!(from_file, UNet3DConditionConfig::default());
}
