//! `pipelines.toml`: the shipped file parses and declares the promised pipelines; components
//! shared by stages and pipelines load once (and once per use under CPU offload); a multi-stage
//! pipeline equals its stages run one by one; bad files fail with the file, line and key.

use std::path::Path;

use burn::backend::NdArray;
use reel_core::testing::fixtures_dir;
use reel_core::HubSettings;
use reel_pipeline::config::PartKind;
use reel_pipeline::{run, ComponentStore, Error, Overrides, PipelineFile, StageKind, StoreOptions};

type B = NdArray<f32>;

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn store(file: PipelineFile, offload: bool) -> ComponentStore<B> {
    reel_scheduler_lcm::register();
    ComponentStore::new(
        file,
        StoreOptions {
            hub: HubSettings { offline: true, ..HubSettings::from_env() },
            dtype: None,
            vae_dtype: None,
            offload,
            device: Box::new(|name| match name {
                None | Some("cpu") => Ok(Default::default()),
                Some(other) => Err(format!("no device {other} in tests")),
            }),
        },
    )
}

fn parse(text: &str) -> Result<PipelineFile, Error> {
    reel_scheduler_lcm::register();
    PipelineFile::parse(text, Path::new("test.toml"), &fixtures_dir())
}

#[test]
fn shipped_file_declares_the_pipelines() {
    reel_scheduler_lcm::register();
    let file = PipelineFile::load(&repo_root().join("pipelines.toml")).unwrap();
    for id in ["tiny", "tiny-hd", "text-to-video-ms-1_7b", "zeroscope-v2-576w", "zeroscope-v2-xl", "zeroscope-hd"] {
        assert!(file.pipelines.contains_key(id), "pipelines.toml lacks {id}");
    }
    let hd = file.pipeline("zeroscope-hd").unwrap();
    let kinds: Vec<StageKind> = hd.stages.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StageKind::TextToVideo, StageKind::Resize, StageKind::VideoToVideo]);
    assert_eq!((hd.stages[1].defaults.height, hd.stages[1].defaults.width), (Some(576), Some(1024)));
    let ms = &file.pipeline("text-to-video-ms-1_7b").unwrap().stages[0];
    let unet = &ms.parts.as_ref().unwrap()[&PartKind::Unet];
    assert_eq!(file.components[&unet.component].source.get_ref(), "ali-vilab/text-to-video-ms-1.7b");
    assert_eq!(unet.subfolder, "unet");
}

const SHARED: &str = r#"
[components.base]
kind = "diffusers"
source = "pipelines/pipe-a"

[components.clip]
kind = "text-encoder"
source = "pipelines/pipe-a"

[components.second-unet]
kind = "unet"
source = "pipelines/pipe-a"
subfolder = "unet"

[pipelines.one]
[[pipelines.one.stages]]
type = "text-to-video"
model = "base"
text_encoder = "clip"
height = 16
width = 16
num_frames = 2
num_inference_steps = 2

[pipelines.two]
[[pipelines.two.stages]]
type = "text-to-video"
model = "base"
unet = "second-unet"
height = 16
width = 24
num_frames = 2
num_inference_steps = 3
scheduler_class = "EulerDiscreteScheduler"

[pipelines.chain]
[[pipelines.chain.stages]]
type = "text-to-video"
model = "base"
height = 16
width = 16
num_frames = 2
num_inference_steps = 2
[[pipelines.chain.stages]]
type = "resize"
height = 24
width = 32
[[pipelines.chain.stages]]
type = "video-to-video"
model = "base"
num_inference_steps = 4
strength = 0.5
"#;

fn overrides() -> Overrides {
    Overrides { prompt: Some("a tiny astronaut".into()), ..Default::default() }
}

#[test]
fn shared_components_load_once() {
    let file = parse(SHARED).unwrap();
    let mut s = store(file, false);
    let mut events = 0;
    for id in ["one", "two", "chain", "one"] {
        let (frames, report) = run(&mut s, id, &overrides(), 7, &mut |_| events += 1).unwrap();
        assert_eq!(frames.frames, 2, "{id}");
        assert!(!report.stages.is_empty());
    }
    // Four pipeline runs, five model stages: every part (the same files, same dtype/device)
    // loaded exactly once, whichever component id named it.
    for kind in [PartKind::Tokenizer, PartKind::TextEncoder, PartKind::Unet, PartKind::Vae] {
        assert_eq!(s.load_count(kind), 1, "{kind:?} loaded {} times: {:?}", s.load_count(kind), s.loads);
    }
    assert!(events > 0);
}

#[test]
fn cpu_offload_loads_per_use_and_gives_the_same_frames() {
    let file = parse(SHARED).unwrap();
    let mut plain = store(file.clone(), false);
    let mut offload = store(file, true);
    let (a, _) = run(&mut plain, "chain", &overrides(), 3, &mut |_| {}).unwrap();
    let (b, report) = run(&mut offload, "chain", &overrides(), 3, &mut |_| {}).unwrap();
    assert_eq!(a.data, b.data, "offload must not change the result");
    // Two model stages: each loads the text encoder and the UNet once, the VAE once (t2v:
    // decode) or twice (v2v: encode, then decode after the UNet is gone).
    assert_eq!(offload.load_count(PartKind::TextEncoder), 2);
    assert_eq!(offload.load_count(PartKind::Unet), 2);
    assert_eq!(offload.load_count(PartKind::Vae), 3);
    assert!(report.stages[0].timings.iter().any(|(k, _)| k == "load_unet"));
}

