#!/usr/bin/env python3
"""Compare benchmark JSON files (from `reel bench` and benches/diffusers_baseline.py).

    python benches/compare.py reel.json diffusers.json [more.json ...]

Prints a markdown table: one row per timed part (median ms) plus peak memory, one column per
file, and "first / other" ratio columns (with two files: reel / diffusers; < 1 means the first
file is faster / smaller). Missing keys print as "—". When the first two files both list
operations (`reel bench --ops`, `diffusers_baseline.py --ops-from`), a per-operation table
follows for the UNet step and the VAE decode.
"""

import json
import sys

PARTS = ["text_encoder", "unet_step", "scheduler_step", "vae_decode", "pipeline"]
SHAPE_KEYS = ["config", "frames", "height", "width", "steps", "scheduler", "guidance_scale"]
DASH = "—"


def load(path):
    with open(path) as f:
        d = json.load(f)
    if not isinstance(d, dict):
        raise SystemExit(f"{path}: not a JSON object")
    return d


def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def label(d, path):
    tool = d.get("tool", path)
    device = d.get("device", "?")
    dtype = d.get("dtype", "?")
    return f"{tool} ({device}, {dtype})"


def fmt_ms(v):
    return DASH if v is None else f"{v:,.2f}"


def fmt_bytes(n):
    if n is None:
        return DASH
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return DASH
    return f"{a / b:.2f}×"


def main(paths):
    if not paths or any(p in ("-h", "--help") for p in paths):
        print(__doc__.strip())
        return 0 if paths else 2
    docs = [load(p) for p in paths]
    labels = [label(d, p) for d, p in zip(docs, paths)]
    if len(set(labels)) < len(labels):  # disambiguate identical labels with the file name
        labels = [f"{l} [{p}]" for l, p in zip(labels, paths)]

    parts = list(PARTS)
    for d in docs:
        for k in (d.get("times_ms") or {}):
            if k not in parts:
                parts.append(k)

    first = docs[0]
    ratio_heads = [f"{labels[0].split(' (')[0]} / {labels[i].split(' (')[0]}" for i in range(1, len(docs))]
    header = ["part"] + [f"{l} ms" for l in labels] + ratio_heads
    rows = []
    for part in parts:
        vals = [num((d.get("times_ms") or {}).get(part)) for d in docs]
        rows.append([part] + [fmt_ms(v) for v in vals] + [ratio(vals[0], v) for v in vals[1:]])
    # First (warm-up) calls: where a GPU's kernel compilation and autotuning show.
    for part in parts:
        vals = [num((d.get("first_use_ms") or {}).get(part)) for d in docs]
        if any(v is not None for v in vals):
            rows.append([f"{part}, first call"] + [fmt_ms(v) for v in vals] + [ratio(vals[0], v) for v in vals[1:]])
    # The host's share of each part (reel: time until the call returned, before the sync).
    for part in parts:
        vals = [num((d.get("host_ms") or {}).get(part)) for d in docs]
        if any(v is not None for v in vals):
            rows.append([f"{part}, host share"] + [fmt_ms(v) for v in vals] + [ratio(vals[0], v) for v in vals[1:]])
    disp = [num(d.get("dispatch_us")) for d in docs]
    if any(v is not None for v in disp):
        rows.append(["one op in a queued chain, µs"] + [DASH if v is None else f"{v:.1f}" for v in disp] + [ratio(disp[0], v) for v in disp[1:]])
    mem = [num(d.get("peak_memory_bytes")) for d in docs]
    rows.append(["peak memory"] + [fmt_bytes(v) for v in mem] + [ratio(mem[0], v) for v in mem[1:]])
    params = [num(d.get("unet_parameters")) for d in docs]
    if any(p is not None for p in params):
        rows.append(["UNet parameters"] + [DASH if p is None else f"{p:,}" for p in params]
                    + [ratio(params[0], p) for p in params[1:]])

    # Setup line and a warning when the files were not run with the same shapes.
    def shape(d):
        return {k: d.get(k) for k in SHAPE_KEYS}

    s = shape(first)
    print(f"config {s['config']}: {s['frames']} frames {s['height']}x{s['width']}, {s['steps']} steps "
          f"{s['scheduler']}, guidance {s['guidance_scale']}")
    for d, l in zip(docs, labels):
        extra = []
        if d.get("threads") is not None:
            extra.append(f"threads {d['threads']}")
        opts = d.get("options") or {}
        on = [k for k, v in opts.items() if v]
        if on:
            extra.append("options " + ",".join(on))
        if d.get("runs") is not None:
            extra.append(f"runs {d['runs']}")
        vers = d.get("versions") or {}
        if vers:
            extra.append(" ".join(f"{k} {v}" for k, v in vers.items()))
        print(f"- {l}: " + ("; ".join(extra) if extra else DASH))
    for d, l in zip(docs[1:], labels[1:]):
        diff = [k for k in SHAPE_KEYS if d.get(k) != s.get(k)]
        if diff:
            print(f"WARNING: {l} differs from {labels[0]} in " +
                  ", ".join(f"{k} ({s.get(k)} vs {d.get(k)})" for k in diff))
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    # Which threads were busy (reel bench: CPU ms a timed run of each part's busiest threads).
    for d, l in zip(docs, labels):
        busy = d.get("thread_cpu_ms") or {}
        if any(busy.values()):
            print()
            print(f"{l.split(' (')[0]}: busiest threads, CPU ms a run (the part's wall ms in parentheses)")
            for part in parts:
                if busy.get(part):
                    wall = num((d.get("times_ms") or {}).get(part))
                    print(f"- {part} ({fmt_ms(wall)}): " + ", ".join(f"{n} {ms:.1f}" for n, ms in busy[part]))
    if len(docs) >= 2 and docs[0].get("ops") and docs[1].get("ops"):
        print_ops(docs[0], docs[1], labels[0].split(" (")[0], labels[1].split(" (")[0])
    return 0


