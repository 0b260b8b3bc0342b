"""Fault injection for `lowrank train` (issue 14): kill -9 and SIGTERM / SIGINT at random steps and in the middle
of a checkpoint write, a full disk (ENOSPC) while checkpointing and while writing the results, a NaN loss at a
chosen step, an evaluation that fails, a second run on the same folder, a resume with changed settings (and one
with activation checkpointing turned on, which changes nothing).

Each fault ends with nothing lost: ``--resume`` gives bit for bit the weights of an uninterrupted run (CPU, one
thread), and the output folder is never half-written: it is absent or empty, holds a readable checkpoint that
--resume completes, or holds the complete result. reports/fault_injection.md lists every fault and its message.

Random steps come from ``random.Random(LOWRANK_FAULT_SEED)`` (default 14), so a failure can be replayed.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lowrank.errors import LowrankError
from lowrank.training import checkpointing, faults
from lowrank.training.lock import OutputLock
from lowrank.training.loop import TrainConfig, train

STEPS, SAVE_EVERY = 8, 3
RNG = random.Random(int(os.environ.get("LOWRANK_FAULT_SEED", "14")))
RESULT = {"adapter_config.json", "adapter_model.safetensors", "metrics.json"}
DRIVER = Path(__file__).with_name("fault_driver.py")


LR = 5e-3  # given, as lowrank's default would be: this tiny model ends at chance, and a default rate would back off
#           (lowrank.training.rate_backoff) in the whole run but not in a resumed one


def _config(model, data, out, **changes) -> TrainConfig:
    settings = dict(model=str(model), data=str(data), method="lora", out=out, rank=2, max_steps=STEPS,
                    batch_size=4, max_length=32, dropout=0.1, eval_samples=4, save_every=SAVE_EVERY, seed=5, lr=LR)
    settings.update(changes)
    return TrainConfig(**settings)


def _cli_args(model, data, out) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--rank", "2", "--steps", str(STEPS),
            "--batch-size", "4", "--max-length", "32", "--dropout", "0.1", "--eval-samples", "4",
            "--save-every", str(SAVE_EVERY), "--seed", "5", "--lr", str(LR), "--quiet", "--out", str(out)]


@pytest.fixture(scope="module")
def whole(tiny_bert_folder, r8_csv, tmp_path_factory):
    """The uninterrupted run's adapter tensors (one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("whole") / "run"
    train(_config(tiny_bert_folder, r8_csv, out))
    torch.set_num_threads(threads)
    return load_file(out / "adapter_model.safetensors")


def _state(out: Path) -> dict:
    return torch.load(checkpointing.state_path(out), weights_only=True)


def _assert_in_progress(out: Path, step: int | None = None) -> None:
    """A folder mid-run: only a readable checkpoint (of ``step``), no result file."""
    assert {p.name for p in out.iterdir()} == {"checkpoint"}
    assert {p.name for p in (out / "checkpoint").iterdir()} <= {"state.pt", "state.pt.tmp"}
    state = _state(out)
    assert all(bool(torch.isfinite(t).all()) for t in state["trainable"].values())
    if step is not None:
        assert state["step"] == step


def _resume_matches(model, data, out: Path, whole: dict, **changes) -> dict:
    metrics = train(_config(model, data, out, resume=True, **changes))
    again = load_file(out / "adapter_model.safetensors")
    assert {p.name for p in out.iterdir()} == RESULT
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    return metrics


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_at_a_random_step_checkpoints_and_resumes(one_thread, tiny_bert_folder, r8_csv, tmp_path, whole,
                                                         signum):
    step = RNG.randrange(1, STEPS)
    out = tmp_path / "run"

    def send(value, step):
        if step == sent_at:
            os.kill(os.getpid(), signum)
        return value

    sent_at = step
    with faults.injected("step", send), pytest.raises(LowrankError) as caught:
        train(_config(tiny_bert_folder, r8_csv, out))
    name = signal.Signals(signum).name
    assert caught.value.exit_code == 128 + signum
    assert f"stopped by {name} at step {step + 1} of {STEPS}" in str(caught.value) and "--resume" in str(caught.value)
    _assert_in_progress(out, step + 1)
    _resume_matches(tiny_bert_folder, r8_csv, out, whole)


