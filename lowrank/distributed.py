"""One run on several processes: torch.distributed set up from the variables torchrun sets, the few collectives
lowrank needs, and ``--nproc N`` (torch's own elastic launcher, as ``torchrun --standalone`` uses it).

torchrun starts one process per device and gives each ``RANK`` (0 .. WORLD_SIZE-1 over all nodes), ``LOCAL_RANK``
(its device on this node), ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` (the rendezvous
store) and ``TORCHELASTIC_ERROR_FILE`` (where a failing worker leaves its message). Without them a run is one
process (:data:`SINGLE`) and nothing here starts a process group. The backend is NCCL on CUDA and gloo on the
CPU; every collective gives up after ``LOWRANK_DIST_TIMEOUT`` seconds (default 600), so a rank that stops
answering ends the run with an error instead of a hang.

A failing worker started by :func:`launch` writes its one-line message into its error file instead of printing
it; the launcher, once torch's agent has stopped the other workers, prints the first real error (an input error
before a peer's broken connection) as the run's one ``Error:`` line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist

from lowrank import devices
from lowrank.errors import LowrankError

LAUNCHED = "LOWRANK_LAUNCHED"  # set by :func:`launch` for its workers
TIMEOUT = "LOWRANK_DIST_TIMEOUT"


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, wanted: str) -> torch.device:
        """``wanted`` ('auto', 'cpu', 'cuda') resolved for this process: its own GPU ``cuda:LOCAL_RANK``."""
        if devices.choose(wanted) == "cpu":
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise LowrankError("--device cuda: no CUDA device is available")
        if self.local_rank >= torch.cuda.device_count():
            raise LowrankError(f"local rank {self.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                               "start at most that many processes per node")
        return torch.device("cuda", self.local_rank)

    def shard(self, items: list) -> list:
        """This rank's share of ``items``: every ``size``-th one from position ``rank``."""
        return items[self.rank:: self.size]


SINGLE = World()


def from_environment() -> World:
    """The :class:`World` torchrun's variables describe, or :data:`SINGLE` without them."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise LowrankError("RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them)") from None
    if size < 1 or not 0 <= rank < size:
        raise LowrankError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(rank, size, local)


@contextlib.contextmanager
def joined(world: World, device: torch.device) -> Iterator[World]:
    """Inside the block, ``world`` is a process group (NCCL for a CUDA ``device``, else gloo); one process needs
    none. The group is destroyed on the way out."""
    if not world.distributed or dist.is_initialized():
        yield world
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size,
                            timeout=timedelta(seconds=float(os.environ.get(TIMEOUT, "600"))),
                            device_id=device if device.type == "cuda" else None)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (asynchronous on the device; no host read)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any."""
    if not active():
        return flag
    value = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather(obj: Any) -> list | None:
    """Every rank's ``obj`` (picklable; only lowrank's own results travel) on rank 0, in rank order; None elsewhere."""
    if not active():
        return [obj]
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def leave_error(message: str, input_error: bool) -> bool:
    """In a worker of :func:`launch`, write ``message`` into torch's per-worker error file and return True (the
    launcher prints it); elsewhere return False (the caller prints it)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not (os.environ.get(LAUNCHED) and path):
        return False
    with open(path, "w") as handle:
        json.dump({"message": message, "timestamp": int(time.time()), "lowrank": {
            "input_error": input_error, "time": time.time(), "rank": int(os.environ.get("RANK", "0"))}}, handle)
    return True


class LaunchFailed(LowrankError):
    """A worker of :func:`launch` failed; ``exit_code`` is its exit status (or 1 after a signal)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def launch(nproc: int, args: list[str]) -> None:
    """Run ``python ARGS`` (``-m lowrank_cli train ...``) on ``nproc`` processes of this node through torch's elastic agent
    (``torchrun --standalone --nproc-per-node NPROC``): a local rendezvous on a free port, no restarts, and the
    other workers stopped as soon as one fails.

    Raises:
        LaunchFailed: a worker failed; the message is the first input error among the workers (else the first
            failure), prefixed with its rank.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise LowrankError(f"--nproc must be >= 1, got {nproc}")
    os.environ[LAUNCHED] = "1"
    # N CPU processes share the cores. On GPUs one thread each, as torchrun sets: with all cores' worth of OpenMP
    # threads per process, LoRA DDP on 2 GPUs scaled far worse (reports/distributed.md)
    threads = 1 if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // nproc)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    quiet = logging.getLogger("torch.distributed.elastic")
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as error:
        raise _first_failure(error.failures) from None
    finally:
        quiet.setLevel(level)


def _first_failure(failures: dict) -> LaunchFailed:
    """The failure to report: an input error, else a worker killed by a signal (the cause: its peers then fail
    on broken connections), else the earliest; each worker's own message when it left one."""
    def key(item):
        extra = item[1].error_file_data.get("lowrank", {}) if isinstance(item[1].error_file_data, dict) else {}
        cause = 0 if extra.get("input_error") else 1 if item[1].exitcode < 0 and not extra else 2
        return (cause, extra.get("time", float("inf")), item[0])

    rank, failure = min(failures.items(), key=key)
    code = failure.exitcode if failure.exitcode > 0 else 1
    message = failure.message if isinstance(failure.message, str) else str(failure.message)
    if failure.exitcode < 0 and not failure.error_file_data.get("lowrank"):
        message = f"stopped by signal {-failure.exitcode}"
    return LaunchFailed(f"rank {rank}: {message}", code)
