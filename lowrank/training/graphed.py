"""Training steps replayed from CUDA graphs, one graph per batch shape.

A small model's step is mostly host time: MiniLM-L6 at 32 x 128 launches about 400 kernels, and launching them
takes longer than the device needs to run them (measured in reports/training_speed.md). A CUDA graph launches the
whole step at once: forward, backward, gradient clipping, AdamW and the zeroing of the gradients.

Shapes: batches of examples of varying length (classification, instruction data) are padded to a multiple of
:data:`WIDTH_STEP` tokens, so a run sees few shapes (``max_length / WIDTH_STEP`` widths, and the shorter last batch
of an epoch); language-modelling blocks all have one width already. Each shape's first batch runs eagerly (a real
step, which also warms up the kernels' lazy state), its second eagerly and timed, its third is captured, then
replayed and timed. The faster of the two runs that shape's later steps. Once a shape has replayed :data:`CLEAR_WIN`
times faster than it ran eagerly, later shapes skip the timed eager step: each is captured at its second batch. A
graph wins where the host is the bottleneck (a small model such as MiniLM-L6). A step that keeps the device busy
gains nothing from one, and was measured slower replayed (full fine-tuning of a SmolLM2-135M-shaped model; both in
reports/training_speed.md). A replay: the host copies the batch into the graph's static inputs, writes each
parameter group's learning rate into a device scalar (fused AdamW reads a tensor rate) and launches the graph.

Everything a graph touches lives at fixed addresses: parameters, optimizer state, gradients (zeroed inside the
graph rather than freed) and the static inputs. The graphs share one memory pool; nothing in it outlives a replay
but each graph's output, the step's (loss, gradient norm), which is copied out after each replay.

Padding adds masked key positions only (attention weight 0, no target; for instruction data positions after the
last real token, which causal attention hides from every real one), so a padded batch's loss is the unpadded one's
up to the order of floating-point sums. Dropout draws differ from an eager run's, as between any two seeds
of the random stream.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from lowrank.data.batches import IGNORE_INDEX
from lowrank.tasks.loss import autocast, to_device
from lowrank.training import faults, fused

# classification batches are padded to a multiple of this many tokens (why not 16: reports/training_speed.md)
WIDTH_STEP = 32
CLEAR_WIN = 2.0  # a replay this many times faster than the eager step: later shapes are not timed eagerly


def usable(config, setup) -> bool:
    """Graphs replace the loop's eager step on one CUDA process, one micro-batch a step, non-finite steps stopping
    the run (skipping one needs its values on the host before the update), without torch.compile, without
    activation checkpointing and without fault hooks (tests). Checkpointing is for steps large enough to fill the
    device's memory, where a graph gains nothing (see above); and its recompute saves and restores the CUDA random
    state inside the backward pass, which no capture here has been checked with, so the two are not combined."""
    return (config.cuda_graphs and setup.device.type == "cuda" and not setup.world.distributed
            and config.grad_accum == 1 and config.nonfinite == "stop" and not config.compile
            and not config.checkpointing and not faults.installed("loss"))


def widens(data) -> bool:
    """Whether the batches of ``data`` are padded by :func:`padded`: examples of varying length (classification,
    instruction data); language-modelling blocks all have one width, images have no tokens."""
    return bool(getattr(data, "varies_in_length", False))


def padded(batch: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """A host batch of token sequences with its token dimension padded up to a multiple of :data:`WIDTH_STEP` (ids
    with ``pad_id``, the attention mask with 0, token labels with ``IGNORE_INDEX``); an image batch as it is."""
    if "input_ids" not in batch:
        return batch
    extra = -batch["input_ids"].shape[1] % WIDTH_STEP
    if not extra:
        return batch
    fill = {"input_ids": pad_id, "attention_mask": 0}
    if batch["labels"].ndim == 2:
        fill["labels"] = IGNORE_INDEX
    return {key: F.pad(value, (0, extra), value=fill[key]) if key in fill else value for key, value in batch.items()}


class GraphedSteps:
    """``step(host_batch)`` does one optimizer step and returns a (2,) device tensor: (loss, gradient norm)."""

    def __init__(self, setup, config):
        self.model, self.optimizer, self.trainable = setup.model, setup.optimizer, setup.trainable
        self.device, self.bf16, self.grad_clip = setup.device, config.bf16, config.grad_clip
        self.pad_id = getattr(setup.train, "pad_id", 0)
        self.widen = widens(setup.train)
        self.rates = [torch.zeros((), device=self.device) for _ in self.optimizer.param_groups]
        self.pool = torch.cuda.graph_pool_handle()
        self.side = torch.cuda.Stream(self.device)
        self.seen: dict[tuple, int] = {}  # batch shape -> steps taken at it
        self.eager_seconds: dict[tuple, float] = {}
        self.graphs: dict[tuple, tuple | None] = {}  # shape -> (graph, static inputs, output); None: stays eager
        self.retired: list[tuple] = []  # graphs replayed slower than eager, kept alive (see _retire)
        self.graphs_win_clearly = False  # the last shape timed both ways replayed CLEAR_WIN x faster

    def step(self, host: dict[str, torch.Tensor]) -> torch.Tensor:
        host = padded(host, self.pad_id) if self.widen else host
        shape = tuple((key, tuple(value.shape)) for key, value in host.items())
        seen = self.seen[shape] = self.seen.get(shape, 0) + 1
        if seen == 1:
            return self._eager(host)
        if shape in self.graphs:
            graph = self.graphs[shape]
            return self._eager(host) if graph is None else self._replay(host, graph)
        if seen == 2 and not self.graphs_win_clearly:
            self.eager_seconds[shape], output = self._timed(self._eager, host)
            return output
        self.graphs[shape] = self._capture(host)
        if shape not in self.eager_seconds:
            return self._replay(host, self.graphs[shape])
        seconds, output = self._timed(self._replay, host, self.graphs[shape])
        if seconds > self.eager_seconds[shape]:
            self._retire(shape)
        self.graphs_win_clearly = self.eager_seconds[shape] >= CLEAR_WIN * seconds
        return output

    def _retire(self, shape: tuple) -> None:
        """The shape steps eagerly from now on; its graph stays alive. Every graph holds one use of the shared
        memory pool, and freeing the last one leaves the pool with no user but not yet freed: the next capture
        into it then fails PyTorch's allocator assert ``it->second->use_count > 0`` (CUDACachingAllocator.cpp,
        create_or_incref_pool). That happened when the first shape's replay timed slower than its eager step
        (likely on a GPU shared by many runs) and a new shape was captured afterwards."""
        self.retired.append(self.graphs[shape])
        self.graphs[shape] = None

    def _timed(self, run, *args) -> tuple[float, torch.Tensor]:
        torch.cuda.synchronize(self.device)
        began = time.perf_counter()
        output = run(*args)
        torch.cuda.synchronize(self.device)
        return time.perf_counter() - began, output

    def _replay(self, host: dict[str, torch.Tensor], captured: tuple) -> torch.Tensor:
        graph, inputs, output = captured
        for key, value in host.items():
            inputs[key].copy_(value.pin_memory(), non_blocking=True)
        for rate, group in zip(self.rates, self.optimizer.param_groups):
            rate.fill_(group["lr"])
        graph.replay()
        return output.clone()

    def _body(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(self.device, self.bf16):
            loss = fused.step_loss(self.model, batch)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)  # the graphs accumulate into these same gradient tensors
        return torch.stack([loss.detach().float(), norm.float()])

    def _eager(self, host: dict[str, torch.Tensor]) -> torch.Tensor:
        """One step run as it is, on a side stream (as graph capture wants its warm-up)."""
        batch = to_device(host, self.device)
        current = torch.cuda.current_stream(self.device)
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            output = self._body(batch)
        current.wait_stream(self.side)
        output.record_stream(current)
        return output

    def _capture(self, host: dict[str, torch.Tensor]) -> tuple:
        """Record one step on static inputs shaped as ``host``; the group rates are device scalars meanwhile."""
        inputs = {key: torch.empty_like(value, device=self.device) for key, value in host.items()}
        graph = torch.cuda.CUDAGraph()
        groups = self.optimizer.param_groups
        kept = [(group["lr"], group["capturable"]) for group in groups]
        for group, rate in zip(groups, self.rates):
            group["lr"], group["capturable"] = rate, True
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                output = self._body(inputs)
        finally:
            for group, (rate, capturable) in zip(groups, kept):
                group["lr"], group["capturable"] = rate, capturable
        return graph, inputs, output
