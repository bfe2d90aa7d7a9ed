#!/usr/bin/env python3
"""Time diffusers' TextToVideoSDPipeline on the architectures in benches/configs/<name>/.

The counterpart of `reel bench`: the same configs, shapes, steps, scheduler and fixed prompt
token ids, with random weights (torch.manual_seed(0), default init), no download and no tokenizer.

Example:
    python benches/diffusers_baseline.py --config benches/configs/small --device cpu --dtype f32 \
        --frames 4 --height 128 --width 128 --steps 3 --runs 2 --threads 2 --out diffusers.json

Timed parts (median ms over --runs, after --warmup untimed runs; CUDA is synchronized before and
after each timing):
    text_encoder    one CLIP text-encoder forward at batch 2 (uncond + cond ids)
    unet_step       one UNet forward at batch 2: latents (2, 4, F, H/8, W/8), timestep 999,
                    encoder states (2, 77, dim)
    scheduler_step  one scheduler.step on (F, 4, H/8, W/8) (fresh scheduler + set_timesteps per run,
                    not timed)
    vae_decode      vae.decode of F latent frames (F, 4, H/8, W/8) (sliced with --vae-slicing)
    pipeline        the whole TextToVideoSDPipeline.__call__: encode + steps + decode + postprocess
                    (output_type "np")
Works with torch >= 2.1 and diffusers 0.2x-0.42 (optional features are guarded).
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
import types

import torch

import diffusers
import transformers
from diffusers import AutoencoderKL, TextToVideoSDPipeline, UNet3DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

PARTS = ["text_encoder", "unet_step", "scheduler_step", "vae_decode", "pipeline"]
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

# Fixed prompt ids (shared with `reel bench`): BOS, 320..330, EOS, padded with EOS to 77.
BOS, EOS, MAX_LEN = 49406, 49407, 77


def fixed_ids():
    cond = [BOS] + list(range(320, 331)) + [EOS]
    uncond = [BOS, EOS]
    pad = lambda ids: ids + [EOS] * (MAX_LEN - len(ids))
    return torch.tensor([pad(uncond), pad(cond)], dtype=torch.long)  # (2, 77): uncond, cond


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config dir with unet/ vae/ text_encoder/ scheduler/")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--scheduler", default="DPMSolverMultistepScheduler",
                   help="diffusers scheduler class, built with Class.from_config(scheduler config)")
    p.add_argument("--guidance", type=float, default=9.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help='torch.compile(unet, mode="reduce-overhead")')
    p.add_argument("--offload", action="store_true", help="pipe.enable_model_cpu_offload() (needs accelerate)")
    p.add_argument("--vae-slicing", action="store_true", help="decode the frames one at a time")
    p.add_argument("--parts", default=",".join(PARTS),
                   help="comma-separated subset of the timed parts (default: all)")
    p.add_argument("--count-only", action="store_true",
                   help="build the models on the meta device, print parameter counts and exit")
    p.add_argument("--ops-from", default=None, metavar="REEL_JSON",
                   help="also time, in PyTorch, each heavy operation listed by `reel bench --ops` "
                        "(same shapes and counts) the way diffusers runs it")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def count_params(module):
    return sum(p.numel() for p in module.parameters())


def build_models(cfg_dir, build_device):
    """UNet, VAE and text encoder in f32 with default random init under torch.manual_seed(0)."""
    unet_cfg = read_json(os.path.join(cfg_dir, "unet", "config.json"))
    vae_cfg = read_json(os.path.join(cfg_dir, "vae", "config.json"))
    te_cfg = read_json(os.path.join(cfg_dir, "text_encoder", "config.json"))
    # torch.device as a context manager (torch >= 2.0) creates the parameters on that device,
    # which avoids initialising 1.4 B parameters on the CPU before a GPU run.
    ctx = torch.device(build_device) if build_device != "cpu" else contextlib.nullcontext()
    torch.manual_seed(0)
    with ctx:
        unet = UNet3DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**te_cfg))
    return unet, vae, text_encoder


def load_scheduler_config(cfg_dir):
    d = os.path.join(cfg_dir, "scheduler")
    for name in ("scheduler_config.json", "config.json"):
        if os.path.exists(os.path.join(d, name)):
            return read_json(os.path.join(d, name))
    raise FileNotFoundError(f"no scheduler config in {d}")


def make_scheduler(name, base_config):
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise SystemExit(f"unknown scheduler class {name!r} in diffusers {diffusers.__version__}")
    return cls.from_config(base_config)


def peak_rss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if platform.system() == "Darwin" else r * 1024  # Linux reports KiB


def make_encode_prompt(ids):
    """A replacement for pipe.encode_prompt that runs the text encoder on the fixed ids.

    Runs one batch-2 forward (uncond + cond), like the "text_encoder" part and `reel bench`.
    """

    def encode_prompt(self, prompt, device, num_images_per_prompt, do_classifier_free_guidance,
                      negative_prompt=None, prompt_embeds=None, negative_prompt_embeds=None, **kwargs):
        te = self.text_encoder
        if do_classifier_free_guidance:
            hidden = te(ids.to(device))[0]
            negative_prompt_embeds, prompt_embeds = hidden.chunk(2)
        else:
            prompt_embeds = te(ids[1:].to(device))[0]
            negative_prompt_embeds = None
        dtype = te.dtype
        prompt_embeds = prompt_embeds.to(dtype=dtype, device=device)
        if num_images_per_prompt != 1:
            prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.to(dtype=dtype, device=device)
            if num_images_per_prompt != 1:
                negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        return prompt_embeds, negative_prompt_embeds

    return encode_prompt


def op_fn(o, device, dtype):
    """A zero-argument function running operation `o` (an entry of `reel bench --ops`) the way
    diffusers runs it, on fresh random inputs (uniform in +-1) of its recorded shape."""
    import torch.nn.functional as Fn

    def r(*shape):
        return (torch.rand(*shape, device=device, dtype=torch.float32) * 2 - 1).to(dtype)

    k = o["op"]
    if k == "linear":
        x, w, b = r(o["rows"], o["d_in"]), r(o["d_out"], o["d_in"]), (r(o["d_out"]) if o["bias"] else None)
        return lambda: Fn.linear(x, w, b)
    if k == "conv2d":
        x, w, b = r(o["n"], o["c_in"], o["h"], o["w"]), r(o["c_out"], o["c_in"], o["kh"], o["kw"]), r(o["c_out"])
        t, bo, le, ri = o["pad"]
        if t == bo == le == ri:
            return lambda: Fn.conv2d(x, w, b, stride=o["stride"], padding=t)
        return lambda: Fn.conv2d(Fn.pad(x, (le, ri, t, bo)), w, b, stride=o["stride"])
    if k == "temporal_conv":  # nn.Conv3d(kernel (3, 1, 1), padding (1, 0, 0)) on (b, c, f, h, w)
        x = r(o["b"], o["c_in"], o["f"], o["pixels"], 1)
        w, b = r(o["c_out"], o["c_in"], 3, 1, 1), r(o["c_out"])
        return lambda: Fn.conv3d(x, w, b, padding=(1, 0, 0))
    if k == "group_norm":
        x, w, b = r(o["n"], o["c"], o["rest"]), r(o["c"]), r(o["c"])
        return lambda: Fn.group_norm(x, o["groups"], w, b, eps=1e-5)
    if k == "layer_norm":
        x, w, b = r(o["rows"], o["dim"]), r(o["dim"]), r(o["dim"])
        return lambda: Fn.layer_norm(x, (o["dim"],), w, b)
    if k == "attention":
        q = r(o["batch"], o["heads"], o["seq_q"], o["head_dim"])
        kk = r(o["batch"], o["heads"], o["seq_kv"], o["head_dim"])
        v = r(o["batch"], o["heads"], o["seq_kv"], o["head_dim"])
        return lambda: Fn.scaled_dot_product_attention(q, kk, v)
    if k == "upsample":
        x = r(o["n"], o["c"], o["h"], o["w"])
        return lambda: Fn.interpolate(x, size=(o["h_out"], o["w_out"]), mode="nearest")
    if k == "geglu":
        x = r(o["rows"], 2 * o["dim"])

        def geglu():
            h, gate = x.chunk(2, dim=-1)
            return h * Fn.gelu(gate)
        return geglu
    raise SystemExit(f"--ops-from: unknown operation {k!r}")


OP_RUNS = 10


def time_ops(path, device, dtype, timer):
    """Times every operation of a `reel bench --ops` report; returns the list with torch's ms."""
    with open(path) as f:
        ops = json.load(f).get("ops") or []
    if not ops:
        raise SystemExit(f"--ops-from {path}: no \"ops\" in it; run `reel bench --ops --out {path}`")
    out = []
    with torch.inference_mode():
        for o in ops:
            fn = op_fn(o, device, dtype)
            ms, _ = timer(lambda _: fn())
            # The operation itself: reel's timing, error and check fields are reel's, not ours.
            out.append({**{k: v for k, v in o.items() if k not in ("ms", "error", "max_rel_err")}, "ms": ms})
    return out


