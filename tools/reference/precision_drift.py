#!/usr/bin/env python3
"""diffusers itself in reduced precision: how far its own f16 (or bf16) rerun of a fixture's runs
lands from the f32 frames recorded in tests/fixtures/reference/<name>/. The numbers set the
tolerance of reel's reduced-precision checks (crates/cli/tests/generate.rs, F16_TOL): reel in f16
cannot be asked to be closer to the f32 frames than diffusers in f16 is. Writes nothing.

    /work/pyenv/ref/bin/python tools/reference/precision_drift.py pipe-a f16 [RUN_ID ...]

Seen (diffusers 0.42.1, torch 2.15.0 CPU, f16): pipe-a text-to-video <= 1.7e-2, video-to-video
<= 9.0e-2 (KDPM2 ancestral), the SDE DPM-Solver run 0.24.
"""
import sys, os, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np, torch
import pipelines as P
import diffusers
from diffusers import TextToVideoSDPipeline, VideoToVideoSDPipeline
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures")
name, dt = sys.argv[1], sys.argv[2]
dtype = {"f16": torch.float16, "bf16": torch.bfloat16}[dt]
p = P.PIPES[name]
pipe_dir, ref_dir = os.path.join(out, "pipelines", name), os.path.join(out, "reference", name)
kw = {"torch_dtype": torch.float32}
if p["variant"]:
    kw["variant"] = p["variant"]
t2v = TextToVideoSDPipeline.from_pretrained(pipe_dir, **kw).to(dtype)
t2v.set_progress_bar_config(disable=True)
v2v = VideoToVideoSDPipeline(**t2v.components); v2v.set_progress_bar_config(disable=True)
base = t2v.scheduler
recs = {r["id"]: r for r in json.load(open(os.path.join(ref_dir, "runs.json")))}
runs = {r["id"]: r for r in P.run_list(p, type(base).__name__)}
res = []
for rid in sys.argv[3:] or list(runs):
    r, rec = runs[rid], recs[rid]
    if rec["error"] or r["shim"]:
        continue
    cls = getattr(diffusers, r["cls"])
    pipe = t2v if r["mode"] == "t2v" else v2v
    pipe.scheduler = cls.from_config(base.config)
    call = {"prompt": r["prompt"], "negative_prompt": r["negative_prompt"], "guidance_scale": r["guidance_scale"],
            "num_inference_steps": r["num_inference_steps"], "eta": r["eta"], "output_type": "np",
            "generator": torch.Generator("cpu").manual_seed(r["seed"])}
    if r["mode"] == "t2v":
        call.update(num_frames=rec["num_frames"], height=rec["height"], width=rec["width"])
        if rec["latents"]:
            call["latents"] = torch.from_numpy(np.load(os.path.join(ref_dir, rec["latents"]))).to(dtype)
    else:
        call.update(video=np.load(os.path.join(ref_dir, rec["video"])), strength=r["strength"])
    try:
        with torch.no_grad():
            frames = pipe(**call).frames[0]
        d = float(np.abs(frames.astype(np.float64) - np.load(os.path.join(ref_dir, rec["output"]))).max())
    except Exception as e:
        d = float("nan"); print(rid, "error", type(e).__name__, e)
    res.append((d, rid))
    print(f"{name} {dt} {rid}: {d:.3e}", flush=True)
print("worst", max(res))
