"""Benchmark: ``lowrank analyze`` of a peft adapter shaped like Llama-2-7B's, end to end through the CLI.

The adapter has r=16 on q, k, v, o, gate, up and down of 32 layers (224 modules, 40M parameters, fp32), random
weights under peft's key names, written once to a folder. The analysis runs as a subprocess (``lowrank analyze
ADAPTER --json FILE``), interpreter start and imports included; the target is under 10 s on 2 CPU cores.

Beside it: the dense route (form ``s B A`` and run ``svdvals``) measured on one 4096 x 4096 module and
extrapolated to all 224 by the ``m n min(m, n)`` cost of an SVD.

    python benchmarks/bench_analyze_llama7b.py [--folder /tmp/lowrank_bench_llama7b] [--skip-dense]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, INTERMEDIATE, LAYERS, RANK, ALPHA = 4096, 11008, 32, 16, 32
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
          "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (INTERMEDIATE, HIDDEN), "mlp.up_proj": (INTERMEDIATE, HIDDEN),
          "mlp.down_proj": (HIDDEN, INTERMEDIATE)}


def write_adapter(folder: Path, seed: int = 0) -> int:
    """Write adapter_config.json + adapter_model.safetensors with peft's names; return the parameter count."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(LAYERS):
        for module, (out_features, in_features) in SHAPES.items():
            stem = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{stem}.lora_A.weight"] = torch.randn(RANK, in_features, generator=generator) / math.sqrt(
                in_features)
            tensors[f"{stem}.lora_B.weight"] = torch.randn(out_features, RANK, generator=generator) * 1e-2
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "llama-2-7b-shaped",
              "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
              "target_modules": [m.split(".")[-1] for m in SHAPES], "rank_pattern": {}, "alpha_pattern": {},
              "use_rslora": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return sum(t.numel() for t in tensors.values())


def lowrank_command() -> list[str]:
    """The installed console script beside this interpreter (``lowrank``), else ``python -m lowrank_cli.main``."""
    script = Path(sys.executable).with_name("lowrank")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lowrank_cli.main"]


def run_cli(folder: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*lowrank_command(), "analyze", str(folder), "--json", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def dense_seconds() -> float:
    """Time the dense route on one 4096 x 4096 module: form s B A, then svdvals (float32)."""
    generator = torch.Generator().manual_seed(1)
    b, a = torch.randn(HIDDEN, RANK, generator=generator), torch.randn(RANK, HIDDEN, generator=generator)
    start = time.perf_counter()
    torch.linalg.svdvals((ALPHA / RANK) * b @ a)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lowrank_bench_llama7b"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-dense", action="store_true", help="do not time the 4096 x 4096 dense SVD (~45 s)")
    args = parser.parse_args()
    if args.folder.exists():
        shutil.rmtree(args.folder)
    start = time.perf_counter()
    params = write_adapter(args.folder / "adapter")
    print(f"wrote {params / 1e6:.1f}M adapter parameters ({LAYERS * len(SHAPES)} modules) in "
          f"{time.perf_counter() - start:.1f} s to {args.folder / 'adapter'}")
    out = args.folder / "analysis.json"
    times = [run_cli(args.folder / "adapter", out) for _ in range(args.repeats)]
    report = json.loads(out.read_text())
    assert len(report["modules"]) == LAYERS * len(SHAPES)
    assert all(len(m["singular_values"]) == RANK for m in report["modules"])
    print(f"lowrank analyze (CLI, subprocess, JSON out): {', '.join(f'{t:.2f}' for t in times)} s "
          f"(best {min(times):.2f} s) for {len(report['modules'])} modules; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (other processes share the machine)")
    if not args.skip_dense:
        one = dense_seconds()
        cost = sum(out_f * in_f * min(out_f, in_f) for out_f, in_f in SHAPES.values()) * LAYERS
        total = one * cost / HIDDEN**3
        print(f"dense route: one 4096 x 4096 svdvals took {one:.1f} s; all {LAYERS * len(SHAPES)} modules by "
              f"m n min(m, n) scaling: about {total / 3600:.1f} h ({total / min(times):.0f}x slower)")


if __name__ == "__main__":
    main()
