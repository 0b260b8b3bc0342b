"""CUDA-graph steps against eager steps, on a GPU, in one process: same model, same init, same batches.

    python benchmarks/check_graphed_step.py --model .carry/minilm-l6 --data /tmp/data/reuters-r8.csv [--steps 120]
    python benchmarks/check_graphed_step.py --model ... --data ... --retire     # the allocator assert (issue 30)

For LoRA and for full fine-tuning, two runs are prepared from the same seed (lowrank.training.setup.prepare) with
dropout off (model.eval(): otherwise the two would draw different masks), and take the same batches: one through
lowrank.training.graphed, one through the loop's eager step. Prints the largest relative difference of the
per-step losses, the distance of the trained parameters relative to the eager run's update, ||W_g - W_e|| /
||W_e - W_0||, and the steps per second of each (the loop alone, batches collated on the host as in training,
timed after a synchronization at each end).

With --retire, the graphed run's every replay is taken as slower than its eager step, so each shape's graph is
retired after its first replay and the next shape is captured into the shared pool: the sequence that failed in a
sweep with `it->second->use_count > 0 INTERNAL ASSERT FAILED` (CUDACachingAllocator.cpp) while a retired graph was
freed (lowrank.training.graphed.GraphedSteps._retire). First the cause alone, in plain PyTorch: a capture into a
pool whose only graph was freed.
"""

from __future__ import annotations

import argparse
import time

import torch

from lowrank.training import graphed
from lowrank.train_config import TrainConfig
from lowrank.training.guard import RunGuard
from lowrank.training.loop import _eager_step, _micro_batches, lr_factor
from lowrank.training.setup import prepare


class SlowerReplays(graphed.GraphedSteps):
    """Every replay timed slower than the eager step: every graph is retired after its first replay."""

    def _timed(self, run, *args):
        output = run(*args)
        return (float("inf") if run == self._replay else 0.0), output


def freed_pool_capture() -> str:
    """Capture into a pool whose only graph was freed (plain PyTorch): what happens."""
    pool, x = torch.cuda.graph_pool_handle(), torch.ones(1024, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        x * 2  # warm-up before capture
    torch.cuda.current_stream().wait_stream(side)
    first = torch.cuda.CUDAGraph()
    with torch.cuda.graph(first, pool=pool):
        y = x * 2
    del first, y
    try:
        with torch.cuda.graph(torch.cuda.CUDAGraph(), pool=pool):
            x * 3
    except RuntimeError as error:
        return f"fails: {str(error).splitlines()[0]}"
    return "works (this torch does not assert)"


def run(config: TrainConfig, use_graphs: bool, retire: bool = False) -> tuple[list[float], torch.Tensor, torch.Tensor, float]:
    """Per-step losses, the trainable parameters before and after (one flat float64 vector each) and seconds, for
    ``config.max_steps`` steps."""
    setup = prepare(config)
    before = _flat(setup.trainable)
    setup.model.eval()  # dropout off in both runs
    stream = _micro_batches(setup, config, 0)
    steps, warmup = setup.total_steps, round(config.warmup_ratio * setup.total_steps)
    graphs = (SlowerReplays if retire else graphed.GraphedSteps)(setup, config) if use_graphs else None
    losses = []
    torch.cuda.synchronize()
    began = time.perf_counter()
    with RunGuard(config.out) as guard:
        for step in range(steps):
            for group in setup.optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, steps, warmup)
            if graphs is not None:
                loss = graphs.step(setup.train.collate(next(stream)))[0]
            else:
                loss = _eager_step(config, setup, stream, guard, step)[0]
                setup.optimizer.step()
                setup.optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    return torch.stack(losses).tolist(), before, _flat(setup.trainable), seconds


def _flat(parameters) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in parameters])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--retire", action="store_true", help="retire every graph after its first replay")
    args = parser.parse_args()
    if args.retire:
        print(f"plain PyTorch, a capture into a pool whose only graph was freed: {freed_pool_capture()}")
    print(f"{'method':6s} {'steps':>5s} {'max loss rel diff':>18s} {'update rel diff':>16s} "
          f"{'eager steps/s':>14s} {'graphed steps/s':>16s} {'ratio':>6s}")
    for method in ("lora", "full"):
        config = TrainConfig(model=args.model, data=args.data, method=method, out="/tmp/check-graphed",
                             max_steps=args.steps)
        eager_losses, init, eager_params, eager_s = run(config, use_graphs=False)
        graph_losses, _, graph_params, graph_s = run(config, use_graphs=True, retire=args.retire)
        loss_diff = max(abs(a - b) / abs(a) for a, b in zip(eager_losses, graph_losses))
        update_diff = float((graph_params - eager_params).norm() / (eager_params - init).norm())
        print(f"{method:6s} {args.steps:5d} {loss_diff:18.2e} {update_diff:16.2e} {args.steps / eager_s:14.1f} "
              f"{args.steps / graph_s:16.1f} {eager_s / graph_s:6.2f}")
        print(f"       losses at steps 1, {args.steps // 2}, {args.steps}: eager "
              f"{eager_losses[0]:.4f} {eager_losses[args.steps // 2 - 1]:.4f} {eager_losses[-1]:.4f}; graphed "
              f"{graph_losses[0]:.4f} {graph_losses[args.steps // 2 - 1]:.4f} {graph_losses[-1]:.4f}")


if __name__ == "__main__":
    main()
