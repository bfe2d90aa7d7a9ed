//! `reel generate` and `reel pipelines` as a user runs them: end-to-end parity with diffusers for
//! every recorded run (every registered scheduler, text-to-video and video-to-video, fixed
//! latents and seeded runs), valid mp4 / gif / png / npy outputs, and bad inputs that exit
//! non-zero with a clear message and leave no output behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reel_core::npy;
use reel_core::testing::{closeness, fixtures_dir};
use serde_json::Value;

mod common;
use common::args_for;

/// Frames are in [0, 1]; f32 against torch f32 on CPU.
const FRAMES_TOL: f32 = 2e-4;
/// f16 weights and activations against diffusers' f32 frames. diffusers itself, rerun in f16 on
/// the CPU (`tools/reference/precision_drift.py`), moves these runs' frames by up to 1.7e-2
/// (text-to-video), 9.0e-2 (video-to-video, KDPM2 ancestral) and 0.24 (the SDE DPM-Solver run):
/// a few denoising steps at guidance 7.5 amplify f16 rounding. reel's own f16 frames move as much
/// with any change of summation order inside f32 kernels: summing the softmax in 8 lanes instead
/// of one moved 36 of these 37 runs' differences up or down (video-to-video LMS 4.9e-2 → 1.04e-1,
/// KDPM2 5.4e-2 → 3.2e-2), so the bound sits above diffusers' own v2v drift with that margin.
const F16_TOL: f32 = 1.5e-1;

/// bf16 keeps 8 significant bits to f16's 11. Seen over the 37 runs: up to 2.07e-1 (video-to-video
/// KDPM2) with the AVX-512 BF16 products, 2.00e-1 with every product widened to f32 instead —
/// the rounding of the activations between layers, not the products, sets it.
const BF16_TOL: f32 = 3e-1;

