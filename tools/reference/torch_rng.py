#!/usr/bin/env python3
"""Reference draws of PyTorch's CPU generator for reel-core's `torch_rng` parity tests.

Standalone: run with the pinned venv (torch 2.15.0 CPU use, diffusers 0.42.1, numpy):

    /work/pyenv/ref/bin/python tools/reference/torch_rng.py --out tests/fixtures/torch_rng

Deterministic: a second run writes byte-identical files (fixed seeds, sorted JSON keys, one thread).

What it records (`manifest.json` describes every case; the values are in `f32.npy`, `f64.npy`,
`i64.npy`, each the concatenation of all outputs of that dtype, in C order, at the recorded offset):

- `seq_*`: one `torch.Generator("cpu")` per seed in {0, 1, 42, 2**32+5, 2**63-1} plus one never
  seeded (torch's default seed), then a fixed sequence of calls on that one generator:
  randn(4,4,2,8,8) f32, randn(7), randn(33), randn(5) f64, randn(40) f64, randn(1) f32 (served from
  the Box-Muller cache the f64 randn(5) left), randn(3,5) f32, rand(40) f32, rand(20) f64,
  400 full-range int64 `random_(-2**63, None)` (= random64(), crosses the mt19937 twist), then
  randn(33) f16, randn(17) bf16, randn(5) f16 and rand(4) f32 (checks what the half paths consume).
- `size_f32_N` (N = 1..80 and some larger N), `size_f64_N` (N = 1..40), `size_f16_N` and
  `size_bf16_N` (N = 1..40, 100, 257): a fresh generator seeded 1000+N / 2000+N / 4000+N / 5000+N,
  one randn(N): the numel < 16 scalar path, the blocks of 16 and the "recompute the last 16" tail
  rule (float16/bfloat16 are stored widened to float32, exactly; their tail differs from float32's).
- `diffusers_*`: `diffusers.utils.torch_utils.randn_tensor` itself, with one generator and with a
  list of generators (per-sample draws, concatenated), in float32, float16 and bfloat16. The big latent shape is stored as an FNV-1a
  64-bit digest of the little-endian float32 bytes plus its first and last 64 values.
- `scalar_kernel_*`: the same kind of draws in a child process with ATEN_CPU_CAPABILITY=default,
  i.e. torch's non-AVX2 normal kernel (plain libm logf/cosf/sinf), for machines without AVX2.

The parent process must run torch's AVX2 normal kernel (CPU capability AVX2 or AVX512; torch does
not register an AVX512 normal kernel, so AVX512 machines use the AVX2 one); the script checks it.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np
import torch

SEEDS = [0, 1, 42, 2**32 + 5, 2**63 - 1]
DEFAULT_SEED_CASE = None  # a Generator that is never seeded
SIZES_F32 = list(range(1, 81)) + [100, 127, 255, 256, 257, 1000, 1023, 4097]
SIZES_F64 = list(range(1, 41))
BIG_LATENT_SHAPE = (1, 4, 16, 40, 64)  # ModelScope-style video latents (b, c, f, h/8, w/8)
SCALAR_SIZES = [16, 17, 31, 33, 47, 100]

SIZES_HALF = list(range(1, 41)) + [100, 257]
DT = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


class Store:
    def __init__(self):
        self.parts = {"f32": [], "f64": [], "i64": []}
        self.len = {"f32": 0, "f64": 0, "i64": 0}

    def add(self, kind: str, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr).reshape(-1)
        off = self.len[kind]
        self.parts[kind].append(arr)
        self.len[kind] += arr.size
        return off

    def record(self, t: torch.Tensor) -> dict:
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()  # exact widening; the manifest keeps the real dtype
        a = t.detach().cpu().numpy()
        kind = {np.float32: "f32", np.float64: "f64", np.int64: "i64"}[a.dtype.type]
        return {"file": kind + ".npy", "offset": self.add(kind, a), "numel": int(a.size)}


def gen(seed):
    g = torch.Generator(device="cpu")
    if seed is not None:
        g.manual_seed(seed)
    return g


def op(store, g, name, dtype, shape):
    if name == "randn":
        t = torch.randn(shape, generator=g, dtype=DT[dtype])
    elif name == "rand":
        t = torch.rand(shape, generator=g, dtype=DT[dtype])
    elif name == "random64":
        # from = int64 min, to = None: torch's full-64-bit-range kernel returns random64() as int64.
        t = torch.empty(shape, dtype=torch.int64).random_(-(2**63), None, generator=g)
    else:
        raise ValueError(name)
    rec = {"op": name, "dtype": dtype, "shape": list(shape)}
    rec.update(store.record(t))
    return rec


SEQUENCE = [
    ("randn", "float32", (4, 4, 2, 8, 8)),
    ("randn", "float32", (7,)),
    ("randn", "float32", (33,)),
    ("randn", "float64", (5,)),
    ("randn", "float64", (40,)),
    ("randn", "float32", (1,)),
    ("randn", "float32", (3, 5)),
    ("rand", "float32", (40,)),
    ("rand", "float64", (20,)),
    ("random64", "int64", (400,)),
    ("randn", "float16", (33,)),
    ("randn", "bfloat16", (17,)),
    ("randn", "float16", (5,)),
    ("rand", "float32", (4,)),
]


def parent_cases(store):
    cases = []
    for seed in SEEDS + [DEFAULT_SEED_CASE]:
        g = gen(seed)
        case = {
            "name": f"seq_{'default' if seed is None else seed}",
            "seed": None if seed is None else str(seed),
            "initial_seed": str(g.initial_seed()),
            "ops": [op(store, g, *o) for o in SEQUENCE],
        }
        cases.append(case)
    for n in SIZES_F32:
        g = gen(1000 + n)
        cases.append({"name": f"size_f32_{n}", "seed": str(1000 + n), "ops": [op(store, g, "randn", "float32", (n,))]})
    for n in SIZES_F64:
        g = gen(2000 + n)
        cases.append({"name": f"size_f64_{n}", "seed": str(2000 + n), "ops": [op(store, g, "randn", "float64", (n,))]})
    for dtype, base, tag in (("float16", 4000, "f16"), ("bfloat16", 5000, "bf16")):
        for n in SIZES_HALF:
            g = gen(base + n)
            cases.append({"name": f"size_{tag}_{n}", "seed": str(base + n), "ops": [op(store, g, "randn", dtype, (n,))]})
    return cases


def diffusers_cases(store):
    from diffusers.utils.torch_utils import randn_tensor

    cases = []
    cpu = torch.device("cpu")
    # One generator, a small latent shape: stored in full.
    g = gen(1234)
    t = randn_tensor((1, 4, 3, 8, 12), generator=g, device=cpu, dtype=torch.float32)
    rec = {"op": "randn_tensor", "dtype": "float32", "shape": list(t.shape)}
    rec.update(store.record(t))
    cases.append({"name": "diffusers_randn_tensor_small", "seed": "1234", "ops": [rec]})
    # A list of generators: diffusers draws shape (1, ...) per generator and concatenates.
    seeds = [7, 8]
    t = randn_tensor((2, 4, 2, 8, 8), generator=[gen(s) for s in seeds], device=cpu, dtype=torch.float32)
    rec = {"op": "randn_tensor_list", "dtype": "float32", "shape": list(t.shape), "seeds": [str(s) for s in seeds]}
    rec.update(store.record(t))
    cases.append({"name": "diffusers_randn_tensor_generator_list", "seed": None, "ops": [rec]})
    # A float16 pipeline: randn_tensor draws in float16 on the CPU (numel % 16 != 0 here).
    g = gen(99)
    t = randn_tensor((1, 4, 3, 5, 7), generator=g, device=cpu, dtype=torch.float16)
    rec = {"op": "randn_tensor", "dtype": "float16", "shape": list(t.shape)}
    rec.update(store.record(t))
    cases.append({"name": "diffusers_randn_tensor_f16", "seed": "99", "ops": [rec]})
    seeds = [11, 12]
    t = randn_tensor((2, 3, 1, 3, 7), generator=[gen(s) for s in seeds], device=cpu, dtype=torch.bfloat16)
    rec = {"op": "randn_tensor_list", "dtype": "bfloat16", "shape": list(t.shape), "seeds": [str(s) for s in seeds]}
    rec.update(store.record(t))
    cases.append({"name": "diffusers_randn_tensor_generator_list_bf16", "seed": None, "ops": [rec]})
    # A real video latent shape: digest plus head/tail (the whole tensor is 640 KB).
    g = gen(42)
    t = randn_tensor(BIG_LATENT_SHAPE, generator=g, device=cpu, dtype=torch.float32)
    flat = t.reshape(-1).numpy().astype("<f4")
    rec = {
        "op": "randn_tensor_digest",
        "dtype": "float32",
        "shape": list(t.shape),
        "fnv1a64_le_bytes": fnv1a64(flat.tobytes()),
        "head": store.record(torch.from_numpy(flat[:64].copy())),
        "tail": store.record(torch.from_numpy(flat[-64:].copy())),
    }
    cases.append({"name": "diffusers_randn_tensor_big", "seed": "42", "ops": [rec]})
    return cases


CHILD_DRAWS = [(0, (4, 4, 2, 8, 8)), (42, (4, 4, 2, 8, 8))] + [(3000 + n, (n,)) for n in SCALAR_SIZES]


def draws():
    out = [torch.randn(shape, generator=gen(seed), dtype=torch.float32).reshape(-1).numpy() for seed, shape in CHILD_DRAWS]
    return np.concatenate(out).astype("<f4")


def child_main():
    """Runs under ATEN_CPU_CAPABILITY=...: writes its capability and CHILD_DRAWS to stdout."""
    torch.set_num_threads(1)
    info = {"capability": torch.backends.cpu.get_cpu_capability(), "shapes": [[s, list(sh)] for s, sh in CHILD_DRAWS]}
    head = json.dumps(info).encode()
    sys.stdout.buffer.write(len(head).to_bytes(4, "little") + head + draws().tobytes())


def run_child(capability):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], env=env,
                         capture_output=True, check=True)
    n = int.from_bytes(res.stdout[:4], "little")
    return json.loads(res.stdout[4:4 + n]), np.frombuffer(res.stdout[4 + n:], dtype="<f4")


def check_avx2_child_equals_parent():
    """torch registers no AVX512 normal kernel: a forced-AVX2 process must draw what this one draws."""
    info, data = run_child("avx2")
    if info["capability"] != "AVX2":
        raise SystemExit(f"forced-avx2 child ran {info['capability']}")
    if data.tobytes() != draws().tobytes():
        raise SystemExit("forced-AVX2 draws differ from this process's: the normal kernel is not the AVX2 one")
    return True


def scalar_cases(store):
    info, data = run_child("default")
    if info["capability"] != "DEFAULT":
        raise SystemExit(f"child did not run torch's DEFAULT CPU capability: {info['capability']}")
    cases, pos = [], 0
    for seed, shape in info["shapes"]:
        numel = int(np.prod(shape))
        rec = {"op": "randn", "dtype": "float32", "shape": shape, "kernel": "scalar"}
        rec.update(store.record(torch.from_numpy(data[pos:pos + numel].copy())))
        pos += numel
        cases.append({"name": f"scalar_kernel_{seed}_{'x'.join(map(str, shape))}", "seed": str(seed), "ops": [rec]})
    return cases, info["capability"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures/torch_rng")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main()
        return
    torch.set_num_threads(1)
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        raise SystemExit(f"torch runs CPU capability {cap}; these fixtures need its AVX2 normal kernel")
    import diffusers

    store = Store()
    cases = parent_cases(store) + diffusers_cases(store)
    sc, child_cap = scalar_cases(store)
    cases += sc
    manifest = {
        "about": "PyTorch CPU generator reference draws; see tools/reference/torch_rng.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "libc": " ".join(platform.libc_ver()),
        "cpu_capability": cap,
        "normal_kernel": "avx2",
        "avx2_child_draws_equal": check_avx2_child_equals_parent(),
        "scalar_child_cpu_capability": child_cap,
        "cases": cases,
    }
    os.makedirs(args.out, exist_ok=True)
    for kind, dtype in (("f32", "<f4"), ("f64", "<f8"), ("i64", "<i8")):
        arr = np.concatenate(store.parts[kind]).astype(dtype) if store.parts[kind] else np.zeros(0, dtype)
        np.save(os.path.join(args.out, kind + ".npy"), arr)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        # One case per line: compact, but still readable and diffable.
        cases = manifest.pop("cases")
        head = json.dumps(manifest, indent=1, sort_keys=True)
        body = ",\n".join("  " + json.dumps(c, sort_keys=True) for c in cases)
        f.write(head[:-2] + ',\n "cases": [\n' + body + "\n ]\n}\n")
        manifest["cases"] = cases
    total = 0
    for name in sorted(os.listdir(args.out)):
        size = os.path.getsize(os.path.join(args.out, name))
        total += size
        print(f"{name:16s} {size:8d} bytes")
    print(f"{'total':16s} {total:8d} bytes, {len(manifest['cases'])} cases, capability {cap}, child {child_cap}")


if __name__ == "__main__":
    main()
