#!/usr/bin/env bash
# Language-model rank ground truth on the GPU machine (reports/rank_advice.md): SmolLM2-135M with LoRA on the
# news-lm and friends-lm corpora, learning rate swept per task, ranks 1..256 x 3 seeds with the probe
# (examples/rank_verdict_grid.py), then suggest-rank against uniform rank 8 at equal parameters, 3 seeds
# (examples/suggest_rank_validation.sh). The GGUF travels in two halves (examples/gpu_assets.py):
#   here:    python examples/gpu_assets.py .carry --gguf-halves && python examples/gpu_assets.py .carry/lm --lm
#            gzip -9 .carry/lm/*.csv && mv .carry/lm/*.gz .carry/lmgz/    (+ the gguf wheel in .whl/)
#   call 1:  bash examples/lm_rank_ground_truth.sh stage     (carry .carry/gguf1 .carry/lmgz .whl)
#   call 2:  bash examples/lm_rank_ground_truth.sh grid 540  (carry .carry/gguf2; right after call 1, machine warm)
#            (the calls of reports/rank_advice.md: the rate sweep alone filled one such call; the grid then ran with
#            LR=8e-3 RANKS=1,2,4,8,16,32,64, the best swept rate of both tasks)
#   call 3:  bash examples/lm_rank_ground_truth.sh suggest 300  (the grid's missing jobs, then suggest-rank)
# Results go to $OUT/lm.tar.gz. Every stage is a no-op for what a warm machine already holds.
set -euo pipefail
W=/tmp/lmgt
STEPS=400; BATCH=16
mkdir -p /tmp/pkg "$W/out" && ln -sfn "$PWD/lowrank_cli" /tmp/pkg/lowrank_cli
export PYTHONPATH="$PWD:/tmp/pkg:/tmp/site" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# Rates: swept at ranks 4 and 64 (seed 0) unless LR is given. A SmolLM2 job with its probe holds about 11 GB of
# GPU memory: 9 and 16 processes ran out of the H100's.
grid() {
  local rates="--lrs 5e-4,1e-3,2e-3,4e-3,8e-3 --lr-ranks 4,64"; [ -n "${LR:-}" ] && rates="--lr $LR"
  timeout -s INT "$1" python3 examples/rank_verdict_grid.py --model "$W/smollm2" --data-dir "$W/lm" --out "$W/out" \
    --tasks friends-lm,news-lm --ranks ${RANKS:-1,2,4,8,16,32,64,128,256} $rates --max-steps $STEPS \
    --batch-size $BATCH --no-signal --workers ${WORKERS:-6} --deadline $(( $1 - ${LAST_START:-250} )) || true
}
pack() { tar -czf "$OUT/lm.tar.gz" -C "$W" --exclude runs out $(cd $W && ls -d suggest 2>/dev/null); }
case $1 in
  stage)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    cp .carry/gguf1/part "$W/part1"
    mkdir -p "$W/lm" && for f in .carry/lmgz/*.gz; do gunzip -c "$f" > "$W/lm/$(basename "$f" .gz)"; done
    # the grid's adapters already measured (same rate, steps and probe) are not trained again
    [ -f "$W/out/results.jsonl" ] || cp reports/rank_advice/lm/grid_partial.jsonl "$W/out/results.jsonl"
    nvidia-smi --query-gpu=name,memory.total --format=csv ;;
  grid)
    [ -f "$W/smollm2/model.safetensors" ] || python3 examples/gpu_assets.py --assemble "$W/smollm2" "$W/part1" .carry/gguf2/part
    grid "$2"; pack ;;
  suggest)
    lr() { python3 -c "import json; print(json.load(open('$W/out/rates.json'))['$1'])"; }
    grid "$2"
    MODEL="$W/smollm2" DATA_DIR="$W/lm" LOWRANK="python3 -m lowrank_cli" SIGNALS="uniform gradient" \
      TRAIN_ARGS="--steps $STEPS --batch-size $BATCH" SUGGEST_ARGS="--batch-size $BATCH" \
      timeout 400 bash examples/suggest_rank_validation.sh "$W/suggest" 8 news-lm=$(lr news-lm) friends-lm=$(lr friends-lm) || true
    find "$W/suggest" -name '*.safetensors' -delete; pack ;;
esac
