#!/usr/bin/env bash
# Spectra of the 2-layer TinyLlama-shaped pair: an earlier revision (.carry/before) and this checkout against
# dense float64 SVDs (--dtype float64), max |s - s_ref| / s_1 per module. Run on the GPU machine (any machine works).
set -e
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p /tmp/pkg /tmp/pkgb; ln -sfn "$PWD/lowrank_cli" /tmp/pkg/lowrank_cli; ln -sfn "$PWD/.carry/before/cli" /tmp/pkgb/lowrank_cli
R=$PWD
python3 - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from pathlib import Path
from bench_analyze_memory import write_pair
write_pair(Path("/tmp/tiny2"), "tinyllama", 2)
PY
cd /tmp
PYTHONPATH=$R/.carry/before:/tmp/pkgb python3 -m lowrank_cli analyze /tmp/tiny2/tuned --base /tmp/tiny2/base --json /tmp/old.json >/dev/null
PYTHONPATH=$R:/tmp/pkg python3 -m lowrank_cli analyze /tmp/tiny2/tuned --base /tmp/tiny2/base --json /tmp/new.json >/dev/null
PYTHONPATH=$R:/tmp/pkg python3 -m lowrank_cli analyze /tmp/tiny2/tuned --base /tmp/tiny2/base --no-base-metrics --dtype float64 --json /tmp/ref.json >/dev/null
python3 - <<'PY'
import json, numpy as np
d = {v: {m["name"]: m["singular_values"] for m in json.load(open(f"/tmp/{v}.json"))["modules"]} for v in ("old", "new", "ref")}
for name in d["ref"]:
    row = []
    for a in ("old", "new"):
        x, y = np.array(d[a][name]), np.array(d["ref"][name]); n = min(len(x), len(y))
        row.append(f"{a}: {np.max(np.abs(x[:n]-y[:n]))/y[0]:.1e} (len {len(x)})")
    print(name, len(d["ref"][name]), *row)
PY
