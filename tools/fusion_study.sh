#!/usr/bin/env bash
# Issue 7 study: DisCo DETR pre-training with the paper's MLP fusion (eq. 3) vs the released code's plain
# addition, on the demo data, each followed by the same fine-tuning; prints the fine-tuning AP of both.
# Usage: tools/fusion_study.sh [PRETRAIN_ITERS] [FINETUNE_ITERS] [OUT]   (defaults 150 500 output/study)
set -euo pipefail
cd "$(dirname "$0")/.."
PRE=${1:-150}; FT=${2:-500}; OUT=${3:-output/study}
mkdir -p "$OUT"
arm() {
  local f=$1
  .venv/bin/python tools/lazyconfig_train_net.py --config-file configs/demo/disco_cond.py train.seed=0 \
    "train.output_dir=$OUT/pretrain_$f" "train.max_iter=$PRE" "model.fusion=$f" > "$OUT/pretrain_$f.log" 2>&1
  .venv/bin/python tools/lazyconfig_train_net.py --config-file configs/demo/cond.py train.seed=0 \
    "train.output_dir=$OUT/finetune_$f" "train.max_iter=$FT" \
    "train.init_checkpoint=$OUT/pretrain_$f/model_final.pth" > "$OUT/finetune_$f.log" 2>&1
  echo "fusion=$f: $(grep '\[bbox\]' "$OUT/finetune_$f.log" | tail -1)"
}
arm mlp &
arm add &
wait
