#!/usr/bin/env bash
# One prepared device call for the GPU path (issue 6): reel and diffusers timed on the same card,
# same shapes, steps and scheduler (plus every heavy operation of a UNet step and a VAE decode
# timed alone in both), the CUDA parity test, and a ratio table at the end.
#
# burn-cuda's first use on a machine compiles (NVRTC) and autotunes its kernels for minutes
# (docs/performance.md, 2026-11-27): more than one call can hold. So the compiled kernels live in
# a kernel cache that travels: it is read from .dev/kernels.tgz when present and written back as
# $OUT/kernels.tgz after every reel step (what a step compiled before a time limit is kept).
#   MODE=warm  reel only, everything compiled once (all parts at the target shapes, 2 steps, the
#              parity test): the call that fills the cache.
#   MODE=quick a follow-up (5 minutes): the GPU tests in a third of BUDGET, reel's parts and
#              per-op table, UNet step and VAE decode on the other convolution path, the UNet
#              step without the fused attention and on the other fusion setting, 64 frames with
#              offload + slicing on each --cuda-memory setting, the table against an earlier call's diffusers report
#              (.dev/diffusers.json). OWN=off: --cuda-own-kernels off.
#   MODE=time  (default) the measurement: reel bench --ops --check-ops (each operation also
#              against burn-flex f32 on the CPU), diffusers on the same card, the parity test, the
#              table. With a warm cache nothing is compiled in it.
# Between calls: cp <files_at>/kernels.tgz .dev/kernels.tgz (a split cache: cat the parts).
#
# Run from the repository root on a CUDA machine. Expects, prepared on the build machine:
#   .dev/reel or .dev/reel.gz  reel built with `--no-default-features --features cuda`
#   .dev/gpu-test              the `gpu` test binary of reel-cli from the same build (optional)
#   .dev/pylib.tgz             diffusers (pure Python) + importlib_metadata, if the machine lacks them
#   .dev/kernels.tgz           a kernel cache from an earlier call with the same binary (optional)
# $OUT gets at most 8 files (the device tool's limit): summary.txt, reel.log, reel.json,
# diffusers.json, gpu-test.log, table.md, kernels.tgz (or kernels.tgz.part-a*).
#
# Usage: [MODE=warm|quick|time] [BUDGET=seconds] [FUSION=on|off] [KERNELS=cublas|cubecl] [MEM=sliced|split|exclusive] bash benches/gpu_run.sh [frames height width steps runs]
# (MEM: the GPU memory pools of the main runs, `--cuda-memory`; the 64-frame memory runs try each.)
# (FUSION=off: burn's unfused backend for the main runs; it compiles no fused-matmul variants.
#  KERNELS: what computes the heavy operations, `--cuda-kernels`: cudnn (the default: cuDNN
#  convolutions, cuBLAS products), cublas (im2col convolutions on cuBLAS) or cubecl. The libraries
#  compile nothing, so one MODE=time call needs no warm-up call first. libcublas / libcudnn are
#  taken from the machine's PyTorch install when the library path lacks them.)
set -u
OUT=${OUT:-/tmp/reel-gpu}
mkdir -p "$OUT"
MODE=${MODE:-time}
BUDGET=${BUDGET:-580}          # the call's own limit: each step gets what is left of it
F=${1:-16} H=${2:-256} W=${3:-256} S=${4:-25} R=${5:-3}
SCHED=DPMSolverMultistepScheduler
BIN=${REEL_BIN:-.dev/reel}
SUM=$OUT/summary.txt
export RUST_LOG=${RUST_LOG:-warn}
# Minimal autotuning: fewer candidate kernels to compile on a first use.
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
export REEL_KERNEL_CACHE=${REEL_KERNEL_CACHE:-/tmp/reel-kernels}
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $* ($(date +%T), ${SECONDS}s)" | tee -a "$SUM"; }
left() { local v=$(( BUDGET - SECONDS - ${1:-0} )); [ "$v" -lt 1 ] && v=1; echo "$v"; }   # seconds left, keeping $1 in reserve

# Peak used device memory (MiB) over a command, from nvidia-smi sampled every 50 ms: the same
# measure for both tools (CUDA context and allocator pools included).
with_mem() {
  local name=$1; shift
  local idle; idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "/tmp/$name.mem" 2>/dev/null &
  local sampler=$!
  "$@"; local rc=$?
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
  local peak; peak=$(sort -n "/tmp/$name.mem" | tail -1)
  echo "$name: rc $rc, device memory peak ${peak:-?} MiB used (idle before: $idle MiB)" >> "$SUM"
  return $rc
}

