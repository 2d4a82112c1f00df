#!/usr/bin/env bash
# MambaOut-Small on ImageNet-1k, the paper's recipe (MambaOut repository: scripts/train_mambaout_small.sh).
# Global batch 4096 = per-GPU batch x gradient accumulation x GPUs; with fewer GPUs raise GRAD_ACCUM_STEPS.
#   DATA_PATH=/path/to/imagenet NUM_GPU=8 bash scripts/train_mambaout_small.sh [extra train flags]
set -euo pipefail
DATA_PATH=${DATA_PATH:-/path/to/imagenet}
CODE_PATH=${CODE_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
ALL_BATCH_SIZE=4096
NUM_GPU=${NUM_GPU:-8}
GRAD_ACCUM_STEPS=${GRAD_ACCUM_STEPS:-4}
let BATCH_SIZE=ALL_BATCH_SIZE/NUM_GPU/GRAD_ACCUM_STEPS
MODEL=mambaout_small
DROP_PATH=0.4

exec node "$CODE_PATH/dist/bin/distributed_train.js" $NUM_GPU "$DATA_PATH" \
  --model $MODEL --opt adamw --lr 4e-3 --warmup-epochs 20 \
  -b $BATCH_SIZE --grad-accum-steps $GRAD_ACCUM_STEPS \
  --drop-path $DROP_PATH "$@"
