#!/usr/bin/env bash
# The GPU half of reports/training_speed.md, in one call on the device machine (OUT: where results go).
# Needs .carry/ from examples/gpu_assets.py (MiniLM-L6 + reuters-r8.csv.gz) and the old code in .carry/cebfcc5
# (git archive cebfcc5 lowrank cli | tar -x -C .carry/cebfcc5). PARTS picks: steps-gpt2, steps-llama, check, train,
# lm-trainer (issue 30: needs only a tokenizer in .carry/tok, see benchmarks/bench_lm_trainer.py).
set -uo pipefail
OUT=${OUT:-/tmp/out}; PARTS=${PARTS:-"steps-gpt2 steps-llama train"}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
nvidia-smi --query-gpu=name,utilization.gpu,memory.used,clocks.sm --format=csv,noheader
steps() {  # shape file
  timeout 280 python3 benchmarks/bench_lora_step.py --shape "$1" --profile "$OUT" 2>&1 \
    | grep -v -i -E "warn|loss_type" | tee "$OUT/$2"
}
for part in $PARTS; do
  case $part in
    steps-gpt2) steps gpt2-medium steps_gpt2_medium.txt ;;
    steps-llama) steps tinyllama steps_tinyllama.txt ;;
    train)
      mkdir -p /tmp/data && gunzip -c .carry/reuters-r8.csv.gz > /tmp/data/reuters-r8.csv
      common=(--model .carry/minilm-l6 --data /tmp/data/reuters-r8.csv)
      export BEFORE=${BEFORE:-.carry/cebfcc5}
      { for method in lora full; do
          echo "$method (defaults; before = $BEFORE, after = this tree with CUDA graphs):"
          timeout 200 benchmarks/train_before_after.sh /tmp/ab-$method -- "${common[@]}" --method $method
          echo "$method, this tree with --no-cuda-graphs:"
          ONLY=after timeout 100 benchmarks/train_before_after.sh /tmp/ab-$method-eager -- "${common[@]}" \
            --method $method --no-cuda-graphs
        done
        [ -n "${COMPILE:-}" ] && echo "LoRA, --compile:" && \
          ONLY=after timeout 150 benchmarks/train_before_after.sh /tmp/ab-compile -- "${common[@]}" --method lora --compile
      } 2>&1 | tee "$OUT/train_minilm_r8.txt" ;;
    lm-trainer)
      timeout 500 python3 benchmarks/bench_lm_trainer.py --shape tinyllama --tokenizer .carry/tok --checkpointing \
        --json "$OUT/lm_trainer.json" 2>&1 | grep -v -i -E "warn|loss_type" | tee "$OUT/lm_trainer.txt" ;;
    check)
      mkdir -p /tmp/data && gunzip -c .carry/reuters-r8.csv.gz > /tmp/data/reuters-r8.csv
      timeout 200 python3 benchmarks/check_graphed_step.py --model .carry/minilm-l6 --data /tmp/data/reuters-r8.csv \
        2>&1 | grep -v -i warn | tee "$OUT/check_graphed.txt" ;;
  esac
done
