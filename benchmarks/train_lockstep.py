"""`lowrank train` of two checkouts in lockstep: the two processes take turns, one training step each, so that a
drift in the machine's speed falls on both alike. On the shared 2-core machine single end-to-end runs of the same
code differ by up to 15% (benchmarks/train_before_after.sh), which hides a difference of a few percent.

    python benchmarks/train_lockstep.py BEFORE_ROOT AFTER_ROOT OUT [--runs N] -- TRAIN ARGUMENTS...

Each root is a checkout holding ``lowrank/`` and ``lowrank_cli/`` (or, before it was renamed, ``cli/``; as ``git worktree add /tmp/before cebfcc5`` makes).
Both train with the same arguments, in two processes that start together and wait for each other: a process times
its step from the moment it gets the turn (at the step's first ``lr_factor`` call) to its progress report after
the optimizer step, then hands the turn over and waits. Set-up and evaluations run outside the turns (both
processes reach step 0 before the first step starts; both finish their last step before either evaluates). The
leader alternates from run to run.

Printed per run and over all runs: each side's summed step seconds and tokens (tokens/s x train seconds, from its
metrics.json), and after/before in tokens/s: (tokens_after / seconds_after) / (tokens_before / seconds_before).
The tokens/s in the metrics.json files themselves are not comparable here: the current loop's clock runs on while
it waits for its turn. Passing one root twice measures the instrument itself (it should give 1.00).
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

TURN = b"t"


def child(go: int, give: int, ready: int, leader: bool, times_path: str, argv: list[str]) -> None:
    """Run `lowrank train ARGV` of the checkout on sys.path, taking turns through the pipe ends ``go`` (read)
    and ``give`` (write); write the step seconds into ``times_path``."""
    from lowrank.training import loop
    from lowrank_cli.main import main

    plain_lr, plain_report = loop.lr_factor, loop.report
    steps: list[float] = []
    state = {"step": None, "began": 0.0}

    def take_turn() -> None:
        if os.read(go, 1) != TURN:
            raise SystemExit("lockstep: the other process ended early")

    def lr_factor(step: int, total: int, warmup: int) -> float:
        if state["step"] != step:  # once per step: the step's first parameter group
            if state["step"] is None:
                os.write(ready, b"r")
            state["step"] = step
            take_turn()
            state["began"] = time.perf_counter()
        return plain_lr(step, total, warmup)

    def report(progress, task, done, total, info=""):
        if task == "train":
            steps.append(time.perf_counter() - state["began"])
            os.write(give, TURN)
            if done == total and leader:  # the other's last step runs alone too
                take_turn()
        return plain_report(progress, task, done, total, info)

    loop.lr_factor, loop.report = lr_factor, report
    sys.argv = ["lowrank", *argv]
    try:
        main()
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    finally:
        Path(times_path).write_text(json.dumps(steps))


def _fail(processes: dict[str, subprocess.Popen], out: Path, index: int, side: str) -> None:
    for process in processes.values():
        process.kill()
    raise SystemExit(f"{side} failed: see {out / f'{index}-{side}.log'}")


def _wait_until_ready(ready_read: int, processes: dict[str, subprocess.Popen], out: Path, index: int) -> None:
    """Return once every process has reached step 0; stop all of them if one ends before that."""
    ready = 0
    while ready < len(processes):
        if select.select([ready_read], [], [], 1.0)[0]:
            signals = os.read(ready_read, len(processes))
            ready += len(signals)
            if signals:
                continue
            for process in processes.values():  # end of file: every process has ended
                process.wait()
        for side, process in processes.items():
            if process.poll() is not None:
                _fail(processes, out, index, side)


def _pair_run(roots: dict[str, Path], out: Path, index: int, leader: str, args: list[str]) -> dict[str, dict]:
    """One lockstep run of the two sides; returns per side its step seconds and tokens."""
    go = {side: os.pipe() for side in roots}
    ready_read, ready_write = os.pipe()
    other = dict(zip(roots, reversed(list(roots))))
    processes = {}
    for side, root in roots.items():
        pkg = out / f"pkg-{side}"  # an older checkout's cli/ importable as lowrank_cli (newer ones hold lowrank_cli/)
        if (root / "cli").is_dir() and not (pkg / "lowrank_cli").exists():
            pkg.mkdir(parents=True, exist_ok=True)
            (pkg / "lowrank_cli").symlink_to(root / "cli")
        fds = (go[side][0], go[other[side]][1], ready_write)
        env = {**os.environ, "PYTHONPATH": f"{root}:{pkg}"}
        command = [sys.executable, "-P", __file__, "--child", *map(str, fds), str(int(side == leader)),
                   str(out / f"times-{index}-{side}.json"), "--", "train", *args,
                   "--out", str(out / f"run-{index}-{side}"), "--overwrite", "--quiet"]
        with open(out / f"{index}-{side}.log", "w") as log:
            processes[side] = subprocess.Popen(command, env=env, pass_fds=fds, stdout=log, stderr=subprocess.STDOUT)
    for read_end, write_end in go.values():
        os.close(read_end)
    os.close(ready_write)
    _wait_until_ready(ready_read, processes, out, index)
    os.write(go[leader][1], TURN)
    for end in [ready_read] + [write_end for _, write_end in go.values()]:
        os.close(end)
    results = {}
    for side, process in processes.items():
        if process.wait() != 0:
            _fail(processes, out, index, side)
        metrics = json.loads((out / f"run-{index}-{side}" / "metrics.json").read_text())
        seconds = json.loads((out / f"times-{index}-{side}.json").read_text())
        tokens = round(metrics["tokens_per_second"] * metrics["train_seconds"])
        results[side] = {"seconds": seconds, "tokens": tokens, "accuracy": metrics["final"].get("accuracy")}
    return results


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        go, give, ready, leader, times_path, _, *rest = argv[1:]  # ... TIMES -- train ARGS
        return child(int(go), int(give), int(ready), leader == "1", times_path, rest)
    split = argv.index("--")
    head, args = argv[:split], argv[split + 1:]
    runs = int(head[head.index("--runs") + 1]) if "--runs" in head else 5
    before, after, out = (Path(p).resolve() for p in head[:3])
    out.mkdir(parents=True, exist_ok=True)
    roots = {"before": before, "after": after}
    totals = {side: [0.0, 0] for side in roots}
    ratios = []
    print(f"{'run':>3} {'leader':>6} {'before s':>9} {'after s':>9} {'before tok/s':>12} {'after tok/s':>11} "
          f"{'after/before':>12}  accuracy before / after")
    for index in range(runs):
        leader = "before" if index % 2 == 0 else "after"
        result = _pair_run(roots, out, index, leader, args)
        rate = {}
        for side, r in result.items():
            totals[side][0] += sum(r["seconds"])
            totals[side][1] += r["tokens"]
            rate[side] = r["tokens"] / sum(r["seconds"])
        ratios.append(rate["after"] / rate["before"])
        print(f"{index:>3} {leader:>6} {sum(result['before']['seconds']):>9.2f} {sum(result['after']['seconds']):>9.2f}"
              f" {rate['before']:>12,.0f} {rate['after']:>11,.0f} {ratios[-1]:>12.4f}  "
              f"{result['before']['accuracy']} / {result['after']['accuracy']}", flush=True)
        (out / "lockstep.json").write_text(json.dumps({"runs": index + 1, "ratios": ratios, "totals": totals}))
    on_totals = (totals["after"][1] / totals["after"][0]) / (totals["before"][1] / totals["before"][0])
    print(f"all {runs} runs: after/before {on_totals:.4f} on the totals, median run {statistics.median(ratios):.4f}, "
          f"range {min(ratios):.4f}-{max(ratios):.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