#[test]
fn a_chain_equals_its_stages_run_one_by_one() {
    let file = parse(SHARED).unwrap();
    let mut s = store(file.clone(), false);
    let (chained, report) = run(&mut s, "chain", &overrides(), 11, &mut |_| {}).unwrap();
    assert_eq!(report.stages.len(), 3);
    assert_eq!((chained.height, chained.width), (24, 32));

    // Stage 1 alone, then resize, then stage 3 alone on that video.
    let one = r#"
[components.base]
kind = "diffusers"
source = "pipelines/pipe-a"
[pipelines.t2v]
[[pipelines.t2v.stages]]
type = "text-to-video"
model = "base"
height = 16
width = 16
num_frames = 2
num_inference_steps = 2
[pipelines.v2v]
[[pipelines.v2v.stages]]
type = "video-to-video"
model = "base"
num_inference_steps = 4
strength = 0.5
"#;
    let mut s2 = store(parse(one).unwrap(), false);
    let (first, _) = run(&mut s2, "t2v", &overrides(), 11, &mut |_| {}).unwrap();
    let resized = reel_video::resize(&first, 24, 32);
    let o = Overrides { video: Some(resized), ..overrides() };
    let (last, _) = run(&mut s2, "v2v", &o, 11, &mut |_| {}).unwrap();
    assert_eq!(chained.data, last.data);
}

fn config_error(text: &str) -> (Option<usize>, String) {
    match parse(text) {
        Err(Error::Config { line, message, file }) => {
            assert_eq!(file, Path::new("test.toml"));
            (line, message)
        }
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error for:\n{text}"),
    }
}

#[test]
fn errors_name_the_file_line_and_key() {
    let base = "[components.base]\nkind = \"diffusers\"\nsource = \"pipelines/pipe-a\"\n\n[pipelines.p]\n[[pipelines.p.stages]]\ntype = \"text-to-video\"\n";
    // unknown component id
    let (line, msg) = config_error(&format!("{base}model = \"nope\"\n"));
    assert_eq!(line, Some(8), "{msg}");
    assert!(msg.contains("unknown component `nope`") && msg.contains("base"), "{msg}");
    // unknown key (deny_unknown_fields)
    let (line, msg) = config_error(&format!("{base}model = \"base\"\nheigth = 64\n"));
    assert_eq!(line, Some(9), "{msg}");
    assert!(msg.contains("heigth"), "{msg}");
    // height not a multiple of 8
    let (line, msg) = config_error(&format!("{base}model = \"base\"\nheight = 100\n"));
    assert_eq!(line, Some(9), "{msg}");
    assert!(msg.contains("height = 100") && msg.contains("multiple of 8"), "{msg}");
    // unknown scheduler: the known ones are listed
    let (line, msg) = config_error(&format!("{base}model = \"base\"\nscheduler_class = \"FooScheduler\"\n"));
    assert_eq!(line, Some(9), "{msg}");
    assert!(msg.contains("FooScheduler") && msg.contains("DDIMScheduler"), "{msg}");
    // strength out of range on a video-to-video stage
    let v2v = base.replace("text-to-video", "video-to-video");
    let (line, msg) = config_error(&format!("{v2v}model = \"base\"\nstrength = 1.5\n"));
    assert_eq!(line, Some(9), "{msg}");
    assert!(msg.contains("strength"), "{msg}");
    // zero frames
    let (_, msg) = config_error(&format!("{base}model = \"base\"\nnum_frames = 0\n"));
    assert!(msg.contains("num_frames"), "{msg}");
    // a part of the wrong kind
    let (_, msg) = config_error(&format!(
        "[components.u]\nkind = \"unet\"\nsource = \"x\"\n{}model = \"base\"\nvae = \"u\"\n",
        base
    ));
    assert!(msg.contains("is a unet, not a vae"), "{msg}");
    // no parts at all
    let (_, msg) = config_error("[pipelines.p]\n[[pipelines.p.stages]]\ntype = \"text-to-video\"\n");
    assert!(msg.contains("no tokenizer"), "{msg}");
    // TOML syntax error with its line
    let (line, _) = config_error("[components.a]\nkind = \n");
    assert_eq!(line, Some(2));
    // a resize stage with model keys
    let (_, msg) = config_error(&format!("{base}model = \"base\"\n[[pipelines.p.stages]]\ntype = \"resize\"\nheight = 64\nwidth = 64\nstrength = 0.5\n"));
    assert!(msg.contains("resize stage takes only"), "{msg}");
}

#[test]
fn run_time_input_errors_are_clear() {
    let file = parse(SHARED).unwrap();
    let mut s = store(file, false);
    let bad = |o: Overrides, id: &str| match run(&mut store(parse(SHARED).unwrap(), false), id, &o, 1, &mut |_| {}) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    };
    assert!(bad(Overrides { height: Some(100), ..overrides() }, "one").contains("multiple of 8"));
    assert!(bad(Overrides { num_frames: Some(0), ..overrides() }, "one").contains("at least 1"));
    assert!(bad(Overrides { strength: Some(1.5), ..overrides() }, "chain").contains("outside [0, 1]"));
    assert!(bad(Overrides { strength: Some(0.5), ..overrides() }, "one").contains("no video-to-video"));
    assert!(bad(Overrides { prompt: None, ..overrides() }, "one").contains("prompt"));
    // strength so low that no step remains
    let msg = bad(Overrides { strength: Some(0.1), ..overrides() }, "chain");
    assert!(msg.contains("leaves no denoising step"), "{msg}");
    // an unknown pipeline lists the declared ones
    let msg = match run(&mut s, "nope", &overrides(), 1, &mut |_| {}) {
        Err(e) => e.to_string(),
        Ok(_) => panic!(),
    };
    assert!(msg.contains("chain, one, two"), "{msg}");
}
