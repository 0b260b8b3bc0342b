"""GPU benchmark and reproduction (c): Fastfood SAID on MiniLM-L6 (D ~ 22.7M) against plain fine-tuning, and the
SAID/DID d90 curves on Reuters R8.

Part 1 (``step``): one optimizer step on the same batch (32 x max_length tokens, bf16 autocast), median of
``--reps`` after warm-up: full fine-tuning (AdamW on all parameters) vs a Fastfood SAID subspace (Adam on
theta_d and the per-tensor scales), time and peak memory; plus the projection alone: its buffers and the peak of
its forward + backward, in units of D float32 numbers.
Part 2 (``curve``): d90 search for DID and SAID (every parameter projected, the new classifier head included,
unless ``--direct`` names parameters to train directly). The baseline is full fine-tuning with the same number of
steps (measured once, in the first mode, and reused as the second mode's baseline value).

Writes ``$OUT/intrinsic_gpu_step.json``, ``$OUT/intrinsic_r8_<mode>.json`` (lowrank.intrinsic/1) after each part,
and ``$OUT/intrinsic_r8.png``. Run from the repository root, e.g.

    PYTHONPATH=. python3 benchmarks/bench_intrinsic_gpu.py --model <minilm folder> --data <r8 file or key> --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lowrank.intrinsic.problems import text_problem  # noqa: E402
from lowrank.intrinsic.search import SearchConfig, measure_intrinsic_dimension, parse_dims  # noqa: E402
from lowrank.intrinsic.subspace import SubspaceConfig, SubspaceModel  # noqa: E402
from lowrank.intrinsic.training import RunBudget  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int:
    return torch.cuda.max_memory_allocated() if device == "cuda" else 0


def _timed_steps(module, optimizer, batch: dict, labels: torch.Tensor, reps: int, device: str) -> tuple[float, float]:
    """Median seconds per step and peak GiB allocated (CUDA only), after 3 warm-up steps."""
    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = module(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), _peak(device) / 2**30


def bench_step(problem, d: int, batch_size: int, reps: int, device: str) -> dict:
    index = torch.arange(batch_size)
    batch = {k: v[index].to(device) for k, v in problem.task.train_inputs.items()}
    labels = problem.task.train_labels[index].to(device)
    model = problem.build_model(0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    full_s, full_gib = _timed_steps(model, optimizer, batch, labels, reps, device)
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    model = problem.build_model(0).to(device)
    wrapped = SubspaceModel(model, SubspaceConfig(d=d, projection="fastfood", said=True))
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=1e-2)
    said_s, said_gib = _timed_steps(wrapped, optimizer, batch, labels, reps, device)
    projection = wrapped.projection
    D = wrapped.D
    buffers = sum(b.numel() * b.element_size() for b in projection.buffers())
    _sync(device)
    base = torch.cuda.memory_allocated() if device == "cuda" else 0
    theta = torch.randn(projection.d, device=device, requires_grad=True)
    projection(theta).sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    transient = _peak(device) - base
    return {"D": D, "L": projection.L, "d": d, "batch": [batch_size, int(batch["input_ids"].shape[1])],
            "full_ft_step_s": full_s, "said_step_s": said_s, "ratio": said_s / full_s,
            "full_ft_peak_gib": full_gib, "said_peak_gib": said_gib,
            "projection_buffers_in_D_floats": buffers / (4 * D),
            "projection_fwd_bwd_peak_in_D_floats": transient / (4 * D),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


def run_curves(problem, args, out: Path) -> None:
    from lowrank.render.intrinsic import plot

    results, baseline = [], args.baseline
    for mode in args.modes.split(","):
        bf16 = args.device == "cuda"
        train = RunBudget(steps=args.steps, lr=args.lr, batch_size=args.batch_size, device=args.device,
                            autocast_bf16=bf16)
        direct = RunBudget(steps=args.steps, lr=args.baseline_lr, batch_size=args.batch_size, device=args.device,
                             autocast_bf16=bf16)
        config = SearchConfig(dims=parse_dims(args.dims), train=train, baseline_train=direct,
                              projection="fastfood", said=mode == "said", direct=tuple(args.direct),
                              seeds=args.seeds, global_baseline=baseline, adaptive=False, model_name=args.model,
                              data_name=args.data,
                              extra={"baseline_source": "full fine-tuning, same steps" if baseline is None else
                                     "full fine-tuning accuracy measured in an earlier run (same steps)"})
        result = measure_intrinsic_dimension(problem.build_model, problem.task, config, _printer)
        baseline = result.baseline
        results.append(result)
        (out / f"intrinsic_r8_{mode}.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
        print(f"{mode}: baseline {result.baseline:.4f} d90 {result.d90} curve "
              + ", ".join(f"{p.d}:{p.mean:.4f}" for p in result.curve), flush=True)
    (out / "intrinsic_r8.png").write_bytes(plot(results))


def _printer(event) -> None:
    if event.task == "intrinsic-dim":
        print(f"[{event.done}/{event.total}] {event.info}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6", help="registry key or local Hugging Face folder")
    parser.add_argument("--data", default="reuters-r8", help="registry key or local labelled .csv/.jsonl")
    parser.add_argument("--out", default=os.environ.get("OUT", "reports"))
    parser.add_argument("--parts", default="step,curve")
    parser.add_argument("--d", type=int, default=1000, help="subspace dimension of the timed SAID step")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--dims", default="200,500,1000,2000,5000,10000", help="SAID needs d > number of tensors")
    parser.add_argument("--modes", default="did,said")
    parser.add_argument("--direct", action="append", default=[], help="glob of parameters trained directly")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--baseline-lr", type=float, default=5e-5)
    parser.add_argument("--baseline", type=float, help="full fine-tuning accuracy measured earlier (skips measuring it)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--limit", type=int, default=0, help="keep the first N train and test examples (smoke test)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problem = text_problem(args.model, args.data, max_length=args.max_length, limit=args.limit)
    if "step" in args.parts:
        row = bench_step(problem, args.d, args.batch_size, args.reps, args.device)
        (out / "intrinsic_gpu_step.json").write_text(json.dumps(row, indent=1) + "\n")
        print(json.dumps(row), flush=True)
    if "curve" in args.parts:
        run_curves(problem, args, out)


if __name__ == "__main__":
    main()
