"""Benchmark: the whole 8-layer TinyLlama-shaped pair (benchmarks/bench_analyze_memory.py writes it) analyzed by
this checkout with --fast, by this checkout's exact default, and by cebfcc5's exact default, one after the other
under /usr/bin/time -v; prints wall times and peak RSS, whether every exact energy rank lies in its --fast interval,
and the largest difference of the two exact spectra (relative to s_1).

    python benchmarks/bench_analyze_three.py
"""
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze_fast import inside  # noqa: E402
from bench_analyze_speed import ROOT, run, worktree  # noqa: E402

pair, out = Path("/tmp/lowrank_bench_memory"), Path(tempfile.mkdtemp())
print(f"load average at start: {os.getloadavg()[0]:.1f}; all 8 layers", flush=True)
for label, code, options in (("fast", ROOT, ["--fast"]), ("exact", ROOT, []), ("before", worktree("cebfcc5"), [])):
    wall, rss = run(code, pair, options, out / f"{label}.json")
    print(f"{label:>6}: {wall:7.1f} s, peak RSS {rss:6.0f} MB, load average {os.getloadavg()[0]:.1f}", flush=True)
checked, held, lines = inside(out / "before.json", out / "fast.json")
print(f"exact energy ranks inside the --fast intervals: {held} of {checked}")
a = {m["name"]: m["singular_values"] for m in json.loads((out / "before.json").read_text())["modules"]}
b = {m["name"]: m["singular_values"] for m in json.loads((out / "exact.json").read_text())["modules"]}
worst = max(max(abs(x - y) for x, y in zip(a[n], b[n])) / a[n][0] for n in a)
print(f"exact spectra, today against cebfcc5: largest difference {worst:.2e} of s_1 ({len(a)} modules)")
