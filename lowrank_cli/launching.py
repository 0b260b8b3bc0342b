"""``--nproc N``: run a command on N processes of this node (torch's elastic launcher, as torchrun does), and the
rule that only rank 0 of a distributed run draws progress and prints."""

from __future__ import annotations

import sys

import click

from lowrank import distributed

nproc_option = click.option(
    "--nproc", type=click.IntRange(min=1), default=1, show_default=True,
    help="Processes on this node (one per GPU; on the CPU they share the cores), as 'torchrun --nproc-per-node N'. "
    "Under torchrun leave it at 1.")


def relaunched(nproc: int) -> bool:
    """With ``nproc`` > 1 outside a distributed run, run this process's own command line (``lowrank ...``,
    ``python -m lowrank_cli ...``) without ``--nproc`` on ``nproc`` workers and return True once they all
    finished (a failure raises with the first worker's error); else False: run here."""
    if nproc == 1 or distributed.from_environment().distributed:
        return False
    args = sys.argv[1:]
    entry = sys.orig_argv[1: len(sys.orig_argv) - len(args)]  # the interpreter's part: a script or -m MODULE
    distributed.launch(nproc, [*entry, *_without_nproc(args)])
    return True


def _without_nproc(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def is_main() -> bool:
    """True in a single process and on rank 0 of a distributed run."""
    return distributed.from_environment().is_main
