#!/usr/bin/env python3
"""Whole-pipeline references: two tiny complete text-to-video pipelines and what diffusers computes.

    /work/pyenv/ref/bin/python tools/reference/pipelines.py --out tests/fixtures [--only pipe-a]

Needs the tiny-a / tiny-b fixtures of generate.py (their tokenizer and text_encoder folders are
copied). For every pipeline NAME in PIPES it writes
  <out>/pipelines/NAME/   a complete diffusers folder (model_index.json, scheduler/, tokenizer/,
                          text_encoder/, unet/, vae/) that TextToVideoSDPipeline.from_pretrained loads
  <out>/reference/NAME/   runs.json (one entry per pipeline call), latents.npy / video.npy (shared
                          inputs), scheduler-*.json (the complete scheduler config of each run),
                          <id>.frames.npy (the call's .frames[0]) and <id>.latents.npy (the latents
                          handed to decode_latents)
All runs use the pipeline loaded back with from_pretrained (f32, CPU, default attention processor).
CPU only, deterministic: a second run writes byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_synth import (  # noqa: E402
    TextToVideoSDPipeline,
)
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_synth_img2img import (  # noqa: E402
    VideoToVideoSDPipeline,
)
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

import common  # noqa: E402
import unet3d as unet_mod  # noqa: E402
import vae as vae_mod  # noqa: E402

# The scheduler_config.json of ali-vilab/text-to-video-ms-1.7b, as the hub repo has it (partial:
# written by diffusers 0.15, with the PNDM key skip_prk_steps). pipe-a ships it verbatim.
MS_1_7B_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.15.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

SCHEDULERS = [
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
    "DEISMultistepScheduler", "UniPCMultistepScheduler", "LCMScheduler",
]

PROMPT = "a tiny astronaut riding a horse"
NEGATIVE_PROMPT = "blurry, low quality, watermark"
GUIDANCE = 7.5
T2V_STEPS = 4
V2V_STEPS = 5
V2V_STRENGTH = 0.6

_XD, _D, _U, _XU = "CrossAttnDownBlock3D", "DownBlock3D", "UpBlock3D", "CrossAttnUpBlock3D"

PIPES: dict[str, dict] = {
    # f32, no variant; tiny-a's tokenizer (vocab.json + merges.txt, pad <|endoftext|>) and text encoder
    # (hidden 32); VAE scale factor 2; default size unet.sample_size * 2 = 16; runs at 16x24 (non-square)
    "pipe-a": {
        "seed": 8000,
        "source": "tiny-a",
        "variant": None,
        "storage_dtype": torch.float32,
        "vae": {
            "block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4,
            "sample_size": 16, "scaling_factor": 0.18215, "storage_dtype": torch.float32, "variant": None,
            # decoder.conv_out weight/bias multiplied by this so decoded frames stay mostly inside [-1, 1]
            "decoder_out_scale": 0.5,
        },
        "unet": {"config": {
            "in_channels": 4, "out_channels": 4, "down_block_types": [_XD, _D], "up_block_types": [_U, _XU],
            "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
            "attention_head_dim": 4, "cross_attention_dim": 32, "norm_eps": 1e-5, "sample_size": 8,
        }, "storage_dtype": torch.float32, "variant": None},
        "scheduler": "ms-1.7b",
        "frames": 3, "height": 16, "width": 24,
    },
    # the real-hub layout: fp16 variant files everywhere, tiny-b's tokenizer (tokenizer.json, pad "!")
    # and legacy-key text encoder (hidden 48); VAE scale factor 4 (scaling 0.13025); 3-level UNet
    # (4, 8, 8), 2 layers per block, 2 norm groups, eps 1e-6; DPMSolverMultistepScheduler (complete
    # save_pretrained config); default size 8 * 4 = 32; runs at 24x16 (portrait) -> 6x4 latents
    # (6 is not a multiple of 4: the UNet's explicit upsample sizes are used)
    "pipe-b": {
        "seed": 9000,
        "source": "tiny-b",
        "variant": "fp16",
        "storage_dtype": torch.float16,
        "vae": {
            "block_out_channels": (8, 16, 16), "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4,
            "sample_size": 32, "scaling_factor": 0.13025, "storage_dtype": torch.float16, "variant": "fp16",
            "decoder_out_scale": 0.5,
        },
        "unet": {"config": {
            "in_channels": 4, "out_channels": 4, "down_block_types": [_XD, _XD, _D],
            "up_block_types": [_U, _XU, _XU], "block_out_channels": [4, 8, 8], "layers_per_block": 2,
            "norm_num_groups": 2, "attention_head_dim": 2, "cross_attention_dim": 48, "norm_eps": 1e-6,
            "sample_size": 8,
        }, "storage_dtype": torch.float16, "variant": "fp16",
            # conditioning (see README "Conditioning"): conv_out x0.05 (eps std ~0.025) and conv_in
            # weight x0.3; at full scale the clip_sample DDIM/DDPM runs and the v2v runs amplified
            # 1e-6 input differences to 1e-3..1e-1 in the frames
            "out_scale": 0.05, "in_scale": 0.3},
        "scheduler": "dpm",
        "frames": 2, "height": 24, "width": 16,
    },
}


# ----------------------------------------------------------------------------------------------
# building the pipeline folders


def _build_vae(spec: dict, seed: int):
    storage = spec["storage_dtype"]
    v = vae_mod.build(dict(spec, storage_dtype=torch.float32), seed)
    with torch.no_grad():
        v.decoder.conv_out.weight.mul_(spec["decoder_out_scale"])
        v.decoder.conv_out.bias.mul_(spec["decoder_out_scale"])
    common.round_weights_(v, storage)
    return v


def _build_unet(spec: dict, seed: int):
    """unet3d.build, plus optional scaling of conv_out (weight and bias, before the storage rounding)
    by spec["out_scale"] so the random UNet's eps stays small enough for a well-conditioned loop."""
    if spec.get("out_scale") is None and spec.get("in_scale") is None:
        return unet_mod.build(spec, seed)
    u = unet_mod.build(dict(spec, storage_dtype=torch.float32), seed)
    with torch.no_grad():
        u.conv_out.weight.mul_(spec.get("out_scale", 1.0))
        u.conv_out.bias.mul_(spec.get("out_scale", 1.0))
        u.conv_in.weight.mul_(spec.get("in_scale", 1.0))
    common.round_weights_(u, spec["storage_dtype"])
    return u


