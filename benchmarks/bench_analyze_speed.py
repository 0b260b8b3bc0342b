"""Benchmark: ``lowrank analyze`` of a full-model pair, this checkout against an earlier commit, side by side.

Runs ``lowrank analyze TUNED --base BASE --json FILE`` (default metrics, or the options given) with the code of
``--before`` (a git worktree, put first on PYTHONPATH) and with this checkout, alternating, ``--repeats`` times
each, under ``/usr/bin/time -v``; prints wall times, peak RSS, the speed-up of the medians, and how far the new
spectra are from the old ones (max |s_new - s_old| / s_1 over every module and every value both report).

    python benchmarks/bench_analyze_memory.py            # writes the 8-layer TinyLlama-shaped pair once
    python benchmarks/bench_analyze_speed.py --before cebfcc5 [--modules 'layers\\.[01]\\.'] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worktree(rev: str) -> Path:
    """A checkout of ``rev`` under /tmp, with ``lowrank_cli`` importable beside it."""
    folder = Path(tempfile.gettempdir()) / f"lowrank-before-{rev}"
    if not folder.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), rev], check=True,
                       capture_output=True)
    link = folder / "_pkg" / "lowrank_cli"
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(folder / "cli")
    return folder


def run(code: Path, pair: Path, options: list[str], out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one analysis with the code in ``code``."""
    env = dict(os.environ, PYTHONPATH=f"{code}:{code / '_pkg'}", HF_HUB_OFFLINE="1")
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "lowrank_cli", "analyze", str(pair / "tuned"),
               "--base", str(pair / "base"), "--json", str(out), *options]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"analyze failed with {code}:\n{result.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 1024
    return wall, rss


def spectra_gap(old: Path, new: Path) -> float:
    """max |s_new - s_old| / s_1 over the values both reports hold."""
    before = {m["name"]: m["singular_values"] for m in json.loads(old.read_text())["modules"]}
    worst = 0.0
    for module in json.loads(new.read_text())["modules"]:
        s_old, s_new = before[module["name"]], module["singular_values"]
        n = min(len(s_old), len(s_new))
        worst = max(worst, max(abs(a - b) for a, b in zip(s_old[:n], s_new[:n])) / s_old[0])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the git revision to compare against")
    parser.add_argument("--pair", type=Path, default=Path("/tmp/lowrank_bench_memory"))
    parser.add_argument("--modules", help="passed to --modules")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--options", default="", help="more analyze options, e.g. '--no-base-metrics'")
    args = parser.parse_args()
    options = args.options.split() + (["--modules", args.modules] if args.modules else [])
    codes = {"before": worktree(args.before), "after": ROOT}
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    out = Path(tempfile.mkdtemp())
    print(f"load average at start: {os.getloadavg()[0]:.1f}; options: {' '.join(options) or '(defaults)'}")
    for repeat in range(args.repeats):
        for label, code in codes.items():
            wall, rss = run(code, args.pair, options, out / f"{label}.json")
            times[label].append((wall, rss))
            print(f"{label:>6} run {repeat + 1}: {wall:7.1f} s, peak RSS {rss:6.0f} MB", flush=True)
    medians = {label: statistics.median(w for w, _ in runs) for label, runs in times.items()}
    print(f"median: before {medians['before']:.1f} s, after {medians['after']:.1f} s, "
          f"speed-up {medians['before'] / medians['after']:.2f}x")
    print(f"spectra: max |s_after - s_before| / s_1 = {spectra_gap(out / 'before.json', out / 'after.json'):.2e}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
