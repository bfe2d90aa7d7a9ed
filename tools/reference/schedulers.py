#!/usr/bin/env python3
"""Reference traces of diffusers' schedulers for reel-schedulers' parity tests.

Standalone: run with the pinned venv (torch 2.15.0 CPU, diffusers 0.42.1, scipy 1.17.1):

    /work/pyenv/ref/bin/python tools/reference/schedulers.py [--out tests/fixtures/schedulers]

Deterministic (CPU, fixed seeds): a second run writes byte-identical files.

For every case (scheduler class + config + step kwargs) it records, for each N in
{1, 2, 4, 10, 25, 50, 1000}: `set_timesteps(N)` -> timesteps, sigmas (if the scheduler has them),
init_noise_sigma; then a denoising loop (all steps for N <= 25 and, for the cases marked
`_full50` (ModelScope DDIM / DPM-Solver, SD Euler, UniPC), N = 50; the first 3 steps otherwise) with
the fake model

    model_output = 0.1 * scale_model_input(sample, t) + sin(float(t))      (float32)

starting from sample0 = randn(shape, generator=manual_seed(0)) * init_noise_sigma. Every step's
prev_sample is recorded (pred_original_sample for N <= 4 where the scheduler returns one, the
scaled model input for N = 4; for N = 25 only every 8th step and the last). For N = 1000 the
timesteps/sigmas are stored at a stride of 13 (plus the last entry). Noise draws of stochastic schedulers are recorded in the order
they are drawn (diffusers' `randn_tensor` is wrapped in each scheduler module) so the Rust tests
can inject them. For N = 10 it also records `add_noise` at timesteps[3] and an image-to-image run
(`set_begin_index(4 * order)`, `add_noise` there, steps to the end; every 3rd and the last recorded).

Tensors are stored as base64 of little-endian float32, shape (2, 4, 2, 3) = (b*f, c, h, w).
`swap.json` records diffusers' `from_config` swaps from a ModelScope-like DDIM config.
"""
import argparse
import base64
import json
import math
import os
import sys

import numpy as np
import torch
import diffusers
import diffusers.utils.torch_utils as tu

SHAPE = (2, 4, 2, 3)
NS = [1, 2, 4, 10, 25, 50, 1000]

MODELSCOPE = {
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
MS = {k: v for k, v in MODELSCOPE.items() if not k.startswith("_") and k not in ("skip_prk_steps", "clip_sample", "set_alpha_to_one", "trained_betas")}
SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}

