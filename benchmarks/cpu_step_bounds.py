"""How much faster could the demo's CPU training step get? Two bounds, measured in one process.

    python benchmarks/cpu_step_bounds.py

1. GEMM rates, GFLOP/s, on the demo's shapes (16 x 48 = 768 tokens, MiniLM-L6's 384 and 1536 widths), for the
   three products of a linear layer's step in each memory layout: forward x W^T, input gradient dy W, weight
   gradient dy^T x; torch (this build's BLAS) beside numpy (its own BLAS). Medians of 30 calls after 2 warm-ups.
2. The step with the model's dropout and without (every nn.Dropout set to p = 0, which BERT's attention also
   reads), LoRA r=8 and full fine-tuning at the demo's settings, mean of 20 steps after 3 warm-ups: what a free
   dropout would save at most.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from lowrank.training.config import TrainConfig
from lowrank.training.guard import RunGuard
from lowrank.training.loop import _eager_step, _micro_batches
from lowrank.training.setup import prepare

TOKENS = 768


def _median_seconds(run, calls: int = 30) -> float:
    run(), run()
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def gemm_rates() -> None:
    print(f"{'k x n':>11s} {'product':>20s} {'torch GF/s':>11s} {'numpy GF/s':>11s}")
    for k, n in [(384, 384), (384, 1536), (1536, 384)]:
        x, w, dy = torch.randn(TOKENS, k), torch.randn(n, k), torch.randn(TOKENS, n)
        flops = 2 * TOKENS * k * n
        products = {"x W^T": (x, w.t()), "x (W^T contiguous)": (x, w.t().contiguous()),
                    "dy W": (dy, w), "dy (W contiguous)^T": (dy, w.t().contiguous().t()),
                    "dy^T x": (dy.t(), x), "(dy^T contiguous) x": (dy.t().contiguous(), x)}
        for name, (a, b) in products.items():
            an, bn = a.numpy(), b.numpy()
            rate_torch = flops / _median_seconds(lambda: a @ b) / 1e9
            rate_numpy = flops / _median_seconds(lambda: an @ bn) / 1e9
            print(f"{k:>5d} x {n:<5d} {name:>20s} {rate_torch:11.1f} {rate_numpy:11.1f}")


def step_seconds(method: str, dropout: bool, steps: int = 20) -> float:
    config = TrainConfig(model="minilm-l6", data="reuters-r8", method=method, out="/tmp/cpu-step-bounds",
                         max_steps=200, batch_size=16, max_length=48, max_train_samples=1600, device="cpu")
    setup = prepare(config)
    if not dropout:
        for module in setup.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    stream = _micro_batches(setup, config, 0)
    with RunGuard(config.out) as guard:
        for step in range(steps + 3):
            if step == 3:
                began = time.perf_counter()
            _eager_step(config, setup, stream, guard, step)
            setup.optimizer.step()
            setup.optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - began) / steps


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}")
    gemm_rates()
    for method in ("lora", "full"):
        with_dropout, without = step_seconds(method, True), step_seconds(method, False)
        print(f"{method}: step {with_dropout * 1e3:.0f} ms with dropout, {without * 1e3:.0f} ms without "
              f"({with_dropout / without:.2f}x)")


if __name__ == "__main__":
    main()