def test_exception_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(one_thread, tiny_bert_folder, r8_csv,
                                                                              tmp_path, whole):
    out = tmp_path / "run"

    def crash(value, step, written):
        if step == 2 * SAVE_EVERY:
            raise RuntimeError("injected crash mid-write")
        return value

    with faults.injected("checkpoint_write", crash), pytest.raises(RuntimeError, match="mid-write"):
        train(_config(tiny_bert_folder, r8_csv, out))
    _assert_in_progress(out, SAVE_EVERY)
    assert not (out / "checkpoint" / "state.pt.tmp").exists()
    _resume_matches(tiny_bert_folder, r8_csv, out, whole)


def _enospc(at_step: int):
    def full(value=None, step=None, written=None):
        if step == at_step:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return value

    return full


def test_full_disk_while_checkpointing(one_thread, tiny_bert_folder, r8_csv, tmp_path, whole):
    out = tmp_path / "run"
    with faults.injected("checkpoint_write", _enospc(2 * SAVE_EVERY)), pytest.raises(LowrankError) as caught:
        train(_config(tiny_bert_folder, r8_csv, out))
    assert (f"cannot write the checkpoint of step {2 * SAVE_EVERY}" in str(caught.value)
            and "the disk is full (ENOSPC)" in str(caught.value)
            and f"the previous checkpoint (step {SAVE_EVERY}) is intact" in str(caught.value))
    _assert_in_progress(out, SAVE_EVERY)
    assert not (out / "checkpoint" / "state.pt.tmp").exists()
    _resume_matches(tiny_bert_folder, r8_csv, out, whole)


def test_full_disk_while_writing_the_results_keeps_the_trained_weights(one_thread, tiny_bert_folder, r8_csv,
                                                                       tmp_path, whole):
    out = tmp_path / "run"
    with faults.injected("save_result", _enospc(STEPS)), pytest.raises(LowrankError) as caught:
        train(_config(tiny_bert_folder, r8_csv, out))
    assert "cannot write the results" in str(caught.value) and "the trained weights are kept" in str(caught.value)
    _assert_in_progress(out, STEPS)
    assert _state(out)["final"]
    _resume_matches(tiny_bert_folder, r8_csv, out, whole)


def test_nan_loss_at_a_chosen_step_stops_and_keeps_the_last_good_checkpoint(one_thread, tiny_bert_folder, r8_csv,
                                                                            tmp_path):
    out, bad = tmp_path / "run", 2 * SAVE_EVERY + 1

    def poison(loss, step):
        return loss * float("nan") if step == bad else loss

    with faults.injected("loss", poison):
        with pytest.raises(LowrankError) as caught:
            train(_config(tiny_bert_folder, r8_csv, out))
        assert (f"training diverged at step {bad} (loss nan)" in str(caught.value)
                and f"The last good checkpoint (step {2 * SAVE_EVERY}) is kept" in str(caught.value))
        _assert_in_progress(out, 2 * SAVE_EVERY)
        metrics = train(_config(tiny_bert_folder, r8_csv, out, resume=True, nonfinite="skip"))
    assert [h["step"] for h in metrics["history"] if "skipped" in h] == [bad]
    assert {p.name for p in out.iterdir()} == RESULT
    assert all(bool(torch.isfinite(t).all()) for t in load_file(out / "adapter_model.safetensors").values())


def test_nan_without_a_checkpoint_leaves_no_folder(one_thread, tiny_bert_folder, r8_csv, tmp_path):
    out = tmp_path / "run"
    with faults.injected("loss", lambda loss, step: loss * float("inf")), pytest.raises(LowrankError) as caught:
        train(_config(tiny_bert_folder, r8_csv, out, save_every=None))
    assert "training diverged at step 1" in str(caught.value) and "No checkpoint was written" in str(caught.value)
    assert not out.exists()


def test_failing_final_evaluation_keeps_the_trained_weights(one_thread, tiny_bert_folder, r8_csv, tmp_path, whole):
    out = tmp_path / "run"

    def out_of_memory(value, step):
        if step == STEPS:
            raise RuntimeError("CUDA out of memory (injected)")
        return value

    with faults.injected("evaluate", out_of_memory), pytest.raises(LowrankError) as caught:
        train(_config(tiny_bert_folder, r8_csv, out, save_every=None))
    assert (f"evaluation at step {STEPS} failed (RuntimeError: CUDA out of memory" in str(caught.value)
            and "the trained weights are kept" in str(caught.value))
    _assert_in_progress(out, STEPS)
    metrics = _resume_matches(tiny_bert_folder, r8_csv, out, whole)
    assert metrics["history"][-1]["step"] == STEPS and "accuracy" in metrics["final"]


