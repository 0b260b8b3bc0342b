"""``lowrank analyze --nproc 2``: two gloo processes on the CPU write the very bytes one process writes, and a bad
module met by rank 1 ends the run with one ``Error:`` line, no traceback and no output, never a hang.

The pairs are written with safetensors directly (no transformers or peft to import), and the three two-process runs
start together, so the file's time is about that of one (mostly torch imports).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lowrank.analysis.config import AnalyzeConfig
from lowrank.analysis.run import analyze, module_generator
from lowrank.analysis.sharding import shares

SHAPES = {"self_attn.q_proj": (32, 32), "self_attn.v_proj": (16, 32), "mlp.up_proj": (48, 32), "mlp.down_proj": (32, 48)}
LAYERS = 3
UNCHANGED = ("model.layers.1.mlp.up_proj", "model.layers.2.self_attn.v_proj")  # tuned equals base there
ADAPTED = ("q_proj", "v_proj", "down_proj")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """``base/`` and ``tuned/`` (a full fine-tune: low-rank change plus noise, two modules left unchanged) of a
    3-layer Llama-shaped model, and ``adapter/``, a peft LoRA (r=4) of q, v and down projections."""
    folder = tmp_path_factory.mktemp("pairs")
    generator = torch.Generator().manual_seed(0)
    base, tuned, adapter = {}, {}, {}
    for layer in range(LAYERS):
        for module, (out, inp) in SHAPES.items():
            name = f"model.layers.{layer}.{module}"
            w0 = torch.randn(out, inp, generator=generator) / 8
            change = torch.randn(out, 3, generator=generator) @ torch.randn(3, inp, generator=generator) / 20
            base[f"{name}.weight"] = w0
            tuned[f"{name}.weight"] = w0 if name in UNCHANGED else w0 + change + torch.randn(
                out, inp, generator=generator) / 200
            if module.split(".")[1] in ADAPTED:
                prefix = f"base_model.model.{name}"
                adapter[f"{prefix}.lora_A.weight"] = torch.randn(4, inp, generator=generator) / 4
                adapter[f"{prefix}.lora_B.weight"] = torch.randn(out, 4, generator=generator) / 4
    for side, tensors in (("base", base), ("tuned", tuned)):
        (folder / side).mkdir()
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / side / "model.safetensors")
    (folder / "adapter").mkdir()
    save_file(adapter, folder / "adapter" / "adapter_model.safetensors")
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": list(ADAPTED)}))
    return folder


@dataclass
class Run:
    """One ``lowrank analyze ... --nproc 2`` in its own folder, stdout and stderr kept in files."""

    folder: Path
    process: subprocess.Popen

    def result(self) -> tuple[int, str, str]:
        """Exit status, stdout and stderr, once it has ended (killed after 120 s)."""
        try:
            code = self.process.wait(timeout=120)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return code, (self.folder / "stdout").read_text(), (self.folder / "stderr").read_text()


@pytest.fixture(scope="module")
def runs(pairs, tmp_path_factory) -> dict[str, Run]:
    """The file's three two-process runs, started together: each spends most of its time importing torch, on one
    core at a time, so side by side they take little longer than one. 'full': the full pair to a JSON file;
    'against': the adapter against the full fine-tune, JSON on stdout; 'bad': a NaN in a module of rank 1."""
    names = [f"model.layers.{layer}.{module}" for layer in range(LAYERS) for module in SHAPES]
    tensors = load_file(pairs / "tuned" / "model.safetensors")
    tensors[f"{shares(names, {}, 2)[1][0]}.weight"][0, 0] = float("nan")
    bad = tmp_path_factory.mktemp("bad-pair")
    save_file(tensors, bad / "model.safetensors")
    base = ("--base", str(pairs / "base"), "--device", "cpu")
    commands = {"full": (str(pairs / "tuned"), *base, "--json", "out.json"),
                "against": (str(pairs / "adapter"), *base, "--against", str(pairs / "tuned"), "--json", "-"),
                "bad": (str(bad), *base, "--json", "out.json")}
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on the CPU, as in CI
    started = {}
    for label, args in commands.items():
        folder = tmp_path_factory.mktemp(label)
        with (folder / "stdout").open("w") as out, (folder / "stderr").open("w") as err:
            started[label] = Run(folder, subprocess.Popen(
                [sys.executable, "-m", "lowrank_cli", "analyze", *args, "--nproc", "2"], cwd=folder, env=env,
                stdout=out, stderr=err, text=True))
    yield started
    for run in started.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def _one_process(invoke, *args: str) -> str:
    """The JSON one process writes to stdout, with the threads of one of two workers (as --nproc sets them: the
    BLAS threads can change the last bit of a float)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", max(1, (os.cpu_count() or 1) // 2))))
    try:
        result = invoke("analyze", *args, "--device", "cpu", "--json", "-")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_full_pair_on_two_processes_writes_the_single_process_bytes(pairs, runs, invoke):
    expected = _one_process(invoke, str(pairs / "tuned"), "--base", str(pairs / "base"))
    code, stdout, stderr = runs["full"].result()
    assert code == 0, stderr
    assert (runs["full"].folder / "out.json").read_text() == expected
    assert stdout == "" and stderr.count("wrote") == 1  # only rank 0 writes and speaks
    report = json.loads(expected)
    assert len(report["modules"]) == LAYERS * len(SHAPES) - 2 and report["unchanged"] == list(UNCHANGED)
    assert all(m["amplification"] is not None for m in report["modules"])  # the seeded random baselines ran


def test_adapter_against_full_on_two_processes_writes_the_single_process_bytes(pairs, runs, invoke):
    expected = _one_process(invoke, str(pairs / "adapter"), "--base", str(pairs / "base"),
                            "--against", str(pairs / "tuned"))
    code, stdout, stderr = runs["against"].result()
    assert code == 0, stderr
    assert stdout == expected  # --json -: the JSON alone, once
    report = json.loads(expected)
    assert len(report["modules"]) == LAYERS * len(ADAPTED)
    assert len(report["against_modules"]) == len(report["comparisons"]) == LAYERS * len(ADAPTED) - 1
    assert report["unchanged"] == [UNCHANGED[1]]


def test_a_bad_module_on_rank_1_fails_the_run_once(runs):
    code, stdout, stderr = runs["bad"].result()
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "NaN" in lines[0], stderr
    assert "Traceback" not in stderr and stdout == "" and not (runs["bad"].folder / "out.json").exists()


def test_shares_keep_a_partner_with_its_modules_and_cover_every_module():
    names = ["a", "b", "c", "d", "e"]
    split = shares(names, {"a": "x", "d": "x", "b": "y"}, 2)
    assert split == [["a", "c", "d", "e"], ["b"]]
    assert sorted(sum(shares(names, {}, 3), [])) == names and shares(names, {}, 1) == [names]


def test_a_module_s_random_draws_do_not_depend_on_the_modules_before_it(pairs):
    """Each module's generator is seeded by (seed, role, name), so analyzing a subset (as a rank does) gives the
    same numbers as the whole run."""
    config = AnalyzeConfig(str(pairs / "tuned"), base=str(pairs / "base"))
    whole = {m.name: m for m in analyze(config).modules}
    part = analyze(AnalyzeConfig(str(pairs / "tuned"), base=str(pairs / "base"), modules=r"layers\.2\.mlp"))
    assert part.modules and all(m == whole[m.name] for m in part.modules)
    draws = [module_generator(0, role, name).seed() for role in ("checkpoint", "against") for name in ("a", "b")]
    assert len(set(draws)) == 4
