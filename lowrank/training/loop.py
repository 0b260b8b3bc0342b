"""One training loop for LoRA and full fine-tuning, for sequence classification and causal language modelling.

AdamW; the learning rate rises linearly over the first ``warmup_ratio`` of the steps, then falls linearly to zero;
gradients are clipped to ``grad_clip`` and accumulated over ``grad_accum`` micro-batches; bf16 autocast on CUDA,
fused AdamW, and ``compile`` runs the model through torch.compile; on one GPU each step is replayed from a CUDA
graph (lowrank.training.graphed). The host never synchronizes inside a step
(batches are gathered from a pre-padded table, pinned and copied without blocking; losses are read in groups).
Batches come in an order fixed by (seed, epoch), so a run resumed from a checkpoint ends with exactly the weights
of an uninterrupted one. On several processes (torchrun; lowrank.training.parallel) each rank computes its shard
of every global batch and only rank 0 writes; the results are those of one process. Results: a peft adapter
(LoRA) or a Hugging Face model folder (full; an MLP folder, ``lowrank.mlp.save_mlp``, for an MLP), plus
metrics.json. Throughput counts tokens for text, examples for images.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lowrank import adapters, distributed
from lowrank.data.batches import iter_batches
from lowrank.errors import LowrankError
from lowrank.mlp import MLP, save_mlp
from lowrank.tasks.collapse import run_collapse
from lowrank.outputs import check_output_dir, write_text_atomic
from lowrank.progress import ProgressCallback, report
from lowrank.tasks.evaluate import evaluate
from lowrank.tasks.loss import autocast, target_count, to_device
from lowrank.training import checkpointing, fused, graphed, parallel, rate_backoff
from lowrank.training.checkpointing import CHECKPOINT, STATE_FILE
from lowrank.train_config import TrainConfig
from lowrank.training.guard import STAGING, Interrupted, RunGuard
from lowrank.training.lock import OutputLock
from lowrank.training.setup import Setup, prepare

LOSS_READ_EVERY = 25  # steps between reads of the device-side losses (each read is one host synchronization)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps to 1, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def throughput_units(batch: dict[str, torch.Tensor]) -> int:
    """What throughput counts: non-padding tokens of a text batch, examples of an image batch."""
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else len(batch["labels"])


def train(config: TrainConfig, progress: ProgressCallback | None = None) -> dict:
    """Train as ``config`` says and write the results into ``config.out``; return the metrics written. Under
    torchrun this process is one rank of the run (lowrank.distributed); rank 0 holds the output folder. A default
    learning rate that blows the run up backs off (lowrank.training.rate_backoff)."""
    out, world = Path(config.out), distributed.from_environment()
    with distributed.joined(world, world.device(config.device)), OutputLock(out, world.is_main) as lock, \
            RunGuard(out, config.nonfinite) as guard:
        if config.resume and not checkpointing.state_path(out).is_file():
            raise LowrankError(f"--resume: {out} holds no checkpoint ({CHECKPOINT}/{STATE_FILE})")
        if not config.resume and world.is_main:
            check_output_dir(out, config.overwrite)
        distributed.barrier()
        rate_chosen, head_chosen, backoffs = config.lr is None and not config.resume, config.head_lr is None, []
        while True:
            try:
                return _attempt(config, world, lock, guard, progress, backoffs,
                                rate_chosen and len(backoffs) < rate_backoff.MAX_BACKOFFS)
            except rate_backoff.RateTooHigh as too_high:
                backoffs.append(too_high.record())
                config = too_high.next_config(config, head_chosen)
                guard.attach(None, None, None)  # the blown-up attempt's model and optimizer go before the next
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Interrupted as stopped:
                if not backoffs:
                    raise
                raise Interrupted(f"{stopped} (with {rate_backoff.resume_rates(config, head_chosen)}: the default "
                                  "rates backed off to them)",
                                  stopped.exit_code - 128) from None


def _attempt(config: TrainConfig, world: distributed.World, lock: OutputLock, guard: RunGuard,
             progress: ProgressCallback | None, backoffs: list[dict], may_back_off: bool) -> dict:
    """One run from the start (or the checkpoint); raises RateTooHigh when ``may_back_off`` and the rate blew it up."""
    out = Path(config.out)
    setup = prepare(config, world)
    settings = checkpointing.run_settings(config, setup)
    state = checkpointing.load(out, setup, settings) if config.resume else None
    if not config.resume:
        lock.claim()
    start = int(state["step"]) if state else 0
    guard.attach(setup, settings, start if state else None)
    evaluation = lambda: _evaluate(setup, config)  # noqa: E731
    history = state["history"] if state else [{"step": 0, **guard.evaluate(evaluation, 0, [])}]
    watch = rate_backoff.RateWatch(setup, history, round(config.warmup_ratio * setup.total_steps), may_back_off)
    seconds, tokens = _loop(config, setup, out, history, start, progress, guard, watch)
    if guard.saved != setup.total_steps:
        guard.save(setup.total_steps, history, final=True)  # the weights outlive a failing evaluation
    final = guard.evaluate(evaluation, setup.total_steps, history)
    history.append({"step": setup.total_steps, **final})
    metrics = _metrics(config, setup, history, final, seconds, tokens, backoffs)
    watch.after_run(metrics["collapsed"])
    guard.write_results(lambda: _save_result(out, config, setup))
    if world.is_main:
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    distributed.barrier()
    return metrics


def _micro_batches(setup: Setup, config: TrainConfig, skip: int):
    """The global stream of micro-batches across epochs, from micro-batch ``skip`` on."""
    epoch, seen = 0, 0
    while True:
        for indices in iter_batches(setup.train, config.batch_size, config.seed, epoch):
            if seen >= skip:
                yield indices
            seen += 1
        epoch += 1


def _loop(config: TrainConfig, setup: Setup, out: Path, history: list, start: int,
          progress: ProgressCallback | None, guard: RunGuard, watch: rate_backoff.RateWatch) -> tuple[float, int]:
    """Train steps ``start`` .. ``total_steps``; return (seconds spent training, throughput units seen).

    The host never waits on the device inside a step: each step's loss stays a device scalar until a read, every
    ``LOSS_READ_EVERY`` steps and before an evaluation or a checkpoint, fills ``history`` (one synchronization)."""
    optimizer, world = setup.optimizer, setup.world
    warmup = round(config.warmup_ratio * setup.total_steps)
    stream = _micro_batches(setup, config, start * config.grad_accum)
    setup.model.train()
    seconds, tokens, pending, last = 0.0, 0, [], ""
    began = time.perf_counter()
    graphs = graphed.GraphedSteps(setup, config) if graphed.usable(config, setup) else None
    for step in range(start, setup.total_steps):
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step, setup.total_steps, warmup)
        if graphs is not None:  # the optimizer steps inside the graph
            host = setup.train.collate(next(stream))
            units, (step_loss, grad_norm) = throughput_units(host), graphs.step(host)
        else:
            step_loss, grad_norm, units = _eager_step(config, setup, stream, guard, step)
        tokens += units
        skipped = guard.skip(step + 1, step_loss, grad_norm)  # reads the device only with --on-nonfinite skip
        if graphs is None:
            if not skipped:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        done = step + 1
        pending.append((done, optimizer.param_groups[0]["lr"], None if skipped else step_loss))
        evaluate_now = bool(config.eval_every) and done % config.eval_every == 0 and done < setup.total_steps
        save_now = bool(config.save_every) and done % config.save_every == 0 and done < setup.total_steps
        if done % LOSS_READ_EVERY == 0 or done == setup.total_steps or evaluate_now or save_now or \
                watch.read_now(done) or (guard.stopping and not world.distributed):  # ranks agree at common reads
            guard.agree()
            guard.check()  # a non-finite loss or gradient stops the run before anything is saved
            last = f"loss {_read_losses(pending, history):.4f}"
            pending = []
            seconds += time.perf_counter() - began
            if evaluate_now:
                history.append({"step": done, **guard.evaluate(lambda: _evaluate(setup, config), done, history)})
            if save_now:
                guard.save(done, history)
            guard.stop_if_asked(done, history)  # SIGTERM / SIGINT: checkpoint, then stop
            watch.after_read(done, history)  # a default rate that blew the model up: start again lower
            began = time.perf_counter()
        report(progress, "train", done, setup.total_steps,
               f"{last} · {tokens / max(seconds + time.perf_counter() - began, 1e-9):,.0f} {_unit(setup)[:3]}/s")
        guard.after_step(done)
    return seconds, tokens


def _eager_step(config: TrainConfig, setup: Setup, stream, guard: RunGuard,
                step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Forward and backward over the step's ``grad_accum`` micro-batches; return the step's loss, the clipped
    gradient norm (device scalars) and the throughput units seen. The optimizer step is the caller's."""
    world, device, step_loss, units = setup.world, setup.device, torch.zeros((), device=setup.device), 0
    for micro in range(config.grad_accum):
        host = setup.train.collate(next(stream))
        units += throughput_units(host)
        batch, weight = _local_batch(host, world, device)
        with parallel.sync_gradients(setup.engine, micro == config.grad_accum - 1):
            with autocast(device, config.bf16):
                loss = guard.loss(fused.step_loss(setup.engine, batch), step + 1) * weight / config.grad_accum
            (loss * world.size).backward()  # DDP / FSDP average over the ranks: the sum of the shards' parts
        step_loss += loss.detach()
    distributed.all_sum(step_loss)
    return step_loss, parallel.plain(torch.nn.utils.clip_grad_norm_(setup.trainable, config.grad_clip)), units


