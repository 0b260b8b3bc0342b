#!/usr/bin/env bash
# Ground truth for rank advice on two image transfer tasks, on the CPU (reports/rank_advice.md): a fully connected
# 784-200-200-10 network pre-trained on one dataset, adapted with LoRA on both hidden layers (the head trained in
# full) to the other; rank grid x 3 seeds at two or three learning rates, plus full fine-tuning.
#   examples/mlp_ground_truth.sh [ROOT]     (LOWRANK defaults to `lowrank`)
set -euo pipefail
ROOT=${1:-runs/mlp}
LOWRANK=${LOWRANK:-lowrank}
mkdir -p "$ROOT"
[ -f "$ROOT/base-fashion/model.safetensors" ] || $LOWRANK train --model mlp:784,200,200,10 --data fashion-mnist \
  --method full --epochs 5 --batch-size 128 --out "$ROOT/base-fashion" --overwrite --quiet
[ -f "$ROOT/base-mnist/model.safetensors" ] || $LOWRANK train --model mlp:784,200,200,10 --data mnist-5k \
  --method full --epochs 10 --batch-size 32 --out "$ROOT/base-mnist" --overwrite --quiet
for lr in 3e-3 1e-2 3e-2; do
  full=$([ $lr = 1e-2 ] && echo --full || echo --no-full)
  $LOWRANK sweep --model "$ROOT/base-fashion" --data mnist-5k --out "$ROOT/fashion-to-mnist-lr$lr" --lora-lr $lr \
    $full --jobs 2 --quiet --device cpu
done
for lr in 3e-3 1e-2; do
  full=$([ $lr = 1e-2 ] && echo --full || echo --no-full)
  $LOWRANK sweep --model "$ROOT/base-mnist" --data fashion-mnist --out "$ROOT/mnist-to-fashion-lr$lr" --lora-lr $lr \
    $full --jobs 2 --quiet --device cpu
done