# Fields of an operation entry that are measurements, not the operation.
NOT_OP = ("ms", "count", "error", "max_rel_err")


def op_key(o):
    return json.dumps({k: v for k, v in o.items() if k not in NOT_OP}, sort_keys=True)


def op_label(o):
    return o["op"] + " " + ",".join(f"{k}={v}" for k, v in o.items() if k not in NOT_OP + ("op", "model"))


def print_ops(a, b, name_a, name_b):
    """Per-operation table (from `reel bench --ops` and `diffusers_baseline.py --ops-from`):
    the operations of one call, largest total in the first file first."""
    theirs = {op_key(o): o for o in b["ops"]}
    for model in sorted({o["model"] for o in a["ops"]}):
        ours = sorted((o for o in a["ops"] if o["model"] == model), key=lambda o: -(o.get("ms") or 0.0) * o["count"])
        call = (a.get("times_ms") or {}).get("unet_step" if model == "unet" else "vae_decode")
        print()
        print(f"{model}: {len(ours)} distinct operations; totals are ms each x count per call"
              + (f" ({name_a} call: {call:,.2f} ms)" if call else ""))
        print()
        checked = any(o.get("max_rel_err") is not None for o in ours)
        err_head, err_rule = (f" {name_a} vs CPU f32 |", "---:|") if checked else ("", "")
        print(f"| operation | count | {name_a} ms | {name_b} ms | {name_a} / {name_b} | {name_a} total | {name_b} total |{err_head}")
        print("|---|---:|---:|---:|---:|---:|---:|" + err_rule)
        ta = tb = 0.0
        for o in ours:
            t = theirs.get(op_key(o))
            ma, mb = num(o.get("ms")), (num(t.get("ms")) if t else None)
            n = o["count"]
            ta += (ma or 0.0) * n
            tb += (mb or 0.0) * n
            each = [DASH if m is None else f"{m:.4f}" for m in (ma, mb)]
            tot = [DASH if m is None else f"{m * n:.3f}" for m in (ma, mb)]
            err = ""
            if checked:
                e = o.get("max_rel_err")
                err = f" {DASH if e is None else f'{e:.1e}'} |"
            print(f"| {op_label(o)} | {n} | {each[0]} | {each[1]} | {ratio(ma, mb)} | {tot[0]} | {tot[1]} |{err}")
        print(f"| **all listed** | | | | {ratio(ta, tb)} | {ta:.3f} | {tb:.3f} |" + (" |" if checked else ""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
