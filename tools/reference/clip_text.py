"""CLIPTextModel fixtures: tiny random-weight text encoders and what transformers/diffusers compute.

(Named clip_text.py, not clip.py, so it cannot shadow an installed `clip` package.)
"""

from __future__ import annotations

import copy
import os
import types

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_synth import (
    TextToVideoSDPipeline,
)

from common import DTYPE_NAMES, assert_equal, perturb_, round_weights_, seed_all

CONFIG_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "hidden_act", "layer_norm_eps", "max_position_embeddings", "bos_token_id", "eos_token_id",
               "pad_token_id", "projection_dim")


def build(spec: dict, tok_info: dict, seed: int) -> CLIPTextModel:
    seed_all(seed)
    cfg = CLIPTextConfig(
        vocab_size=tok_info["vocab_size"],
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        hidden_act=spec["hidden_act"],
        layer_norm_eps=spec["layer_norm_eps"],
        max_position_embeddings=77,
        bos_token_id=tok_info["bos_token_id"],
        eos_token_id=tok_info["eos_token_id"],
        pad_token_id=tok_info["pad_token_id"],
        projection_dim=spec["projection_dim"],
    )
    model = CLIPTextModel(cfg).eval()
    perturb_(model, seed + 1, embedding_std=spec.get("embedding_std", 0.5))
    round_weights_(model, spec["storage_dtype"])
    return model


def _legacy_rewrite(path: str) -> list[str]:
    """Rewrite a transformers-5 file into the transformers-4 hub layout: every key under
    `text_model.` plus the (then persistent) int64 `text_model.embeddings.position_ids` [1, 77]."""
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        tensors = {f"text_model.{k}": f.get_tensor(k) for k in f.keys()}
    tensors["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    save_file(tensors, path, metadata=meta)
    return sorted(tensors)


def save(model: CLIPTextModel, pipe_dir: str, spec: dict) -> dict:
    d = os.path.join(pipe_dir, "text_encoder")
    storage = spec["storage_dtype"]
    variant = spec.get("variant")
    m = copy.deepcopy(model).to(storage)
    m.save_pretrained(d, variant=variant)
    fname = "model.safetensors" if variant is None else f"model.{variant}.safetensors"
    path = os.path.join(d, fname)
    assert os.path.isfile(path), os.listdir(d)
    if spec.get("legacy_layout"):
        keys = _legacy_rewrite(path)
    else:
        with safe_open(path, "pt") as f:
            keys = sorted(f.keys())
    with safe_open(path, "pt") as f:
        dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()})
    return {
        "config": {k: getattr(model.config, k) for k in CONFIG_KEYS},
        "files": sorted(os.listdir(d)),
        "weights_file": fname,
        "variant": variant,
        "stored_dtype": DTYPE_NAMES[storage],
        "safetensors_dtypes": dtypes,
        "key_prefix": "text_model." if spec.get("legacy_layout") else "",
        "has_position_ids_key": any(k.endswith("position_ids") for k in keys),
        "num_keys": len(keys),
        "keys": keys,
    }


class _TextEncoderShim:
    """diffusers 0.42.1's clip_skip branch reads `self.text_encoder.text_model.final_layer_norm`
    (the transformers-4 module layout). transformers 5's CLIPTextModel has no `.text_model`: its
    embeddings/encoder/final_layer_norm sit on the model itself, so the pipeline raises
    AttributeError with a real CLIPTextModel. This shim maps `.text_model` to the model so the
    pipeline's own code computes the clip_skip embeddings unchanged."""

    def __init__(self, model: CLIPTextModel):
        self._model = model
        self.text_model = model
        self.config = model.config
        self.dtype = model.dtype

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)


def _encode_prompt(model, tok, prompts, clip_skip):
    """TextToVideoSDPipeline.encode_prompt (diffusers/pipelines/deprecated/text_to_video_synthesis/
    pipeline_text_to_video_synth.py), run unbound on a stand-in `self`:
        clip_skip None: prompt_embeds = text_encoder(ids)[0]
        else:           out = text_encoder(ids, output_hidden_states=True)
                        h = out[-1][-(clip_skip + 1)]
                        prompt_embeds = text_encoder.text_model.final_layer_norm(h)
    (out[-1] is the hidden_states tuple: embeddings output + one entry per layer, the last one
    before final_layer_norm.)"""
    pipe = types.SimpleNamespace(tokenizer=tok, text_encoder=_TextEncoderShim(model), unet=None)
    embeds, _ = TextToVideoSDPipeline.encode_prompt(
        pipe, prompts, torch.device("cpu"), 1, False, clip_skip=clip_skip
    )
    return embeds


@torch.no_grad()
def references(model: CLIPTextModel, tok, prompts, ids: list[list[int]], w, clip_skips=(1, 2)) -> dict:
    input_ids = torch.tensor(ids, dtype=torch.int64)
    last = model(input_ids).last_hidden_state
    via_pipe = _encode_prompt(model, tok, prompts, None)
    assert_equal(via_pipe, last, "encode_prompt(clip_skip=None) vs CLIPTextModel(ids).last_hidden_state")
    w.npy("clip_last_hidden_state.npy", last)
    out = model(input_ids, output_hidden_states=True)
    n_hidden = len(out.hidden_states)
    assert n_hidden == model.config.num_hidden_layers + 1
    for k in clip_skips:
        emb = _encode_prompt(model, tok, prompts, k)
        manual = model.final_layer_norm(out.hidden_states[-(k + 1)])
        assert_equal(emb, manual, f"clip_skip {k}")
        w.npy(f"clip_skip{k}.npy", emb)
    # pooled output is not used by the text-to-video pipelines; not stored
    return {"clip_skips": list(clip_skips), "num_hidden_states": n_hidden,
            "last_hidden_state": last}


@torch.no_grad()
def reload_check(pipe_root: str, spec: dict, ids: list[list[int]], expected: torch.Tensor) -> None:
    """Load with the library loader exactly as a pipeline would and recompute."""
    kw = {"subfolder": "text_encoder", "dtype": torch.float32}
    if spec.get("variant"):
        kw["variant"] = spec["variant"]
    m = CLIPTextModel.from_pretrained(pipe_root, **kw).eval()
    assert m.dtype == torch.float32
    got = m(torch.tensor(ids, dtype=torch.int64)).last_hidden_state
    assert_equal(got, expected, f"CLIPTextModel.from_pretrained({pipe_root}, {kw})")
    # loading without dtype keeps the stored dtype (transformers 5 default dtype="auto")
    m2 = CLIPTextModel.from_pretrained(pipe_root, **{k: v for k, v in kw.items() if k != "dtype"})
    assert m2.dtype == spec["storage_dtype"], (m2.dtype, spec["storage_dtype"])
