"""How much faster could the demo's CPU training step get? Two bounds, measured in one process.

    python benchmarks/cpu_step_bounds.py

1. GEMM rates, GFLOP/s, on the demo's shapes (16 x 48 = 768 tokens, MiniLM-L6's 384 and 1536 widths), for the
   three products of a linear layer's step in each memory layout: forward x W^T, input gradient dy W, weight
   gradient dy^T x; torch (this build's BLAS) beside numpy (its own BLAS). Medians of 30 calls after 2 warm-ups.
2. The training step (model in training mode) at the demo's settings, LoRA r=8 and full fine-tuning, four ways
   built side by side in one process and stepped in turn on the same batches: neither of the two CPU savings
   (torch's dropout, the whole last layer), lowrank's CPU dropout alone (``lowrank.cpu_dropout``), that and the
   last layer at position 0 (``lowrank.training.pooled``: what `lowrank train` runs), and that without dropout
   (every nn.Dropout at p = 0, which BERT's attention also reads): what a free dropout would save at most.
   Medians of 20 steps after 3 warm-ups.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from lowrank.training.config import TrainConfig
from lowrank.training.guard import RunGuard
from lowrank.training.loop import _eager_step, _micro_batches
from lowrank.training import setup as setup_module
from lowrank.training.setup import prepare

TOKENS = 768
WAYS = {"neither": "torch's dropout, whole last layer", "dropout": "CPU dropout",
        "both": "CPU dropout + pooled last layer", "no dropout": "pooled last layer, no dropout"}


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


def _variant(method: str, way: str):
    """(config, setup, batch stream) of one way of :data:`WAYS`."""
    config = TrainConfig(model="minilm-l6", data="reuters-r8", method=method, out="/tmp/cpu-step-bounds",
                         max_steps=200, batch_size=16, max_length=48, max_train_samples=1600, device="cpu")
    kept = setup_module.cpu_dropout.install, setup_module.pooled.install
    if way == "neither":
        setup_module.cpu_dropout.install = lambda model: model
    if way in ("neither", "dropout"):
        setup_module.pooled.install = lambda model, task: model
    try:
        setup = prepare(config)
    finally:
        setup_module.cpu_dropout.install, setup_module.pooled.install = kept
    if way == "no dropout":
        for module in setup.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    setup.model.train()
    return config, setup, _micro_batches(setup, config, 0)


def step_seconds(method: str, steps: int = 20) -> dict[str, float]:
    """Median step seconds of each way, stepped in turn (so drifts in the machine's speed hit all alike)."""
    ways = {way: _variant(method, way) for way in WAYS}
    times = {way: [] for way in WAYS}
    with RunGuard("/tmp/cpu-step-bounds") as guard:
        for step in range(steps + 3):
            for way, (config, setup, stream) in ways.items():
                began = time.perf_counter()
                _eager_step(config, setup, stream, guard, step)
                setup.optimizer.step()
                setup.optimizer.zero_grad(set_to_none=True)
                if step >= 3:
                    times[way].append(time.perf_counter() - began)
    return {way: statistics.median(seconds) for way, seconds in times.items()}


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}")
    gemm_rates()
    for method in ("lora", "full"):
        seconds = step_seconds(method)
        print(f"{method}: step " + ", ".join(f"{seconds[way] * 1e3:.0f} ms {WAYS[way]}" for way in WAYS) +
              f"; neither / both: {seconds['neither'] / seconds['both']:.2f}x")


if __name__ == "__main__":
    main()
