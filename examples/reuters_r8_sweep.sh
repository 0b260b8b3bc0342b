#!/usr/bin/env bash
# MiniLM-L6 on Reuters R8 with lowrank's defaults (3 epochs, max length 128, batch 32, warmup 6% then linear
# decay, bf16 autocast on CUDA): a full fine-tune and LoRA adapters at r = 1, 8, 64 on query+value with the
# classifier head trained. Usage: examples/reuters_r8_sweep.sh [MODEL] [DATA] [OUTROOT] [LOWRANK]
set -euo pipefail
MODEL=${1:-minilm-l6}
DATA=${2:-reuters-r8}
ROOT=${3:-runs/r8}
LOWRANK=${4:-lowrank}
mkdir -p "$ROOT"
$LOWRANK train --model "$MODEL" --data "$DATA" --method full --out "$ROOT/full" --overwrite --quiet
for r in 1 8 64; do
  $LOWRANK train --model "$MODEL" --data "$DATA" --method lora --rank "$r" --out "$ROOT/lora-r$r" --overwrite --quiet
done
