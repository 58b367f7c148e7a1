#!/usr/bin/env bash
# attnviz GPU check: every CUDA path once, one compact summary (about 8 min on one H200; GPU_CHECK_SECONDS caps
# it, default 450, and the steps that do not fit are listed as skipped).
#
#   bash scripts/gpu_check.sh        # exit 0 when every step passed
#
# Steps: the probe (every attention type through analyze on CUDA vs the CPU, the batch path's OOM retry, the
# CUDA generator, a ResNet-50 request's latency, a 1 GB GPU), one-epoch training (torchrun with NCCL, --device
# cuda alone, gloo with --device cpu on the GPU host, two ranks on one GPU refused), the cuda-marked tests and
# the device tests' CPU params, and bench/'s GPU section (capture overhead, batched capture vs bare in bf16).
# Runs under the device image (Python 3.12, torch 2.11, no gradio): installs nothing, and leaves out the tests
# that need gradio when it is missing. Without CUDA it is a dry run: the probe and a CPU training run on the
# CPU, the CUDA steps are skipped and say so. Logs: $OUT (or /tmp/attnviz-gpu-check)/gpu_check.log.
cd "$(dirname "$0")/.." || exit 2
set -u
# .teacher/: the distillation tests' teacher, where it was carried (scripts/train_demo_gpu.sh says how)
export PYTHONPATH=$PWD/.teacher:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 ATTNVIZ_OFFLINE=1
R=${OUT:-/tmp/attnviz-gpu-check}; mkdir -p "$R"; LOG=$R/gpu_check.log; : >"$LOG"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
END=$((SECONDS + ${GPU_CHECK_SECONDS:-450})); SUM=(); FAILED=0

step() {  # step NAME SECONDS CMD...: runs CMD with a timeout (never past END), logs it, adds a summary line
  local n=$1 t=$2 t0=$SECONDS left=$((END - SECONDS)); shift 2
  ((left < t)) && t=$left
  if ((t < 10)); then SUM+=("$(printf '%-10s SKIP  no time left' "$n")"); FAILED=1; return; fi
  echo "=== $n: $*" >>"$LOG"
  timeout -k 5 "$t" "$@" >"$W/$n.log" 2>&1; local rc=$?
  cat "$W/$n.log" >>"$LOG"
  local last; last=$(grep -v '^\s*$' "$W/$n.log" | tail -n1 | cut -c1-140)
  ((rc == 0)) || FAILED=1
  SUM+=("$(printf '%-10s %-5s %4ss  ' "$n" "$( ((rc == 0)) && echo ok || echo "rc=$rc")" $((SECONDS - t0)))$last")
}
skip() { SUM+=("$(printf '%-10s SKIP  %s' "$1" "$2")"); }

step env 60 "$PY" -c "import sys, torch as t, torchvision as v; print('python', sys.version.split()[0], 'torch', t.__version__, 'torchvision', v.__version__, 'CUDA', t.version.cuda, '|', t.cuda.get_device_name(0) if t.cuda.is_available() else 'no CUDA device: dry run')"
CUDA=0; "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && CUDA=1

# tests that need gradio (the app, the browser, the served reliability suite) stay out where it is missing
IGN=(--ignore=tests/test_browser.py)
# (every test module that imports gradio or the app at its top: one missing import stops the whole collection)
if ! "$PY" -c 'import gradio, gradio_client' 2>/dev/null; then
  IGN+=(--ignore=tests/reliability)
  for f in $(grep -l -E '^(from|import) (gradio|gradio_client|attnviz\.app)\b' tests/*.py); do IGN+=(--ignore="$f"); done
fi
PT=(-q -rfE -p no:cacheprovider "${IGN[@]}")
"$PY" -c 'import pytest_timeout' 2>/dev/null && PT+=(--timeout=150)

# tiny image folder for the training steps: 2 classes x 12 random 40x40 images
"$PY" -c "
import os, numpy as n
from PIL import Image
for c in 'ab':
    os.makedirs('$W/data/' + c, exist_ok=True)
    for j in range(12):
        Image.fromarray(n.random.default_rng(j).integers(0, 255, (40, 40, 3), dtype=n.uint8)).save(f'$W/data/{c}/{j}.png')
"
TR=(-m attnviz.cli.main train --data "$W/data" --arch resnet18 --attention cbam --weights none --size 32 --batch-size 8 --epochs 1 --workers 2)
RUN=("$PY" -m torch.distributed.run --standalone)

if ((CUDA)); then  # most telling first: a short budget (GPU_CHECK_SECONDS) skips the tail, and says so
  step probe 280 "$PY" scripts/gpu_probe.py
  step t-cuda 200 "$PY" -m pytest "${PT[@]}" -m cuda tests
  step b-thruput 120 "$PY" bench/throughput.py --device cuda --batch 128 --repeat 5 --images 32
  step dev-cuda 60 "$PY" "${TR[@]}" --device cuda --out "$W/b.safetensors"  # set_device needs an index
  step ddp-nccl 90 "${RUN[@]}" --nproc_per_node 1 "${TR[@]}" --out "$W/a.safetensors"  # NCCL on cuda:0
  step b-capture 100 "$PY" bench/capture.py --device cuda --archs resnet50 --attentions cbam se da mhsa --batches 1 64
  grep -h -E '^(\| |### |- (device|versions|command))' "$W/b-capture.log" "$W/b-thruput.log" >"$R/bench_gpu.md" 2>/dev/null
  step ddp-gloo 90 "${RUN[@]}" --nproc_per_node 2 "${TR[@]}" --device cpu --out "$W/c.safetensors"  # gloo on a GPU host
  # two ranks, one GPU: refused with a message that says why (NCCL cannot share a GPU)
  NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
  ((NGPU == 1)) || skip 2rank1gpu "$NGPU GPUs here: the refusal needs exactly one"
  ((NGPU == 1)) && step 2rank1gpu 60 bash -c "! ${RUN[*]} --nproc_per_node 2 ${TR[*]} --out $W/d.safetensors >$W/refused 2>&1 && grep -m1 -o 'ranks on this node but [0-9]* GPU(s)' $W/refused"
  # the device tests' CPU params and the defaults on a GPU host (fit and analyze pick CUDA there)
  step t-cpu 150 "$PY" -m pytest "${PT[@]}" -m "not cuda" tests/test_train.py tests/test_batch.py tests/test_analyze.py
else
  step probe 240 "$PY" scripts/gpu_probe.py --dry
  step ddp-gloo 120 "${RUN[@]}" --nproc_per_node 1 "${TR[@]}" --device cpu --out "$W/c.safetensors"
  step t-cuda 150 "$PY" -m pytest "${PT[@]}" -m cuda tests
  for s in ddp-nccl dev-cuda 2rank1gpu b-capture b-thruput; do skip "$s" "no CUDA device here (dry run)"; done
fi

echo "== attnviz GPU check: $( ((CUDA)) && echo 'CUDA' || echo 'DRY RUN, no CUDA device: CUDA steps skipped'), $SECONDS s, log $LOG"
printf '%s\n' "${SUM[@]}"
grep -h -E '^(FAILED|ERROR) ' "$W"/t-*.log 2>/dev/null | cut -c1-160 | head -20
grep -h -E '^(analyze|latency|batch OOM|1 GB|random model)' "$W/probe.log" 2>/dev/null | cut -c1-120
{ echo; echo "== summary"; printf '%s\n' "${SUM[@]}"; } >>"$LOG"
if ((FAILED)); then echo "GPU CHECK FAILED"; exit 1; fi
echo "GPU CHECK PASSED$( ((CUDA)) || echo ' (dry run)')"
