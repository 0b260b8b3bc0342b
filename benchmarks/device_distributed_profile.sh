#!/usr/bin/env bash
# Where a step's time goes on 1 GPU and on all of them: `lowrank train` of LoRA (r=16, all linear layers) on the
# SmolLM2-135M shape (benchmarks/shaped_llama.py), PER_GPU sequences of 1024 tokens per GPU, with torch.profiler
# recording steps FIRST..LAST of rank 0 (benchmarks/profile_train.py). Writes $OUT/profile_1gpu.txt and
# $OUT/profile_Ngpu.txt. Needs .carry/ as benchmarks/device_distributed_train.sh does.
set -uo pipefail
OUT=${OUT:-/tmp/out}; PER_GPU=${PER_GPU:-32}; FIRST=${FIRST:-60}; LAST=${LAST:-65}
GPUS=$(nvidia-smi -L | wc -l)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p /tmp/pkg /tmp/data "$OUT" && ln -sfn "$PWD/lowrank_cli" /tmp/pkg/lowrank_cli
export PYTHONPATH="$PWD:/tmp/pkg"
[ -f /tmp/data/reuters-r8.csv ] || gunzip -c .carry/reuters-r8.csv.gz > /tmp/data/reuters-r8.csv
[ -d /tmp/models/smollm2-135m ] || python3 benchmarks/shaped_llama.py smollm2-135m .carry/smollm2-tokenizer /tmp/models/smollm2-135m | tail -1
args=(train --model /tmp/models/smollm2-135m --data /tmp/data/reuters-r8.csv --task lm --method lora --rank 16
      --targets all-linear --steps $((LAST + 2)) --epochs 100 --max-length 1024 --eval-samples 16 --overwrite --quiet)
profile=$PWD/benchmarks/profile_train.py
(cd /tmp && python3 "$profile" "$FIRST" "$LAST" "${args[@]}" --batch-size "$PER_GPU" --out /tmp/runs/profile-1) \
  > "$OUT/profile_1gpu.txt" 2>&1
(cd /tmp && torchrun --standalone --nproc-per-node "$GPUS" "$profile" "$FIRST" "$LAST" "${args[@]}" \
  --batch-size $((PER_GPU * GPUS)) --out /tmp/runs/profile-n) > "$OUT/profile_${GPUS}gpu.txt" 2>&1
grep -h "Self CPU time total\|Self CUDA time total" "$OUT"/profile_*gpu.txt
