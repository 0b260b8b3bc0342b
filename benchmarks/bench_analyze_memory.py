"""Benchmark: peak memory of ``lowrank analyze`` on a full-model pair far larger than the memory it may use.

Writes a base and a fine-tuned model of 8 decoder layers with TinyLlama-1.1B's shapes (hidden 2048, MLP 5632,
32 query heads, 4 key/value heads: 44M parameters per layer, 352M per model) in bf16, each as 4 shards with a
model.safetensors.index.json: 1.41 GB on disk for the pair. The tuned weights are ``W0 + dW`` with a planted
rank-16 part plus dense noise (a high-rank delta, like full fine-tuning's). Then runs

    /usr/bin/time -v lowrank analyze TUNED --base BASE --json FILE [--no-base-metrics]

in a subprocess and reads "Maximum resident set size". Target: under 1 GB.

    python benchmarks/bench_analyze_memory.py [--folder /tmp/lowrank_bench_memory] [--no-base-metrics]

On a GPU machine, a Llama-2-7B-shaped pair (8 layers of 4096/11008, 6.5 GB in bf16), SVDs on the GPU:

    python benchmarks/bench_analyze_memory.py --model llama7b --layers 8 --device cuda --no-base-metrics
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

LAYERS_PER_SHARD = 2
MODELS = {"tinyllama": (2048, 5632, 256), "llama7b": (4096, 11008, 4096)}  # hidden, MLP, key/value width


def shapes(model: str) -> dict[str, tuple[int, int]]:
    """``(out, in)`` of each linear layer of one decoder layer of ``model``."""
    hidden, intermediate, kv = MODELS[model]
    return {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden),
            "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (intermediate, hidden),
            "mlp.up_proj": (intermediate, hidden), "mlp.down_proj": (hidden, intermediate)}


def _layer(model: str, layer: int, generator: torch.Generator) -> tuple[dict, dict]:
    base, tuned = {}, {}
    hidden = MODELS[model][0]
    for module, (out_features, in_features) in shapes(model).items():
        key = f"model.layers.{layer}.{module}.weight"
        w0 = torch.randn(out_features, in_features, generator=generator) * 0.02
        planted = torch.randn(out_features, 16, generator=generator) @ torch.randn(16, in_features,
                                                                                   generator=generator)
        delta = 2e-4 * planted + 1e-3 * torch.randn(out_features, in_features, generator=generator)
        base[key], tuned[key] = w0.to(torch.bfloat16), (w0 + delta).to(torch.bfloat16)
    for norm in ("input_layernorm", "post_attention_layernorm"):
        base[f"model.layers.{layer}.{norm}.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
        tuned[f"model.layers.{layer}.{norm}.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    return base, tuned


def write_pair(folder: Path, model: str, layers: int, seed: int = 0) -> int:
    """Write base/ and tuned/ as sharded bf16 safetensors folders; return the bytes written."""
    generator = torch.Generator().manual_seed(seed)
    maps: dict[str, dict[str, str]] = {"base": {}, "tuned": {}}
    shards = -(-layers // LAYERS_PER_SHARD)
    for shard in range(shards):
        parts: dict[str, dict] = {"base": {}, "tuned": {}}
        for layer in range(shard * LAYERS_PER_SHARD, min((shard + 1) * LAYERS_PER_SHARD, layers)):
            base, tuned = _layer(model, layer, generator)
            parts["base"].update(base)
            parts["tuned"].update(tuned)
        name = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        for side, tensors in parts.items():
            (folder / side).mkdir(parents=True, exist_ok=True)
            save_file(tensors, folder / side / name, metadata={"format": "pt"})
            maps[side].update({key: name for key in tensors})
    for side, weight_map in maps.items():
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / side / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def lowrank_command() -> list[str]:
    script = Path(sys.executable).with_name("lowrank")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lowrank_cli.main"]


def measure(folder: Path, base_metrics: bool, modules: str | None, device: str) -> tuple[float, float]:
    """Run the analysis under /usr/bin/time -v; return (peak RSS in MB, wall seconds)."""
    command = ["/usr/bin/time", "-v", *lowrank_command(), "analyze", str(folder / "tuned"), "--base",
               str(folder / "base"), "--json", str(folder / "analysis.json"), "--device", device]
    if not base_metrics:
        command.append("--no-base-metrics")
    if modules is not None:
        command += ["--modules", modules]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"analysis failed ({result.returncode}):\n{result.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return peak_kb / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lowrank_bench_memory"))
    parser.add_argument("--no-base-metrics", action="store_true", help="skip amplification and intruders")
    parser.add_argument("--reuse", action="store_true", help="reuse the pair already in --folder")
    parser.add_argument("--model", choices=sorted(MODELS), default="tinyllama", help="layer shapes (default tinyllama)")
    parser.add_argument("--layers", type=int, default=8, help="decoder layers per model (default 8)")
    parser.add_argument("--device", default="cpu", help="where lowrank analyze runs its SVDs (cpu or cuda)")
    parser.add_argument("--modules", help="passed to lowrank analyze --modules (e.g. 'layers\\.[01]\\.' for 2 layers)")
    args = parser.parse_args()
    if not args.reuse:
        if args.folder.exists():
            shutil.rmtree(args.folder)
        start = time.perf_counter()
        size = write_pair(args.folder, args.model, args.layers)
        print(f"wrote the pair: {size / 1e9:.2f} GB of bf16 safetensors in {time.perf_counter() - start:.0f} s "
              f"to {args.folder}")
    peak, wall = measure(args.folder, not args.no_base_metrics, args.modules, args.device)
    report = json.loads((args.folder / "analysis.json").read_text())
    k90 = sorted(m["energy_rank"]["0.9"] for m in report["modules"])
    options = f" ({args.model} x {args.layers} layers, --device {args.device})" + (
        " --no-base-metrics" if args.no_base_metrics else "") + (f" --modules '{args.modules}'"
                                                                      if args.modules else "")
    print(f"lowrank analyze{options}: {len(report['modules'])} modules, "
          f"peak RSS {peak:.0f} MB, wall {wall:.0f} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"k90 from {k90[0]} to {k90[-1]}")


if __name__ == "__main__":
    main()
