#!/usr/bin/env bash
# `lowrank train` end to end, the code of another checkout (BEFORE) against this tree (AFTER), run alternately
# ROUNDS times with the same arguments; prints tokens/s, training seconds, wall seconds and accuracy of each run.
#   BEFORE=/tmp/before benchmarks/train_before_after.sh OUT -- --model minilm-l6 --data reuters-r8 --method lora ...
# (make BEFORE with: git worktree add /tmp/before cebfcc5). PYTHON defaults to python3; ONLY=after or ONLY=before
# runs one side (for options the other does not know). Python runs with -P: without it `-m` puts the working
# directory first on sys.path, and run from this repo's root the BEFORE side would import this tree's lowrank.
set -euo pipefail
OUT=$(mkdir -p "$1" && cd "$1" && pwd); shift; [ "$1" = "--" ] && shift
AFTER=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
ARGS=("$@")
mkdir -p "$OUT"
run() {  # name root
  local root; root=$(cd "$2" && pwd); local pkg="$OUT/pkg-$1"; mkdir -p "$pkg"
  [ -d "$root/cli" ] && ln -sfn "$root/cli" "$pkg/lowrank_cli"  # an older checkout: cli/ was lowrank_cli
  local t0=$(date +%s.%N)
  PYTHONPATH="$root:$pkg" $PY -P -m lowrank_cli.main train "${ARGS[@]}" --out "$OUT/run-$1" --overwrite --quiet >/dev/null 2>"$OUT/$1.log" \
    || { cat "$OUT/$1.log"; return 1; }
  $PY - "$OUT/run-$1/metrics.json" "$1" "$t0" "$(date +%s.%N)" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
sys.argv[3] = float(sys.argv[4]) - float(sys.argv[3])
print(f"{sys.argv[2]:7s} tokens/s {m['tokens_per_second']:10,.0f}  train {m['train_seconds']:7.2f} s  "
      f"wall {float(sys.argv[3]):7.2f} s  accuracy {m['final']['accuracy']:.4f}  steps {m['steps']}  device {m['device']}")
PY
}
for round in $(seq 1 "${ROUNDS:-1}"); do
  [ "${ONLY:-}" = after ] || run before "${BEFORE:-/tmp/before}"
  [ "${ONLY:-}" = before ] || run after "$AFTER"
done
