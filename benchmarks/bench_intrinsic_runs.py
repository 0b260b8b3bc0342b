"""Before/after timing of intrinsic-dim's training runs on the default MNIST-5k problem (not collected by pytest).

Times ``--steps`` Adam steps (batch 256, the CLI default) of: one subspace run (Fastfood, d = 457, trained alone
through ``ClassificationTask.train_and_score``), one direct (baseline) run, and, when the code under test has
``lowrank.intrinsic.batched``, the first adaptive round of the default grid trained together (d = 105, 457, 2000
x 3 seeds = 9 runs). Prints one JSON line: wall and CPU seconds per step for each. Point PYTHONPATH at the tree
to measure, e.g. an old commit (``git worktree add /tmp/before cebfcc5``; ``/tmp/before_path`` holds links
``lowrank -> /tmp/before/lowrank`` and ``lowrank_cli -> /tmp/before/cli``):

    PYTHONPATH=/tmp/before_path python benchmarks/bench_intrinsic_runs.py --steps 50    # old code
    python benchmarks/bench_intrinsic_runs.py --steps 50                                 # this tree
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import torch

from lowrank.intrinsic.problems import image_problem
from lowrank.intrinsic.subspace import SubspaceConfig, SubspaceModel
from lowrank.intrinsic.training import RunBudget

MODEL, DATA, SEEDS, FIRST_ROUND = "mlp:784,200,200,10", "mnist-5k", (0, 1, 2), (105, 457, 2000)


def _timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads): CPU time is what a loaded machine distorts least."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    problem = image_problem(MODEL, DATA)
    config = RunBudget(steps=args.steps, lr=1e-2, batch_size=256)
    result = {"steps": args.steps, "threads": args.threads, "unit": "[wall, cpu] seconds per step"}
    wrapped = SubspaceModel(problem.build_model(0), SubspaceConfig(457, "fastfood", 1_000_003))
    seconds = _timed(lambda: problem.task.train_and_score(wrapped, config, 0))
    result["one_subspace_run"] = [s / args.steps for s in seconds]
    direct = problem.build_model(0)
    result["one_direct_run"] = [s / args.steps for s in _timed(lambda: problem.task.train_and_score(direct, config, 0))]
    if importlib.util.find_spec("lowrank.intrinsic.batched") is not None:
        from lowrank.intrinsic.batched import BatchedSubspaceMLP

        runs = [(d, s) for d in FIRST_ROUND for s in SEEDS]
        batched = BatchedSubspaceMLP([SubspaceModel(problem.build_model(s), SubspaceConfig(d, "fastfood",
                                                                                          1_000_003 + s))
                                      for d, s in runs])
        seconds = _timed(lambda: problem.task.train_and_score_runs(batched, config, [s for _, s in runs]))
        result["nine_batched_runs"] = [s / args.steps for s in seconds]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
