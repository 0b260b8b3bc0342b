"""Where a `lowrank train` step spends its time: the CLI run as given, with torch.profiler recording steps
FIRST..LAST (after warm-up) and its table printed, sorted by device time (CPU time without a GPU). Under torchrun
every rank profiles and rank 0 prints.

    python benchmarks/profile_train.py FIRST LAST [lowrank train arguments...]
    torchrun --standalone --nproc-per-node 2 benchmarks/profile_train.py FIRST LAST [lowrank train arguments...]
"""

import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from lowrank.training import faults
from lowrank_cli.main import main

first, last = int(sys.argv[1]), int(sys.argv[2])
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
profiler = profile(activities=activities)


def at_step(value=None, step=None, **_):
    if step == first:
        profiler.start()
    elif step == last:
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        profiler.stop()
        if os.environ.get("RANK", "0") != "0":
            return value
        key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        print(profiler.key_averages().table(sort_by=key, row_limit=30), file=sys.stderr)
        print(profiler.key_averages().table(sort_by="cpu_time_total", row_limit=20), file=sys.stderr)
    return value


faults.install("step", at_step)
sys.argv = ["lowrank", *sys.argv[3:]]
main()
