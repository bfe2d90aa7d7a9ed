#!/usr/bin/env bash
# One prepared device call for the GPU path (issue 6): reel and diffusers timed on the same card,
# same shapes, steps and scheduler (plus every heavy operation of a UNet step and a VAE decode
# timed alone in both), the CUDA parity test, and a ratio table at the end ($OUT/table.md holds
# the per-operation tables too).
#
# Run from the repository root on a CUDA machine. Expects, prepared on the build machine:
#   .dev/reel       reel built with `--no-default-features --features cuda` (no ffmpeg needed)
#   .dev/gpu-test   the `gpu` test binary of reel-cli from the same build (optional)
#   .dev/pylib.tgz  diffusers (pure Python) + importlib_metadata, if the machine lacks them
# Writes logs and JSON under $OUT (default /tmp/reel-gpu). Each step has its own time limit so a
# slow one cannot eat the next; what finished is kept.
#
# Usage: bash benches/gpu_run.sh [frames height width steps runs]   (default 16 256 256 25 3)
set -u
OUT=${OUT:-/tmp/reel-gpu}
mkdir -p "$OUT"
F=${1:-16} H=${2:-256} W=${3:-256} S=${4:-25} R=${5:-3}
SCHED=DPMSolverMultistepScheduler
BIN=${REEL_BIN:-.dev/reel}
export RUST_LOG=${RUST_LOG:-warn}
# cubecl's first-use autotuning took minutes for a dozen ops on an H100 (shared/STACK.md); in a
# one-call budget the pipeline must come back, so tune minimally unless told otherwise.
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
step() { echo; echo "=== $* ($(date +%T))"; }

# Peak used device memory (MiB) over a command, from nvidia-smi sampled every 50 ms, minus the
# idle reading before it: the same measure for both tools (CUDA context and allocator pools
# included).
with_mem() {
  local name=$1; shift
  local idle; idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$OUT/$name.mem" 2>/dev/null &
  local sampler=$!
  "$@"; local rc=$?
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
  local peak; peak=$(sort -n "$OUT/$name.mem" | tail -1)
  echo "$name: rc $rc, device memory peak ${peak:-?} MiB used (idle before: $idle MiB)" | tee -a "$OUT/memory.txt"
  return $rc
}

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
if [ -f .dev/pylib.tgz ]; then
  mkdir -p /tmp/reel-site && tar xzf .dev/pylib.tgz -C /tmp/reel-site && export PYTHONPATH=/tmp/reel-site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"
# A compressed binary (.dev/reel.gz) keeps the carried files under the 64 MiB limit.
[ -f "$BIN.gz" ] && [ ! -f "$BIN" ] && gunzip -k "$BIN.gz"
chmod +x "$BIN" .dev/gpu-test 2>/dev/null

step "reel $F×${H}×$W, $SCHED $S steps, f16, CUDA"
with_mem reel timeout 260 "$BIN" bench --config benches/configs/ms-1.7b --device cuda --dtype f16 \
  --frames "$F" --height "$H" --width "$W" --steps "$S" --scheduler "$SCHED" --runs "$R" --ops --out "$OUT/reel.json" 2>&1 | tee "$OUT/reel.log" | grep -v "^ *[0-9]" | tail -14
# The autotune results cubecl cached under target/ (carry them back in to skip autotuning).
cached=$(find target -mindepth 1 -maxdepth 1 ! -name release 2>/dev/null)
[ -n "$cached" ] && tar czf "$OUT/autotune.tgz" $cached && echo "autotune cache: $cached"
ls "$HOME/.cache/cubecl" 2>/dev/null

step "diffusers $F×${H}×$W, $SCHED $S steps, f16, CUDA"
ops_from=(); [ -f "$OUT/reel.json" ] && ops_from=(--ops-from "$OUT/reel.json")
with_mem diffusers timeout 150 python3 benches/diffusers_baseline.py --config benches/configs/ms-1.7b --device cuda --dtype f16 \
  --frames "$F" --height "$H" --width "$W" --steps "$S" --scheduler "$SCHED" --runs "$R" "${ops_from[@]}" --out "$OUT/diffusers.json" 2>&1 | tail -12

if [ -x .dev/gpu-test ]; then
  step "CUDA f32/f16 frames vs diffusers CPU f32 (crates/cli/tests/gpu.rs)"
  # The test binary names the reel binary and the fixtures by the build checkout's absolute
  # path (BUILT_ROOT, /work/main on the build machine): point that path at this checkout.
  root=${BUILT_ROOT:-/work/main}
  if [ -n "$root" ] && [ "$root" != "$PWD" ] && [ ! -e "$root" ]; then mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"; fi
  mkdir -p target/release && cp "$BIN" target/release/reel
  timeout 150 .dev/gpu-test --nocapture 2>&1 | tee "$OUT/gpu-test.log" | grep -v "^$" | tail -15
fi

# Fusion off, for what burn's operation fusion gives (only if the call has time left).
if [ "$SECONDS" -lt 330 ]; then
  step "reel, burn fusion off"
  timeout 150 "$BIN" bench --config benches/configs/ms-1.7b --device cuda --dtype f16 --cuda-fusion off \
    --frames "$F" --height "$H" --width "$W" --steps "$S" --scheduler "$SCHED" --runs 2 --out "$OUT/reel-nofusion.json" 2>&1 | tail -8
fi

# 64 frames with VAE slicing: the memory of a long clip (2 steps, one run: memory, not speed).
if [ "$SECONDS" -lt 470 ]; then
  step "reel 64×${H}×$W, VAE slicing, 2 steps (memory)"
  with_mem reel64 timeout 90 "$BIN" bench --config benches/configs/ms-1.7b --device cuda --dtype f16 --vae-slicing \
    --frames 64 --height "$H" --width "$W" --steps 2 --scheduler "$SCHED" --runs 1 --warmup 0 --out "$OUT/reel-64f.json" 2>&1 | tail -8
fi

step "ratio table (reel / diffusers)"
[ -f "$OUT/reel.json" ] && [ -f "$OUT/diffusers.json" ] && python3 benches/compare.py "$OUT/reel.json" "$OUT/diffusers.json" > "$OUT/table.md"; head -14 "$OUT/table.md"
cat "$OUT/memory.txt" 2>/dev/null
