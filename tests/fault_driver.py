"""Run the lowrank CLI in this process with one fault hook installed (for tests/test_faults.py):

    python tests/fault_driver.py POINT STEP ACTION [lowrank arguments...]

At fault point POINT (lowrank.training.faults) and step STEP, ACTION ``kill`` sends SIGKILL to this process (at a
checkpoint write: after its first chunk is on disk, so the temporary file is half-written) and ``term`` sends
SIGTERM; ``ACTION@R`` acts only in the worker of rank R (under ``--nproc``, which runs this same driver on each
worker). One thread, like the in-process reference runs, so that the floating-point results match bit for bit.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from lowrank.training import faults
from lowrank_cli.main import main

ACTIONS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}


def _install(point: str, step: int, action: str) -> None:
    action, _, rank = action.partition("@")

    def hook(value=None, step=None, written=None):
        if step == target and rank in ("", os.environ.get("RANK", "0")):
            os.kill(os.getpid(), ACTIONS[action])
        return value

    target = step
    faults.install(point, hook)


if __name__ == "__main__":
    torch.set_num_threads(1)
    _install(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    sys.argv = ["lowrank", *sys.argv[4:]]
    main()
