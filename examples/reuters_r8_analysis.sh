#!/usr/bin/env bash
# Analyze the Reuters R8 runs of examples/reuters_r8_sweep.sh: each LoRA adapter against the full fine-tune
# (LoRA paper section 7, Shuttleworth et al.), r=8 against r=64 (Figure 3), seed against seed (Figure 4), and the
# full fine-tune alone. Writes terminal text, JSON, Markdown and HTML per comparison.
# Usage: examples/reuters_r8_analysis.sh [RUNS] [BASE] [OUT] [LOWRANK]
set -euo pipefail
RUNS=${1:-runs/r8}
BASE=${2:-minilm-l6}
OUT=${3:-reports/r8_analysis}
LOWRANK=${4:-lowrank}
mkdir -p "$OUT"
analyze() {  # NAME CHECKPOINT [OPTIONS...]
  local name=$1; shift
  $LOWRANK analyze "$@" --json "$OUT/$name.json" --markdown "$OUT/$name.md" --html "$OUT/$name.html"
  COLUMNS=100 $LOWRANK analyze "$@" > "$OUT/$name.txt"
}
for r in 1 8 64; do
  analyze "lora-r$r-vs-full" "$RUNS/lora-r$r" --base "$BASE" --against "$RUNS/full"
done
analyze "lora-r8-vs-r64" "$RUNS/lora-r8" --base "$BASE" --against "$RUNS/lora-r64"
analyze "lora-r8-seed0-vs-seed1" "$RUNS/lora-r8" --base "$BASE" --against "$RUNS/lora-r8-seed1"
analyze "full" "$RUNS/full" --base "$BASE" --reference-rank 8
