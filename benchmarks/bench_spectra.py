"""Factored SVD of a LoRA update (lowrank.spectra.lora_svd) against a dense svdvals of the formed product.

Prints a markdown table of median wall times and the agreement of the top-r singular values. The dense SVD of the
largest sizes is slow on a CPU (tens of seconds), so sizes >= 2048 are timed only --dense-reps times (default 1).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_spectra.py --sizes 512 1024 2048 4096 --rank 16
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from lowrank.spectra import dense_svd, lora_svd


def median_seconds(fn, reps: int) -> tuple[float, object]:
    """Median wall time of ``reps`` calls of ``fn`` and the last call's result."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def row(n: int, r: int, lora_reps: int, dense_reps: int, generator: torch.Generator) -> str:
    B = torch.randn(n, r, generator=generator) / r**0.5
    A = torch.randn(r, n, generator=generator) / n**0.5
    scale = 2.0
    lora_svd(B, A, scale)  # warm-up both dtypes
    lora_svd(B, A, scale, dtype=torch.float32)
    t64, factored = median_seconds(lambda: lora_svd(B, A, scale), lora_reps)
    t32, _ = median_seconds(lambda: lora_svd(B, A, scale, dtype=torch.float32), lora_reps)
    delta = scale * (B @ A)
    t_dense, dense = median_seconds(lambda: dense_svd(delta, compute_uv=False), dense_reps)
    s_dense = dense.S[:r].double()
    rel = float(((factored.S - s_dense).abs() / s_dense[0]).max())
    full_rank = torch.randn(n, n, generator=generator)  # what a full fine-tuning delta costs
    t_full, _ = median_seconds(lambda: dense_svd(full_rank, compute_uv=False), dense_reps)
    return (f"| {n} x {n} | {r} | {t64 * 1e3:.3f} ms | {t32 * 1e3:.3f} ms | {t_dense:.3f} s | {t_full:.3f} s "
            f"| x{dense_reps} | {t_dense / t64:,.0f}x | {rel:.1e} |")


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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"| matrix | r | lora_svd float64 (median of {args.lora_reps}) | lora_svd float32 | dense svdvals float32 "
          "of s B A | dense svdvals float32 of a full-rank Gaussian | dense runs | speed-up (s B A: dense / "
          "lora_svd float64) | max abs diff of top-r values / s_1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        dense_reps = args.dense_reps if n >= 2048 else args.dense_reps_small
        print(row(n, args.rank, args.lora_reps, dense_reps, generator), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
