"""Factored SVD of a LoRA update (lowrank.spectra.lora_svd) against a dense svdvals of the formed product.

Prints a markdown table of median wall and CPU times and the agreement of the top-r singular values. Dense SVDs
of the largest sizes are slow on a CPU (tens of seconds), so sizes >= 2048 are timed only --dense-reps times
(default 1). On a shared machine, run with --threads 1 and read the CPU column: with one thread the process's CPU
time is what the wall time would be on an idle core.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_spectra.py --sizes 512 1024 2048 4096 --rank 16 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from lowrank.spectra import dense_svd, lora_svd


def timed(fn, reps: int) -> tuple[float, float, object]:
    """Median wall seconds, median process CPU seconds over ``reps`` calls of ``fn``, and the last result."""
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), result


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1.0 else f"{seconds:.2f} s"


def row(n: int, r: int, lora_reps: int, dense_reps: int, generator: torch.Generator) -> str:
    B = torch.randn(n, r, generator=generator) / r**0.5
    A = torch.randn(r, n, generator=generator) / n**0.5
    scale = 2.0
    lora_svd(B, A, scale)  # warm-up both dtypes
    lora_svd(B, A, scale, dtype=torch.float32)
    w64, c64, factored = timed(lambda: lora_svd(B, A, scale), lora_reps)
    w32, c32, _ = timed(lambda: lora_svd(B, A, scale, dtype=torch.float32), lora_reps)
    delta = scale * (B @ A)
    w_dense, c_dense, dense = timed(lambda: dense_svd(delta, compute_uv=False), dense_reps)
    s_dense = dense.S[:r].double()
    diff = float(((factored.S - s_dense).abs() / s_dense[0]).max())
    full_rank = torch.randn(n, n, generator=generator)  # what a full fine-tuning delta costs
    w_full, c_full, _ = timed(lambda: dense_svd(full_rank, compute_uv=False), dense_reps)
    cells = [f"{fmt(w)} / {fmt(c)}" for w, c in ((w64, c64), (w32, c32), (w_dense, c_dense), (w_full, c_full))]
    return f"| {n} x {n} | {r} | " + " | ".join(cells) + f" | x{dense_reps} | {c_dense / c64:,.0f}x | {diff:.1e} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lora-reps", type=int, default=50)
    parser.add_argument("--dense-reps", type=int, default=1, help="dense timings for sizes >= 2048")
    parser.add_argument("--dense-reps-small", type=int, default=5, help="dense timings for sizes < 2048")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
          f"{platform.machine()}, load average before: {os.getloadavg()[0]:.2f}")
    print(f"| matrix | r | lora_svd float64, wall / CPU (median of {args.lora_reps}) | lora_svd float32 "
          "| dense svdvals float32 of s B A | dense svdvals float32, full-rank Gaussian | dense runs "
          "| speed-up, CPU (dense s B A / lora_svd float64) | max abs diff of top-r values / s_1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        dense_reps = args.dense_reps if n >= 2048 else args.dense_reps_small
        print(row(n, args.rank, args.lora_reps, dense_reps, generator), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