fn reel() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reel"));
    c.env_remove("HF_HUB_OFFLINE").env_remove("HF_HUB_CACHE").env_remove("HF_HOME").env_remove("REEL_PIPELINES");
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "reel failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "reel should have failed; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every diffusers run of fixture `name` through `reel generate` + `extra`, frames within `tol`.
fn parity(name: &str, extra: &[&str], tol: f32) {
    let pipe = fixtures_dir().join("pipelines").join(name);
    let refs = fixtures_dir().join("reference").join(name);
    let runs: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(refs.join("runs.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut compared = 0;
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        if !run["error"].is_null() {
            eprintln!("{name}/{id}: diffusers raised {}; skipped", run["error"]);
            continue;
        }
        let out = dir.path().join(format!("{id}.npy"));
        let o = reel().args(args_for(run, &pipe, &refs, &out)).args(extra).output().unwrap();
        if !o.status.success() {
            failures.push(format!("{id}: reel failed: {}", String::from_utf8_lossy(&o.stderr)));
            continue;
        }
        let ours = npy::read(&out).unwrap();
        let theirs = npy::read(refs.join(run["output"].as_str().unwrap())).unwrap();
        if ours.shape != theirs.shape {
            failures.push(format!("{id}: shape {:?} vs diffusers {:?}", ours.shape, theirs.shape));
            continue;
        }
        // NaN anywhere counts as an infinite difference
        let d = closeness(&ours.data, &theirs.data).max_abs_err;
        eprintln!("{name}/{id} {extra:?}: max abs diff {d:.2e}");
        if d > tol {
            failures.push(format!("{id}: frames differ by {d:.3e} (tolerance {tol:.0e})"));
        }
        compared += 1;
    }
    assert!(failures.is_empty(), "{name}: {} runs differ from diffusers:\n{}", failures.len(), failures.join("\n"));
    assert!(compared >= 30, "only {compared} runs compared");
}

#[test]
fn generate_matches_diffusers_pipe_a() {
    parity("pipe-a", &[], FRAMES_TOL);
}

#[test]
fn generate_matches_diffusers_pipe_b() {
    parity("pipe-b", &[], FRAMES_TOL);
}

/// The other CPU backend, burn-ndarray (the tests above run the default, burn-flex with reel's
/// CPU kernels).
#[test]
fn ndarray_backend_matches_diffusers() {
    parity("pipe-a", &["--cpu-backend", "ndarray"], FRAMES_TOL);
    parity("pipe-b", &["--cpu-backend", "ndarray"], FRAMES_TOL);
}

/// burn-flex's own operations for every layer (`--cpu-kernels off`; the tests above run reel's CPU
/// kernels, src/vendor/cpu.rs).
#[test]
fn flex_without_reel_kernels_matches_diffusers() {
    parity("pipe-a", &["--cpu-kernels", "off"], FRAMES_TOL);
}

/// The reduced-precision path (weights converted at load, norms' statistics in f32, the VAE's
/// dtype, padding in the input's dtype, NaN checks) that CUDA runs in f16, here on the CPU
/// through flex: f16 frames within F16_TOL of diffusers' f32 frames.
#[test]
fn flex_f16_matches_diffusers_within_f16_tolerance() {
    parity("pipe-a", &["--cpu-backend", "flex", "--dtype", "f16"], F16_TOL);
    parity("pipe-b", &["--cpu-backend", "flex", "--dtype", "f16"], F16_TOL);
}

/// bf16 on the CPU (linear layers and temporal convolutions on AVX-512 BF16 products where the
/// CPU has them, else widened to f32): frames within BF16_TOL of diffusers' f32 frames.
#[test]
fn flex_bf16_matches_diffusers_within_bf16_tolerance() {
    parity("pipe-a", &["--cpu-backend", "flex", "--dtype", "bf16"], BF16_TOL);
    parity("pipe-b", &["--cpu-backend", "flex", "--dtype", "bf16"], BF16_TOL);
}

fn tiny(out: &Path, extra: &[&str]) -> Command {
    let mut c = reel();
    c.args(["generate", "--pipeline", "tiny", "--prompt", "a tiny astronaut", "--seed", "5", "--num-frames", "3"])
        .args(["--height", "16", "--width", "24", "--steps", "2", "--quiet", "--output"])
        .arg(out)
        .args(extra);
    c
}

fn ffprobe(path: &Path) -> Value {
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries"])
        .args(["stream=nb_read_frames,width,height,r_frame_rate,codec_name", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe not found: install ffmpeg (apt-get install ffmpeg); CI's .ci/run does");
    assert!(o.status.success(), "ffprobe: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<Value>(&o.stdout).unwrap()["streams"][0].clone()
}

#[test]
fn writes_valid_mp4_gif_png_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("out.mp4");
    let summary: Value = serde_json::from_str(&ok(tiny(&mp4, &["--fps", "10", "--json"]).output().unwrap())).unwrap();
    let s = ffprobe(&mp4);
    assert_eq!(s["nb_read_frames"], "3", "{s}");
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(24), Some(16)), "{s}");
    assert_eq!(s["r_frame_rate"], "10/1", "{s}");
    assert_eq!(s["codec_name"], "h264", "{s}");
    assert_eq!(summary["seed"], 5);
    assert_eq!(summary["frames"], 3);
    assert_eq!(summary["stages"][0]["steps_run"], 2);
    assert!(summary["stages"][0]["timings"]["denoise"].as_f64().unwrap() > 0.0);
    assert!(summary["peak_memory"]["host_rss_bytes"].as_u64().unwrap() > 0);

    // The same seed gives the same frames, whatever the format.
    let a = dir.path().join("a.npy");
    ok(tiny(&a, &[]).output().unwrap());
    let frames = npy::read(&a).unwrap();
    assert_eq!(frames.shape, vec![3, 16, 24, 3]);
    let gif = dir.path().join("out.gif");
    ok(tiny(&gif, &[]).output().unwrap());
    let g = reel_video::read(&gif).unwrap();
    assert_eq!((g.frames, g.height, g.width), (3, 16, 24));
    let png = dir.path().join("frames");
    ok(tiny(&png, &[]).output().unwrap());
    let mut names: Vec<String> = std::fs::read_dir(&png).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["frame_0000.png", "frame_0001.png", "frame_0002.png"]);
    let p = reel_video::read(&png).unwrap();
    let d = closeness(&p.data, &frames.data).max_abs_err;
    assert!(d <= 0.5 / 255.0 + 1e-6, "png frames are the npy frames rounded to 8 bits: {d}");
}