def test_second_run_on_a_locked_folder_is_refused(invoke, tiny_bert_folder, r8_csv, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint").mkdir()
    with OutputLock(out):  # another run's lock (a second open file description: a real flock conflict)
        for extra in ((), ("--overwrite",), ("--resume",)):
            result = invoke(*_cli_args(tiny_bert_folder, r8_csv, out), *extra)
            assert result.exit_code == 2 and result.stderr.count("\n") == 1
            assert result.stderr.startswith(f"Error: --out {out} is in use by another lowrank train run")
    assert {p.name for p in out.iterdir()} == {"checkpoint"}


def test_resume_with_changed_settings_names_them(invoke, one_thread, tiny_bert_folder, r8_csv, tmp_path):
    out = tmp_path / "run"
    with faults.injected("step", lambda value, step: os.kill(os.getpid(), signal.SIGTERM) if step == 4 else value):
        result = invoke(*_cli_args(tiny_bert_folder, r8_csv, out))
    assert result.exit_code == 143 and result.stderr.startswith("Error: stopped by SIGTERM at step 5")
    before = _state(out)["step"]
    result = invoke(*_cli_args(tiny_bert_folder, r8_csv, out), "--resume", "--lr", "0.01", "--seed", "6")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"written with other settings: lr {LR} (now 0.01); seed 5 (now 6)" in result.stderr
    assert _state(out)["step"] == before
    result = invoke(*_cli_args(tiny_bert_folder, r8_csv, out), "--resume", "--save-every", "2")
    assert result.exit_code == 0, result.output  # how often it checkpoints does not change the result


def test_resume_with_activation_checkpointing_turned_on(one_thread, tiny_bert_folder, r8_csv, tmp_path, whole):
    out = tmp_path / "run"
    with faults.injected("step", lambda value, step: os.kill(os.getpid(), signal.SIGTERM) if step == 4 else value), \
            pytest.raises(LowrankError, match="stopped by SIGTERM at step 5"):
        train(_config(tiny_bert_folder, r8_csv, out))
    metrics = _resume_matches(tiny_bert_folder, r8_csv, out, whole, checkpointing=True)  # it recomputes the same
    assert metrics["config"]["checkpointing"]


def _child(args: list[str], fault: tuple[str, int, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(DRIVER), fault[0], str(fault[1]), fault[2], *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_kill_9_at_a_random_step(one_thread, tiny_bert_folder, r8_csv, tmp_path, whole):
    step, out = RNG.randrange(SAVE_EVERY, STEPS), tmp_path / "run"
    result = _child(_cli_args(tiny_bert_folder, r8_csv, out), ("step", step, "kill"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    _assert_in_progress(out, step - step % SAVE_EVERY)
    _resume_matches(tiny_bert_folder, r8_csv, out, whole)


def test_kill_9_in_the_middle_of_a_checkpoint_write(one_thread, tiny_bert_folder, r8_csv, tmp_path, whole):
    out = tmp_path / "run"
    result = _child(_cli_args(tiny_bert_folder, r8_csv, out), ("checkpoint_write", 2 * SAVE_EVERY, "kill"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    partial = out / "checkpoint" / "state.pt.tmp"
    assert partial.is_file() and partial.stat().st_size > 0  # half-written; state.pt is the step-3 one
    _assert_in_progress(out, SAVE_EVERY)
    _resume_matches(tiny_bert_folder, r8_csv, out, whole)


def test_sigterm_from_outside_while_training(one_thread, tiny_bert_folder, r8_csv, tmp_path, whole):
    """A real scheduler's SIGTERM, sent by another process as soon as the first checkpoint appears."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lowrank_cli.main", *_cli_args(tiny_bert_folder, r8_csv, out),
               "--save-every", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not checkpointing.state_path(out).exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=240)[1]
    if process.returncode == 0:  # the run ended before the signal arrived: nothing to resume, nothing lost
        assert {p.name for p in out.iterdir()} == RESULT
        return
    assert process.returncode == 143 and stderr.startswith("Error: stopped by SIGTERM at step"), stderr
    assert len(stderr.strip().splitlines()) == 1
    _assert_in_progress(out)
    result = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == RESULT
