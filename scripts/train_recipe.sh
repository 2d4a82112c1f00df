#!/usr/bin/env bash
# The paper's ImageNet-1k recipe for one MambaOut size (MambaOut repository: scripts/train_mambaout_*.sh), run through
# mambaout-distributed-train. Called by scripts/train_mambaout_<size>.sh with MODEL and DROP_PATH.
# Global batch 4096 = per-GPU batch x gradient accumulation x GPUs; with fewer GPUs raise GRAD_ACCUM_STEPS.
#   DATA_PATH=/path/to/imagenet NUM_GPU=8 bash scripts/train_mambaout_tiny.sh [extra train flags]
set -euo pipefail
: "${MODEL:?set MODEL}" "${DROP_PATH:?set DROP_PATH}"
DATA_PATH=${DATA_PATH:-/path/to/imagenet}
CODE_PATH=${CODE_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
ALL_BATCH_SIZE=4096
NUM_GPU=${NUM_GPU:-8}
GRAD_ACCUM_STEPS=${GRAD_ACCUM_STEPS:-4}
if (( ALL_BATCH_SIZE % (NUM_GPU * GRAD_ACCUM_STEPS) != 0 )); then
  echo "4096 is not divisible by NUM_GPU x GRAD_ACCUM_STEPS = $((NUM_GPU * GRAD_ACCUM_STEPS))" >&2
  exit 2
fi
BATCH_SIZE=$((ALL_BATCH_SIZE / NUM_GPU / GRAD_ACCUM_STEPS))

exec node "$CODE_PATH/dist/bin/distributed_train.js" "$NUM_GPU" "$DATA_PATH" \
  --model "$MODEL" --opt adamw --lr 4e-3 --warmup-epochs 20 \
  -b "$BATCH_SIZE" --grad-accum-steps "$GRAD_ACCUM_STEPS" \
  --drop-path "$DROP_PATH" "$@"