#[test]
fn multi_stage_pipeline_and_video_input_formats() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hd.npy");
    let o = reel()
        .args(["generate", "--pipeline", "tiny-hd", "--prompt", "x", "--seed", "1", "--num-frames", "2", "--steps", "2", "--quiet", "--json"])
        .args(["--height", "16", "--width", "16", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    let summary: Value = serde_json::from_str(&ok(o)).unwrap();
    let types: Vec<&str> = summary["stages"].as_array().unwrap().iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["text-to-video", "resize", "video-to-video"]);
    assert_eq!(npy::read(&out).unwrap().shape, vec![2, 64, 64, 3]);
    // tiny-hd shares one text encoder, UNet and VAE between its stages: each loaded once.
    let loads: Vec<&str> = summary["loads"].as_array().unwrap().iter().map(|l| l["part"].as_str().unwrap()).collect();
    for part in ["text_encoder", "unet", "vae"] {
        assert_eq!(loads.iter().filter(|p| **p == part).count(), 1, "{part}: {loads:?}");
    }
    // video-to-video from an mp4 written by reel itself, resized to the requested size.
    let mp4 = dir.path().join("in.mp4");
    ok(tiny(&mp4, &[]).output().unwrap());
    let v2v = dir.path().join("v2v.npy");
    ok(reel()
        .args(["generate", "--model", "../../tests/fixtures/pipelines/pipe-a", "--prompt", "x", "--steps", "3", "--quiet"])
        .args(["--seed", "2", "--height", "32", "--width", "32", "--video"])
        .arg(&mp4)
        .arg("--output")
        .arg(&v2v)
        .output()
        .unwrap());
    assert_eq!(npy::read(&v2v).unwrap().shape, vec![3, 32, 32, 3]);
}

#[test]
fn pipelines_lists_the_shipped_pipelines() {
    let out = ok(reel().args(["pipelines", "--pipelines"]).arg(repo_root().join("pipelines.toml")).output().unwrap());
    for id in ["tiny", "tiny-hd", "text-to-video-ms-1_7b", "zeroscope-v2-576w", "zeroscope-v2-xl", "zeroscope-hd"] {
        assert!(out.contains(&format!("\n{id}")), "{id} missing from:\n{out}");
    }
    assert!(out.contains("cerspense/zeroscope_v2_XL"));
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--height", "100"], "multiple of 8"),
        (vec!["--num-frames", "0"], "at least 1"),
        (vec!["--scheduler", "FooScheduler"], "DDIMScheduler"),
        (vec!["--strength", "1.5"], "strength"),
        (vec!["--video", "/nonexistent/in.mp4"], "in.mp4"),
        (vec!["--latents", "/nonexistent/l.npy"], "l.npy"),
    ];
    for (extra, expect) in cases {
        let mut c = reel();
        c.args(["generate", "--pipeline", "tiny", "--prompt", "x", "--steps", "1", "--quiet", "--output"]).arg(&out).args(&extra);
        let msg = fails(c.output().unwrap());
        assert!(msg.contains(expect), "{extra:?}: expected {expect:?} in: {msg}");
        assert!(!out.exists(), "{extra:?} left an output file");
    }
    // v2v with a strength this pipeline cannot use, and with an unreadable input video
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, "not a video").unwrap();
    let model = fixtures_dir().join("pipelines/pipe-a");
    let msg = fails(
        reel().args(["generate", "--model"]).arg(&model).args(["--prompt", "x", "--video"]).arg(&garbage).arg("--output").arg(&out).output().unwrap(),
    );
    assert!(msg.contains("garbage.mp4"), "{msg}");
    assert!(!out.exists());
    // unknown component id in a user's TOML: file, line and id
    let toml = dir.path().join("mine.toml");
    std::fs::write(&toml, "[pipelines.p]\n[[pipelines.p.stages]]\ntype = \"text-to-video\"\nmodel = \"ghost\"\n").unwrap();
    let msg = fails(reel().args(["generate", "--pipelines"]).arg(&toml).args(["--pipeline", "p", "--prompt", "x", "--output"]).arg(&out).output().unwrap());
    assert!(msg.contains("mine.toml:4") && msg.contains("ghost"), "{msg}");
    // unknown output extension: refused before any work
    let msg = fails(tiny(&dir.path().join("out.avi"), &[]).output().unwrap());
    assert!(msg.contains(".avi") || msg.contains("avi"), "{msg}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "only the inputs remain: {left:?}");
}

#[test]
fn memory_options_do_not_change_the_frames() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.npy");
    let saving = dir.path().join("saving.npy");
    ok(tiny(&plain, &[]).output().unwrap());
    let o = ok(tiny(&saving, &["--vae-slicing", "--forward-chunk", "1", "--cpu-offload", "--json"]).output().unwrap());
    let summary: Value = serde_json::from_str(&o).unwrap();
    let timings = summary["stages"][0]["timings"].as_object().unwrap();
    assert!(timings.contains_key("load_unet") && timings.contains_key("load_vae"), "offload loads per phase: {timings:?}");
    // Slicing and offload leave every operation's arithmetic as it was: the same frames, bit for
    // bit. Forward chunking runs the feed-forward's products on fewer rows at a time, which the
    // gemm kernels may block differently (as PyTorch's do): float rounding only.
    let (a, b) = (npy::read(&plain).unwrap().data, npy::read(&saving).unwrap().data);
    let d = closeness(&b, &a).max_abs_err;
    assert!(d <= 2e-5, "memory options moved the frames by {d:.2e}");
    let sliced = dir.path().join("sliced.npy");
    ok(tiny(&sliced, &["--vae-slicing", "--cpu-offload"]).output().unwrap());
    assert_eq!(a, npy::read(&sliced).unwrap().data, "VAE slicing and offload change nothing");
}

