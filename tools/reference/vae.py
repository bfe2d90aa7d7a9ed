"""AutoencoderKL fixtures: tiny random-weight VAEs and what diffusers computes from them."""

from __future__ import annotations

import copy
import json
import os

import torch
from diffusers import AutoencoderKL
from diffusers.utils.torch_utils import randn_tensor
from safetensors import safe_open

from common import DTYPE_NAMES, assert_equal, generator, perturb_, round_weights_, seed_all

CONFIG_KEYS = ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
               "layers_per_block", "act_fn", "latent_channels", "norm_num_groups", "sample_size",
               "scaling_factor", "shift_factor", "force_upcast", "use_quant_conv", "use_post_quant_conv",
               "mid_block_add_attention")


def build(spec: dict, seed: int) -> AutoencoderKL:
    seed_all(seed)
    n = len(spec["block_out_channels"])
    kw = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(spec["block_out_channels"]),
        layers_per_block=spec["layers_per_block"],
        norm_num_groups=spec["norm_num_groups"],
        latent_channels=spec["latent_channels"],
        sample_size=spec.get("sample_size", 32),
        scaling_factor=spec["scaling_factor"],
    )
    for opt in ("use_quant_conv", "use_post_quant_conv", "mid_block_add_attention"):
        if opt in spec:
            kw[opt] = spec[opt]
    vae = AutoencoderKL(**kw).eval()
    perturb_(vae, seed + 1)
    shift = spec.get("logvar_bias_shift")
    if shift:
        # push whole logvar channels below DiagonalGaussianDistribution's clamp(-30, 20) so the
        # fixture exercises the clamp: encoder.conv_out's outputs are [mean channels, logvar channels]
        with torch.no_grad():
            for ch, value in shift.items():
                vae.encoder.conv_out.bias[spec["latent_channels"] + int(ch)] += value
    round_weights_(vae, spec["storage_dtype"])
    return vae


def save(vae: AutoencoderKL, pipe_dir: str, spec: dict) -> dict:
    d = os.path.join(pipe_dir, "vae")
    storage = spec["storage_dtype"]
    variant = spec.get("variant")
    kw = {"variant": variant}
    if spec.get("max_shard_size"):
        kw["max_shard_size"] = spec["max_shard_size"]
    copy.deepcopy(vae).to(storage).save_pretrained(d, **kw)
    files = sorted(os.listdir(d))
    weights = [f for f in files if f.endswith(".safetensors")]
    index = [f for f in files if f.endswith(".index.json")]
    keys, dtypes = [], set()
    for f in weights:
        with safe_open(os.path.join(d, f), "pt") as h:
            for k in h.keys():
                keys.append(k)
                dtypes.add(str(h.get_slice(k).get_dtype()))
    info = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vae.config.items() if k in CONFIG_KEYS},
        "files": files,
        "weights_files": weights,
        "index_file": index[0] if index else None,
        "variant": variant,
        "stored_dtype": DTYPE_NAMES[storage],
        "safetensors_dtypes": sorted(dtypes),
        "num_keys": len(keys),
        "num_params": sum(p.numel() for p in vae.parameters()),
    }
    if spec.get("min_shards"):
        assert len(weights) >= spec["min_shards"], weights
        with open(os.path.join(d, index[0])) as f:
            idx = json.load(f)
        assert sorted(idx["weight_map"]) == sorted(keys)
        assert sorted(set(idx["weight_map"].values())) == weights
    return info


def _tile_grid(size_hw, tile, overlap_factor):
    step = int(tile * (1 - overlap_factor))
    return [len(range(0, size_hw[0], step)), len(range(0, size_hw[1], step))]


