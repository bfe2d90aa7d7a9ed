//! The CUDA path against diffusers' CPU f32 frames: `reel generate --device cuda` in f32 and in
//! f16 on the pipe-a fixture (text-to-video with fixed latents, DDIM and DPM-Solver++; video-to-
//! video with DDIM), with the vendor kernels and reel's own (cuDNN convolutions, cuBLAS
//! products, reel's norm / softmax / bias kernels; then cuBLAS with reel's im2col convolutions;
//! then each part alone — own kernels off, burn's fusion off — so a wrong result points at a
//! kernel or at its place in burn's fusion stream) and then on cubecl's kernels (slow the first
//! time: they compile). Runs where the binary was built with `--features cuda`
//! and a GPU is present; otherwise it says why it is skipped.
//!
//! Tolerances (frames in [0, 1]): f32 on the GPU within 1e-3 of diffusers' CPU f32 frames
//! (different reduction orders and kernels); f16 within 1e-1, the bound of the CPU f16 check in
//! tests/generate.rs (diffusers' own f16 rerun moves these fixtures' frames by up to 9e-2).

use std::path::Path;
use std::process::Command;

use reel_core::npy;
use reel_core::testing::{closeness, fixtures_dir};
use serde_json::Value;

mod common;
use common::args_for;

fn run(extra: &[&str], run: &Value, refs: &Path, out: &Path) -> Result<(), String> {
    let pipe = fixtures_dir().join("pipelines/pipe-a");
    let o = Command::new(env!("CARGO_BIN_EXE_reel"))
        .args(args_for(run, &pipe, refs, out))
        .args(["--device", "cuda"])
        .args(extra)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

#[test]
fn cuda_f32_and_f16_agree_with_diffusers_cpu_f32() {
    let refs = fixtures_dir().join("reference/pipe-a");
    let runs: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(refs.join("runs.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // (kernels, fusion, reel's own kernels, dtypes): the defaults first, then each part alone.
    let settings: [(&str, &str, &str, &[&str]); 5] = [
        ("cudnn", "on", "on", &["f32", "f16"]),
        ("cublas", "on", "on", &["f32", "f16"]),
        ("cudnn", "on", "off", &["f32"]),
        ("cudnn", "off", "on", &["f32"]),
        ("cubecl", "on", "off", &["f32", "f16"]),
    ];
    for (kernels, fusion, own, dtypes) in settings {
        for id in ["t2v-DDIMScheduler", "t2v-DPMSolverMultistepScheduler", "v2v-DDIMScheduler"] {
            let r = runs.iter().find(|r| r["id"] == id).unwrap();
            let theirs = npy::read(refs.join(r["output"].as_str().unwrap())).unwrap();
            for &dtype in dtypes {
                let tol = if dtype == "f32" { 1e-3f32 } else { 1e-1 };
                let what = format!("{id} cuda {dtype} --cuda-kernels {kernels} --cuda-fusion {fusion} --cuda-own-kernels {own}");
                let out = dir.path().join(format!("{id}-{dtype}-{kernels}-{fusion}-{own}.npy"));
                let extra = ["--dtype", dtype, "--cuda-kernels", kernels, "--cuda-fusion", fusion, "--cuda-own-kernels", own];
                if let Err(msg) = run(&extra, r, &refs, &out) {
                    if msg.contains("built without GPU support") || msg.contains("no usable NVIDIA GPU") {
                        eprintln!("skipped: no CUDA here ({})", msg.trim());
                        return;
                    }
                    if msg.contains("could not be loaded") {
                        eprintln!("skipped {what}: {}", msg.trim());
                        break;
                    }
                    panic!("{what}: {msg}");
                }
                let ours = npy::read(&out).unwrap();
                assert_eq!(ours.shape, theirs.shape);
                let d = closeness(&ours.data, &theirs.data).max_abs_err;
                eprintln!("{what}: max abs diff {d:.3e} (tolerance {tol:.0e})");
                assert!(d <= tol, "{what}: {d} > {tol}");
            }
        }
    }
}

/// reel's fused attention kernel on the card: the fixture above has heads of 2–8 values, which
/// the kernel (heads of 64) does not take, so this checks it at the full-size architecture's
/// shapes instead: `reel bench --ops --check-ops` on benches/configs/ms-1.7b in f16 at 16 frames
/// 128², where every operation of a UNet step (spatial self-attention over 256 tokens — four key
/// tiles —, cross-attention over 77, temporal over 16, alongside the products, convolutions and
/// norms) is compared with the same operation in f32 on the CPU on the same inputs. Tolerance:
/// 1e-2 of the reference's largest magnitude (f16 inputs and outputs; the first device call saw
/// every operation within 1.4e-3).
#[test]
fn cuda_f16_operations_at_full_size_heads_agree_with_the_cpu() {
    let o = Command::new(env!("CARGO_BIN_EXE_reel"))
        .args(["bench", "--config", "ms-1.7b", "--device", "cuda", "--dtype", "f16"])
        .args(["--frames", "16", "--height", "128", "--width", "128", "--steps", "1"])
        .args(["--runs", "1", "--warmup", "0", "--parts", "unet_step", "--ops", "--check-ops", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && (stderr.contains("built without GPU support") || stderr.contains("no usable NVIDIA GPU")) {
        eprintln!("skipped: no CUDA here ({})", stderr.trim());
        return;
    }
    assert!(o.status.success(), "reel bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let kernels = report["versions"]["kernels"].as_str().unwrap_or("?").to_string();
    let mut attention = 0;
    for op in report["ops"].as_array().unwrap().iter().filter(|op| op["model"] == "unet") {
        let err = op["max_rel_err"].as_f64().unwrap_or_else(|| panic!("{op}: not checked ({})", op["error"]));
        eprintln!("{kernels}: {} rel err {err:.2e}", serde_json::to_string(op).unwrap());
        assert!(err <= 1e-2, "{op}: relative error {err:.3e} > 1e-2 on {kernels}");
        if op["op"] == "attention" && op["head_dim"] == 64 {
            attention += 1;
        }
    }
    assert!(attention >= 3, "spatial, cross and temporal attentions with heads of 64 expected, got {attention}");
}