def _local_batch(host: dict[str, torch.Tensor], world: distributed.World,
                 device: torch.device) -> tuple[dict[str, torch.Tensor], float]:
    """This rank's part of a global host batch on ``device``, and its weight: its share of the batch's targets
    (1 on one process; 0 for an empty shard)."""
    if not world.distributed:
        return to_device(host, device), 1.0
    local, holds = parallel.shard(host, world)
    return to_device(local, device), target_count(local) / target_count(host) if holds else 0.0


def _read_losses(pending: list, history: list) -> float:
    """Read the pending steps' device losses in one transfer, append them to ``history``, return the last.
    A skipped step (loss None: non-finite, --on-nonfinite skip) is recorded as skipped.

    Raises LowrankError at the first non-finite loss."""
    kept = [loss for _, _, loss in pending if loss is not None]
    read = iter(torch.stack(kept).tolist() if kept else [])
    losses = [float("nan") if loss is None else next(read) for _, _, loss in pending]
    for (step, lr, device_loss), loss in zip(pending, losses):
        if device_loss is None:
            history.append({"step": step, "skipped": "non-finite loss or gradient", "lr": lr})
            continue
        if not math.isfinite(loss):
            raise LowrankError(f"training diverged at step {step} (loss {loss}); lower the learning rate")
        history.append({"step": step, "train_loss": loss, "lr": lr})
    return losses[-1]