DISPATCH_CHAIN = 200


def dispatch_us(device, dtype, timer):
    """One (8, 64) x (64, 64)^T linear layer in a chain of DISPATCH_CHAIN queued back to back,
    synchronised once: the per-operation floor, as reel's `dispatch_us` (crates/pipeline/src/bench.rs)."""
    import torch.nn.functional as Fn
    g = torch.Generator(device="cpu").manual_seed(0)
    w = (torch.rand(64, 64, generator=g) * 2 - 1).to(device=device, dtype=dtype)
    x = (torch.rand(8, 64, generator=g) * 2 - 1).to(device=device, dtype=dtype)

    def chain(_):
        y = x
        for _ in range(DISPATCH_CHAIN):
            y = Fn.linear(y, w)
        return y
    with torch.inference_mode():
        ms, _ = timer(chain)
    return ms * 1e3 / DISPATCH_CHAIN


class Timer:
    def __init__(self, device, runs, warmup):
        self.cuda = device == "cuda"
        self.runs, self.warmup = runs, warmup
        self.first = None

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn, setup=None):
        """Median ms of fn(setup()) over runs, after warmup; setup is not timed."""
        times = []
        for i in range(self.warmup + self.runs):
            arg = setup() if setup is not None else None
            self.sync()
            t0 = time.perf_counter()
            fn(arg)
            self.sync()
            dt = (time.perf_counter() - t0) * 1e3
            if i == 0:
                # The first call (cuDNN/cuBLAS set-up, allocator growth) for the first_use_ms
                # column beside reel's (where kernel compilation and autotuning show).
                self.first = dt if self.warmup else None
            if i >= self.warmup:
                times.append(dt)
        return statistics.median(times), times


