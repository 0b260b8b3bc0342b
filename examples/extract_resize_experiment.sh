#!/usr/bin/env bash
# The experiment of reports/extract_resize.md, on one GPU shared by many processes (MiniLM-L6, Reuters R8 and R52):
#   (a) full fine-tuning, then `lowrank extract` at several ranks and energies, against LoRA (all linear layers)
#       trained at the same ranks;
#   (b) LoRA r=64 then `lowrank resize` to r=8 (and r=1), against LoRA r=8 trained directly; 3 seeds.
# Usage: examples/extract_resize_experiment.sh ROOT [TASK ...]     (TASK default: reuters-r8 reuters-r52)
# MODEL and DATA_DIR (CSV files named after the registry keys) default to the registry; LOWRANK to `lowrank`;
# QUICK="--steps 2 --train-samples 64 --eval-samples 32" (and EVAL="--eval-samples 32") for a smoke run on a CPU.
# Grids: EXTRACT_RANKS, ENERGIES, LORA_RANKS and ALL_LRS (learning rates of the all-linear LoRA baselines), SEEDS (part b; empty
# skips it), EXTRAS=0 skips the bias/LayerNorm and query/value-only extractions.
set -euo pipefail
ROOT=$1; shift
TASKS=${*:-reuters-r8 reuters-r52}
MODEL=${MODEL:-minilm-l6}
LOWRANK=${LOWRANK:-lowrank}
QUICK=${QUICK:-}
EVAL=${EVAL:-}
EXTRACT_RANKS=${EXTRACT_RANKS:-1 4 8 16 64}
ENERGIES=${ENERGIES-0.5 0.8 0.9 0.95}
LORA_RANKS=${LORA_RANKS-$EXTRACT_RANKS}
SEEDS=${SEEDS-0 1 2}
ALL_LRS=${ALL_LRS:-2e-3 5e-4}
EXTRAS=${EXTRAS:-1}
data() { if [ -n "${DATA_DIR:-}" ]; then echo "$DATA_DIR/$1.csv"; else echo "$1"; fi; }
train() { $LOWRANK train --model "$MODEL" --quiet --overwrite $QUICK "$@"; }
compress() { $LOWRANK "$@" --quiet $EVAL > /dev/null; }

echo "== training $(date +%T)"
for task in $TASKS; do
  D=$(data $task); T=$ROOT/$task
  train --data "$D" --method full --out "$T/full" &
  for r in $LORA_RANKS; do
    for lr in $ALL_LRS; do
      train --data "$D" --rank $r --targets all-linear --lr $lr --out "$T/lora-all-r$r-lr$lr" &
    done
  done
  for seed in $SEEDS; do
    for r in 8 64; do
      train --data "$D" --rank $r --seed $seed --out "$T/lora-qv-r$r-s$seed" &
    done
  done
done
wait

echo "== extract and resize $(date +%T)"
for task in $TASKS; do
  D=$(data $task); T=$ROOT/$task
  for r in $EXTRACT_RANKS; do
    compress extract "$T/full" --base "$MODEL" --rank $r --data "$D" --out "$T/extract-r$r" &
  done
  for e in $ENERGIES; do
    compress extract "$T/full" --base "$MODEL" --energy $e --data "$D" --out "$T/extract-e$e" &
  done
  if [ "$EXTRAS" = 1 ]; then
    for r in 8 64; do  # carrying every bias and LayerNorm in full as well
      compress extract "$T/full" --base "$MODEL" --rank $r --bias all --save-modules classifier,LayerNorm \
        --data "$D" --out "$T/extract-r$r-bias-norms" &
    done
    compress extract "$T/full" --base "$MODEL" --rank 8 --modules 'query|value' --data "$D" --out "$T/extract-qv-r8" &
  fi
  for seed in $SEEDS; do
    for r in 8 1; do
      compress resize "$T/lora-qv-r64-s$seed" --base "$MODEL" --rank $r --data "$D" --out "$T/resize-r64-to-r$r-s$seed" &
    done
    compress resize "$T/lora-qv-r8-s$seed" --base "$MODEL" --rank 8 --data "$D" --out "$T/resize-r8-to-r8-s$seed" &
  done
done
wait
echo "== done $(date +%T)"
