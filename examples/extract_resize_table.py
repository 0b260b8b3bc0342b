"""Tables of reports/extract_resize.md from the folders examples/extract_resize_experiment.sh wrote.

Usage: python examples/extract_resize_table.py [--json FILE] ROOT [ROOT ...]
Later ROOTs fill in runs the earlier ones lack (a rerun of part of the grid). All-linear LoRA folders named
``lora-all-r{R}`` (the first call's layout) count as ``lr 2e-3``, the default rate.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

TASKS = ("reuters-r8", "reuters-r52")


def collect(roots: list[Path]) -> dict[str, dict[str, dict]]:
    """task -> run name -> its metrics.json or compress_report.json (first root wins)."""
    runs: dict[str, dict[str, dict]] = {}
    for root in roots:
        for task in TASKS:
            for folder in sorted((root / task).glob("*")):
                name = re.sub(r"^lora-all-r(\d+)$", r"lora-all-r\1-lr2e-3", folder.name)
                for file in ("metrics.json", "compress_report.json"):
                    if (folder / file).is_file() and name not in runs.setdefault(task, {}):
                        runs[task][name] = json.loads((folder / file).read_text())
    return runs


def accuracy(run: dict) -> float:
    return run["final"]["accuracy"] if "final" in run else run["evaluation"]["compressed"]["accuracy"]


def params(run: dict) -> int:
    return run["trainable_parameters"] if "final" in run else run["lora_parameters"] + run["carried_parameters"]


def part_a(task: str, runs: dict[str, dict]) -> list[str]:
    full = runs["full"]
    lines = [f"| {task}: update | parameters | kept energy | ranks (r / min-max) | accuracy | LoRA all-linear trained "
             "at that rank: lr 2e-3 / 5e-4 |", "|---|---|---|---|---|---|",
             f"| full fine-tuning | {params(full):,} | 1 | | **{accuracy(full):.4f}** | |"]
    ordered = sorted((k for k in runs if k.startswith("extract-")), key=_order)
    for name in ordered:
        run = runs[name]
        ranks = [m["rank"] for m in run["modules"]]
        lora = ""
        match = re.fullmatch(r"extract-r(\d+)", name)
        if match:
            lora = " / ".join(f"{accuracy(runs[k]):.4f}" if k in runs else "-"
                              for k in (f"lora-all-r{match.group(1)}-lr2e-3", f"lora-all-r{match.group(1)}-lr5e-4"))
        lines.append(f"| {name.removeprefix('extract-')} | {params(run):,} | {run['total_kept_energy']:.3f} | "
                     f"{run['config']['r']} / {min(ranks)}-{max(ranks)} | {accuracy(run):.4f} | {lora} |")
    return lines


def _order(name: str) -> tuple:
    match = re.fullmatch(r"extract-(r|e)([\d.]+)(.*)", name)
    return (match.group(3) != "", match.group(1) == "e", float(match.group(2))) if match else (True, True, 0.0)


def part_b(task: str, runs: dict[str, dict]) -> tuple[list[str], dict]:
    lines = [f"| {task}: seed | r=64 | r=64 -> 8 | r=64 -> 1 | r=8 trained | r=8 -> 8 (check) | resized - direct |",
             "|---|---|---|---|---|---|---|"]
    columns: dict[str, list[float]] = {}
    seeds = sorted(int(k.rsplit("-s", 1)[1]) for k in runs if k.startswith("lora-qv-r8-s"))
    for seed in seeds:
        row = {"r64": accuracy(runs[f"lora-qv-r64-s{seed}"]), "r64to8": accuracy(runs[f"resize-r64-to-r8-s{seed}"]),
               "r64to1": accuracy(runs[f"resize-r64-to-r1-s{seed}"]), "r8": accuracy(runs[f"lora-qv-r8-s{seed}"]),
               "r8to8": accuracy(runs[f"resize-r8-to-r8-s{seed}"])}
        row["diff"] = row["r64to8"] - row["r8"]
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
        lines.append(f"| {seed} | " + " | ".join(f"{row[k]:+.4f}" if k == "diff" else f"{row[k]:.4f}"
                                                  for k in ("r64", "r64to8", "r64to1", "r8", "r8to8", "diff")) + " |")
    summary = {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in columns.items()}
    lines.append("| mean ± sd | " + " | ".join(f"{summary[k][0]:.4f} ± {summary[k][1]:.4f}" for k in
                                               ("r64", "r64to8", "r64to1", "r8", "r8to8", "diff")) + " |")
    energies = [runs[f"resize-r64-to-r8-s{s}"]["total_kept_energy"] for s in seeds]
    summary["energy_r64_to_r8"] = (statistics.mean(energies), min(energies))
    return lines, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = collect(args.roots)
    summary = {}
    for task in TASKS:
        print("\n".join(part_a(task, runs[task])) + "\n")
        lines, summary[task] = part_b(task, runs[task])
        print("\n".join(lines) + "\n")
        print(f"{task}: energy kept by r=64 -> 8: mean {summary[task]['energy_r64_to_r8'][0]:.4f}, "
              f"min {summary[task]['energy_r64_to_r8'][1]:.4f}\n")
    if args.json:
        compact = {task: {name: {"accuracy": accuracy(run), "parameters": params(run),
                                 **({"kept_energy": run["total_kept_energy"], "r": run["config"]["r"]}
                                    if "final" not in run else {})}
                          for name, run in sorted(runs[task].items())} for task in TASKS}
        args.json.write_text(json.dumps({"runs": compact, "part_b": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
