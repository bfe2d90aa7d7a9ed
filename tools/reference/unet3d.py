"""UNet3DConditionModel fixtures: tiny random-weight text-to-video UNets, what diffusers computes from
them (the `.sample` and every block's output), and the full-size ms-1.7b key list.

Per fixture (`spec["unet"]` in fixtures.py):
  pipelines/NAME/unet/     config.json + diffusion_pytorch_model[.fp16].safetensors (save_pretrained)
  reference/NAME/          unet_sample.npy (b, c, f, h, w), unet_encoder_hidden_states.npy (b, 77, D),
                           unet_out.npy (b, c, f, h, w), unet_out_chunked.npy (enable_forward_chunking),
                           act.<module path>.npy for every recorded block output (list in meta.json
                           `unet.activations`, in execution order)
The full-size key list: tests/fixtures/unet3d/ms-1.7b-config.json + ms-1.7b-keys.tsv.

`python tools/reference/unet3d.py bench [--runs N] [--threads T]` times one PyTorch forward of the
config of crates/unet3d/benches/unet3d.rs (`cargo bench -p reel-unet3d --bench unet3d`).
"""

from __future__ import annotations

import copy
import os

import torch
from diffusers import UNet3DConditionModel
from safetensors import safe_open

from common import DTYPE_NAMES, assert_equal, generator, perturb_, round_weights_, seed_all, write_json

CONFIG_KEYS = ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
               "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups",
               "norm_eps", "cross_attention_dim", "attention_head_dim", "sample_size")

# The unet/config.json of ali-vilab/text-to-video-ms-1.7b (as the hub repo has it, bookkeeping keys aside).
MS_1_7B_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
}

# Sub-modules whose outputs are recorded (by their last path component, or the whole path).
_LEAF_KINDS = ("resnets", "temp_convs", "attentions", "temp_attentions", "downsamplers", "upsamplers")
# (Whole down/up/mid blocks are not recorded: their output is their last sub-module's.)
_TOP = ("time_proj", "time_embedding", "conv_in", "transformer_in", "conv_norm_out", "conv_out")


def _recorded(name: str) -> bool:
    parts = name.split(".")
    if name in _TOP:
        return True
    # down_blocks.i.<kind>.j / up_blocks.i.<kind>.j / mid_block.<kind>.j
    if len(parts) == 4 and parts[0] in ("down_blocks", "up_blocks") and parts[2] in _LEAF_KINDS:
        return True
    if len(parts) == 3 and parts[0] == "mid_block" and parts[1] in _LEAF_KINDS:
        return True
    return False


def build(spec: dict, seed: int) -> UNet3DConditionModel:
    seed_all(seed)
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["config"].items()}
    unet = UNet3DConditionModel(**kw).eval()
    perturb_(unet, seed + 1)
    round_weights_(unet, spec["storage_dtype"])
    return unet


def save(unet: UNet3DConditionModel, pipe_dir: str, spec: dict) -> dict:
    d = os.path.join(pipe_dir, "unet")
    storage = spec["storage_dtype"]
    variant = spec.get("variant")
    copy.deepcopy(unet).to(storage).save_pretrained(d, variant=variant)
    files = sorted(os.listdir(d))
    weights = [f for f in files if f.endswith(".safetensors")]
    keys = []
    for f in weights:
        with safe_open(os.path.join(d, f), "pt") as h:
            keys.extend(h.keys())
    return {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in unet.config.items() if k in CONFIG_KEYS},
        "files": files,
        "weights_files": weights,
        "variant": variant,
        "stored_dtype": DTYPE_NAMES[storage],
        "num_keys": len(keys),
        "num_params": sum(p.numel() for p in unet.parameters()),
    }


def _timestep(spec: dict):
    t = spec["timestep"]
    if isinstance(t, list):
        return torch.tensor(t, dtype=torch.int64 if all(isinstance(x, int) for x in t) else torch.float64)
    return t


def _timestep_json(t):
    if isinstance(t, torch.Tensor):
        return {"kind": "per_item_" + ("int" if t.dtype == torch.int64 else "float"), "value": t.tolist()}
    return {"kind": "int" if isinstance(t, int) else "float", "value": t}


