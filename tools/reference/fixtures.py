"""Fixture definitions. Names are used by the Rust tests: keep them.

Each fixture has a base seed; components derive their seeds from it (see generate.py).
"""

from __future__ import annotations

import torch

EOT = "<|endoftext|>"
BANG = "!"

FIXTURES: dict[str, dict] = {
    # --- tokenizer only, real full CLIP vocabulary (49408 ids) ---
    "tok-real-eot": {
        "seed": 100,
        "tokenizer": {"num_merges": None, "pad": EOT, "format": "vocab_merges", "config_style": "added_token"},
    },
    "tok-real-bang": {
        "seed": 200,
        "tokenizer": {"num_merges": None, "pad": BANG, "format": "vocab_merges", "config_style": "added_token"},
    },
    "tok-real-json": {
        "seed": 300,
        "tokenizer": {"num_merges": None, "pad": BANG, "format": "tokenizer_json"},
    },
    # --- tiny models ---
    "tiny-a": {
        "seed": 1000,
        "tokenizer": {"num_merges": 500, "pad": EOT, "format": "vocab_merges", "config_style": "plain"},
        "text_encoder": {
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 16,
            "storage_dtype": torch.float32, "variant": None,
        },
        "vae": {
            "block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8, "latent_channels": 4,
            "sample_size": 32, "scaling_factor": 0.18215, "storage_dtype": torch.float32, "variant": None,
            "frames": 2, "height": 32, "width": 32,
            # 32x32 input -> 3x3 encoder tiles of 16 (last one 8 wide), 16x16 latent -> 3x3 decoder tiles
            "tiling": {"tile_sample_min_size": 16, "tile_latent_min_size": 8, "tile_overlap_factor": 0.25},
        },
    },
    "tiny-b": {
        "seed": 2000,
        "tokenizer": {"num_merges": 500, "pad": BANG, "format": "tokenizer_json"},
        "text_encoder": {
            "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 3,
            "hidden_act": "gelu", "layer_norm_eps": 1e-6, "projection_dim": 16,
            "storage_dtype": torch.float16, "variant": "fp16",
            # the transformers-4 hub layout (keys under `text_model.`, int64 position_ids stored), as in
            # the real ms-1.7b / zeroscope / SD repos; transformers 5 loads it (PrefixChange mapping)
            "legacy_layout": True,
        },
        "vae": {
            "block_out_channels": (8, 16, 16), "layers_per_block": 2, "norm_num_groups": 4, "latent_channels": 4,
            "sample_size": 32, "scaling_factor": 0.13025, "storage_dtype": torch.float16, "variant": "fp16",
            "frames": 3, "height": 24, "width": 40,
            # 24x40 input -> 2x4 encoder tiles of 16 (partial ones 12 tall / 4 wide), 6x10 latent -> 2x4
            "tiling": {"tile_sample_min_size": 16, "tile_latent_min_size": 4, "tile_overlap_factor": 0.25},
        },
    },
    "tiny-c": {
        "seed": 3000,
        "vae": {
            "block_out_channels": (16, 16), "layers_per_block": 1, "norm_num_groups": 8, "latent_channels": 8,
            "mid_block_add_attention": False, "use_quant_conv": False, "use_post_quant_conv": False,
            "sample_size": 32, "scaling_factor": 0.5, "storage_dtype": torch.bfloat16, "variant": None,
            "max_shard_size": "50KB", "min_shards": 2,
            # logvar channel 0 gets bias -40: below the clamp at -30 everywhere (clamp exercised)
            "logvar_bias_shift": {0: -40.0},
            "frames": 2, "height": 24, "width": 32,
            # overlap 0.5: 24x32 -> 3x4 encoder tiles, 12x16 latent -> 3x4 decoder tiles
            "tiling": {"tile_sample_min_size": 16, "tile_latent_min_size": 8, "tile_overlap_factor": 0.5},
        },
    },
}

# --- tiny UNet3DConditionModels (unet3d.py); names are used by crates/unet3d/tests ---
def _unet(down, up, channels, layers, groups, head_dim, cross, eps, **extra):
    config = {"in_channels": 4, "out_channels": 4, "down_block_types": list(down), "up_block_types": list(up),
              "block_out_channels": list(channels), "layers_per_block": layers, "norm_num_groups": groups,
              "attention_head_dim": head_dim, "cross_attention_dim": cross, "norm_eps": eps, "sample_size": 32}
    config.update(extra)
    return config


_XD, _D, _U, _XU = "CrossAttnDownBlock3D", "DownBlock3D", "UpBlock3D", "CrossAttnUpBlock3D"

FIXTURES.update({
    # 2 levels (4 and 8 channels: one head, then two), 1 layer/block, head size 4, integer timestep, batch 2, 3 frames, 4x6 latents
    "unet-a": {"seed": 4000, "unet": {
        "config": _unet((_XD, _D), (_U, _XU), (4, 8), 1, 4, 4, 12, 1e-5),
        "storage_dtype": torch.float32, "variant": None,
        "batch": 2, "frames": 3, "height": 4, "width": 6, "timestep": 7,
        "chunking": {"chunk_size": 3, "dim": 0}}},
    # 3 levels, 2 layers/block, 8 groups, eps 1e-6, mid_block_scale_factor 1.25, odd 5x7 latents
    # (explicit upsample sizes: 5x7 -> 3x4 -> 2x2), 3 frames, fractional timestep, f16 stored in the plain file
    "unet-b": {"seed": 5000, "unet": {
        "config": _unet((_XD, _XD, _D), (_U, _XU, _XU), (8, 8, 8), 2, 8, 4, 20, 1e-6,
                        mid_block_scale_factor=1.25),
        "storage_dtype": torch.float16, "variant": None,
        "batch": 1, "frames": 3, "height": 5, "width": 7, "timestep": 12.5,
        "chunking": {"chunk_size": 1, "dim": 1}}},
    # the ms-1.7b layout at 4 levels, 2 groups, fp16 variant file, 1 frame, one timestep per batch item
    "unet-c": {"seed": 6000, "unet": {
        "config": _unet((_XD, _XD, _XD, _D), (_U, _XU, _XU, _XU), (4, 8, 8, 8), 1, 2, 4, 8, 1e-5),
        "storage_dtype": torch.float16, "variant": "fp16",
        "batch": 2, "frames": 1, "height": 8, "width": 8, "timestep": [3, 999],
        "chunking": {"chunk_size": 2, "dim": 0}}},
    # plain down block first / cross-attention last, head size 2, 16 frames, odd non-square 3x5
    # latents, t = 0.3, bf16 stored
    "unet-d": {"seed": 7000, "unet": {
        "config": _unet((_D, _XD), (_XU, _U), (8, 8), 1, 2, 2, 16, 1e-5),
        "storage_dtype": torch.bfloat16, "variant": None,
        "batch": 1, "frames": 16, "height": 3, "width": 5, "timestep": 0.3,
        "chunking": {"chunk_size": 1, "dim": 1}}},
})
