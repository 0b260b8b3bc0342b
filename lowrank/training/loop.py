"""One training loop for LoRA and full fine-tuning, for sequence classification and causal language modelling.

AdamW; the learning rate rises linearly over the first ``warmup_ratio`` of the steps, then falls linearly to zero;
gradients are clipped to ``grad_clip`` and accumulated over ``grad_accum`` micro-batches; bf16 autocast on CUDA.
Batches come in an order fixed by (seed, epoch), so a run resumed from a checkpoint ends with exactly the weights
of an uninterrupted one. Results: a peft adapter (LoRA) or a Hugging Face model folder (full; an MLP folder,
``lowrank.mlp.save_mlp``, for an MLP), plus metrics.json. Throughput counts tokens for text, examples for images.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lowrank import adapters
from lowrank.data.batches import iter_batches
from lowrank.errors import LowrankError
from lowrank.mlp import MLP, save_mlp
from lowrank.training.evaluate import autocast, evaluate, loss_of, throughput_units
from lowrank.outputs import check_output_dir, write_text_atomic
from lowrank.progress import ProgressCallback, report
from lowrank.training.config import TrainConfig
from lowrank.training.setup import Setup, prepare

CHECKPOINT = "checkpoint"
STATE_FILE = "state.pt"


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps to 1, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train(config: TrainConfig, progress: ProgressCallback | None = None) -> dict:
    """Train as ``config`` says and write the results into ``config.out``; return the metrics written."""
    out = Path(config.out)
    if config.resume:
        if not (out / CHECKPOINT / STATE_FILE).is_file():
            raise LowrankError(f"--resume: {out} holds no checkpoint ({CHECKPOINT}/{STATE_FILE})")
    else:
        check_output_dir(out, config.overwrite)
    setup = prepare(config)
    state = _load_checkpoint(out, setup) if config.resume else None
    if not config.resume:
        _fresh_output_dir(out)
    history = state["history"] if state else [{"step": 0, **_evaluate(setup, config)}]
    seconds, tokens = _loop(config, setup, out, history, int(state["step"]) if state else 0, progress)
    final = _evaluate(setup, config)
    history.append({"step": setup.total_steps, **final})
    metrics = _metrics(config, setup, history, final, seconds, tokens)
    _save_result(out, config, setup)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    return metrics


def _fresh_output_dir(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


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
          progress: ProgressCallback | None) -> tuple[float, int]:
    model, optimizer, device = setup.model, setup.optimizer, setup.device
    warmup = round(config.warmup_ratio * setup.total_steps)
    stream = _micro_batches(setup, config, start * config.grad_accum)
    model.train()
    seconds, tokens = 0.0, 0
    for step in range(start, setup.total_steps):
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step, setup.total_steps, warmup)
        step_loss = 0.0
        for _ in range(config.grad_accum):
            indices = next(stream)
            batch = {k: v.to(device) for k, v in setup.train.collate(indices).items()}
            with autocast(device, config.bf16):
                loss = loss_of(model, batch)[0] / config.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
            tokens += throughput_units(batch)
        if not math.isfinite(step_loss):
            raise LowrankError(f"training diverged at step {step + 1} (loss {step_loss}); lower the learning rate")
        torch.nn.utils.clip_grad_norm_(setup.trainable, config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - began
        done = step + 1
        history.append({"step": done, "train_loss": step_loss, "lr": optimizer.param_groups[0]["lr"]})
        report(progress, "train", done, setup.total_steps,
               f"loss {step_loss:.4f} · {tokens / seconds:,.0f} {_unit(setup)[:3]}/s")
        if config.eval_every and done % config.eval_every == 0 and done < setup.total_steps:
            history.append({"step": done, **_evaluate(setup, config)})
        if config.save_every and done % config.save_every == 0 and done < setup.total_steps:
            _save_checkpoint(out, setup, done, history)
    return seconds, tokens


def _evaluate(setup: Setup, config: TrainConfig) -> dict[str, float]:
    return evaluate(setup.model, setup.test, config.batch_size, setup.device, config.bf16, config.eval_samples)


def _save_checkpoint(out: Path, setup: Setup, step: int, history: list) -> None:
    """Trainable tensors, optimizer state, RNG states and history, written atomically."""
    folder = out / CHECKPOINT
    folder.mkdir(exist_ok=True)
    state = {"step": step, "history": history, "optimizer": setup.optimizer.state_dict(),
             "trainable": {n: p.detach().cpu() for n, p in setup.model.named_parameters() if p.requires_grad},
             "cpu_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if setup.device.type == "cuda" else []}
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE_FILE)


def _load_checkpoint(out: Path, setup: Setup) -> dict:
    """Restore a checkpoint written by :func:`_save_checkpoint` (tensors only: weights_only=True)."""
    try:
        state = torch.load(out / CHECKPOINT / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is bad input
        raise LowrankError(f"cannot read checkpoint in {out}: {error}") from None
    params = dict(setup.model.named_parameters())
    if set(state["trainable"]) != {n for n, p in params.items() if p.requires_grad}:
        raise LowrankError(f"the checkpoint in {out} was written by a different configuration")
    with torch.no_grad():
        for name, tensor in state["trainable"].items():
            params[name].copy_(tensor)
    setup.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["cpu_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state


def _save_result(out: Path, config: TrainConfig, setup: Setup) -> None:
    """Write the adapter or the full model into a temporary folder, then move its files into ``out``."""
    staging = out / ".saving"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    model = setup.model
    if config.method == "lora":
        task_type = None if isinstance(model, MLP) else "CAUSAL_LM" if setup.task == "lm" else "SEQ_CLS"
        adapters.save_adapter(staging, model, setup.lora_config, setup.adapted, setup.model_path, task_type)
    elif isinstance(model, MLP):
        save_mlp(model, staging)
    else:
        model.save_pretrained(staging)
        setup.tokenizer.save_pretrained(staging)
    for item in staging.iterdir():
        os.replace(item, out / item.name)
    staging.rmdir()


def _metrics(config: TrainConfig, setup: Setup, history: list, final: dict, seconds: float, tokens: int) -> dict:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    settings.update(lr=setup.lr, head_lr=setup.optimizer.param_groups[-1]["base_lr"],
                    alpha=setup.lora_config.alpha if setup.lora_config else None,
                    targets=setup.adapted, task=setup.task)
    return {"schema": "lowrank.train/1", "method": config.method, "task": setup.task, "model": config.model,
            "data": config.data, "steps": setup.total_steps, "final": final, "history": history,
            "trainable_parameters": setup.trainable_count, "total_parameters": setup.total_count,
            "train_seconds": seconds, f"{_unit(setup)}_per_second": tokens / seconds if seconds else 0.0,
            "device": str(setup.device), "config": settings}


def _unit(setup: Setup) -> str:
    return "examples" if isinstance(setup.model, MLP) else "tokens"
