#!/usr/bin/env bash
# Is lowrank's default learning rate stable at every rank and near the best swept one? (reports/rank_advice.md)
# Trains LoRA at the default rate (no --lr: a collapse backs off, lowrank.training.rate_backoff) on MiniLM-L6 for
# Reuters R8, R52, 20 Newsgroups and 20 Newsgroups by its 6 top-level groups (comp, rec, sci, politics, religion,
# forsale; built here from the 20-class file), ranks 1..256 x seeds 0,1,2, train only, on one GPU.
#   here:   python examples/gpu_assets.py .carry reuters-r8 reuters-r52 20newsgroups
#   GPU:    bash examples/default_lr_check.sh SECONDS      (carry .carry/minilm-l6 .carry/data); $OUT/default_lr.jsonl
set -euo pipefail
D=/tmp/default-lr
mkdir -p "$D/data" "$D/out" /tmp/pkg && ln -sfn "$PWD/lowrank_cli" /tmp/pkg/lowrank_cli
export PYTHONPATH="$PWD:/tmp/pkg" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for f in .carry/data/*.csv.gz; do gunzip -c "$f" > "$D/data/$(basename "$f" .gz)"; done
python3 - "$D/data" <<'PY'
import csv, sys
groups = {"comp": "comp", "rec": "rec", "sci": "sci", "talk.politics": "politics", "alt.atheism": "religion",
          "soc.religion": "religion", "talk.religion": "religion", "misc.forsale": "forsale"}
with open(f"{sys.argv[1]}/20newsgroups.csv") as src, open(f"{sys.argv[1]}/20ng-6.csv", "w", newline="") as dst:
    rows = csv.DictReader(src)
    out = csv.DictWriter(dst, rows.fieldnames)
    out.writeheader()
    for row in rows:
        out.writerow(row | {"label": next(g for prefix, g in groups.items() if row["label"].startswith(prefix))})
PY
timeout -s INT "$1" python3 examples/rank_verdict_grid.py --model .carry/minilm-l6 --data-dir "$D/data" \
  --out "$D/out" --tasks 20ng-6,reuters-r52,20newsgroups,reuters-r8 --ranks ${RANKS:-1,2,4,8,16,32,64,128,256} \
  --seeds ${SEEDS:-0,1,2} --workers ${WORKERS:-15} --no-probe --no-signal ${SMOKE:-} --deadline $(( $1 - ${LAST_START:-120} )) || true
cp "$D/out/results.jsonl" "$OUT/default_lr.jsonl"; tail -3 "$D/out/jobs.log" > "$OUT/jobs_tail.log" || true
