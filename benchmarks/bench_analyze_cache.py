"""Benchmark: `lowrank analyze --cache DIR` on the whole 8-layer TinyLlama-shaped pair (benchmarks/bench_analyze_memory.py
writes it), default exact metrics: without the cache, then with an empty cache (the run writes W0's left bases),
then again with the filled one (it reads them). Prints wall time and peak RSS of each, the cache's size, and whether
the three JSON reports are identical.

    python benchmarks/bench_analyze_cache.py
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze_speed import ROOT, run  # noqa: E402

pair, out = Path("/tmp/lowrank_bench_memory"), Path(tempfile.mkdtemp())
cache = out / "cache"
print(f"load average at start: {os.getloadavg()[0]:.1f}; all 8 layers", flush=True)
for label, options in (("no cache", []), ("cache, empty", ["--cache", str(cache)]),
                       ("cache, filled", ["--cache", str(cache)])):
    wall, rss = run(ROOT, pair, options, out / f"{label.replace(', ', '-').replace(' ', '-')}.json")
    print(f"{label:>13}: {wall:7.1f} s, peak RSS {rss:6.0f} MB, load average {os.getloadavg()[0]:.1f}", flush=True)
size = sum(entry.stat().st_size for entry in cache.iterdir())
print(f"cache: {len(list(cache.iterdir()))} entries, {size / 1e6:,.0f} MB")
reports = [path.read_bytes() for path in sorted(out.glob("*.json"))]
print(f"JSON reports identical: {all(report == reports[0] for report in reports)}")
shutil.rmtree(out)
