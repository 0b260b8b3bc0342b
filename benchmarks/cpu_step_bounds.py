"""How much faster could the demo's CPU training step get? Two bounds and the parts, measured in one process.

    python benchmarks/cpu_step_bounds.py          (1 to 3)
    python benchmarks/cpu_step_bounds.py parts    (3 only)
    python benchmarks/cpu_step_bounds.py threads  (4 only)
    python benchmarks/cpu_step_bounds.py last-layer [STEPS]  (5 only; STEPS defaults to 60)

1. GEMM rates, GFLOP/s, on the demo's shapes (16 x 48 = 768 tokens, MiniLM-L6's 384 and 1536 widths), for the
   three products of a linear layer's step in each memory layout: forward x W^T, input gradient dy W, weight
   gradient dy^T x; torch (this build's BLAS) beside numpy (its own BLAS). Medians of 30 calls after 2 warm-ups.
2. The training step (model in training mode) at the demo's settings, LoRA r=8 and full fine-tuning, four ways
   built side by side in one process and stepped in turn on the same batches: neither of the two CPU savings
   (torch's dropout, the whole last layer), lowrank's CPU dropout alone (``lowrank.cpu_dropout``), that and the
   last layer at position 0 (``lowrank.training.pooled``: what `lowrank train` runs), and that without dropout
   (every nn.Dropout at p = 0, which BERT's attention also reads): what a free dropout would save at most.
   Medians of 20 steps after 3 warm-ups.
3. The parts lowrank changed, each beside what it replaced, on the demo's shapes (medians of 30 calls, taken in
   turn): random words for one attention layer's dropout mask (torch's ``random_`` against
   ``lowrank.cpu_dropout``'s SFC64); applying it (``native_dropout_backward`` with bools against one product with the
   scaled mask); all of it, drawn and applied forward and backward; the LoRA backward's two small
   products in their two layouts; and a LoRA layer's forward and backward (``lora_linear``) beside a frozen
   linear's.
4. Where the LoRA step's time goes on one thread and on two, in one process (settings in turn, 8 profiled steps
   each, twice): wall time, the ops' own time (torch.profiler's self time, summed), the rest (Python, the autograd
   engine, numpy's random words), and each large op's speedup from the second thread.
5. The LoRA step with the pooled last layer's keys and values projected at every position (as before) against
   its attention through effective weights (``lowrank.training.pooled``), two setups from the same weights stepped
   in turn, the order alternating, on the same batches: the medians, the median of the pairs' ratios, the ratio of
   the sums.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import types
from collections import Counter

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from lowrank import cpu_dropout
from lowrank.lora_function import lora_linear
from lowrank.train_config import TrainConfig
from lowrank.training.guard import RunGuard
from lowrank.training.loop import _eager_step, _micro_batches
from lowrank.training import pooled, setup as setup_module
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


def _median_seconds_each(runs: dict, calls: int = 30) -> dict[str, float]:
    """Median seconds of each callable, called in turn (so drifts in the machine's speed hit all alike)."""
    for run in runs.values():
        run(), run()
    times = {name: [] for name in runs}
    for _ in range(calls):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def _bool_dropout(x: torch.Tensor, p: float) -> None:
    """The previous CPU dropout: torch's random words, a bool mask, ``native_dropout_backward`` each way."""
    words = torch.empty(-(-x.numel() // cpu_dropout.LANES), dtype=torch.int64).random_(-(2**63), None)
    keep = (words.view(torch.int16)[: x.numel()] >= cpu_dropout._threshold(p)).view(x.shape)
    torch.ops.aten.native_dropout_backward(x, keep, 1 / (1 - p))  # forward
    torch.ops.aten.native_dropout_backward(x, keep, 1 / (1 - p))  # backward


def _scaled_dropout(x: torch.Tensor, p: float) -> None:
    """lowrank.cpu_dropout's: one scaled mask, one product each way."""
    mask = cpu_dropout.scaled_mask(x.shape, p, x.dtype)
    x * mask, x * mask


def part_times() -> None:
    p, shape = 0.1, (16, 12, 48, 48)  # one MiniLM-L6 layer's attention probabilities at the demo's batch
    count, probs = math.prod(shape), torch.rand(shape)
    keep, scaled = cpu_dropout.keep_mask(shape, p), cpu_dropout.scaled_mask(shape, p, torch.float32)
    rows, width, r = TOKENS, 384, 8
    X, G, A, B, W, b = (torch.randn(*s) for s in [(rows, width), (rows, width), (r, width), (width, r),
                                                   (width, width), (width,)])
    u = X @ A.T
    x, A_, B_ = X.clone().requires_grad_(), A.clone().requires_grad_(), B.clone().requires_grad_()
    pairs = {
        "dropout words": {"torch random_": lambda: torch.empty(count // cpu_dropout.LANES,
                                                               dtype=torch.int64).random_(-(2**63), None),
                          "SFC64 (lowrank)": lambda: cpu_dropout._lanes(count)},
        "dropout, all": {"bool mask, torch": lambda: _bool_dropout(probs, p),
                         "scaled mask (lowrank)": lambda: _scaled_dropout(probs, p)},
        "dropout apply": {"native_dropout_backward": lambda: torch.ops.aten.native_dropout_backward(probs, keep,
                                                                                                   1 / (1 - p)),
                          "x * scaled mask (lowrank)": lambda: probs * scaled},
        "LoRA v = G B": {"G @ B": lambda: G @ B, "(B^T G^T)^T (lowrank)": lambda: (B.T @ G.T).T},
        "LoRA dB = G^T u": {"G^T @ u": lambda: G.T @ u, "(u^T G)^T (lowrank)": lambda: (u.T @ G).T},
        "layer fwd+bwd": {"F.linear, frozen": lambda: torch.nn.functional.linear(x, W, b).backward(G),
                          "lora_linear r=8": lambda: lora_linear(x, W, b, A_, B_, 2.0).backward(G)},
    }
    for part, runs in pairs.items():
        seconds = _median_seconds_each(runs)
        print(f"{part:>16s}: " + ", ".join(f"{name} {value * 1e3:.3f} ms" for name, value in seconds.items()))


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


def _train_step(config, setup, stream, guard: RunGuard, index: int) -> None:
    """One optimizer step, as `lowrank train` takes it eagerly."""
    _eager_step(config, setup, stream, guard, index)
    setup.optimizer.step()
    setup.optimizer.zero_grad(set_to_none=True)


def _steps_in_turn(ways: dict, steps: int) -> dict[str, list[float]]:
    """Seconds of each way's steps after 3 warm-ups, the ways stepped in turn, the order reversed every other step
    (so drifts in the machine's speed hit all alike)."""
    times = {way: [] for way in ways}
    with RunGuard("/tmp/cpu-step-bounds") as guard:
        for step in range(steps + 3):
            for way in (list(ways) if step % 2 == 0 else list(reversed(ways))):
                config, setup, stream = ways[way]
                began = time.perf_counter()
                _train_step(config, setup, stream, guard, step)
                if step >= 3:
                    times[way].append(time.perf_counter() - began)
    return times


def step_seconds(method: str, steps: int = 20) -> dict[str, float]:
    """Median step seconds of each way, stepped in turn."""
    times = _steps_in_turn({way: _variant(method, way) for way in WAYS}, steps)
    return {way: statistics.median(seconds) for way, seconds in times.items()}


def thread_scaling(steps: int = 8) -> None:
    """Print wall, op and other milliseconds a LoRA step on 1 and 2 threads, and the largest ops' speedups."""
    config, setup, stream = _variant("lora", "both")
    wall, ops, kept = {1: 0.0, 2: 0.0}, {1: Counter(), 2: Counter()}, torch.get_num_threads()
    with RunGuard("/tmp/cpu-step-bounds") as guard:
        for index in range(4):
            _train_step(config, setup, stream, guard, index)
        for threads in (2, 1, 2, 1):
            torch.set_num_threads(threads)
            _train_step(config, setup, stream, guard, 0)
            began = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                for index in range(steps):
                    _train_step(config, setup, stream, guard, index)
            wall[threads] += (time.perf_counter() - began) / steps / 2 * 1e3
            for event in profiler.key_averages():
                ops[threads][event.key] += event.self_cpu_time_total / steps / 2 / 1e3
    torch.set_num_threads(kept)
    for threads in (1, 2):
        in_ops = sum(ops[threads].values())
        print(f"{threads} thread(s): {wall[threads]:.0f} ms a step, ops {in_ops:.0f} ms, "
              f"the rest {wall[threads] - in_ops:.0f} ms")
    print(f"{'op':>44s} {'1 thread':>9s} {'2 threads':>10s} {'speedup':>8s}")
    for key, one in ops[1].most_common(12):
        print(f"{key[:44]:>44s} {one:9.1f} {ops[2][key]:10.1f} {one / max(ops[2][key], 1e-9):8.2f}")


def last_layer(steps: int = 60) -> None:
    """Print step medians and ratios of the last layer's two attentions (see 5. above)."""
    ways = {"projected": _variant("lora", "both"), "effective": _variant("lora", "both")}
    ways["effective"][1].model.load_state_dict(ways["projected"][1].model.state_dict())
    layer = ways["projected"][1].model.bert.encoder.layer[-1]
    layer.forward = types.MethodType(lambda self, h, mask=None, *a, **k: pooled._projected_forward(self, h, mask),
                                     layer)
    times = _steps_in_turn(ways, steps)
    before, after = times["projected"], times["effective"]
    print(f"last layer, keys and values projected: {statistics.median(before) * 1e3:.1f} ms a step; through "
          f"effective weights: {statistics.median(after) * 1e3:.1f} ms ({steps} steps each); "
          f"medians {statistics.median(before) / statistics.median(after):.3f}x, median pair "
          f"{statistics.median(b / a for b, a in zip(before, after)):.3f}x, sums {sum(before) / sum(after):.3f}x")


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}")
    if sys.argv[1:] == ["parts"]:
        return part_times()
    if sys.argv[1:] == ["threads"]:
        return thread_scaling()
    if sys.argv[1:2] == ["last-layer"]:
        return last_layer(*map(int, sys.argv[2:3]))
    gemm_rates()
    for method in ("lora", "full"):
        seconds = step_seconds(method)
        print(f"{method}: step " + ", ".join(f"{seconds[way] * 1e3:.0f} ms {WAYS[way]}" for way in WAYS) +
              f"; neither / both: {seconds['neither'] / seconds['both']:.2f}x")
    part_times()


if __name__ == "__main__":
    main()
