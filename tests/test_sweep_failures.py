"""`lowrank sweep --jobs N` when a run dies: one `Error:` line naming the run and its log, no traceback, and the
runs that finished are reused by the next sweep (a real sweep of a tiny BERT on Reuters R8 text, in a subprocess
so that one of its run processes can be killed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time


def sweep_command(model, data, out, *extra):
    return [sys.executable, "-m", "lowrank_cli", "sweep", "--model", str(model), "--data", str(data), "--out",
            str(out), "--seeds", "0", "--no-full", "--batch-size", "8", "--max-length", "32", "--eval-samples", "16",
            "--no-signals", "--quiet", "--device", "cpu", *extra]


def wait_for_pid(log, timeout=120.0) -> int:
    """The process id a run's log names in its first line, once the log exists."""
    began = time.time()
    while time.time() - began < timeout:
        if log.is_file():
            found = re.search(r"\(pid (\d+)\)", log.read_text())
            if found:
                return int(found.group(1))
        time.sleep(0.1)
    raise AssertionError(f"{log} never named its process")


def test_a_run_killed_inside_a_sweep_gives_one_error_line_and_the_finished_runs_are_reused(
        tiny_bert_folder, r8_csv, tmp_path):
    out = tmp_path / "sweep"
    # r = 1 trains 2 steps and ends; r = 2 trains long enough to be killed while it runs.
    first = subprocess.run(sweep_command(tiny_bert_folder, r8_csv, out, "--ranks", "1", "--steps", "2"),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    finished = (out / "lora-r1-s0" / "metrics.json").stat().st_mtime_ns
    sweep = subprocess.Popen(sweep_command(tiny_bert_folder, r8_csv, out, "--ranks", "1,2", "--steps", "2",
                                           "--jobs", "2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.kill(wait_for_pid(out / "logs" / "lora-r2-s0.log"), signal.SIGKILL)
    stdout, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: run lora-r2-s0 was killed (signal 9)"), stderr
    assert str(out / "logs" / "lora-r2-s0.log") in lines[0] and "Traceback" not in stdout + stderr

    again = subprocess.run(sweep_command(tiny_bert_folder, r8_csv, out, "--ranks", "1,2", "--steps", "2",
                                         "--jobs", "2"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (out / "lora-r1-s0" / "metrics.json").stat().st_mtime_ns == finished  # reused, not retrained
    assert (out / "lora-r2-s0" / "metrics.json").is_file() and (out / "sweep.json").is_file()


def test_a_run_that_fails_in_its_process_is_named_with_the_reason(invoke, tiny_bert_folder, r8_csv, tmp_path):
    out = tmp_path / "sweep"
    assert subprocess.run(sweep_command(tiny_bert_folder, r8_csv, out, "--ranks", "1", "--steps", "2"),
                          capture_output=True, timeout=300).returncode == 0
    failed = subprocess.run(sweep_command(tiny_bert_folder, r8_csv, out, "--ranks", "1", "--steps", "3",
                                          "--jobs", "2"), capture_output=True, text=True, timeout=300)
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode != 0 and len(lines) == 1, failed.stderr
    assert lines[0].startswith("Error: run lora-r1-s0 failed (exit status 1)")
    assert "other settings (max_steps)" in lines[0] and str(out / "logs" / "lora-r1-s0.log") in lines[0]