# The kernel cache back to $OUT, split under the 16 MiB a file.
save_cache() {
  [ -d "$REEL_KERNEL_CACHE" ] || return 0
  rm -f "$OUT"/kernels.tgz*
  tar czf /tmp/kernels.tgz -C "$REEL_KERNEL_CACHE" .
  local size; size=$(stat -c %s /tmp/kernels.tgz)
  if [ "$size" -gt 16000000 ]; then split -b 15000000 /tmp/kernels.tgz "$OUT/kernels.tgz.part-"; else cp /tmp/kernels.tgz "$OUT/"; fi
  echo "kernel cache: $(du -sh "$REEL_KERNEL_CACHE" | cut -f1) ($size bytes compressed)" | tee -a "$SUM"
}

step "machine, MODE=$MODE, fusion ${FUSION:-on}, kernels ${KERNELS:-cudnn}, autotune $CUBECL_AUTOTUNE_LEVEL"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$SUM"
mkdir -p "$REEL_KERNEL_CACHE"
if [ -f .dev/kernels.tgz ]; then tar xzf .dev/kernels.tgz -C "$REEL_KERNEL_CACHE" && echo "kernel cache restored: $(du -sh "$REEL_KERNEL_CACHE" | cut -f1)" | tee -a "$SUM"; fi
if [ -f .dev/pylib.tgz ]; then
  mkdir -p /tmp/reel-site && tar xzf .dev/pylib.tgz -C /tmp/reel-site && export PYTHONPATH=/tmp/reel-site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" 2>&1 | tail -1 | tee -a "$SUM"
[ -f "$BIN.gz" ] && [ ! -f "$BIN" ] && gunzip -k "$BIN.gz"
chmod +x "$BIN" .dev/gpu-test 2>/dev/null
# cuBLAS and cuDNN: the library path, else the copies PyTorch's wheels ship (nvidia/*/lib).
for libname in libcublas libcudnn; do
  ldconfig -p 2>/dev/null | grep -q "$libname\.so" && continue
  for d in $(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null); do
    lib=$(find "$d/nvidia" -name "$libname.so*" 2>/dev/null | head -1)
    [ -n "$lib" ] && export LD_LIBRARY_PATH=$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} && break
  done
done
echo "vendor libraries: LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}; ldconfig: $(ldconfig -p 2>/dev/null | grep -o 'lib\(cublas\|cudnn\)\.so[^ ]*' | sort -u | tr '\n' ' ')" | tee -a "$SUM"
KERNELS=${KERNELS:-cudnn}
base=(--config benches/configs/ms-1.7b --device cuda --dtype f16 --frames "$F" --height "$H" --width "$W" --scheduler "$SCHED" --cuda-kernels "$KERNELS" --cuda-memory "${MEM:-sliced}")
common=("${base[@]}" --cuda-fusion "${FUSION:-on}")
other_fusion=$([ "${FUSION:-on}" = on ] && echo off || echo on)

gpu_test() {
  [ -x .dev/gpu-test ] || return 0
  step "CUDA f32/f16 frames vs diffusers CPU f32 (crates/cli/tests/gpu.rs)"
  # The test binary names the reel binary and the fixtures by the build checkout's absolute path
  # (BUILT_ROOT, /work/main on the build machine): point that path at this checkout.
  local root=${BUILT_ROOT:-/work/main}
  if [ -n "$root" ] && [ "$root" != "$PWD" ] && [ ! -e "$root" ]; then mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"; fi
  mkdir -p target/release && cp "$BIN" target/release/reel
  timeout "$1" .dev/gpu-test --nocapture > "$OUT/gpu-test.log" 2>&1
  echo "gpu-test: rc $?" | tee -a "$SUM"
  grep -E "^test |result|max|worst|skipp" "$OUT/gpu-test.log" | tail -12 | tee -a "$SUM"
}

