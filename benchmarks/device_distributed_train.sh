#!/usr/bin/env bash
# lowrank train on 1 GPU and on all of them (--nproc N, N = the GPUs nvidia-smi lists), on the GPU machine:
# tokens/s and scaling efficiency (N-GPU tokens/s over N times the 1-GPU tokens/s) of language-model training on
# Reuters R8 text, for LoRA (r=16, all linear layers, DDP) and full fine-tuning (DDP and FSDP2), on a
# SmolLM2-135M-shaped and a TinyLlama-1.1B-shaped model (random init: benchmarks/shaped_llama.py), with the
# held-out perplexity of each run. Each GPU gets PER_GPU sequences of 1024 tokens a step (the global batch grows
# with N), so that every GPU is as full on N as on 1; efficiency compares with the 1-GPU run at PER_GPU. One more
# 1-GPU LoRA run at the N-GPU global batch checks the held-out perplexity: same global batch and steps, so the
# N-GPU LoRA run must end where it ends (up to float reduction order); the DDP and FSDP2 full runs, at one global
# batch, must end together.
# Needs .carry/ with smollm2-tokenizer/ and reuters-r8.csv.gz (examples/gpu_assets.py; the tokenizer files from the
# smollm2-135m asset). Prints the table and writes it to $OUT/distributed_train.txt. RUNS="method:mode:gpus:batch ..."
# replaces the default list of runs (its first 1-GPU run per method is the efficiency baseline); EXTRA="..." adds
# options to every run (e.g. --no-cuda-graphs).
set -uo pipefail
OUT=${OUT:-/tmp/out}; STEPS=${STEPS:-40}; PER_GPU=${PER_GPU:-16}; SHAPES=${SHAPES:-"smollm2-135m llama-1b"}
GPUS=$(nvidia-smi -L | wc -l)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p /tmp/pkg /tmp/data "$OUT" && ln -sfn "$PWD/lowrank_cli" /tmp/pkg/lowrank_cli
export PYTHONPATH="$PWD:/tmp/pkg"
gunzip -c .carry/reuters-r8.csv.gz > /tmp/data/reuters-r8.csv
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
printf '%-13s %-5s %-5s %5s %6s %12s %11s %10s\n' shape method mode gpus batch tokens/s efficiency perplexity \
  | tee "$OUT/distributed_train.txt"
B1=$PER_GPU; BN=$((PER_GPU * GPUS))
runs=(lora:ddp:1:$B1 full:ddp:1:$B1)  # one GPU: no wrapper; then DDP and FSDP2 on all of them
[ "$GPUS" -gt 1 ] && runs=(lora:ddp:1:$B1 lora:ddp:1:$BN lora:ddp:$GPUS:$BN full:ddp:1:$B1
                           full:ddp:$GPUS:$BN full:fsdp:$GPUS:$BN)
[ -n "${RUNS:-}" ] && read -r -a runs <<< "$RUNS"
read -r -a more <<< "${EXTRA:-}"
declare -A single
for shape in $SHAPES; do
  python3 benchmarks/shaped_llama.py "$shape" .carry/smollm2-tokenizer "/tmp/models/$shape" | tail -1
  for run in "${runs[@]}"; do
    IFS=: read -r method mode n batch <<< "$run"
    dir=/tmp/runs/$shape-$method-$mode-$n-$batch; mkdir -p /tmp/runs
    extra=(); [ "$method" = lora ] && extra=(--rank 16 --targets all-linear)
    (cd /tmp && timeout 900 python3 -m lowrank_cli train --model "/tmp/models/$shape" --data /tmp/data/reuters-r8.csv \
      --task lm --method "$method" "${extra[@]}" --parallel "$mode" --nproc "$n" --steps "$STEPS" --epochs 100 \
      --batch-size "$batch" --max-length 1024 --eval-samples 64 --out "$dir" --overwrite --quiet "${more[@]}") \
      > "$dir.log" 2>&1 || { echo "$shape $method $mode $n failed:"; tail -3 "$dir.log"; continue; }
    read -r tps ppl < <(python3 -c "import json; m = json.load(open('$dir/metrics.json')); print(m['tokens_per_second'], m['final']['perplexity'])")
    [ "$n" = 1 ] && [ -z "${single[$shape-$method]:-}" ] && single[$shape-$method]=$tps
    eff=$(python3 -c "print(f'{$tps / ($n * ${single[$shape-$method]:-0}):.3f}' if ${single[$shape-$method]:-0} else '-')")
    printf '%-13s %-5s %-5s %5s %6s %12.0f %11s %10.2f\n' "$shape" "$method" "$mode" "$n" "$batch" "$tps" "$eff" "$ppl" \
      | tee -a "$OUT/distributed_train.txt"
  done
done
