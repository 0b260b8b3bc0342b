#!/usr/bin/env bash
# suggest-rank against uniform rank at equal trainable parameters, 3 seeds (reports/rank_advice.md).
#   examples/suggest_rank_validation.sh ROOT RANK TASK=LR [TASK=LR ...]
# For each task: suggest-rank with the gradient and the probe signal at the cost of uniform rank RANK, then
# lowrank train --config for each allocation and seed; the uniform runs come from the sweep (examples/
# rank_ground_truth.sh). MODEL, DATA_DIR and LOWRANK as in rank_ground_truth.sh.
set -euo pipefail
ROOT=$1; RANK=$2; shift 2
MODEL=${MODEL:-minilm-l6}
LOWRANK=${LOWRANK:-lowrank}
data() { if [ -n "${DATA_DIR:-}" ]; then echo "$DATA_DIR/$1.csv"; else echo "$1"; fi; }
for spec in "$@"; do
  task=${spec%=*}; lr=${spec#*=}
  mkdir -p "$ROOT/$task"
  for signal in gradient probe; do
    ( $LOWRANK suggest-rank --model "$MODEL" --data "$(data $task)" --rank "$RANK" --signal $signal --lr "$lr" \
        --out "$ROOT/$task/$signal.json" --json "$ROOT/$task/$signal-evidence.json" > "$ROOT/$task/$signal.log" 2>&1
      for seed in 0 1 2; do
        $LOWRANK train --model "$MODEL" --data "$(data $task)" --config "$ROOT/$task/$signal.json" --lr "$lr" \
          --seed $seed --out "$ROOT/$task/$signal-s$seed" --overwrite --quiet > /dev/null 2>&1 &
      done
      wait ) &
  done
done
wait