if [ "$MODE" = quick ]; then
  # A short follow-up call: the parity test first (what it finishes in its share), reel's parts
  # and per-op table on the chosen settings, UNet step and VAE decode with the other
  # convolution path (cuDNN vs reel's im2col + cuBLAS), 64 frames with VAE slicing if time is
  # left, and the table against the diffusers report of an earlier call (.dev/diffusers.json).
  gpu_test "$(( BUDGET / 3 ))"
  step "reel $F×${H}×$W, $SCHED $S steps, f16, CUDA, --cuda-own-kernels ${OWN:-on}"
  REEL_JOB_TIMES=1 with_mem reel timeout "$(left 55)" "$BIN" bench "${common[@]}" --cuda-own-kernels "${OWN:-on}" --steps "$S" --runs "$R" --ops --out "$OUT/reel.json" > "$OUT/reel.log" 2>&1
  grep -v "^ *[0-9]" "$OUT/reel.log" | tail -18
  # The host time of each kind of vendor operation (the whole log comes back as reel.log).
  sed -n '/^vendor operations (REEL_JOB_TIMES)/,$p' "$OUT/reel.log" | head -14 | tee -a "$SUM"
  other_kernels=$([ "$KERNELS" = cudnn ] && echo cublas || echo cudnn)
  step "reel UNet step and VAE decode, --cuda-kernels $other_kernels"
  with_mem reel-$other_kernels timeout "$(left 10)" "$BIN" bench "${base[@]/#$KERNELS/$other_kernels}" --cuda-fusion "${FUSION:-on}" --cuda-own-kernels "${OWN:-on}" \
    --steps "$S" --runs "$R" --parts unet_step,vae_decode --out "$OUT/reel-$other_kernels.json" 2>&1 | grep -v "^ *[0-9]" | tail -7 | tee -a "$SUM"
  # The device thread's idle wait: upstream cubecl sleeps 150 µs at a time, reel's patch parks
  # and is woken (third_party/cubecl-common); the same parts with upstream's sleep, to compare.
  step "reel text encoder and UNet step with upstream cubecl's idle sleep (REEL_DEVICE_THREAD_SLEEP=1)"
  REEL_DEVICE_THREAD_SLEEP=1 timeout "$(left 10)" "$BIN" bench "${common[@]}" --cuda-own-kernels "${OWN:-on}" --steps "$S" --runs "$R" \
    --parts text_encoder,unet_step --out "$OUT/reel-sleep.json" 2>&1 | grep -v "^ *[0-9]" | tail -6 | tee -a "$SUM"
  # 64 frames with offload + slicing (memory): the pool's reserve, not the live tensors, decides
  # the peak nvidia-smi reads, so each --cuda-memory setting gets a run: `split` first, before the
  # variants below, the others after them while time is left.
  mem64() {   # setting [most seconds]
    local t; t=$(left 8); [ -n "${2:-}" ] && [ "$t" -gt "$2" ] && t=$2
    step "reel 64×${H}×$W, model CPU offload + VAE slicing, --cuda-memory $1, 2 steps (memory)"
    with_mem reel64-$1 timeout "$t" "$BIN" bench --config benches/configs/ms-1.7b --device cuda --dtype f16 --frames 64 --height "$H" --width "$W" \
      --scheduler "$SCHED" --cuda-kernels "$KERNELS" --cuda-fusion "${FUSION:-on}" --cuda-own-kernels "${OWN:-on}" --cpu-offload --vae-slicing \
      --cuda-memory "$1" --steps 2 --runs 1 --warmup 0 --parts pipeline 2>&1 | grep -v "^ *[0-9]" | tail -5 | tee -a "$SUM"
  }
  [ "$(left 0)" -gt 90 ] && mem64 split 60
  # What the attention kernel and burn's fusion each give: the UNet step without them.
  for variant in "--cuda-fusion ${FUSION:-on} --cuda-flash-attention off" "--cuda-fusion $other_fusion --cuda-flash-attention on"; do
    [ "$(left 0)" -gt 60 ] || break
    step "reel UNet step, $variant"
    # shellcheck disable=SC2086 # the variant is two flags
    timeout "$(left 45)" "$BIN" bench "${base[@]}" --cuda-own-kernels "${OWN:-on}" $variant \
      --steps "$S" --runs "$R" --parts unet_step 2>&1 | grep -v "^ *[0-9]" | tail -3 | tee -a "$SUM"
  done
  for mem in sliced exclusive; do
    [ "$(left 0)" -gt 40 ] || break
    mem64 "$mem"
  done
  step "ratio table (reel / diffusers of the earlier call)"
  [ -f "$OUT/reel.json" ] && [ -f .dev/diffusers.json ] && python3 benches/compare.py "$OUT/reel.json" .dev/diffusers.json > "$OUT/table.md"
  head -24 "$OUT/table.md" 2>/dev/null
  grep -E "^[a-z0-9-]+: rc " "$SUM"
  exit 0
