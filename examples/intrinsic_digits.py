"""Reproduce Li et al.'s width-invariance of the intrinsic dimension on scikit-learn's digits.

FC 64-W-W-10 networks for several widths W, trained in random subspaces of dimension d (dense Gaussian P with
normalized columns, cached), Adam lr 1e-2, 1000 full-batch steps, 3 seeds; baseline = direct training with the
same budget; every grid point is trained (``adaptive=False``, the full table). Writes ``<out>/intrinsic_digits.json`` (one lowrank.intrinsic/1 record per width) and
``<out>/intrinsic_digits.png`` (all curves). Run from the repository root:

    python examples/intrinsic_digits.py --out reports
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lowrank.intrinsic.problems import image_problem
from lowrank.intrinsic.search import SearchConfig, measure_intrinsic_dimension
from lowrank.intrinsic.training import RunBudget
from lowrank.outputs import write_text_atomic
from lowrank.render.intrinsic import plot, summary_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="50,100,200")
    parser.add_argument("--dims", default="75,100,150,200,300,400")
    parser.add_argument("--projection", default="dense")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="reports")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the CPU is shared: one thread avoids OpenMP oversubscription
    train = RunBudget(steps=args.steps, lr=1e-2, batch_size=4096)
    results = []
    for width in (int(w) for w in args.widths.split(",")):
        model = f"mlp:64,{width},{width},10"
        problem = image_problem(model, "digits")
        config = SearchConfig(dims=tuple(int(d) for d in args.dims.split(",")), train=train, baseline_train=train,
                              projection=args.projection, cache=args.projection == "dense", seeds=args.seeds,
                              adaptive=False, model_name=model, data_name="digits")
        result = measure_intrinsic_dimension(problem.build_model, problem.task, config)
        results.append(result)
        print("\n".join(summary_lines(result)), flush=True)
        print("  curve: " + ", ".join(f"d={p.d}: {p.mean:.4f}" for p in result.curve), flush=True)
    out = Path(args.out)
    write_text_atomic(out / "intrinsic_digits.json", json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    png = plot(results, labels=[f"64-{r.model.split(',')[1]}-{r.model.split(',')[1]}-10, D={r.D:,}: d90={r.d90}"
                                for r in results])
    tmp = out / ".intrinsic_digits.png.tmp"
    tmp.write_bytes(png)
    tmp.replace(out / "intrinsic_digits.png")


if __name__ == "__main__":
    main()