@torch.no_grad()
def references(unet: UNet3DConditionModel, spec: dict, seed: int, w) -> dict:
    b, f, h, wd = spec["batch"], spec["frames"], spec["height"], spec["width"]
    cfg = unet.config
    sample = torch.randn((b, cfg.in_channels, f, h, wd), generator=generator(seed + 10), dtype=torch.float32)
    ehs = torch.randn((b, 77, cfg.cross_attention_dim), generator=generator(seed + 11), dtype=torch.float32)
    t = _timestep(spec)
    w.npy("unet_sample.npy", sample)
    w.npy("unet_encoder_hidden_states.npy", ehs)

    # every block output, in execution order (a module that runs twice would be recorded twice: none does)
    records: list[tuple[str, torch.Tensor]] = []

    def hook(name):
        def fn(_mod, _inp, out):
            if isinstance(out, tuple):
                out = out[0]
            elif hasattr(out, "sample"):
                out = out.sample
            records.append((name, out.detach().clone()))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in unet.named_modules() if _recorded(n)]
    out = unet(sample, t, ehs).sample
    for hd in handles:
        hd.remove()
    names = [n for n, _ in records]
    assert len(set(names)) == len(names), "a recorded module ran twice"
    w.npy("unet_out.npy", out)
    for name, act in records:
        w.npy(f"act.{name}.npy", act)

    # feed-forward chunking: same result (diffusers needs the chunked dim to be a multiple of chunk_size)
    chunk = spec["chunking"]
    unet.enable_forward_chunking(chunk_size=chunk["chunk_size"], dim=chunk["dim"])
    out_chunked = unet(sample, t, ehs).sample
    unet.disable_forward_chunking()
    w.npy("unet_out_chunked.npy", out_chunked)
    chunk_diff = (out_chunked - out).abs().max().item()
    print(f"    chunked vs plain max|diff|: {chunk_diff:.3g}")
    assert chunk_diff < 1e-4

    factor = 2 ** (len(cfg.block_out_channels) - 1)
    return {
        "timestep": _timestep_json(t),
        "sample_shape": list(sample.shape),
        "activations": names,
        "chunking": dict(chunk, max_abs_diff_vs_plain=chunk_diff),
        "explicit_upsample_size": any(s % factor != 0 for s in (h, wd)),
        "out": out,
        "sample": sample,
        "ehs": ehs,
        "t": t,
    }


@torch.no_grad()
def reload_check(pipe_root: str, spec: dict, sample, t, ehs, out) -> None:
    kw = {"subfolder": "unet", "torch_dtype": torch.float32}
    if spec.get("variant"):
        kw["variant"] = spec["variant"]
    m = UNet3DConditionModel.from_pretrained(pipe_root, **kw).eval()
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert_equal(m(sample, t, ehs).sample, out, f"UNet3DConditionModel.from_pretrained({pipe_root})")


def write_key_list(out_root: str) -> None:
    """(key, shape) of the full-size ms-1.7b UNet, built on the meta device (no memory, no init)."""
    d = os.path.join(out_root, "unet3d")
    os.makedirs(d, exist_ok=True)
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in MS_1_7B_CONFIG.items()}
    with torch.device("meta"):
        unet = UNet3DConditionModel(**kw)
    sd = unet.state_dict()
    lines = [f"{k}\t{','.join(str(s) for s in v.shape)}\n" for k, v in sd.items()]
    with open(os.path.join(d, "ms-1.7b-keys.tsv"), "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(sorted(lines))
    config = dict(MS_1_7B_CONFIG)
    config["_class_name"] = "UNet3DConditionModel"
    write_json(os.path.join(d, "ms-1.7b-config.json"), config)
    n = sum(v.numel() for v in sd.values())
    print(f"== unet3d/ms-1.7b-keys.tsv: {len(lines)} tensors, {n} parameters")


# The benchmark config of crates/unet3d/benches/unet3d.rs: the ms-1.7b layout at 1/10 width.
BENCH_CONFIG = dict(MS_1_7B_CONFIG, block_out_channels=[32, 64, 128, 128], attention_head_dim=8,
                    cross_attention_dim=128)
BENCH_INPUT = {"batch": 1, "frames": 8, "height": 32, "width": 32, "timestep": 500}


@torch.no_grad()
def bench(runs: int = 5, threads: int = 2) -> None:
    """One forward of the benchmark config on the CPU (PyTorch f32, `threads` threads), random
    weights; prints the median and min over `runs` runs after one warm-up run."""
    import time

    torch.set_num_threads(threads)
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in BENCH_CONFIG.items()}
    unet = UNet3DConditionModel(**kw).eval()
    perturb_(unet, 1)
    i = BENCH_INPUT
    sample = torch.randn((i["batch"], 4, i["frames"], i["height"], i["width"]), generator=generator(2))
    ehs = torch.randn((i["batch"], 77, BENCH_CONFIG["cross_attention_dim"]), generator=generator(3))
    times = []
    for r in range(runs + 1):
        t0 = time.perf_counter()
        unet(sample, i["timestep"], ehs)
        dt = time.perf_counter() - t0
        print(f"run {r}{' (warm-up)' if r == 0 else ''}: {dt:.3f} s")
        if r:
            times.append(dt)
    times.sort()
    print(f"PyTorch {torch.__version__} unet3d forward (f32, {torch.get_num_threads()} threads, blocks "
          f"{BENCH_CONFIG['block_out_channels']}, sample {list(sample.shape)}): median {times[len(times) // 2]:.3f} s, "
          f"min {times[0]:.3f} s over {runs} runs")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="UNet3D reference tools (the fixtures are written by generate.py)")
    ap.add_argument("command", choices=["bench"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    bench(a.runs, a.threads)
