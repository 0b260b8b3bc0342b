#!/usr/bin/env bash
# suggest-rank against uniform rank at equal trainable parameters, 3 seeds (reports/rank_advice.md).
#   examples/suggest_rank_validation.sh ROOT RANK TASK=LR [TASK=LR ...]
# For each task: suggest-rank with the gradient and the probe signal at the cost of uniform rank RANK, and peft's
# EVA allocation of the same total rank (examples/eva_allocation.py), then lowrank train --config for each
# allocation and seed, beside uniform rank RANK at the same seeds. MODEL, DATA_DIR and
# LOWRANK as in rank_ground_truth.sh; PYTHON runs the EVA script; SIGNALS picks the arms (EVA is text-only);
# TRAIN_ARGS go to every training run, SUGGEST_ARGS to suggest-rank (language models: TRAIN_ARGS="--steps 400
# --batch-size 16"); uniform rank gets lowrank's default alpha, 8, as suggest-rank's allocations do.
set -euo pipefail
ROOT=$1; RANK=$2; shift 2
MODEL=${MODEL:-minilm-l6}
LOWRANK=${LOWRANK:-lowrank}
data() { if [ -n "${DATA_DIR:-}" ]; then echo "$DATA_DIR/$1.csv"; else echo "$1"; fi; }
for spec in "$@"; do
  task=${spec%=*}; lr=${spec#*=}
  mkdir -p "$ROOT/$task"
  for signal in ${SIGNALS:-uniform gradient probe eva}; do
    ( if [ $signal = uniform ]; then
        printf '{"r": %s, "lora_alpha": 8}\n' "$RANK" > "$ROOT/$task/uniform.json"
      elif [ $signal = eva ]; then
        ${PYTHON:-python3} examples/eva_allocation.py "$MODEL" "$(data $task)" "$RANK" "$ROOT/$task/eva.json" \
          > "$ROOT/$task/eva.log" 2>&1
      else
        $LOWRANK suggest-rank --model "$MODEL" --data "$(data $task)" --rank "$RANK" --signal $signal --lr "$lr" \
          ${SUGGEST_ARGS:-} --out "$ROOT/$task/$signal.json" --json "$ROOT/$task/$signal-evidence.json" > "$ROOT/$task/$signal.log" 2>&1
      fi
      for seed in 0 1 2; do
        $LOWRANK train --model "$MODEL" --data "$(data $task)" --config "$ROOT/$task/$signal.json" --lr "$lr" ${TRAIN_ARGS:-} \
          --seed $seed --out "$ROOT/$task/$signal-s$seed" --overwrite --quiet > /dev/null 2>&1 &
      done
      wait ) &
  done
done
wait
