"""CPU benchmark of the random projections: time and memory of P theta_d (forward + backward) as d grows.

Each (projection, d) runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own; the
memory column is that peak minus the resident memory after the imports, i.e. buffers + transient tensors.
One thread (the machine is shared). Writes a Markdown table and the raw JSON. Run from the repository root:

    python benchmarks/bench_intrinsic.py --D 199210 --dims 100,300,1000,3000,10000 --out reports
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from lowrank.outputs import write_text_atomic

CHILD = r"""
import json, resource, statistics, sys, time
import torch
torch.set_num_threads(1)
from lowrank.intrinsic.projections import make_projection
kind, cache, D, d, reps = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
warm = torch.zeros(64, requires_grad=True)
(torch.nn.functional.pad(warm, (0, 64)).view(2, 64) @ torch.randn(64)).sum().backward()  # autograd's first-use memory
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
projection = make_projection(kind, D, d, seed=0, cache=cache)
build_s = time.perf_counter() - started
theta = torch.zeros(d, requires_grad=True)
weights = torch.randn(D)
times = []
for _ in range(reps + 1):
    started = time.perf_counter()
    (projection(theta) @ weights).backward()
    times.append(time.perf_counter() - started)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
buffers = sum(b.numel() * b.element_size() for b in projection.buffers())
print(json.dumps({"build_s": build_s, "step_ms": 1000 * statistics.median(times[1:]),
                  "extra_rss_mb": (peak - before) / 1024, "buffer_mb": buffers / 2**20}))
"""

VARIANTS = (("fastfood", False), ("sparse", False), ("dense", False), ("dense", True))


def _measure(kind: str, cache: bool, D: int, d: int, reps: int) -> dict:
    command = [sys.executable, "-c", CHILD, kind, "1" if cache else "0", str(D), str(d), str(reps)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _skip_reason(kind: str, cache: bool, D: int, d: int, max_dense: int, max_cache_gb: float) -> str:
    if kind == "dense" and cache and 4 * D * d / 2**30 > max_cache_gb:
        return f"needs {4 * D * d / 2**30:.1f} GiB"
    if kind == "dense" and not cache and d > max_dense:
        return f"regenerates {2 * D * d / 1e9:.1f}G randoms per step"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--D", type=int, default=199_210, help="projected parameters (MNIST FC 784-200-200-10)")
    parser.add_argument("--dims", default="100,300,1000,3000,10000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-dense", type=int, default=1000, help="largest d for the regenerated dense P")
    parser.add_argument("--max-cache-gb", type=float, default=2.0)
    parser.add_argument("--out", default="reports")
    args = parser.parse_args()
    rows = []
    for d in (int(v) for v in args.dims.split(",")):
        for kind, cache in VARIANTS:
            name = f"{kind}{' (cached)' if cache else ''}"
            reason = _skip_reason(kind, cache, args.D, d, args.max_dense, args.max_cache_gb)
            row = {"projection": name, "D": args.D, "d": d, "skipped": reason}
            if not reason:
                row |= _measure(kind, cache, args.D, d, args.reps)
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"# Projection benchmark (CPU, 1 thread, D = {args.D:,})", "",
             "Forward + backward of `(P theta_d) . w`, median of "
             f"{args.reps} after one warm-up; memory = peak RSS of a fresh process minus RSS after imports.", "",
             "| d | projection | step (ms) | build (s) | buffers (MB) | extra peak RSS (MB) |",
             "|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        if row["skipped"]:
            lines.append(f"| {row['d']} | {row['projection']} | skipped: {row['skipped']} | | | |")
        else:
            lines.append(f"| {row['d']} | {row['projection']} | {row['step_ms']:.1f} | {row['build_s']:.2f} | "
                         f"{row['buffer_mb']:.1f} | {row['extra_rss_mb']:.0f} |")
    out = Path(args.out)
    write_text_atomic(out / "intrinsic_projection_bench.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "intrinsic_projection_bench.json", json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
