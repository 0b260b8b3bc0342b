#!/usr/bin/env bash
# Ground truth for rank advice on MiniLM-L6 (reports/rank_advice.md), run on one GPU shared by many processes.
#   examples/rank_ground_truth.sh lr     ROOT   learning-rate grid, seed 0: LoRA r=8 and full on R52 and 20NG
#   examples/rank_ground_truth.sh r8     ROOT   rank grid x 3 seeds + full on R8 (defaults)
#   examples/rank_ground_truth.sh grid   ROOT   rank grid x 3 seeds + full on R52 and 20NG at the chosen rates
# MODEL and DATA_DIR (CSV files named after the registry keys) default to the registry; LOWRANK to `lowrank`.
set -euo pipefail
PHASE=$1
ROOT=${2:-runs/rank}
MODEL=${MODEL:-minilm-l6}
LOWRANK=${LOWRANK:-lowrank}
data() { if [ -n "${DATA_DIR:-}" ]; then echo "$DATA_DIR/$1.csv"; else echo "$1"; fi; }
mkdir -p "$ROOT"
case $PHASE in
  lr)
    for task in reuters-r52 20newsgroups; do
      for lr in 5e-4 2e-3 5e-3; do
        $LOWRANK train --model "$MODEL" --data "$(data $task)" --rank 8 --lr $lr --out "$ROOT/lr/$task/lora-r8-lr$lr" --overwrite --quiet &
      done
      for lr in 5e-5 1e-4; do
        $LOWRANK train --model "$MODEL" --data "$(data $task)" --method full --lr $lr --out "$ROOT/lr/$task/full-lr$lr" --overwrite --quiet &
      done
      # the old default: a fresh head at full fine-tuning's rate
      $LOWRANK train --model "$MODEL" --data "$(data $task)" --method full --lr 5e-5 --head-lr 5e-5 --out "$ROOT/lr/$task/full-lr5e-5-head5e-5" --overwrite --quiet &
    done
    wait ;;
  r8)
    $LOWRANK sweep --model "$MODEL" --data "$(data reuters-r8)" --out "$ROOT/reuters-r8" --jobs ${JOBS:-6} --quiet ;;
  grid)
    for task in reuters-r52 20newsgroups; do
      best=$(python3 -c "
import json, pathlib, sys
runs = {p.parent.name: json.loads(p.read_text())['final']['accuracy'] for p in pathlib.Path('$ROOT/lr/$task').glob('*/metrics.json')}
lora = max((a, n) for n, a in runs.items() if n.startswith('lora'))[1].split('lr')[1]
full = max((a, n) for n, a in runs.items() if n.startswith('full') and 'head' not in n)[1].split('lr')[1]
print(lora, full)")
      set -- $best
      $LOWRANK sweep --model "$MODEL" --data "$(data $task)" --out "$ROOT/$task" --lora-lr $1 --full-lr $2 --jobs ${JOBS:-7} --quiet &
    done
    wait ;;
esac