# (case name, class, config, step kwargs)
CASES = [
    ("ddim_default", "DDIMScheduler", {}, {}),
    ("ddim_modelscope", "DDIMScheduler", {k: v for k, v in MODELSCOPE.items() if not k.startswith("_") and k != "skip_prk_steps"}, {"_full50": True}),
    ("ddim_modelscope_eta", "DDIMScheduler", {**MS, "clip_sample": False, "set_alpha_to_one": False}, {"eta": 0.5}),
    ("ddim_vpred_trailing_zsnr", "DDIMScheduler", {**SD, "prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": True, "clip_sample": False}, {}),
    ("ddim_linspace_cos_sample", "DDIMScheduler", {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace", "prediction_type": "sample", "clip_sample_range": 0.5}, {}),
    ("ddim_threshold", "DDIMScheduler", {"thresholding": True, "sample_max_value": 1.5, "dynamic_thresholding_ratio": 0.9}, {"use_clipped_model_output": True}),
    ("ddpm_laplace_sample_thresh", "DDPMScheduler", {"beta_schedule": "laplace", "prediction_type": "sample", "thresholding": True}, {}),
    ("ddpm_default", "DDPMScheduler", {}, {}),
    # learned variances: the fake model appends tanh(0.1 * input) as C more channels
    ("ddpm_learned_range", "DDPMScheduler", {**SD, "variance_type": "learned_range", "clip_sample": False}, {"_learned": True}),
    ("ddpm_learned", "DDPMScheduler", {"variance_type": "learned"}, {"_learned": "abs"}),
    ("ddpm_sd_vpred_smalllog", "DDPMScheduler", {**SD, "prediction_type": "v_prediction", "variance_type": "fixed_small_log", "clip_sample": False, "timestep_spacing": "trailing"}, {}),
    ("ddpm_large_sigmoid", "DDPMScheduler", {"beta_schedule": "sigmoid", "variance_type": "fixed_large", "timestep_spacing": "linspace"}, {}),
    ("euler_default", "EulerDiscreteScheduler", {}, {}),
    ("euler_sd_leading", "EulerDiscreteScheduler", {**SD, "timestep_spacing": "leading", "steps_offset": 1}, {"_full50": True}),
    ("euler_karras", "EulerDiscreteScheduler", {**SD, "use_karras_sigmas": True}, {}),
    ("euler_exponential", "EulerDiscreteScheduler", {**SD, "use_exponential_sigmas": True}, {}),
    ("euler_beta", "EulerDiscreteScheduler", {**SD, "use_beta_sigmas": True}, {}),
    ("euler_vpred_trailing_zsnr", "EulerDiscreteScheduler", {**SD, "prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": True}, {}),
    ("euler_churn_sigmamin", "EulerDiscreteScheduler", {**SD, "final_sigmas_type": "sigma_min"}, {"s_churn": 1.0}),
    ("euler_loglinear_sigmas_minmax", "EulerDiscreteScheduler", {**SD, "interpolation_type": "log_linear"}, {}),
    ("euler_karras_minmax", "EulerDiscreteScheduler", {**SD, "use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0}, {}),
    ("euler_continuous_vpred", "EulerDiscreteScheduler", {**SD, "prediction_type": "v_prediction", "timestep_type": "continuous"}, {}),
    ("euler_anc_default", "EulerAncestralDiscreteScheduler", {}, {}),
    ("euler_anc_sd_vpred", "EulerAncestralDiscreteScheduler", {**SD, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}, {}),
    ("heun_default", "HeunDiscreteScheduler", {}, {}),
    ("heun_sd_karras", "HeunDiscreteScheduler", {**SD, "use_karras_sigmas": True}, {}),
    ("heun_vpred_leading", "HeunDiscreteScheduler", {**SD, "prediction_type": "v_prediction", "timestep_spacing": "leading", "steps_offset": 1}, {}),
    ("heun_exp_clip_trailing", "HeunDiscreteScheduler", {"beta_schedule": "exp", "clip_sample": True, "timestep_spacing": "trailing"}, {}),
    ("lms_default", "LMSDiscreteScheduler", {}, {}),
    ("lms_sd_karras", "LMSDiscreteScheduler", {**SD, "use_karras_sigmas": True}, {}),
    ("kdpm2_default", "KDPM2DiscreteScheduler", {}, {}),
    ("kdpm2_sd_karras", "KDPM2DiscreteScheduler", {**SD, "use_karras_sigmas": True}, {}),
    ("kdpm2_vpred_exponential", "KDPM2DiscreteScheduler", {**SD, "prediction_type": "v_prediction", "use_exponential_sigmas": True}, {}),
    ("kdpm2a_default", "KDPM2AncestralDiscreteScheduler", {}, {}),
    ("kdpm2a_sd", "KDPM2AncestralDiscreteScheduler", {**SD, "timestep_spacing": "trailing"}, {}),
    ("pndm_vpred_linspace", "PNDMScheduler", {**SD, "prediction_type": "v_prediction", "timestep_spacing": "linspace", "skip_prk_steps": True}, {}),
    ("pndm_default", "PNDMScheduler", {}, {}),
    ("pndm_modelscope", "PNDMScheduler", {**MS, "skip_prk_steps": True, "set_alpha_to_one": False}, {}),
    ("dpm_default", "DPMSolverMultistepScheduler", {}, {}),
    ("dpm_modelscope", "DPMSolverMultistepScheduler", {**MS}, {"_full50": True}),
    ("dpm_order3_heun", "DPMSolverMultistepScheduler", {**SD, "solver_order": 3, "solver_type": "heun"}, {}),
    ("dpm_order1", "DPMSolverMultistepScheduler", {**SD, "solver_order": 1}, {}),
    ("dpm_dpmsolver_sigmamin", "DPMSolverMultistepScheduler", {**SD, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3}, {}),
    ("dpm_sde_pp_karras", "DPMSolverMultistepScheduler", {**SD, "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}, {}),
    ("dpm_sde_heun_sigmamin", "DPMSolverMultistepScheduler", {**SD, "algorithm_type": "sde-dpmsolver", "solver_type": "heun", "final_sigmas_type": "sigma_min"}, {}),
    ("dpm_vpred_trailing_euler_final", "DPMSolverMultistepScheduler", {**SD, "prediction_type": "v_prediction", "timestep_spacing": "trailing", "euler_at_final": True, "lower_order_final": False}, {}),
    ("dpm_exponential_thresh", "DPMSolverMultistepScheduler", {"use_exponential_sigmas": True, "thresholding": True, "sample_max_value": 1.5}, {}),
    ("dpm_beta_sample_leading", "DPMSolverMultistepScheduler", {**SD, "use_beta_sigmas": True, "prediction_type": "sample", "timestep_spacing": "leading", "steps_offset": 1}, {}),
    ("dpm_lu_cos", "DPMSolverMultistepScheduler", {"use_lu_lambdas": True, "beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}, {}),
    ("dpm_single_default", "DPMSolverSinglestepScheduler", {}, {}),
    ("dpm_single_order3", "DPMSolverSinglestepScheduler", {**SD, "solver_order": 3, "solver_type": "heun"}, {}),
    ("dpm_single_sde_karras", "DPMSolverSinglestepScheduler", {**SD, "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True, "solver_order": 3}, {}),
    ("dpm_single_dpmsolver_sigmamin", "DPMSolverSinglestepScheduler", {**SD, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3, "lower_order_final": True, "prediction_type": "v_prediction"}, {}),
    ("deis_karras_vpred", "DEISMultistepScheduler", {**SD, "use_karras_sigmas": True, "prediction_type": "v_prediction", "solver_order": 3}, {}),
    ("deis_default", "DEISMultistepScheduler", {}, {}),
    ("deis_order3_sd", "DEISMultistepScheduler", {**SD, "solver_order": 3}, {}),
    ("unipc_beta_sigmamin_override", "UniPCMultistepScheduler", {**SD, "use_beta_sigmas": True, "sigma_min": 0.05, "final_sigmas_type": "sigma_min"}, {}),
    ("unipc_default", "UniPCMultistepScheduler", {}, {"_full50": True}),
    ("unipc_bh1_order3", "UniPCMultistepScheduler", {**SD, "solver_type": "bh1", "solver_order": 3}, {}),
    ("unipc_bh1_order3_sigmamin", "UniPCMultistepScheduler", {**SD, "solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"}, {}),
    ("unipc_eps_order3_sigmamin", "UniPCMultistepScheduler", {**SD, "predict_x0": False, "solver_order": 3, "final_sigmas_type": "sigma_min", "disable_corrector": [0], "timestep_spacing": "trailing"}, {}),
    ("unipc_vpred_karras", "UniPCMultistepScheduler", {**SD, "prediction_type": "v_prediction", "use_karras_sigmas": True}, {}),
    ("lcm_default", "LCMScheduler", {}, {}),
    ("lcm_sd_trailing", "LCMScheduler", {**SD, "timestep_spacing": "trailing", "original_inference_steps": 100}, {}),
]


def fake_model(scaled, t, kwargs):
    """0.1 * input + sin(t); learned-variance cases append tanh(0.1 * input) (|x| < 1) as C more
    channels (the variance half must be >= 0 for `learned`, which takes its square root)."""
    out = 0.1 * scaled + math.sin(float(t))
    if kwargs.get("_learned"):
        v = torch.tanh(0.1 * scaled)
        if kwargs.get("_learned") and "abs" in str(kwargs.get("_learned")):
            v = v.abs()
        out = torch.cat([out, v], dim=1)
    return out


def step_kwargs(kwargs):
    return {k: v for k, v in kwargs.items() if not k.startswith("_")}


def b64(t):
    a = t.detach().to(torch.float32).contiguous().numpy().astype("<f4")
    return base64.b64encode(a.tobytes()).decode()


def b64_arr(a):
    return base64.b64encode(np.asarray(a, dtype="<f4").tobytes()).decode()


class Recorder:
    def __init__(self):
        self.draws = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        g = torch.Generator().manual_seed(1000 + len(self.draws))
        x = torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(dtype or torch.float32)
        self.draws.append(x.clone())
        return x


def patch(cls, rec):
    mod = sys.modules[cls.__module__]
    if hasattr(mod, "randn_tensor"):
        mod.randn_tensor = rec


def to_float(t):
    return float(t.item()) if isinstance(t, torch.Tensor) else float(t)


def full_run(cls, cfg, kwargs, n):
    """Whether the whole denoising loop runs and stays finite (diffusers fails for a few configs,
    e.g. NaN from duplicate timesteps at N = 1000, or an IndexError after a duplicated first
    timestep); reel refuses those configs up front."""
    rec = Recorder()
    patch(cls, rec)
    s = cls(**cfg)
    s.set_timesteps(n)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * s.init_noise_sigma
    i = 0
    try:
        for i, t in enumerate(s.timesteps):
            m = fake_model(s.scale_model_input(x, t), t, kwargs)
            x = s.step(m, t, x, **step_kwargs(kwargs)).prev_sample
            if not torch.isfinite(x).all():
                return f"non-finite at step {i}"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__} at step {i}: {e}"
    return "ok"


def run_case(name, cls_name, cfg, kwargs):
    cls = getattr(diffusers, cls_name)
    sched = cls(**cfg)
    out = {"case": name, "class": cls_name, "config": cfg, "step_kwargs": kwargs, "shape": list(SHAPE),
           "order": sched.order, "runs": []}
    for n in NS:
        rec = Recorder()
        patch(cls, rec)
        s = cls(**cfg)
        run = {"n": n}
        try:
            s.set_timesteps(n)
        except Exception as e:  # noqa: BLE001
            run["error"] = f"{type(e).__name__}: {e}"
            out["runs"].append(run)
            continue
        ts = s.timesteps
        run["timesteps_dtype"] = str(ts.dtype).replace("torch.", "")
        tsn = ts.to(torch.float64).numpy()
        run["num_timesteps"] = len(ts)
        # N = 1000: every 7th entry and the last one (keeps the fixtures small)
        sub = (lambda a: a) if n < 1000 else (lambda a: a[[i for i in range(len(a)) if i % 13 == 0 or i == len(a) - 1]])
        run["stride"] = 1 if n < 1000 else 13
        run["timesteps"] = b64_arr(sub(tsn))
        if hasattr(s, "sigmas") and isinstance(s.sigmas, torch.Tensor):
            run["sigmas"] = b64_arr(sub(s.sigmas.to(torch.float64).numpy()))
            run["num_sigmas"] = len(s.sigmas)
        run["init_noise_sigma"] = to_float(s.init_noise_sigma)
        g = torch.Generator().manual_seed(0)
        sample = torch.randn(SHAPE, generator=g, dtype=torch.float32) * s.init_noise_sigma
        sample = sample.to(torch.float32)
        run["sample0"] = b64(sample)
        steps = []
        full50 = n == 50 and kwargs.get("_full50")
        limit = len(ts) if n <= 25 or full50 else min(3, len(ts))
        try:
            for i, t in enumerate(ts[:limit]):
                scaled = s.scale_model_input(sample, t)
                model_output = fake_model(scaled, t, kwargs)
                res = s.step(model_output, t, sample, **step_kwargs(kwargs))
                st = {"i": i, "t": float(t)}
                if n < 25 or i % 8 == 0 or i == limit - 1:
                    st["prev"] = b64(res.prev_sample)
                if n <= 4 and getattr(res, "pred_original_sample", None) is not None:
                    st["x0"] = b64(res.pred_original_sample)
                if n == 4:
                    st["scaled"] = b64(scaled)
                steps.append(st)
                sample = res.prev_sample
        except Exception as e:  # noqa: BLE001
            run["step_error"] = f"{type(e).__name__}: {e}"
        run["steps"] = steps
        run["noise"] = [b64(d) for d in rec.draws]
        run["full_run"] = full_run(cls, cfg, kwargs, n)
        if n == 10:
            gx = torch.Generator().manual_seed(1)
            x0 = torch.randn(SHAPE, generator=gx)
            noise = torch.randn(SHAPE, generator=gx)
            run["x0_clean"] = b64(x0)
            run["noise_clean"] = b64(noise)
            # add_noise at timesteps[3] on a fresh schedule (begin_index unset)
            s2 = cls(**cfg)
            s2.set_timesteps(n)
            t3 = s2.timesteps[3:4]
            try:
                run["add_noise_t"] = float(t3[0])
                run["add_noise"] = b64(s2.add_noise(x0, noise, t3))
            except Exception as e:  # noqa: BLE001
                run["add_noise_error"] = f"{type(e).__name__}: {e}"
            # image-to-image: set_begin_index(4 * order), add_noise, run to the end
            rec2 = Recorder()
            patch(cls, rec2)
            s3 = cls(**cfg)
            s3.set_timesteps(n)
            begin = 4 * s3.order
            try:
                if hasattr(s3, "set_begin_index"):
                    s3.set_begin_index(begin)
                tb = s3.timesteps[begin:begin + 1]
                smp = s3.add_noise(x0, noise, tb)
                i2i = {"begin": begin, "start": b64(smp), "steps": []}
                rest = s3.timesteps[begin:]
                for k, t in enumerate(rest):
                    scaled = s3.scale_model_input(smp, t)
                    mo = fake_model(scaled, t, kwargs)
                    smp = s3.step(mo, t, smp, **step_kwargs(kwargs)).prev_sample
                    st = {"t": float(t)}
                    if k % 3 == 0 or k == len(rest) - 1:
                        st["prev"] = b64(smp)
                    i2i["steps"].append(st)
                i2i["noise"] = [b64(d) for d in rec2.draws]
                run["img2img"] = i2i
            except Exception as e:  # noqa: BLE001
                run["img2img_error"] = f"{type(e).__name__}: {e}"
        out["runs"].append(run)
    return out


def jsonable(d):
    out = {}
    for k, v in dict(d).items():
        if isinstance(v, (np.ndarray,)):
            v = v.tolist()
        if isinstance(v, float) and math.isinf(v):
            v = "-inf" if v < 0 else "inf"
        out[k] = v
    return out


def swaps():
    ddim = diffusers.DDIMScheduler.from_config(MODELSCOPE)
    res = {"source": MODELSCOPE, "ddim_config": jsonable(ddim.config)}
    res["ddim_config"]["_use_default_values"] = sorted(ddim.config.get("_use_default_values", []))
    chains = {
        "DPMSolverMultistepScheduler": ["DPMSolverMultistepScheduler"],
        "EulerDiscreteScheduler": ["EulerDiscreteScheduler"],
        "DDPMScheduler": ["DDPMScheduler"],
        "Euler_then_DPM": ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"],
        "DPM_then_DDIM": ["DPMSolverMultistepScheduler", "DDIMScheduler"],
    }
    out = {}
    for name, chain in chains.items():
        s = ddim
        for c in chain:
            s = getattr(diffusers, c).from_config(s.config)
        cfg = jsonable(s.config)
        cfg["_use_default_values"] = sorted(cfg.get("_use_default_values", []))
        cfg.pop("_diffusers_version", None)
        s.set_timesteps(25)
        out[name] = {"class": type(s).__name__, "config": cfg, "timesteps_25": [float(t) for t in s.timesteps]}
    res["swaps"] = out
    return res


def tables():
    out = {}
    for name, cfg in [("linear", {}), ("scaled_linear", SD), ("cos", {"beta_schedule": "squaredcos_cap_v2"}),
                      ("zsnr", {**SD, "rescale_betas_zero_snr": True})]:
        s = diffusers.DDIMScheduler(**cfg)
        out[name] = {"config": cfg, "alphas_cumprod": b64(s.alphas_cumprod)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "schedulers"))
    ap.add_argument("--only", default=None, help="comma-separated case names")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    for name, cls_name, cfg, kwargs in CASES:
        if only and name not in only:
            continue
        if not hasattr(diffusers, cls_name):
            print(f"skip {name}: no {cls_name}")
            continue
        data = run_case(name, cls_name, cfg, kwargs)
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(data, f, sort_keys=True, separators=(",", ":"))
            f.write("\n")
        print(name, "ok")
    if not only:
        with open(os.path.join(args.out, "swap.json"), "w") as f:
            json.dump(swaps(), f, sort_keys=True, indent=1)
            f.write("\n")
        with open(os.path.join(args.out, "tables.json"), "w") as f:
            json.dump(tables(), f, sort_keys=True, separators=(",", ":"))
            f.write("\n")
    # keep diffusers quiet about deprecated algorithm types
    _ = tu


if __name__ == "__main__":
    main()
