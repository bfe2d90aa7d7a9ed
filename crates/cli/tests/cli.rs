//! The `reel` binary's component tools, run as a user would, against the fixtures the pinned
//! diffusers wrote: exact interface, outputs equal to the references, offline hub cache through
//! the environment, and failures that exit non-zero with a message and leave no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reel_core::npy;
use reel_core::testing::{assert_close, fixtures_dir};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn reel() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reel"));
    c.env_remove("HF_HUB_OFFLINE").env_remove("HF_HUB_CACHE").env_remove("HF_HOME");
    c
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "reel failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn pipeline(name: &str) -> PathBuf {
    fixtures_dir().join("pipelines").join(name)
}

fn reference(name: &str, file: &str) -> PathBuf {
    fixtures_dir().join("reference").join(name).join(file)
}

fn tokens(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(reference(name, "tokens.json")).unwrap()).unwrap()
}

#[test]
fn tokenize_prints_one_json_row_per_prompt() {
    let t = tokens("tok-real-bang");
    let prompts: Vec<&str> = t["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let out = ok(reel().arg("tokenize").arg("--model").arg(pipeline("tok-real-bang")).arg("--").args(&prompts).output().unwrap());
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), prompts.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row, &t["input_ids"][i], "prompt {:?}", prompts[i]);
    }
}

#[test]
fn encode_prompt_matches_diffusers() {
    let t = tokens("tiny-b");
    let prompts: Vec<&str> = t["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("emb.npy");
    ok(reel()
        .args(["encode-prompt", "--variant", "fp16", "--model"])
        .arg(pipeline("tiny-b"))
        .arg("--output")
        .arg(&out_path)
        .arg("--")
        .args(&prompts)
        .output()
        .unwrap());
    let got = npy::read(&out_path).unwrap();
    let want = npy::read(reference("tiny-b", "clip_last_hidden_state.npy")).unwrap();
    assert_close("reel encode-prompt tiny-b", &got.shape, &got.data, &want.shape, &want.data, TOL);
}

fn vae_tool(name: &str, op: &str, input: &str, want: &str) {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(reference(name, "meta.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("out.npy");
    let mut cmd = reel();
    cmd.args(["vae", op, "--model"]).arg(pipeline(name)).arg("--input").arg(reference(name, input)).arg("--output").arg(&out_path);
    if let Some(v) = meta["vae"]["variant"].as_str() {
        cmd.args(["--variant", v]);
    }
    ok(cmd.output().unwrap());
    let got = npy::read(&out_path).unwrap();
    let want = npy::read(reference(name, want)).unwrap();
    assert_close(&format!("reel vae {op} {name}"), &got.shape, &got.data, &want.shape, &want.data, TOL);
}

#[test]
fn vae_decode_and_encode_match_diffusers() {
    for name in ["tiny-a", "tiny-b", "tiny-c"] {
        vae_tool(name, "decode", "vae_z.npy", "vae_decode.npy");
        vae_tool(name, "encode", "vae_x.npy", "vae_mean.npy");
    }
}

fn populate_hf_cache(cache: &Path, repo_id: &str, src: &Path) {
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let snap = repo_dir.join("snapshots").join(commit).join("tokenizer");
    std::fs::create_dir_all(&snap).unwrap();
    for e in std::fs::read_dir(src.join("tokenizer")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
}

#[test]
fn repo_id_resolves_offline_through_hf_env_vars() {
    let tmp = tempfile::tempdir().unwrap();
    let want = tokens("tok-real-eot")["input_ids"][2].clone();
    // HF_HUB_CACHE names the hub cache directly.
    populate_hf_cache(&tmp.path().join("hubcache"), "reel-test/tok", &pipeline("tok-real-eot"));
    let out = ok(reel()
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", tmp.path().join("hubcache"))
        .args(["tokenize", "--model", "reel-test/tok", "--", "a cat"])
        .output()
        .unwrap());
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap(), want);
    // HF_HOME: the cache is $HF_HOME/hub.
    populate_hf_cache(&tmp.path().join("home/hub"), "reel-test/tok", &pipeline("tok-real-eot"));
    let out = ok(reel()
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path().join("home"))
        .args(["tokenize", "--model", "reel-test/tok", "--", "a cat"])
        .output()
        .unwrap());
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap(), want);
    // Offline and not cached: a clear error, no network.
    let out = reel()
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", tmp.path().join("hubcache"))
        .args(["tokenize", "--model", "reel-test/absent", "--", "a cat"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reel-test/absent") && err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn failures_exit_nonzero_with_a_message_and_no_output_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("out.npy");
    // A missing model folder.
    let out = reel()
        .args(["encode-prompt", "--model", "/nonexistent/model", "--output"])
        .arg(&out_path)
        .args(["--", "a cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model folder not found"));
    assert!(!out_path.exists());
    // Latents with the wrong channel count for the VAE.
    let bad = tmp.path().join("bad.npy");
    npy::write(&bad, &[1, 3, 4, 4], &[0.5; 48]).unwrap();
    let out = reel()
        .args(["vae", "decode", "--model"])
        .arg(pipeline("tiny-a"))
        .arg("--input")
        .arg(&bad)
        .arg("--output")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("channel"), "{err}");
    assert!(!out_path.exists());
    // Not an .npy file.
    std::fs::write(&bad, b"not numpy").unwrap();
    let out = reel()
        .args(["vae", "encode", "--model"])
        .arg(pipeline("tiny-a"))
        .arg("--input")
        .arg(&bad)
        .arg("--output")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a usable .npy file"));
    assert!(!out_path.exists());
    // f16 on the ndarray CPU backend (f32 only); the default CPU backend (flex) runs f16.
    let f16 = |backend: &str| {
        reel()
            .args(["encode-prompt", "--dtype", "f16", "--cpu-backend", backend, "--model"])
            .arg(pipeline("tiny-a"))
            .arg("--output")
            .arg(&out_path)
            .args(["--", "a cat"])
            .output()
            .unwrap()
    };
    let out = f16("ndarray");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("f32 only"));
    assert!(!out_path.exists());
    let out = f16("flex");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out_path.exists());
}