def fmt_ms(v):
    return "—" if v is None else f"{v:,.2f}"


def fmt_bytes(n):
    if n is None:
        return "—"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def main(argv=None):
    args = parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for p in parts:
        if p not in PARTS:
            raise SystemExit(f"unknown part {p!r}; choose from {PARTS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    dtype = DTYPES[args.dtype]
    device = torch.device(args.device)
    cfg_dir = args.config.rstrip("/")
    cfg_name = os.path.basename(cfg_dir)

    versions = {"torch": torch.__version__, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__, "python": platform.python_version()}
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"

    # ---- build -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    build_device = "meta" if args.count_only else ("cpu" if args.offload else args.device)
    unet, vae, text_encoder = build_models(cfg_dir, build_device)
    counts = {"unet_parameters": count_params(unet), "vae_parameters": count_params(vae),
              "text_encoder_parameters": count_params(text_encoder)}
    if args.count_only:
        print(f"{cfg_name}: UNet {counts['unet_parameters']:,}  VAE {counts['vae_parameters']:,}  "
              f"text encoder {counts['text_encoder_parameters']:,}")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"tool": "diffusers", "versions": versions, "config": cfg_name, **counts}, f, indent=2)
        return
    for m in (unet, vae, text_encoder):
        if dtype != torch.float32:
            m.to(dtype=dtype)
        m.eval()
        m.requires_grad_(False)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    build_s = time.perf_counter() - t0

    sched_cfg = load_scheduler_config(cfg_dir)
    scheduler = make_scheduler(args.scheduler, sched_cfg)

    if args.compile:
        unet = torch.compile(unet, mode="reduce-overhead")

    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=None, unet=unet,
                                 scheduler=scheduler)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    ids = fixed_ids()
    pipe.encode_prompt = types.MethodType(make_encode_prompt(ids), pipe)
    if args.vae_slicing:
        if hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        else:
            pipe.enable_vae_slicing()
    if args.offload:
        if args.device != "cuda":
            raise SystemExit("--offload needs --device cuda")
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise SystemExit("--offload needs the accelerate package")
        try:
            pipe.enable_model_cpu_offload(device=args.device)
        except TypeError:  # older diffusers: gpu_id only
            pipe.enable_model_cpu_offload()
        exec_device = pipe._execution_device
    else:
        exec_device = device

    vsf = 2 ** (len(vae.config.block_out_channels) - 1)
    F, h, w = args.frames, args.height // vsf, args.width // vsf
    lat_ch = unet.config.in_channels
    timer = Timer(args.device, args.runs, args.warmup)
    times, all_times, first_use = {}, {}, {}

    def timed(part, fn, setup=None):
        times[part], all_times[part] = timer(fn, setup=setup)
        first_use[part] = timer.first

    # Fixed inputs, drawn on the CPU so they do not depend on the device.
    g = torch.Generator("cpu").manual_seed(0)
    latents5 = torch.randn((2, lat_ch, F, h, w), generator=g).to(exec_device, dtype)
    frames4 = torch.randn((F, lat_ch, h, w), generator=g).to(exec_device, dtype)
    noise4 = torch.randn((F, lat_ch, h, w), generator=g).to(exec_device, dtype)
    ids_dev = ids.to(exec_device)
    timestep = torch.tensor(999, device=exec_device)

    with torch.inference_mode():
        enc_states = text_encoder(ids_dev)[0]  # (2, 77, dim)

        if "text_encoder" in parts:
            timed("text_encoder", lambda _: text_encoder(ids_dev)[0])

        if "unet_step" in parts:
            timed("unet_step", lambda _: unet(latents5, timestep, encoder_hidden_states=enc_states, return_dict=False)[0])

        if "scheduler_step" in parts:
            def fresh_scheduler(_=None):
                s = make_scheduler(args.scheduler, sched_cfg)
                s.set_timesteps(args.steps, device=exec_device)
                return s

            def one_step(s):
                s.step(noise4, s.timesteps[0], frames4).prev_sample

            timed("scheduler_step", one_step, setup=fresh_scheduler)

        if "vae_decode" in parts:
            timed("vae_decode", lambda _: vae.decode(frames4).sample)

        peak = None
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if "pipeline" in parts:
            def run_pipeline(_):
                gen = torch.Generator("cpu").manual_seed(0)
                out = pipe(prompt="fixed token ids", num_frames=F, height=args.height, width=args.width,
                           num_inference_steps=args.steps, guidance_scale=args.guidance,
                           generator=gen, output_type="np")
                return out.frames

            timed("pipeline", run_pipeline)
        if args.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = peak_rss_bytes()

    # At least OP_RUNS timed runs per operation, as reel's `--ops` (crates/pipeline/src/bench.rs).
    op_timer = Timer(args.device, max(args.runs, OP_RUNS), args.warmup)
    ops = time_ops(args.ops_from, exec_device, dtype, op_timer) if args.ops_from else None
    dispatch = dispatch_us(exec_device, dtype, op_timer) if args.ops_from else None

    result = {
        "tool": "diffusers",
        "versions": versions,
        "device": device_name,
        "dtype": args.dtype,
        "config": cfg_name,
        "frames": args.frames,
        "height": args.height,
        "width": args.width,
        "steps": args.steps,
        "scheduler": args.scheduler,
        "guidance_scale": args.guidance,
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "options": {"compile": args.compile, "offload": args.offload, "vae_slicing": args.vae_slicing},
        "times_ms": times,
        "times_all_ms": all_times,
        "first_use_ms": {k: v for k, v in first_use.items() if v is not None},
        "peak_memory_bytes": peak,
        "peak_memory_kind": "cuda_max_memory_allocated" if args.device == "cuda" else "process_peak_rss",
        "build_s": build_s,
        **counts,
    }
    if ops is not None:
        result["ops"] = ops
        result["dispatch_us"] = dispatch

    print(f"diffusers {diffusers.__version__} / torch {torch.__version__} / transformers "
          f"{transformers.__version__} on {device_name} ({args.dtype}, {torch.get_num_threads()} threads)")
    print(f"config {cfg_name}: {F} frames {args.height}x{args.width}, {args.steps} steps "
          f"{args.scheduler}, guidance {args.guidance}; median of {args.runs} after {args.warmup} warmup")
    print(f"UNet {counts['unet_parameters']:,} params, VAE {counts['vae_parameters']:,}, "
          f"text encoder {counts['text_encoder_parameters']:,}; build {build_s:.1f} s")
    print(f"{'part':<16}{'median ms':>14}   runs (ms)")
    for p in PARTS:
        if p in times:
            runs = ", ".join(f"{t:.2f}" for t in all_times[p])
            print(f"{p:<16}{fmt_ms(times[p]):>14}   {runs}")
    print(f"{'peak memory':<16}{fmt_bytes(peak):>14}   ({result['peak_memory_kind']})")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