#[test]
fn bench_harness_runs_on_the_small_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let o = ok(reel()
        .args(["bench", "--config", "small", "--frames", "1", "--height", "16", "--width", "16", "--steps", "2"])
        .args(["--runs", "1", "--warmup", "0", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&o).unwrap();
    assert_eq!(report, serde_json::from_str::<Value>(&std::fs::read_to_string(&out).unwrap()).unwrap());
    assert_eq!(report["tool"], "reel");
    assert_eq!(report["config"], "small");
    for part in ["text_encoder", "unet_step", "scheduler_step", "vae_decode", "pipeline"] {
        let t = report["times_ms"][part].as_f64().unwrap();
        assert!(t.is_finite() && t > 0.0, "{part}: {t}");
        // The host's share: each run's time until the call returned is part of that run's time.
        let host = report["host_ms"][part].as_f64().unwrap();
        assert!(host > 0.0 && host <= t, "{part}: host {host} ms of {t} ms");
    }
    let msg = fails(reel().args(["bench", "--config", "nope"]).output().unwrap());
    assert!(msg.contains("ms-1.7b, small"), "{msg}");
}

/// `--cpu-offload`: the weights stay on the host and each model is uploaded for its part (and
/// for each phase of the pipeline run); every part still runs and the report says so.
#[test]
fn bench_runs_with_model_cpu_offload() {
    let o = ok(reel()
        .args(["bench", "--config", "small", "--frames", "2", "--height", "16", "--width", "16", "--steps", "2"])
        .args(["--runs", "1", "--warmup", "0", "--cpu-offload", "--vae-slicing", "--json"])
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&o).unwrap();
    assert_eq!(report["options"]["offload"], true);
    assert_eq!(report["options"]["vae_slicing"], true);
    for part in ["text_encoder", "unet_step", "scheduler_step", "vae_decode", "pipeline"] {
        let t = report["times_ms"][part].as_f64().unwrap();
        assert!(t.is_finite() && t > 0.0, "{part}: {t}");
    }
}

/// `--parts` times only the named parts (the others are null in the report), and each timed
/// part's first (warm-up) call is reported apart from the median: on a GPU that is where kernel
/// compilation and autotuning show.
#[test]
fn bench_times_only_the_chosen_parts_and_reports_first_calls() {
    let o = ok(reel()
        .args(["bench", "--config", "small", "--frames", "1", "--height", "16", "--width", "16", "--steps", "1"])
        .args(["--runs", "1", "--warmup", "1", "--parts", "unet_step,vae_decode", "--json"])
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&o).unwrap();
    for part in ["unet_step", "vae_decode"] {
        let t = report["times_ms"][part].as_f64().unwrap();
        assert!(t.is_finite() && t > 0.0, "{part}: {t}");
        let first = report["first_use_ms"][part].as_f64().unwrap();
        assert!(first.is_finite() && first > 0.0, "{part}: {first}");
    }
    for part in ["text_encoder", "scheduler_step", "pipeline"] {
        assert!(report["times_ms"][part].is_null(), "{part} was not asked for: {}", report["times_ms"]);
        assert!(report["first_use_ms"].get(part).is_none());
    }
    let msg = fails(reel().args(["bench", "--config", "small", "--parts", "unet,vae_decode"]).output().unwrap());
    assert!(msg.contains("unknown bench part 'unet'") && msg.contains("unet_step, scheduler_step"), "{msg}");
}

/// `reel bench --ops` lists the heavy operations of one UNet step and one VAE decode. The counts
/// follow from diffusers' UNet3DConditionModel for benches/configs/small (4 levels, 2 layers per
/// block, cross-attention in 3 down and 3 up blocks): 22 resnets (8 down, 2 mid, 12 up), each with
/// a TemporalConvLayer of 4 temporal convolutions; 33 BasicTransformerBlocks (transformer_in, 12
/// down, 2 mid, 18 up), each with one GEGLU and two attentions; the VAE decoder's mid block has
/// one attention.
#[test]
fn bench_ops_lists_the_operations_of_a_step() {
    let o = ok(reel()
        .args(["bench", "--config", "small", "--frames", "2", "--height", "16", "--width", "16", "--steps", "1"])
        .args(["--runs", "1", "--warmup", "0", "--ops", "--json"])
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&o).unwrap();
    let ops = report["ops"].as_array().unwrap();
    let count = |model: &str, op: &str| -> u64 {
        ops.iter().filter(|o| o["model"] == model && o["op"] == op).map(|o| o["count"].as_u64().unwrap()).sum()
    };
    assert_eq!(count("unet", "temporal_conv"), 22 * 4);
    assert_eq!(count("unet", "geglu"), 33);
    assert_eq!(count("unet", "attention"), 33 * 2);
    assert_eq!(count("vae", "attention"), 1);
    assert_eq!(count("vae", "temporal_conv"), 0);
    for o in ops {
        let ms = o["ms"].as_f64().unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{o}");
    }
    // Distinct shapes are listed once: no two entries of a model are the same operation.
    let mut keys: Vec<String> = ops
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o.as_object_mut().unwrap().retain(|k, _| k != "ms" && k != "count");
            o.to_string()
        })
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
    // The per-operation floor: one layer of a long chain queued back to back.
    let dispatch = report["dispatch_us"].as_f64().unwrap();
    assert!(dispatch.is_finite() && dispatch > 0.0, "dispatch {dispatch} µs");
}

