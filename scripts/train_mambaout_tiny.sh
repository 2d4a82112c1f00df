#!/usr/bin/env bash
# MambaOut-Tiny on ImageNet-1k with the paper's recipe (global batch 4096, lr 4e-3, drop path 0.2): see train_recipe.sh.
#   DATA_PATH=/path/to/imagenet NUM_GPU=8 bash scripts/train_mambaout_tiny.sh [extra train flags]
MODEL=mambaout_tiny DROP_PATH=0.2 exec bash "$(dirname "${BASH_SOURCE[0]}")/train_recipe.sh" "$@"
