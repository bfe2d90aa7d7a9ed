"""Shared helpers for the reference generator: determinism, weight perturbation, file writing.

Every fixture seeds its own torch.Generator objects explicitly; nothing depends on global RNG state
except model construction (which is overwritten by `perturb_` anyway, and is seeded too).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil

import numpy as np
import torch
from torch import nn


def setup_determinism() -> None:
    """Process-wide settings: deterministic kernels, one CPU thread (reduction order fixed)."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.set_default_dtype(torch.float32)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)


@torch.no_grad()
def perturb_(model: nn.Module, seed: int, embedding_std: float = 0.5) -> dict:
    """Overwrite EVERY parameter with seeded random values so no layer is an identity / zero.

    - norm scales (LayerNorm/GroupNorm weight): 1 + 0.1 * randn
    - every bias: 0.1 * randn
    - nn.Embedding tables: embedding_std * randn
    - every other weight (Linear, Conv): randn / sqrt(fan_in), fan_in = numel / out_features,
      which keeps activations O(1) through the network.
    Parameters are visited in `named_parameters()` order (fixed by module construction).
    Returns a count per rule, for the log.
    """
    owner = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            owner[f"{mname}.{pname}" if mname else pname] = mod
    g = generator(seed)
    counts = {"norm_weight": 0, "bias": 0, "embedding": 0, "weight": 0}
    for name, p in model.named_parameters():
        mod = owner[name]
        leaf = name.rsplit(".", 1)[-1]
        noise = torch.randn(tuple(p.shape), generator=g, dtype=torch.float32)
        if isinstance(mod, NORM_TYPES) and leaf == "weight":
            new, kind = 1.0 + 0.1 * noise, "norm_weight"
        elif leaf == "bias":
            new, kind = 0.1 * noise, "bias"
        elif isinstance(mod, nn.Embedding) and leaf == "weight":
            new, kind = embedding_std * noise, "embedding"
        elif leaf == "weight" and p.dim() >= 2:
            fan_in = p[0].numel()
            new, kind = noise / math.sqrt(fan_in), "weight"
        else:
            raise ValueError(f"perturb_: no rule for parameter {name} {tuple(p.shape)} of {type(mod).__name__}")
        p.copy_(new.to(p.dtype))
        counts[kind] += 1
    return counts


@torch.no_grad()
def round_weights_(model: nn.Module, storage_dtype: torch.dtype) -> None:
    """Round every parameter/buffer (float ones) to `storage_dtype` and back to float32 in place.

    References for a checkpoint stored in fp16/bf16 are then computed in f32 from exactly the values
    that an f32 loader of the stored file sees.
    """
    if storage_dtype == torch.float32:
        return
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            t.copy_(t.to(storage_dtype).to(torch.float32))


DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def dumps_json(obj) -> str:
    """The JSON style for everything this tool writes itself (not library-written files)."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True) + "\n"


def write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(dumps_json(obj))


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.to(torch.float32)
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    elif x.dtype.kind in "iu":
        x = x.astype(np.int64, copy=False)
    else:
        raise TypeError(f"unsupported dtype {x.dtype}")
    return np.ascontiguousarray(x)


def stats(arr: np.ndarray) -> dict:
    a = arr.astype(np.float64)
    return {"max_abs": float(np.max(np.abs(a))), "mean": float(a.mean()), "std": float(a.std())}


def fmt_stats(s: dict) -> str:
    return f"max|x|={s['max_abs']:.4g} mean={s['mean']:.4g} std={s['std']:.4g}"


class RefWriter:
    """Writes the files of one reference/<name>/ folder and remembers them for meta.json."""

    def __init__(self, root: str, name: str):
        self.name = name
        self.dir = os.path.join(root, "reference", name)
        self.files: list[str] = []
        self.shapes: dict[str, list[int]] = {}
        self.stats: dict[str, dict] = {}

    def npy(self, fname: str, x) -> np.ndarray:
        arr = to_numpy(x)
        path = os.path.join(self.dir, fname)
        os.makedirs(self.dir, exist_ok=True)
        with open(path, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        self.files.append(fname)
        self.shapes[fname] = list(arr.shape)
        if arr.dtype == np.float32:
            self.stats[fname] = stats(arr)
            print(f"    {self.name}/{fname:28s} {str(arr.shape):20s} {fmt_stats(self.stats[fname])}")
        else:
            print(f"    {self.name}/{fname:28s} {str(arr.shape):20s} {arr.dtype}")
        return arr

    def json(self, fname: str, obj) -> None:
        write_json(os.path.join(self.dir, fname), obj)
        self.files.append(fname)

    def meta(self, meta: dict) -> None:
        meta = dict(meta)
        meta["files"] = sorted(self.files)
        meta["shapes"] = self.shapes
        meta["stats"] = self.stats
        write_json(os.path.join(self.dir, "meta.json"), meta)


def reset_dir(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def list_files(root: str) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def assert_equal(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if not torch.equal(a, b):
        diff = (a.float() - b.float()).abs().max().item()
        raise AssertionError(f"{what}: reloaded output differs (max abs diff {diff})")