def _evaluate(setup: Setup, config: TrainConfig) -> dict[str, float]:
    return evaluate(setup.model, setup.test, config.batch_size, setup.device, config.bf16, config.eval_samples,
                    setup.world)


def _save_result(out: Path, config: TrainConfig, setup: Setup) -> None:
    """Write the adapter or the full model into a temporary folder, then move its files into ``out`` (rank 0;
    every rank takes part in gathering sharded weights)."""
    model, staging = setup.model, out / STAGING
    full = parallel.full_state(model) if config.method == "full" and parallel.is_sharded(model) else None
    with parallel.gathered(model) if config.method == "lora" else contextlib.nullcontext():
        if setup.world.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            _write_result(staging, config, setup, full)
            for item in staging.iterdir():
                os.replace(item, out / item.name)
            staging.rmdir()
    distributed.barrier()


def _write_result(staging: Path, config: TrainConfig, setup: Setup, full: dict | None) -> None:
    model = setup.model
    if config.method == "lora":
        task_type = None if isinstance(model, MLP) else "CAUSAL_LM" if setup.task == "lm" else "SEQ_CLS"
        adapters.save_adapter(staging, model, setup.lora_config, setup.adapted, setup.model_path, task_type)
    elif isinstance(model, MLP):
        save_mlp(model, staging)
    else:
        with parallel.plain_class(model):
            model.save_pretrained(staging, state_dict=full)
        setup.tokenizer.save_pretrained(staging)


def _metrics(config: TrainConfig, setup: Setup, history: list, final: dict, seconds: float, tokens: int,
             backoffs: list[dict]) -> dict:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    settings.update(lr=setup.lr, head_lr=setup.optimizer.param_groups[-1]["base_lr"],
                    alpha=setup.lora_config.alpha if setup.lora_config else None,
                    targets=setup.adapted, task=setup.task)
    return {"schema": "lowrank.train/1", "method": config.method, "task": setup.task, "model": config.model,
            "data": config.data, "steps": setup.total_steps, "final": final,
            "collapsed": run_collapse(history, final, setup.train, setup.test, config.eval_samples),
            "lr_backoffs": backoffs, "history": history,
            "trainable_parameters": setup.trainable_count, "total_parameters": setup.total_count,
            "train_seconds": seconds, f"{_unit(setup)}_per_second": tokens / seconds if seconds else 0.0,
            "device": str(setup.device), "fused_kernels": setup.fused, "config": settings}


def _unit(setup: Setup) -> str:
    return "examples" if isinstance(setup.model, MLP) else "tokens"