fi

if [ "$MODE" = warm ]; then
  step "reel warm-up: every part and operation at ${F}×${H}×$W, 2 steps, once (compiles into the kernel cache)"
  with_mem reel timeout "$(left 200)" "$BIN" bench "${common[@]}" --steps 2 --runs 1 --warmup 0 --ops --out "$OUT/reel.json" > "$OUT/reel.log" 2>&1
  grep -v "^ *[0-9]" "$OUT/reel.log" | tail -14
  save_cache
  gpu_test "$(left 30)"
  save_cache
  exit 0
fi

step "reel $F×${H}×$W, $SCHED $S steps, f16, CUDA"
t0=$SECONDS
with_mem reel timeout "$(left 260)" "$BIN" bench "${common[@]}" --steps "$S" --runs "$R" --ops --check-ops --out "$OUT/reel.json" > "$OUT/reel.log" 2>&1
rc=$?
grep -v "^ *[0-9]" "$OUT/reel.log" | tail -16
# A quick failure of the vendor path (not a time-out): the same bench once more on the next
# kernels setting, so the call still brings numbers back (the log keeps the first error).
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $((SECONDS - t0)) -lt 90 ] && [ "$KERNELS" != cubecl ]; then
  next=$([ "$KERNELS" = cudnn ] && echo cublas || echo cubecl)
  step "reel failed with --cuda-kernels $KERNELS (rc $rc): again with $next"
  tail -5 "$OUT/reel.log" | tee -a "$SUM"; mv "$OUT/reel.log" /tmp/reel-first.log
  common=("${common[@]/#$KERNELS/$next}"); base=("${base[@]/#$KERNELS/$next}")
  { tail -40 /tmp/reel-first.log; echo "=== retried with --cuda-kernels $next"; } > "$OUT/reel.log"
  with_mem reel-$next timeout "$(left 220)" "$BIN" bench "${common[@]}" --steps "$S" --runs "$R" --ops --check-ops --out "$OUT/reel.json" >> "$OUT/reel.log" 2>&1
  grep -v "^ *[0-9]" "$OUT/reel.log" | tail -16
fi
save_cache

step "diffusers $F×${H}×$W, $SCHED $S steps, f16, CUDA"
ops_from=(); [ -f "$OUT/reel.json" ] && ops_from=(--ops-from "$OUT/reel.json")
with_mem diffusers timeout "$(left 110)" python3 benches/diffusers_baseline.py --config benches/configs/ms-1.7b --device cuda --dtype f16 \
  --frames "$F" --height "$H" --width "$W" --steps "$S" --scheduler "$SCHED" --runs "$R" "${ops_from[@]}" --out "$OUT/diffusers.json" > /tmp/diffusers.log 2>&1
tail -12 /tmp/diffusers.log | tee -a "$SUM"

gpu_test "$(left 40)"
save_cache

# The other fusion setting (what burn's fusion gives) and 64 frames with VAE slicing (memory), if time is left.
if [ "$(left 0)" -gt 150 ]; then
  step "reel, burn fusion $other_fusion"
  timeout "$(left 60)" "$BIN" bench "${base[@]}" --cuda-fusion "$other_fusion" --steps "$S" --runs 2 --parts unet_step,vae_decode,pipeline 2>&1 | grep -v "^ *[0-9]" | tail -10 | tee -a "$SUM"
fi
for mem in split sliced; do
  [ "$(left 0)" -gt 90 ] || break
  step "reel 64×${H}×$W, model CPU offload + VAE slicing, --cuda-memory $mem, 2 steps (memory)"
  with_mem reel64-$mem timeout "$(left 20)" "$BIN" bench --config benches/configs/ms-1.7b --device cuda --dtype f16 --cpu-offload --vae-slicing \
    --cuda-fusion "${FUSION:-on}" --cuda-memory "$mem" --frames 64 --height "$H" --width "$W" --steps 2 --scheduler "$SCHED" --runs 1 --warmup 0 --parts pipeline 2>&1 | tail -6 | tee -a "$SUM"
done

step "ratio table (reel / diffusers)"
[ -f "$OUT/reel.json" ] && [ -f "$OUT/diffusers.json" ] && python3 benches/compare.py "$OUT/reel.json" "$OUT/diffusers.json" > "$OUT/table.md"
head -24 "$OUT/table.md" 2>/dev/null
grep -E "^[a-z0-9-]+: rc " "$SUM"
