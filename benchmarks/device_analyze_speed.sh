#!/usr/bin/env bash
# lowrank analyze speed on the GPU machine, this checkout against an earlier revision, in one call:
#   (1) 2 CPU cores (taskset 0,1): 2 layers of the TinyLlama-shaped pair, default metrics, before vs after;
#   (2) the H200: LAYERS layers of a Llama-2-7B-shaped bf16 pair, default metrics, after (and before on 2 layers).
# GPU_ONLY=1 runs only the H200 analysis of all LAYERS (e.g. LAYERS=32, the whole 7B shape: 224 modules).
# The earlier revision's lowrank/ and cli/ travel in .carry/before (git archive REV lowrank cli | tar -x -C ...).
# Prints one line per run: label, wall seconds, peak RSS of the analysis process.
set -euo pipefail
LAYERS=${LAYERS:-8}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p /tmp/pkg /tmp/pkgb
ln -sfn "$PWD/lowrank_cli" /tmp/pkg/lowrank_cli
ln -sfn "$PWD/.carry/before/cli" /tmp/pkgb/lowrank_cli
timed() {  # label, PYTHONPATH, analyze args...
  local label=$1 path=$2; shift 2
  ${PIN:-} python3 - "$label" "$path" "$@" <<'PY'
import json, os, resource, subprocess, sys, time
label, path, *args = sys.argv[1:]
env = dict(os.environ, PYTHONPATH=path)
start = time.perf_counter()
result = subprocess.run([sys.executable, "-m", "lowrank_cli", "analyze", *args], env=env, capture_output=True, text=True,
                        cwd="/tmp")  # not the checkout: python -m puts the working folder first on sys.path
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{label}: {wall:.1f} s, peak RSS {rss:.0f} MB, exit {result.returncode}", flush=True)
if result.returncode:
    print(result.stderr[-600:], flush=True)
PY
}
NEW="$PWD:/tmp/pkg"; OLD="$PWD/.carry/before:/tmp/pkgb"
if [ -z "${GPU_ONLY:-}" ]; then
python3 - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from pathlib import Path
from bench_analyze_memory import write_pair
write_pair(Path("/tmp/tiny2"), "tinyllama", 2)
PY
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 PIN="taskset -c 0,1"
for run in 1 2; do
  timed "cpu2 before" "$OLD" /tmp/tiny2/tuned --base /tmp/tiny2/base --json /tmp/cpu_before.json
  timed "cpu2 after" "$NEW" /tmp/tiny2/tuned --base /tmp/tiny2/base --json /tmp/cpu_after.json
done
timed "cpu2 after --fast" "$NEW" /tmp/tiny2/tuned --base /tmp/tiny2/base --fast --json /tmp/cpu_fast.json
unset OMP_NUM_THREADS MKL_NUM_THREADS PIN
fi
python3 benchmarks/llama_pair.py "$LAYERS" 4096 11008 cuda /tmp/llama7b
timed "h200 after, $LAYERS layers" "$NEW" /tmp/llama7b/tuned --base /tmp/llama7b/base --device cuda --json /tmp/gpu_after.json
[ -n "${GPU_ONLY:-}" ] && exit 0
timed "h200 after, 2 layers" "$NEW" /tmp/llama7b/tuned --base /tmp/llama7b/base --device cuda --modules 'layers\.[01]\.' --json /tmp/gpu_after2.json
timed "h200 before, 2 layers" "$OLD" /tmp/llama7b/tuned --base /tmp/llama7b/base --device cuda --modules 'layers\.[01]\.' --json /tmp/gpu_before2.json
python3 - <<'PY'
import json
def gap(a, b):
    old = {m["name"]: m["singular_values"] for m in json.load(open(a))["modules"]}
    worst = 0.0
    for m in json.load(open(b))["modules"]:
        s0, s1 = old[m["name"]], m["singular_values"]; n = min(len(s0), len(s1))
        worst = max(worst, max(abs(x - y) for x, y in zip(s0[:n], s1[:n])) / s0[0])
    return worst
print(f"spectra gap cpu: {gap('/tmp/cpu_before.json', '/tmp/cpu_after.json'):.2e}")
print(f"spectra gap gpu 2 layers: {gap('/tmp/gpu_before2.json', '/tmp/gpu_after2.json'):.2e}")
PY
