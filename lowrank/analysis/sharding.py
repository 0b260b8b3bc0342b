"""``lowrank analyze`` on several processes: which modules each rank takes, where it decomposes them, and how
rank 0 gets the measures back in the single-process order (so the report is the one a single process writes).

Errors do not hang the run: a rank's :class:`~lowrank.errors.LowrankError` travels with the gathered results and
is raised on rank 0; the other ranks, done, raise :class:`NotMain` (``analyze`` returns None there).
"""

from __future__ import annotations

from typing import Callable

import torch

from lowrank import distributed
from lowrank.distributed import SINGLE, World
from lowrank.errors import LowrankError


def shares(names: list[str], pairing: dict[str, str], size: int) -> list[list[str]]:
    """The modules each of ``size`` ranks analyzes, in ``names`` order: every ``size``-th one, except that modules
    compared with one same partner go together (to the rank of the first), so each comparison stays on one rank."""
    owners: dict[str, int] = {}
    result: list[list[str]] = [[] for _ in range(size)]
    for i, name in enumerate(names):
        rank = owners.setdefault(pairing[name], i % size) if name in pairing else i % size
        result[rank].append(name)
    return result


def rank_device(device: str, world: World = SINGLE) -> torch.device:
    """Where this rank decomposes: ``device`` itself in one process; on several, CUDA means the rank's own GPU
    ``cuda:LOCAL_RANK`` (:meth:`World.device`)."""
    wanted = torch.device(device)
    return world.device("cuda") if world.distributed and wanted.type == "cuda" else wanted


class NotMain(Exception):
    """Raised on a rank other than 0 once it has nothing more to do (rank 0 reports, or raises the error)."""


def on_main(world: World, work: Callable[[], object]):
    """``work()`` run on rank 0 only, its result broadcast to every rank; its LowrankError raised on rank 0."""
    if not world.distributed:
        return work()
    result = error = None
    if world.is_main:
        try:
            result = work()
        except LowrankError as caught:
            error = caught
    result, failed = distributed.broadcast((result, error is not None))
    if error is not None:
        raise error
    if failed:
        raise NotMain
    return result


def gathered(world: World, work: Callable[[], object]) -> list:
    """Every rank's ``work()`` on rank 0, in rank order; the first rank's LowrankError is raised there. Other
    ranks, done, raise :class:`NotMain`."""
    if not world.distributed:
        return [work()]
    result = message = None
    try:
        result = work()
    except LowrankError as error:
        message = str(error)
    answers = distributed.gather((result, message))
    if answers is None:
        raise NotMain
    for _, message in answers:
        if message is not None:
            raise LowrankError(message)
    return [result for result, _ in answers]


def merged(done: list, names: list[str], other_names: list[str]) -> tuple[tuple, ...]:
    """The ranks' measures (or one process's) in the single-process order: modules and comparisons as
    CHECKPOINT lists its modules, the ``--against`` modules as it lists them, then the unchanged modules."""
    order = {name: i for i, name in enumerate(names)}
    theirs = {name: i for i, name in enumerate(other_names)}
    modules, comparisons, against, unchanged, other_unchanged = ([x for share in done for x in share[i]]
                                                                 for i in range(5))
    return (tuple(sorted(modules, key=lambda m: order[m.name])),
            tuple(sorted(comparisons, key=lambda c: order[c.name])),
            tuple(sorted(against, key=lambda m: theirs[m.name])),
            tuple(dict.fromkeys((*sorted(unchanged, key=order.__getitem__),
                                 *sorted(other_unchanged, key=theirs.__getitem__)))))
