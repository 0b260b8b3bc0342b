"""Checkpoints of a training run, written so that nothing is ever lost, and resumed only with the same settings.

A checkpoint is ``OUT/checkpoint/state.pt``: the trainable tensors and the optimizer state (full tensors keyed by
parameter name, whatever the number of processes or the sharding), each rank's RNG states, the history, the step,
and the run's result-defining settings (:func:`run_settings`). It is written to a temporary file beside it, flushed and ``fsync``-ed, then renamed over the old one (``os.replace`` is atomic) and the folder
is ``fsync``-ed: a crash, a kill or a full disk at any moment leaves either the old checkpoint or the new one,
whole. A failed write removes its temporary file and says which checkpoint survives.

The final checkpoint (step = total steps, written before the final evaluation, so an evaluation that fails never
loses the trained weights) holds no optimizer state: no step is left to take.

Settings that change the result: every :class:`TrainConfig` field except :data:`NOT_RESULT` (where the output goes,
how often it is checkpointed or evaluated, what to do at a non-finite step: a run that stops at one has taken none;
DDP or FSDP, which give the same result; CUDA graphs or eager steps, which differ only in dropout draws;
activation checkpointing, which recomputes the same values), plus the device type actually used and a SHA-256
fingerprint of the training examples (so a changed data file, tokenizer or max length is caught even under the same
path). The number of processes is not one of them: a run may resume on another, and activation checkpointing may be
turned on or off at a resume.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import asdict
from pathlib import Path

import torch

from lowrank import distributed
from lowrank.errors import LowrankError
from lowrank.training import faults, parallel

CHECKPOINT = "checkpoint"
STATE_FILE = "state.pt"
NOT_RESULT = ("out", "overwrite", "resume", "save_every", "eval_every", "nonfinite", "parallel", "cuda_graphs",
              "checkpointing")


def state_path(out: Path) -> Path:
    return Path(out) / CHECKPOINT / STATE_FILE


def run_settings(config, setup) -> dict:
    """The settings a resumed run must share with the checkpoint (see the module docstring)."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k not in NOT_RESULT}
    settings["device"] = setup.device.type
    settings["training examples (fingerprint)"] = _fingerprint(setup.train)
    return settings


def _fingerprint(data) -> str:
    digest = hashlib.sha256()
    if hasattr(data, "input_ids"):
        digest.update(repr((data.input_ids, data.labels, data.pad_id) + ((data.targets,) if data.targets else ()))
                      .encode())
    else:
        digest.update(data.x.contiguous().numpy().tobytes())
        digest.update(data.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save(out: Path, setup, step: int, history: list, settings: dict, final: bool = False) -> None:
    """Write the checkpoint atomically (temporary file, fsync, rename, fsync of the folder). On several
    processes every rank gives its part (sharded weights, optimizer state, random state) and rank 0 writes.

    Raises:
        LowrankError: the write failed (a full disk names ENOSPC); the previous checkpoint is untouched.
    """
    with parallel.gathered(setup.model):
        trainable = {n: p.detach().cpu().clone() for n, p in setup.model.named_parameters() if p.requires_grad}
    state = {"step": step, "history": history, "settings": settings, "final": final, "trainable": trainable}
    if not final:
        randomness = distributed.gather(_random_state(setup))
        state.update(optimizer=parallel.optimizer_state(setup.model, setup.optimizer),
                     random=randomness[0] if randomness else None, rank_random=randomness)
    if setup.world.is_main:
        _write(Path(out), state, step)
    distributed.barrier()


def _random_state(setup) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(setup.device) if setup.device.type == "cuda" else None}


def _write(out: Path, state: dict, step: int) -> None:
    folder = out / CHECKPOINT
    folder.mkdir(exist_ok=True)
    tmp = folder / (STATE_FILE + ".tmp")
    try:
        with open(tmp, "wb", buffering=0) as handle:  # unbuffered: what torch.save wrote is in the file
            torch.save(state, _HookedWriter(handle, step))
            os.fsync(handle.fileno())
        os.replace(tmp, folder / STATE_FILE)
        _fsync_dir(folder)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise LowrankError(_write_failed(out, step, error)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_failed(out: Path, step: int, error: OSError) -> str:
    reason = "the disk is full (ENOSPC)" if error.errno == errno.ENOSPC else (error.strerror or str(error))
    kept = saved_step(out)
    survivor = (f"the previous checkpoint (step {kept}) is intact; free space and run again with --resume"
                if kept is not None else "no earlier checkpoint exists")
    return f"cannot write the checkpoint of step {step} in {Path(out) / CHECKPOINT}: {reason}; {survivor}"


class _HookedWriter:
    """A binary file that fires the ``checkpoint_write`` fault point after each chunk torch.save writes."""

    def __init__(self, handle, step: int):
        self._handle, self._step, self._written = handle, step, 0

    def write(self, data) -> int:
        count = self._handle.write(data)
        self._written += count
        faults.fire("checkpoint_write", step=self._step, written=self._written)
        return count

    def flush(self) -> None:
        self._handle.flush()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def saved_step(out: Path) -> int | None:
    """The step of the checkpoint in ``out``, or None when there is none (or it cannot be read)."""
    try:
        return int(_read(out)["step"])
    except (LowrankError, KeyError, TypeError, ValueError):
        return None


def _read(out: Path) -> dict:
    path = state_path(out)
    if not path.is_file():
        raise LowrankError(f"--resume: {out} holds no checkpoint ({CHECKPOINT}/{STATE_FILE})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is bad input
        raise LowrankError(f"cannot read the checkpoint in {out}: {error}") from None


def load(out: Path, setup, settings: dict) -> dict:
    """Restore the checkpoint in ``out`` into ``setup`` (tensors only: weights_only=True) and return its state.

    Raises:
        LowrankError: no or unreadable checkpoint, or one written with other result-defining settings (each
            differing setting named with both values).
    """
    state = _read(out)
    _same_settings(out, state.get("settings", {}), settings)
    params = dict(setup.model.named_parameters())
    if set(state["trainable"]) != {n for n, p in params.items() if p.requires_grad}:
        raise LowrankError(f"the checkpoint in {out} was written by a different configuration (other trainable "
                           "parameters)")
    for name, tensor in state["trainable"].items():
        parallel.load_full(params[name], tensor)
    if not state.get("final"):
        parallel.load_optimizer_state(setup.model, setup.optimizer, state["optimizer"])
        ranks = state.get("rank_random") or []
        random = ranks[setup.world.rank] if len(ranks) == setup.world.size else state["random"]
        torch.set_rng_state(random["cpu"])
        if random["cuda"] is not None and setup.device.type == "cuda":
            torch.cuda.set_rng_state(random["cuda"], setup.device)
    return state


def _same_settings(out: Path, saved: dict, now: dict) -> None:
    changed = [f"{key} {saved.get(key)!r} (now {now.get(key)!r})" for key in sorted(set(saved) | set(now))
               if saved.get(key) != now.get(key)]
    if changed:
        raise LowrankError(f"--resume: the checkpoint in {out} was written with other settings: "
                           f"{'; '.join(changed)}. Resume with the original settings, or start again with "
                           "--overwrite")