#[test]
fn schedulers_lists_built_ins_and_plugins_with_options() {
    let out = ok(reel().arg("schedulers").output().unwrap());
    for class in ["DDIMScheduler", "DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler", "UniPCMultistepScheduler", "LCMScheduler"] {
        assert!(out.contains(class), "{class} missing from:\n{out}");
    }
    for option in ["beta_schedule", "timestep_spacing", "solver_order", "steps_offset"] {
        assert!(out.contains(option), "{option} missing from:\n{out}");
    }
}

#[test]
fn unet_matches_diffusers() {
    // unet-a: integer timestep, f32; unet-b: float timestep, odd latent sizes, f16 weights.
    for name in ["unet-a", "unet-b"] {
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(reference(name, "meta.json")).unwrap()).unwrap();
        let t = meta["unet"]["timestep"]["value"].to_string();
        let tmp = tempfile::tempdir().unwrap();
        let out_path = tmp.path().join("out.npy");
        ok(reel()
            .args(["unet", "--model"])
            .arg(pipeline(name))
            .arg("--sample")
            .arg(reference(name, "unet_sample.npy"))
            .args(["--timestep", &t, "--encoder-hidden-states"])
            .arg(reference(name, "unet_encoder_hidden_states.npy"))
            .arg("--output")
            .arg(&out_path)
            .output()
            .unwrap());
        let got = npy::read(&out_path).unwrap();
        let want = npy::read(reference(name, "unet_out.npy")).unwrap();
        assert_close(&format!("reel unet {name}"), &got.shape, &got.data, &want.shape, &want.data, TOL);
    }
    // A timestep that is not a number: an error, no output.
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("out.npy");
    let out = reel()
        .args(["unet", "--model"])
        .arg(pipeline("unet-a"))
        .arg("--sample")
        .arg(reference("unet-a", "unet_sample.npy"))
        .args(["--timestep", "soon", "--encoder-hidden-states"])
        .arg(reference("unet-a", "unet_encoder_hidden_states.npy"))
        .arg("--output")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!out_path.exists());
}