@torch.no_grad()
def references(vae: AutoencoderKL, spec: dict, seed: int, w) -> dict:
    n, h, wd = spec["frames"], spec["height"], spec["width"]
    x = torch.rand((n, 3, h, wd), generator=generator(seed + 10), dtype=torch.float32) * 2 - 1
    w.npy("vae_x.npy", x)

    post = vae.encode(x).latent_dist
    w.npy("vae_mean.npy", post.mean)
    w.npy("vae_logvar.npy", post.logvar)
    w.npy("vae_std.npy", post.std)

    # DiagonalGaussianDistribution.sample draws randn_tensor(mean.shape, generator, dtype) and returns
    # mean + std * noise; the same generator state reproduces the noise it drew.
    noise_seed = seed + 11
    sample = post.sample(generator=generator(noise_seed))
    noise = randn_tensor(post.mean.shape, generator=generator(noise_seed), device=post.parameters.device,
                         dtype=post.parameters.dtype)
    assert_equal(sample, post.mean + post.std * noise, "posterior.sample vs mean + std * noise")
    w.npy("vae_noise.npy", noise)
    w.npy("vae_sample.npy", sample)

    lat_shape = tuple(post.mean.shape)
    z = torch.randn(lat_shape, generator=generator(seed + 12), dtype=torch.float32)
    w.npy("vae_z.npy", z)
    dec = vae.decode(z).sample
    w.npy("vae_decode.npy", dec)

    # Tiling: shrink the tile sizes on the object so the inputs are split into overlapping tiles.
    t = spec["tiling"]
    tx, tz = x, z
    if t.get("own_inputs"):
        tx = torch.rand((n, 3, t["height"], t["width"]), generator=generator(seed + 13)) * 2 - 1
        tz = torch.randn((n, vae.config.latent_channels) + tuple(vae.encode(tx).latent_dist.mean.shape[2:]),
                         generator=generator(seed + 14))
        w.npy("vae_tiled_x.npy", tx)
        w.npy("vae_tiled_z.npy", tz)
    vae.enable_tiling()
    vae.tile_sample_min_size = t["tile_sample_min_size"]
    vae.tile_latent_min_size = t["tile_latent_min_size"]
    vae.tile_overlap_factor = t["tile_overlap_factor"]
    assert tx.shape[-1] > vae.tile_sample_min_size or tx.shape[-2] > vae.tile_sample_min_size
    assert tz.shape[-1] > vae.tile_latent_min_size or tz.shape[-2] > vae.tile_latent_min_size
    tmean = vae.encode(tx).latent_dist.mean
    tdec = vae.decode(tz).sample
    vae.disable_tiling()
    w.npy("vae_tiled_mean.npy", tmean)
    w.npy("vae_tiled_decode.npy", tdec)
    if not t.get("own_inputs"):
        d_mean = (tmean - post.mean).abs().max().item()
        d_dec = (tdec - dec).abs().max().item()
        print(f"    tiled vs untiled max|diff|: mean {d_mean:.4g}, decode {d_dec:.4g}")
        assert d_mean > 1e-4 and d_dec > 1e-4, "tiling did not change the result: tiles not used?"

    tiling = dict(t)
    tiling.pop("own_inputs", None)
    tiling.update({
        "x_file": "vae_tiled_x.npy" if t.get("own_inputs") else "vae_x.npy",
        "z_file": "vae_tiled_z.npy" if t.get("own_inputs") else "vae_z.npy",
        "encode_overlap_size": int(t["tile_sample_min_size"] * (1 - t["tile_overlap_factor"])),
        "encode_blend_extent": int(t["tile_latent_min_size"] * t["tile_overlap_factor"]),
        "encode_row_limit": t["tile_latent_min_size"] - int(t["tile_latent_min_size"] * t["tile_overlap_factor"]),
        "encode_tile_grid": _tile_grid(tx.shape[2:], t["tile_sample_min_size"], t["tile_overlap_factor"]),
        "decode_overlap_size": int(t["tile_latent_min_size"] * (1 - t["tile_overlap_factor"])),
        "decode_blend_extent": int(t["tile_sample_min_size"] * t["tile_overlap_factor"]),
        "decode_row_limit": t["tile_sample_min_size"] - int(t["tile_sample_min_size"] * t["tile_overlap_factor"]),
        "decode_tile_grid": _tile_grid(tz.shape[2:], t["tile_latent_min_size"], t["tile_overlap_factor"]),
    })
    return {
        "x_shape": list(x.shape),
        "latent_shape": list(lat_shape),
        "decode_shape": list(dec.shape),
        "noise": "randn_tensor(mean.shape, generator=torch.Generator('cpu').manual_seed(noise_seed), dtype=float32)",
        "noise_seed": noise_seed,
        "logvar_clamp": [-30.0, 20.0],
        "logvar_clamped_fraction": float(((post.logvar <= -30.0) | (post.logvar >= 20.0)).float().mean()),
        "logvar_bias_shift": {str(k): v for k, v in (spec.get("logvar_bias_shift") or {}).items()},
        "tiling": tiling,
        "mean": post.mean,
        "decode": dec,
        "x": x,
        "z": z,
    }


@torch.no_grad()
def reload_check(pipe_root: str, spec: dict, x: torch.Tensor, z: torch.Tensor, mean: torch.Tensor,
                 dec: torch.Tensor) -> None:
    kw = {"subfolder": "vae", "torch_dtype": torch.float32}
    if spec.get("variant"):
        kw["variant"] = spec["variant"]
    m = AutoencoderKL.from_pretrained(pipe_root, **kw).eval()
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert_equal(m.encode(x).latent_dist.mean, mean, f"AutoencoderKL.from_pretrained({pipe_root}) encode")
    assert_equal(m.decode(z).sample, dec, f"AutoencoderKL.from_pretrained({pipe_root}) decode")
    m2 = AutoencoderKL.from_pretrained(pipe_root, **{k: v for k, v in kw.items() if k != "torch_dtype"})
    print(f"    AutoencoderKL.from_pretrained without torch_dtype loads as {m2.dtype}")
