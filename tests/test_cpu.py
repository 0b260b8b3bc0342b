"""lowrank.cpu.keep_freed_memory: with it, freed tensors stay mapped in the heap, ready for the next step's tensors
without new page faults; with glibc's defaults, the same 40 MB go back to the OS when freed. Each case runs in its
own process, because the setting holds for the whole process."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, os, sys
import torch
from lowrank import cpu

if sys.argv[1] == "keep":
    cpu.keep_freed_memory()


def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


held = [torch.ones(1 << 19) for _ in range(20)]  # 40 MB in tensors of 2 MB, written
before = resident_mb()
del held
print(json.dumps({"released_mb": before - resident_mb()}))
"""


def _released_mb(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["released_mb"]


def test_freed_tensors_stay_mapped():
    assert _released_mb("keep") < 4
    assert _released_mb("default") > 30