def _scheduler_for(kind: str):
    if kind == "ms-1.7b":
        return diffusers.DDIMScheduler.from_config(MS_1_7B_SCHEDULER)
    if kind == "dpm":
        return diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            prediction_type="epsilon", steps_offset=1)
    raise ValueError(kind)


def build_pipeline_folder(out: str, name: str, p: dict) -> dict:
    pipe_dir = os.path.join(out, "pipelines", name)
    src = os.path.join(out, "pipelines", p["source"])
    for sub in ("tokenizer", "text_encoder"):
        if not os.path.isdir(os.path.join(src, sub)):
            raise SystemExit(f"{src}/{sub} missing: run generate.py --only {p['source']} first")
    common.reset_dir(pipe_dir)
    for sub in ("tokenizer", "text_encoder"):
        shutil.copytree(os.path.join(src, sub), os.path.join(pipe_dir, sub))

    seed = p["seed"]
    v = _build_vae(p["vae"], seed + 200)
    vae_mod.save(v, pipe_dir, p["vae"])
    u = _build_unet(p["unet"], seed + 300)
    unet_mod.save(u, pipe_dir, p["unet"])

    sched = _scheduler_for(p["scheduler"])
    sdir = os.path.join(pipe_dir, "scheduler")
    os.makedirs(sdir)
    if p["scheduler"] == "ms-1.7b":
        # verbatim hub file (partial config), diffusers' JSON style
        with open(os.path.join(sdir, "scheduler_config.json"), "w", encoding="utf-8", newline="\n") as f:
            f.write(json.dumps(MS_1_7B_SCHEDULER, indent=2, sort_keys=True) + "\n")
    else:
        sched.save_pretrained(sdir)

    # model_index.json exactly as DiffusionPipeline.save_pretrained writes it (save_config)
    te_kw = {"subfolder": "text_encoder", "dtype": torch.float32}
    if p["variant"]:
        te_kw["variant"] = p["variant"]
    te = CLIPTextModel.from_pretrained(pipe_dir, **te_kw)
    tok = CLIPTokenizer.from_pretrained(pipe_dir, subfolder="tokenizer")
    TextToVideoSDPipeline(vae=v, text_encoder=te, tokenizer=tok, unet=u, scheduler=sched).save_config(pipe_dir)
    with open(os.path.join(pipe_dir, "model_index.json"), encoding="utf-8") as f:
        idx = json.load(f)
    assert idx["_class_name"] == "TextToVideoSDPipeline", idx
    assert sorted(k for k in idx if not k.startswith("_")) == ["scheduler", "text_encoder", "tokenizer", "unet",
                                                               "vae"], idx
    return {"vae_scale_factor": 2 ** (len(p["vae"]["block_out_channels"]) - 1)}


