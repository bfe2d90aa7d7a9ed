#!/usr/bin/env python3
"""Reference fixture generator for reel.

    /work/pyenv/ref/bin/python tools/reference/generate.py --out tests/fixtures [--only NAME ...]

Writes, for every fixture NAME in fixtures.py:
  <out>/pipelines/NAME/   a diffusers pipeline folder (model_index.json + component folders)
  <out>/reference/NAME/   what transformers/diffusers compute from it (.npy, tokens.json, meta.json)
CPU only, deterministic: a second run writes byte-identical files.
"""

from __future__ import annotations

import argparse
import os
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

import torch  # noqa: E402
import diffusers  # noqa: E402
import transformers  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402

import common  # noqa: E402
import clip_tokenizer  # noqa: E402
import clip_text  # noqa: E402
import vae as vae_mod  # noqa: E402
import unet3d as unet_mod  # noqa: E402
from fixtures import FIXTURES  # noqa: E402

PIPELINE_CLASS = "TextToVideoSDPipeline"
LIBRARY_OF = {
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "unet": ["diffusers", "UNet3DConditionModel"],
}


def write_model_index(pipe_dir: str, components: list[str]) -> None:
    """model_index.json as DiffusionPipeline.save_pretrained writes it (json indent 2, sorted keys),
    listing only the components present."""
    import json

    idx = {"_class_name": PIPELINE_CLASS, "_diffusers_version": diffusers.__version__}
    for c in components:
        idx[c] = LIBRARY_OF[c]
    with open(os.path.join(pipe_dir, "model_index.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(idx, indent=2, sort_keys=True) + "\n")


def versions() -> dict:
    return {"torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__,
            "tokenizers": tokenizers.__version__}


def build_fixture(out: str, name: str, spec: dict) -> None:
    t0 = time.time()
    print(f"== {name}")
    seed = spec["seed"]
    pipe_dir = os.path.join(out, "pipelines", name)
    common.reset_dir(pipe_dir)
    common.reset_dir(os.path.join(out, "reference", name))
    w = common.RefWriter(out, name)
    components = [c for c in ("tokenizer", "text_encoder", "vae", "unet") if c in spec]
    meta = {"name": name, "seed": seed, "pipeline_dir": f"pipelines/{name}", "components": components,
            "versions": versions(), "reference_dtype": "float32"}

    tok = None
    if "tokenizer" in spec:
        tok = clip_tokenizer.build_tokenizer(os.path.join(pipe_dir, "tokenizer"), spec["tokenizer"])
        w.json("tokens.json", clip_tokenizer.tokens_json(tok))
        meta["tokenizer"] = tok["info"]
        print(f"    tokenizer: {tok['info']['vocab_size']} ids, pad {tok['info']['pad_token']!r} "
              f"= {tok['info']['pad_token_id']}, files {tok['info']['files']}")

    if "text_encoder" in spec:
        te_spec = spec["text_encoder"]
        te = clip_text.build(te_spec, tok["info"], seed + 100)
        info = clip_text.save(te, pipe_dir, te_spec)
        refs = clip_text.references(te, tok["tok"], clip_tokenizer.PROMPTS, tok["ids"], w)
        clip_text.reload_check(pipe_dir, te_spec, tok["ids"], refs.pop("last_hidden_state"))
        info.update(refs)
        info["weights_seed"] = seed + 101
        meta["text_encoder"] = info

    if "vae" in spec:
        v_spec = spec["vae"]
        v = vae_mod.build(v_spec, seed + 200)
        info = vae_mod.save(v, pipe_dir, v_spec)
        refs = vae_mod.references(v, v_spec, seed + 200, w)
        vae_mod.reload_check(pipe_dir, v_spec, refs.pop("x"), refs.pop("z"), refs.pop("mean"), refs.pop("decode"))
        info.update(refs)
        info["scaling_factor"] = v.config.scaling_factor
        info["weights_seed"] = seed + 201
        meta["vae"] = info

    if "unet" in spec:
        u_spec = spec["unet"]
        u = unet_mod.build(u_spec, seed + 300)
        info = unet_mod.save(u, pipe_dir, u_spec)
        refs = unet_mod.references(u, u_spec, seed + 300, w)
        unet_mod.reload_check(pipe_dir, u_spec, refs.pop("sample"), refs.pop("t"), refs.pop("ehs"), refs.pop("out"))
        info.update(refs)
        info["weights_seed"] = seed + 301
        meta["unet"] = info

    write_model_index(pipe_dir, components)
    meta["pipeline_files"] = common.list_files(pipe_dir)
    w.meta(meta)
    print(f"    done in {time.time() - t0:.1f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures"))
    ap.add_argument("--only", action="append", default=[],
                    help="fixture name (repeatable, or comma-separated); default: all")
    ap.add_argument("--list", action="store_true", help="list fixture names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(FIXTURES))
        return 0
    only = [n for o in args.only for n in o.split(",") if n]
    unknown = [n for n in only if n not in FIXTURES]
    if unknown:
        ap.error(f"unknown fixture(s) {unknown}; known: {list(FIXTURES)}")
    common.setup_determinism()
    out = os.path.abspath(args.out)
    for name, spec in FIXTURES.items():
        if only and name not in only:
            continue
        build_fixture(out, name, spec)

    if not only or any(n.startswith("unet") for n in only):
        unet_mod.write_key_list(out)

    # sizes of what this generator owns (other tools may write other folders under --out)
    total = 0
    print(f"== files under {out}/{{pipelines,reference}}")
    for sub in ("pipelines", "reference"):
        for rel in common.list_files(os.path.join(out, sub)):
            size = os.path.getsize(os.path.join(out, sub, rel))
            total += size
            print(f"  {size:>10}  {sub}/{rel}")
    print(f"total: {total} bytes ({total / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
