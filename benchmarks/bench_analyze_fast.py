"""Benchmark: ``lowrank analyze --fast`` against the exact default of an earlier commit, side by side.

Runs ``lowrank analyze TUNED --base BASE --json FILE`` with the code of ``--before`` (default options) and with this
checkout plus ``--fast``, alternating, ``--repeats`` times each, under ``/usr/bin/time -v`` (the runner of
``bench_analyze_speed.py``); prints wall times, peak RSS, the speed-up of the medians, and checks that every exact
energy rank of the before run lies inside the interval the --fast run reports for it.

    python benchmarks/bench_analyze_memory.py            # writes the 8-layer TinyLlama-shaped pair once
    python benchmarks/bench_analyze_fast.py --before cebfcc5 [--modules 'layers\\.[01]\\.'] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze_speed import ROOT, run, worktree  # noqa: E402


def inside(exact: Path, fast: Path) -> tuple[int, int, list[str]]:
    """(energy ranks checked, inside their interval, one line per module with the exact k90 and its interval)."""
    before = {m["name"]: m["energy_rank"] for m in json.loads(exact.read_text())["modules"]}
    checked = held = 0
    lines = []
    for module in json.loads(fast.read_text())["modules"]:
        bounds, truth = module["energy_rank_bounds"], before[module["name"]]
        for level, (lo, hi) in bounds.items():
            checked += 1
            held += lo <= truth[level] <= hi
        lines.append(f"  {module['name']:<32} {module['route']:>6}  k90 {truth['0.9']:>5} in "
                     f"[{bounds['0.9'][0]}, {bounds['0.9'][1]}]  k99 {truth['0.99']:>5} in "
                     f"[{bounds['0.99'][0]}, {bounds['0.99'][1]}]")
    return checked, held, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the git revision whose exact default is the reference")
    parser.add_argument("--pair", type=Path, default=Path("/tmp/lowrank_bench_memory"))
    parser.add_argument("--modules", help="passed to --modules")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    common = ["--modules", args.modules] if args.modules else []
    plans = {"before": (worktree(args.before), common), "fast": (ROOT, ["--fast", *common])}
    times: dict[str, list[float]] = {"before": [], "fast": []}
    out = Path(tempfile.mkdtemp())
    print(f"load average at start: {os.getloadavg()[0]:.1f}; modules: {args.modules or '(all)'}", flush=True)
    for repeat in range(args.repeats):
        for label, (code, options) in plans.items():
            wall, rss = run(code, args.pair, options, out / f"{label}.json")
            times[label].append(wall)
            print(f"{label:>6} run {repeat + 1}: {wall:7.1f} s, peak RSS {rss:6.0f} MB, load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    before, fast = statistics.median(times["before"]), statistics.median(times["fast"])
    print(f"median: before {before:.1f} s, --fast {fast:.1f} s, speed-up {before / fast:.1f}x")
    checked, held, lines = inside(out / "before.json", out / "fast.json")
    print(f"exact energy ranks inside the --fast intervals: {held} of {checked}")
    print("\n".join(lines))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