# ----------------------------------------------------------------------------------------------
# inputs


def make_video(frames: int, height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) float32 in [0.05, 0.95]: smooth sums of sines, different per channel and frame."""
    f = torch.arange(frames, dtype=torch.float64)[:, None, None, None]
    y = torch.arange(height, dtype=torch.float64)[None, :, None, None] / height
    x = torch.arange(width, dtype=torch.float64)[None, None, :, None] / width
    c = torch.arange(3, dtype=torch.float64)[None, None, None, :]
    tau = 2 * torch.pi
    v = (0.5 + 0.2 * torch.sin(tau * (1.3 * x + 0.25 * c + 0.1 * f))
         + 0.15 * torch.sin(tau * (0.9 * y - 0.15 * c + 0.07 * f))
         + 0.1 * torch.sin(tau * (0.6 * x + 0.8 * y + 0.3 * c - 0.05 * f)))
    return v.to(torch.float32).numpy()


# ----------------------------------------------------------------------------------------------
# runs


def run_list(p: dict, base_cls: str) -> list[dict]:
    seed = p["seed"]
    common_kw = {"prompt": PROMPT, "negative_prompt": None, "guidance_scale": GUIDANCE, "eta": 0.0,
                 "strength": None, "clip_skip": None, "seed": seed + 1, "shim": False, "config_input": None}
    t2v = dict(common_kw, mode="t2v", num_inference_steps=T2V_STEPS, latents=True)
    v2v = dict(common_kw, mode="v2v", num_inference_steps=V2V_STEPS, strength=V2V_STRENGTH, latents=False)
    runs = [dict(t2v, id=f"t2v-{c}", cls=c) for c in SCHEDULERS]
    runs += [
        dict(t2v, id="t2v-DDIMScheduler-eta0.5", cls="DDIMScheduler", eta=0.5),
        dict(t2v, id=f"t2v-{base_cls}-guidance1", cls=base_cls, guidance_scale=1.0),
        dict(t2v, id=f"t2v-{base_cls}-negative", cls=base_cls, negative_prompt=NEGATIVE_PROMPT),
        # diffusers 0.42.1 + transformers 5: raises (recorded as an error run) ...
        dict(t2v, id=f"t2v-{base_cls}-clipskip1", cls=base_cls, clip_skip=1),
        # ... and the same call with `text_encoder.text_model` = the model itself (what it computes
        # with a transformers-4 CLIPTextModel: final_layer_norm(hidden_states[-2]))
        dict(t2v, id=f"t2v-{base_cls}-clipskip1-shim", cls=base_cls, clip_skip=1, shim=True),
        dict(t2v, id="t2v-DPMSolverMultistepScheduler-sde-dpmsolverpp", cls="DPMSolverMultistepScheduler",
             config_input={"algorithm_type": "sde-dpmsolver++"},
             config_file="scheduler-DPMSolverMultistepScheduler-sde-dpmsolverpp.json"),
        dict(t2v, id=f"t2v-DDIMScheduler-seed{seed + 2}-nolatents", cls="DDIMScheduler", seed=seed + 2,
             latents=False),
        dict(t2v, id=f"t2v-EulerAncestralDiscreteScheduler-seed{seed + 3}-nolatents",
             cls="EulerAncestralDiscreteScheduler", seed=seed + 3, latents=False),
    ]
    runs += [dict(v2v, id=f"v2v-{c}", cls=c) for c in SCHEDULERS]
    runs += [
        dict(v2v, id="v2v-DDIMScheduler-strength1.0", cls="DDIMScheduler", strength=1.0),
        dict(v2v, id="v2v-DDIMScheduler-strength0.3", cls="DDIMScheduler", strength=0.3),
    ]
    ids = [r["id"] for r in runs]
    assert len(set(ids)) == len(ids), ids
    return runs


def _stats(a: np.ndarray, clamp01: bool = False) -> dict:
    d = a.astype(np.float64)
    s = {"min": float(d.min()), "max": float(d.max()), "mean": float(d.mean()), "std": float(d.std())}
    if clamp01:
        s["clamped_fraction"] = float(((a == 0.0) | (a == 1.0)).mean())
    return s


def _np_save(path: str, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    assert arr.dtype == np.float32, arr.dtype
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


class SchedulerFiles:
    """Stores each distinct complete scheduler config once, as diffusers' save_config writes it."""

    def __init__(self, ref_dir: str):
        self.ref_dir = ref_dir
        self.by_text: dict[str, str] = {}
        self.names: set[str] = set()

    @staticmethod
    def text(s) -> str:
        t = s.to_json_string()
        assert "_name_or_path" not in json.loads(t), t
        return t

    def add(self, s, name: str | None = None) -> str:
        t = self.text(s)
        if t in self.by_text:
            assert name is None or self.by_text[t] == name, (name, self.by_text[t])
            return self.by_text[t]
        cls = type(s).__name__
        if name is None:
            name, k = f"scheduler-{cls}.json", 2
            while name in self.names:
                name, k = f"scheduler-{cls}-{k}.json", k + 1
        assert name not in self.names, name
        with open(os.path.join(self.ref_dir, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(t)
        self.by_text[t] = name
        self.names.add(name)
        return name


@torch.no_grad()
def call_pipeline(pipe, r: dict, kw: dict, output_type: str):
    """One pipeline call; returns (result, timesteps visited, latents handed to decode_latents,
    latents the callback saw at the last step)."""
    visited: list = []
    seen: dict = {}

    def pre_hook(_mod, args):
        t = args[1]
        visited.append(t.item() if isinstance(t, torch.Tensor) else t)

    def callback(step, t, latents):
        seen["callback"] = latents.clone()

    orig_decode = type(pipe).decode_latents

    def decode_latents(latents):
        seen["decode"] = latents.clone()
        return orig_decode(pipe, latents)

    handle = pipe.unet.register_forward_pre_hook(pre_hook)
    pipe.decode_latents = decode_latents
    te = pipe.text_encoder
    if r["shim"]:
        object.__setattr__(te, "text_model", te)  # plain attribute, not a registered submodule
    try:
        out = pipe(**kw, output_type=output_type, callback=callback, callback_steps=1)
    finally:
        handle.remove()
        del pipe.__dict__["decode_latents"]
        te.__dict__.pop("text_model", None)
    return out, visited, seen.get("decode"), seen.get("callback")


def do_run(pipes: dict, base_sched, r: dict, shared: dict, sfiles: SchedulerFiles, ref_dir: str,
           p: dict) -> dict:
    cls = getattr(diffusers, r["cls"])
    if r["config_input"] is not None:
        # a complete config written as a file first; the run uses what from_config makes of that file
        s0 = cls.from_config(base_sched.config, **r["config_input"])
        fname = sfiles.add(s0, r["config_file"])
        with open(os.path.join(ref_dir, fname), encoding="utf-8") as f:
            sched = cls.from_config(json.load(f))
        assert sfiles.text(sched) == sfiles.text(s0)
    else:
        sched = cls.from_config(base_sched.config)
        fname = sfiles.add(sched)
    assert type(sched) is cls

    mode = r["mode"]
    pipe = pipes[mode]
    pipe.scheduler = sched
    kw = {"prompt": r["prompt"], "negative_prompt": r["negative_prompt"], "guidance_scale": r["guidance_scale"],
          "num_inference_steps": r["num_inference_steps"], "eta": r["eta"], "clip_skip": r["clip_skip"]}
    if mode == "t2v":
        num_frames, height, width = p["frames"], p["height"], p["width"]
        kw.update(num_frames=num_frames, height=height, width=width)
        if r["latents"]:
            kw["latents"] = torch.from_numpy(shared["latents"].copy())
    else:
        num_frames, height, width = shared["video"].shape[:3]
        kw.update(video=shared["video"].copy(), strength=r["strength"])

    rec = {
        "id": r["id"], "mode": mode, "scheduler_class": r["cls"], "scheduler_config": fname,
        "scheduler_config_is_input": r["config_input"] is not None,
        "prompt": r["prompt"], "negative_prompt": r["negative_prompt"], "guidance_scale": r["guidance_scale"],
        "num_inference_steps": r["num_inference_steps"], "num_frames": int(num_frames), "height": int(height),
        "width": int(width), "eta": r["eta"], "strength": r["strength"], "clip_skip": r["clip_skip"],
        "seed": r["seed"], "latents": "latents.npy" if (mode == "t2v" and r["latents"]) else None,
        "video": "video.npy" if mode == "v2v" else None,
        "output": None, "final_latents": None, "timesteps": None, "error": None, "stats": None,
    }

    def gen():
        return torch.Generator("cpu").manual_seed(r["seed"])

    t0 = time.time()
    try:
        out, visited, dec_lat, cb_lat = call_pipeline(pipe, r, dict(kw, generator=gen()), "np")
    except Exception as e:  # noqa: BLE001 - recorded, the other runs go on
        rec["error"] = f"{type(e).__name__}: {e}"
        print(f"    {r['id']:58s} ERROR {rec['error']}")
        return rec

    frames = out.frames[0]
    assert isinstance(frames, np.ndarray) and frames.dtype == np.float32, type(frames)
    assert frames.shape == (num_frames, height, width, 3), frames.shape
    assert np.isfinite(frames).all(), f"{r['id']}: non-finite frames"
    lat = dec_lat.numpy()
    assert np.isfinite(lat).all(), f"{r['id']}: non-finite latents"
    vsf = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    assert lat.shape == (1, 4, num_frames, height // vsf, width // vsf), lat.shape
    assert torch.equal(dec_lat, cb_lat), "callback latents at the last step != decode_latents input"

    # a second identical call with output_type="latent" returns the same latents (and visits the
    # same timesteps): the generator-driven parts are reproducible
    out2, visited2, _, _ = call_pipeline(pipe, r, dict(kw, generator=gen()), "latent")
    assert torch.equal(out2.frames, dec_lat), f"{r['id']}: output_type='latent' differs"
    assert visited2 == visited

    rec["output"] = f"{r['id']}.frames.npy"
    rec["final_latents"] = f"{r['id']}.latents.npy"
    _np_save(os.path.join(ref_dir, rec["output"]), frames)
    _np_save(os.path.join(ref_dir, rec["final_latents"]), lat)
    rec["timesteps"] = visited
    rec["stats"] = {"output": _stats(frames, clamp01=True), "final_latents": _stats(lat)}
    so, sl = rec["stats"]["output"], rec["stats"]["final_latents"]
    print(f"    {r['id']:58s} {len(visited):2d} steps  frames [{so['min']:.3f}, {so['max']:.3f}] "
          f"mean {so['mean']:.3f} std {so['std']:.3f} clamped {so['clamped_fraction']:.3f}  "
          f"latents [{sl['min']:.2f}, {sl['max']:.2f}] std {sl['std']:.2f}  ({time.time() - t0:.2f}s)")
    assert so["clamped_fraction"] < 0.5 and so["std"] > 0.02, f"{r['id']}: degenerate frames {so}"
    return rec


def build_references(out: str, name: str, p: dict) -> None:
    pipe_dir = os.path.join(out, "pipelines", name)
    ref_dir = os.path.join(out, "reference", name)
    common.reset_dir(ref_dir)

    kw = {"torch_dtype": torch.float32}
    if p["variant"]:
        kw["variant"] = p["variant"]
    t2v = TextToVideoSDPipeline.from_pretrained(pipe_dir, **kw)
    t2v.set_progress_bar_config(disable=True)
    for cname in ("text_encoder", "unet", "vae"):
        m = getattr(t2v, cname)
        assert all(q.dtype == torch.float32 for q in m.parameters()), cname
    # also loads without a dtype (then transformers keeps the stored dtype of the text encoder)
    plain = TextToVideoSDPipeline.from_pretrained(pipe_dir, **{k: v for k, v in kw.items() if k != "torch_dtype"})
    print("    from_pretrained without torch_dtype: " + ", ".join(
        f"{c} {getattr(plain, c).dtype}" for c in ("text_encoder", "unet", "vae")))
    del plain
    v2v = VideoToVideoSDPipeline(**t2v.components)
    v2v.set_progress_bar_config(disable=True)
    base_sched = t2v.scheduler
    base_cls = type(base_sched).__name__
    print(f"    from_pretrained({name}, {kw}): scheduler {base_cls}, vae_scale_factor {t2v.vae_scale_factor}, "
          f"default size {t2v.unet.config.sample_size * t2v.vae_scale_factor}")

    vsf = t2v.vae_scale_factor
    f, h, w = p["frames"], p["height"], p["width"]
    assert h % vsf == 0 and w % vsf == 0 and h % 8 == 0 and w % 8 == 0
    shared = {
        "latents": torch.randn((1, t2v.unet.config.in_channels, f, h // vsf, w // vsf),
                               generator=common.generator(p["seed"] + 10), dtype=torch.float32).numpy(),
        "video": make_video(f, h, w),
    }
    _np_save(os.path.join(ref_dir, "latents.npy"), shared["latents"])
    _np_save(os.path.join(ref_dir, "video.npy"), shared["video"])
    # VideoToVideoSDPipeline's video_processor (VideoProcessor(do_resize=False)) on a 4-D float numpy
    # video (F, H, W, 3) in [0, 1]: transpose to (1, 3, F, H, W) and 2x - 1, nothing else
    pre = v2v.video_processor.preprocess_video(shared["video"].copy())
    want = torch.from_numpy(2.0 * shared["video"] - 1.0).permute(3, 0, 1, 2)[None]
    assert pre.dtype == torch.float32 and torch.equal(pre, want), "video_processor is not 2x - 1"
    print(f"    latents.npy {shared['latents'].shape}  video.npy {shared['video'].shape} "
          f"[{shared['video'].min():.3f}, {shared['video'].max():.3f}]")

    sfiles = SchedulerFiles(ref_dir)
    records = []
    for r in run_list(p, base_cls):
        records.append(do_run({"t2v": t2v, "v2v": v2v}, base_sched, r, shared, sfiles, ref_dir, p))
    # strict JSON (no NaN / Infinity), the style of common.write_json
    text = json.dumps(records, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n"
    with open(os.path.join(ref_dir, "runs.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    errors = [(r["id"], r["error"]) for r in records if r["error"]]
    print(f"    {len(records)} runs, {len(errors)} errors")


# ----------------------------------------------------------------------------------------------
# conditioning check: a float64 rerun must land within float32 rounding of the recorded float32 run

COND_TOL = 5e-5  # frames max abs diff


def _cond_runs(p: dict) -> list[str]:
    return ["t2v-DDIMScheduler", f"t2v-DDIMScheduler-seed{p['seed'] + 2}-nolatents", "t2v-DDPMScheduler",
            "v2v-HeunDiscreteScheduler", "v2v-KDPM2AncestralDiscreteScheduler", "v2v-DDIMScheduler-strength1.0"]


@torch.no_grad()
def conditioning_check(out: str, name: str, p: dict) -> dict:
    """Reruns a few runs with the whole pipeline in float64 (weights, latents, video; noise drawn in
    float32 like the recorded run and cast) and compares with the recorded float32 files. A fixture
    whose random networks amplify rounding (ill-conditioned) shows up here as a large difference."""
    import diffusers.utils.torch_utils as tu
    pipe_dir, ref_dir = os.path.join(out, "pipelines", name), os.path.join(out, "reference", name)
    kw = {"torch_dtype": torch.float32}
    if p["variant"]:
        kw["variant"] = p["variant"]
    t2v = TextToVideoSDPipeline.from_pretrained(pipe_dir, **kw).to(torch.float64)
    t2v.set_progress_bar_config(disable=True)
    v2v = VideoToVideoSDPipeline(**t2v.components)
    v2v.set_progress_bar_config(disable=True)
    base = t2v.scheduler
    with open(os.path.join(ref_dir, "runs.json"), encoding="utf-8") as f:
        recs = {r["id"]: r for r in json.load(f)}
    runs = {r["id"]: r for r in run_list(p, type(base).__name__)}
    orig = tu.randn_tensor

    def randn32(shape, generator=None, device=None, dtype=None, layout=None):
        x = orig(shape, generator=generator, device=device, dtype=torch.float32, layout=layout)
        return x.to(dtype) if dtype is not None else x

    patched = [m for m in list(sys.modules.values()) if m is not None and getattr(m, "randn_tensor", None) is orig]
    for m in patched:
        m.randn_tensor = randn32
    result = {}
    try:
        for rid in _cond_runs(p):
            r, rec = runs[rid], recs[rid]
            cls = getattr(diffusers, r["cls"])
            pipe = t2v if r["mode"] == "t2v" else v2v
            pipe.scheduler = cls.from_config(base.config)
            call = {"prompt": r["prompt"], "negative_prompt": r["negative_prompt"],
                    "guidance_scale": r["guidance_scale"], "num_inference_steps": r["num_inference_steps"],
                    "eta": r["eta"], "clip_skip": r["clip_skip"], "output_type": "latent",
                    "generator": torch.Generator("cpu").manual_seed(r["seed"])}
            if r["mode"] == "t2v":
                call.update(num_frames=rec["num_frames"], height=rec["height"], width=rec["width"])
                if rec["latents"]:
                    call["latents"] = torch.from_numpy(np.load(os.path.join(ref_dir, rec["latents"]))).double()
            else:
                call.update(video=np.load(os.path.join(ref_dir, rec["video"])).astype(np.float64),
                            strength=r["strength"])
            lat = pipe(**call).frames
            frames = pipe.video_processor.postprocess_video(video=pipe.decode_latents(lat), output_type="np")[0]
            ref_f = np.load(os.path.join(ref_dir, rec["output"])).astype(np.float64)
            ref_l = np.load(os.path.join(ref_dir, rec["final_latents"])).astype(np.float64)
            df = float(np.abs(frames.astype(np.float64) - ref_f).max())
            dl = float(np.abs(lat.numpy() - ref_l).max() / np.abs(ref_l).max())
            result[rid] = (df, dl)
            print(f"    conditioning {rid:50s} float64 vs float32: frames {df:.1e}  latents (rel) {dl:.1e}")
    finally:
        for m in patched:
            m.randn_tensor = orig
    worst = max(d for d, _ in result.values())
    assert worst <= COND_TOL, f"{name} is ill-conditioned: float64 rerun moves frames by {worst:.1e} > {COND_TOL}"
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures"))
    ap.add_argument("--only", action="append", default=[], help="pipeline name (repeatable, or comma-separated)")
    args = ap.parse_args()
    only = [n for o in args.only for n in o.split(",") if n]
    unknown = [n for n in only if n not in PIPES]
    if unknown:
        ap.error(f"unknown pipeline(s) {unknown}; known: {list(PIPES)}")
    common.setup_determinism()
    out = os.path.abspath(args.out)
    t_all = time.time()
    total = 0
    for name, p in PIPES.items():
        if only and name not in only:
            continue
        t0 = time.time()
        print(f"== {name}")
        build_pipeline_folder(out, name, p)
        build_references(out, name, p)
        conditioning_check(out, name, p)
        print(f"    done in {time.time() - t0:.1f}s")
        for sub in ("pipelines", "reference"):
            root = os.path.join(out, sub, name)
            size = sum(os.path.getsize(os.path.join(root, rel)) for rel in common.list_files(root))
            n = len(common.list_files(root))
            total += size
            print(f"    {sub}/{name}: {n} files, {size} bytes")
    print(f"total: {total} bytes ({total / 2**20:.2f} MiB), {time.time() - t_all:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
