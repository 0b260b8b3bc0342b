#!/usr/bin/env bash
# lowrank analyze on one GPU against all of them (--nproc N, N = the GPUs nvidia-smi lists), on the GPU machine:
# a Llama-2-7B-shaped bf16 full pair of LAYERS layers (as device_analyze_speed.sh builds it), default metrics.
# Prints one line per run (wall seconds, peak RSS of the largest process), the speed-up, and whether the two JSON
# reports are byte-identical (else the largest relative difference of any number, and where).
# LAYERS=32 is the whole 7B shape (224 modules). For a CPU dry run of the script itself:
#   DEVICE=cpu NPROC=2 HIDDEN=64 MLP=96 LAYERS=2 bash benchmarks/device_distributed_analyze.sh
# (on the CPU --nproc N gives each process cores/N BLAS threads, which can move the last bit of a float: differences
# near 1e-16 there come from the thread count, not the sharding; OMP_NUM_THREADS=1 for both runs makes them equal).
set -euo pipefail
LAYERS=${LAYERS:-8}
DEVICE=${DEVICE:-cuda}
HIDDEN=${HIDDEN:-4096}
MLP=${MLP:-11008}
NPROC=${NPROC:-$(nvidia-smi -L | wc -l)}
WORK=${WORK:-/tmp/llama7b-dist}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p /tmp/pkg
ln -sfn "$PWD/lowrank_cli" /tmp/pkg/lowrank_cli
export PYTHONPATH="$PWD:/tmp/pkg"
echo "device $DEVICE, $NPROC processes, $LAYERS layers of ($HIDDEN, $MLP)"
python3 benchmarks/llama_pair.py "$LAYERS" "$HIDDEN" "$MLP" "$DEVICE" "$WORK"
timed() {  # label, JSON path, nproc
  python3 - "$@" "$WORK" "$DEVICE" <<'PY'
import json, resource, subprocess, sys, time
label, out, nproc, work, device = sys.argv[1:]
start = time.perf_counter()
result = subprocess.run([sys.executable, "-m", "lowrank_cli", "analyze", f"{work}/tuned", "--base", f"{work}/base",
                         "--device", device, "--nproc", nproc, "--json", out], capture_output=True, text=True,
                        cwd="/tmp")  # not the checkout: python -m puts the working folder first on sys.path
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{label}: {wall:.1f} s, peak RSS {rss:.0f} MB, exit {result.returncode}", flush=True)
if result.returncode:
    print(result.stderr[-600:], flush=True)
    sys.exit(1)
with open(f"{out}.seconds", "w") as handle:
    handle.write(f"{wall}\n")
PY
}
timed "--nproc 1" /tmp/dist_1.json 1
[ "$NPROC" -gt 1 ] || exit 0  # one GPU: the single-process figure only
timed "--nproc $NPROC" "/tmp/dist_$NPROC.json" "$NPROC"
python3 - /tmp/dist_1.json "/tmp/dist_$NPROC.json" <<'PY'
import json, sys
one, many = sys.argv[1:]
print(f"speed-up: {float(open(one + '.seconds').read()) / float(open(many + '.seconds').read()):.2f}x")
a, b = open(one).read(), open(many).read()
if a == b:
    print(f"JSON: byte-identical ({len(json.loads(a)['modules'])} modules)")
    sys.exit(0)
worst = [0.0, "structure"]
def walk(x, y, where):
    if isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
        for key in x:
            walk(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            walk(u, v, f"{where}[{i}]")
    elif isinstance(x, float) and isinstance(y, (int, float)):
        gap = abs(x - y) / max(abs(x), abs(y), 1e-30)
        if gap > worst[0]:
            worst[:] = [gap, where]
    elif x != y:
        worst[:] = [float("inf"), where]
walk(json.loads(a), json.loads(b), "")
print(f"JSON: DIFFERENT; largest relative difference {worst[0]:.2e} at {worst[1]}")
sys.exit(1)
PY