/// `reel bench --ops --check-ops` runs every listed operation again in f32 on burn-flex (the CPU
/// reference) on the same inputs and reports the difference: on burn-ndarray f32 it agrees to
/// f32 rounding (1e-5), on flex f16 within f16 rounding of the inputs and outputs (2e-2) but not
/// exactly, so the check compares two computations rather than one with itself.
#[test]
fn bench_check_ops_compares_every_operation_with_the_cpu_f32_reference() {
    for (backend, dtype, tol) in [("ndarray", "f32", 1e-5), ("flex", "f16", 2e-2)] {
        let o = ok(reel()
            .args(["bench", "--config", "small", "--frames", "2", "--height", "16", "--width", "16", "--steps", "1"])
            .args(["--runs", "1", "--warmup", "0", "--ops", "--check-ops", "--json", "--parts", "scheduler_step"])
            .args(["--cpu-backend", backend, "--dtype", dtype])
            .output()
            .unwrap());
        let report: Value = serde_json::from_str(&o).unwrap();
        let errs: Vec<f64> = report["ops"].as_array().unwrap().iter().map(|o| o["max_rel_err"].as_f64().unwrap()).collect();
        let worst = errs.iter().cloned().fold(0.0, f64::max);
        eprintln!("{backend} {dtype}: {} operations, worst relative difference {worst:.2e}", errs.len());
        assert!(errs.len() > 50 && worst <= tol, "{backend} {dtype}: worst {worst:e} > {tol:e}");
        if dtype == "f16" {
            assert!(worst > 1e-5, "f16 against f32 cannot agree to {worst:e}");
        }
    }
    let msg = fails(reel().args(["bench", "--config", "small", "--check-ops"]).output().unwrap());
    assert!(msg.contains("--ops"), "{msg}");
}

#[test]
fn precomputed_embeddings_give_the_same_frames() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures_dir().join("pipelines/pipe-a");
    let (pos, neg) = (dir.path().join("pos.npy"), dir.path().join("neg.npy"));
    ok(reel().args(["encode-prompt", "--model"]).arg(&model).arg("--output").arg(&pos).args(["--", "a tiny astronaut"]).output().unwrap());
    ok(reel().args(["encode-prompt", "--model"]).arg(&model).arg("--output").arg(&neg).args(["--", "blurry"]).output().unwrap());
    let common = ["--steps", "2", "--num-frames", "2", "--height", "16", "--width", "16", "--seed", "3", "--quiet"];
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    ok(reel()
        .args(["generate", "--model"])
        .arg(&model)
        .args(["--prompt", "a tiny astronaut", "--negative-prompt", "blurry"])
        .args(common)
        .arg("--output")
        .arg(&a)
        .output()
        .unwrap());
    ok(reel()
        .args(["generate", "--model"])
        .arg(&model)
        .arg("--prompt-embeds")
        .arg(&pos)
        .arg("--negative-prompt-embeds")
        .arg(&neg)
        .args(common)
        .arg("--output")
        .arg(&b)
        .output()
        .unwrap());
    assert_eq!(npy::read(&a).unwrap().data, npy::read(&b).unwrap().data);
    // both a prompt and its embeddings: refused
    let msg = fails(
        reel().args(["generate", "--model"]).arg(&model).args(["--prompt", "x", "--prompt-embeds"]).arg(&pos).args(common).arg("--output").arg(&b).output().unwrap(),
    );
    assert!(msg.contains("not both"), "{msg}");
}
