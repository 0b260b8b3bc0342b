"""Benchmark: peak memory of ``lowrank extract`` on the 8-layer TinyLlama-shaped bf16 pair of
``bench_analyze_memory.py`` (1.41 GB on disk, sharded), which is larger than the memory extraction may use.

    /usr/bin/time -v lowrank extract TUNED --base BASE --rank R --out ADAPTER --device cpu --quiet

reads "Maximum resident set size". Target: under 1 GB. The tuned weights are ``W0 + 2e-4 * (rank-16 product) +
1e-3 * noise``, so the report's kept energy at ``--rank 16`` measures how much of a high-rank delta a rank-16
adapter holds. The adapter is then read back (header only) to count its tensors.

    python benchmarks/bench_extract_memory.py [--folder /tmp/lowrank_bench_memory] [--reuse] [--rank 16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze_memory import lowrank_command, write_pair  # noqa: E402


def measure(folder: Path, rank: int) -> tuple[float, float, Path]:
    """Run the extraction under /usr/bin/time -v; return (peak RSS in MB, wall seconds, adapter folder)."""
    out = folder / f"extract-r{rank}"
    shutil.rmtree(out, ignore_errors=True)
    command = ["/usr/bin/time", "-v", *lowrank_command(), "extract", str(folder / "tuned"), "--base",
               str(folder / "base"), "--rank", str(rank), "--out", str(out), "--device", "cpu", "--quiet"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"extraction failed ({result.returncode}):\n{result.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return peak_kb / 1024, wall, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lowrank_bench_memory"))
    parser.add_argument("--reuse", action="store_true", help="reuse the pair already in --folder")
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    if not args.reuse:
        shutil.rmtree(args.folder, ignore_errors=True)
        size = write_pair(args.folder, "tinyllama", 8)
        print(f"wrote the pair: {size / 1e9:.2f} GB of bf16 safetensors to {args.folder}")
    on_disk = sum(p.stat().st_size for side in ("base", "tuned") for p in (args.folder / side).glob("*.safetensors"))
    peak, wall, out = measure(args.folder, args.rank)
    report = json.loads((out / "compress_report.json").read_text())
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as handle:
        tensors = len(list(handle.keys()))
    energies = sorted(m["kept_energy"] for m in report["modules"])
    print(f"lowrank extract --rank {args.rank}: pair {on_disk / 1e9:.2f} GB on disk, {len(report['modules'])} modules, "
          f"{tensors} adapter tensors ({(out / 'adapter_model.safetensors').stat().st_size / 1e6:.1f} MB), "
          f"peak RSS {peak:.0f} MB, wall {wall:.0f} s; kept energy per module {energies[0]:.3f} to {energies[-1]:.3f}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
