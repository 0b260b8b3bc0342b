"""One training step of full fine-tuning, peft LoRA and lowrank LoRA on the same model shape, batch and seed, in
one process: median step time, tokens/s, peak memory, the ratios, and the distance to the FLOP floor. Peak memory
is the allocator's peak on CUDA and the process's resident set on the CPU (sampled every 5 ms while the method is
stepped, after freed heap is handed back to the OS), both with the model in memory.

Models are random-init from configs (no download): gpt2-medium (Conv1D), tinyllama (1.1B shape), gpt2-small,
smollm2-135m. Weights in --dtype (bf16 by default, no autocast), fused AdamW for every method (as `lowrank train`
uses it, on the GPU and the CPU), loss = next-token cross-entropy on random ids. LoRA alpha = 2r, no dropout.
Variants: ``lowrank`` keeps float32 factors (its policy), ``lowrank-bf16`` casts them to bf16 (all-linear r=16,
bf16 weights only), ``peft`` is peft 0.21's defaults (float32 adapters).
FLOP floor per token: full 6N, LoRA 4N (no weight gradients), N = weights in linear layers and the LM head, plus
attention 6 * layers * seq * d (causal) for both; floor time = FLOPs / the GEMM rate in --dtype measured here.

  python benchmarks/bench_lora_step.py --shape gpt2-medium --ranks 8,16,64 --targets attention,all-linear
  python benchmarks/bench_lora_step.py --shape tinyllama --ranks 16 --targets all-linear --cuda-graphs
  python benchmarks/bench_lora_step.py --shape smollm2-135m --device cpu --batch 2 --seq 256 --ranks 16 --steps 5 \
      --dtype float32
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import threading
import time

import torch

from lowrank import lora
from lowrank.cpu import release_freed_memory

SHAPES = {
    "gpt2-medium": ("gpt2", dict(n_embd=1024, n_layer=24, n_head=16, n_positions=1024, vocab_size=50257)),
    "gpt2-small": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257)),
    "tinyllama": ("llama", dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                                num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)),
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                   max_position_embeddings=2048, tie_word_embeddings=True)),
}
ATTENTION = {"gpt2": ["attn.c_attn", "attn.c_proj"], "llama": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def build(shape: str, device: str, dtype: torch.dtype, seed: int = 0):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    family, settings = SHAPES[shape]
    config = (GPT2Config if family == "gpt2" else LlamaConfig)(**settings)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.train(), family


def targets(family: str, which: str) -> list[str] | str:
    return "all-linear" if which == "all-linear" else ATTENTION[family]


def adapt(model, family: str, method: str, r: int, which: str):
    """Return the model to train (peft wraps it) with only the method's parameters trainable."""
    if method == "full":
        return model
    if method == "peft":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets(family, which),
                                                lora_dropout=0.0, fan_in_fan_out=family == "gpt2"))
    chosen = lora.Targets(all_linear=True) if which == "all-linear" else lora.Targets(suffixes=tuple(ATTENTION[family]))
    lora.inject(model, lora.LoraConfig(r=r, alpha=2 * r, targets=chosen), torch.Generator().manual_seed(0))
    lora.mark_trainable(model)
    if method == "lowrank-bf16":
        for layer in lora.lora_layers(model).values():
            layer.to(next(layer.base_layer.parameters()).dtype)
    return model


def step_times(model, device: str, batch: int, seq: int, steps: int, vocab: int, compile_model: bool,
               graphs: bool = False):
    """Median seconds of one step (forward, backward, AdamW, zeroing the gradients) after 3 warm-ups, the trainable
    count and the last loss. ``graphs``: the step is captured once in a CUDA graph (capturable fused AdamW,
    gradients zeroed in place) and each timed step is one replay, so the host's launch time drops out of every
    method alike."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True, capturable=graphs)
    if compile_model:
        model.compile()
    ids = torch.randint(0, vocab, (batch, seq), device=device, generator=torch.Generator(device).manual_seed(1))

    def one_step() -> torch.Tensor:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=not graphs)
        return loss.detach()

    if graphs:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            warm = [one_step() for _ in range(3)]
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = one_step()
        run, losses = (lambda: graph.replay() or captured), warm
    else:
        run, losses = one_step, []
    times = []
    for index in range(steps + (0 if graphs else 3)):  # eager: 3 warm-up steps
        _sync(device)
        began = time.perf_counter()
        losses.append(run().clone())
        _sync(device)
        if graphs or index >= 3:
            times.append(time.perf_counter() - began)
    return statistics.median(times), sum(p.numel() for p in params), float(losses[-1])


@contextlib.contextmanager
def peak_memory(device: str):
    """Yield a one-element list that holds, after the block, its peak memory in bytes: CUDA's allocator peak, or on
    the CPU the largest resident set of this process seen by a thread reading /proc/self/statm every 5 ms."""
    peak = [0]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        yield peak
        peak[0] = torch.cuda.max_memory_allocated()
        return
    page, done = os.sysconf("SC_PAGE_SIZE"), threading.Event()

    def sample() -> None:
        with open("/proc/self/statm") as statm:
            while True:
                statm.seek(0)
                peak[0] = max(peak[0], int(statm.read().split()[1]) * page)
                if done.wait(0.005):
                    return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def gemm_rate(device: str, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matrix product (random data), the ceiling the floor is measured against."""
    n = 8192 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    began, reps = time.perf_counter(), 20 if device == "cuda" else 3
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - began)


def floor_flops(model, family: str, batch: int, seq: int) -> tuple[float, float]:
    """(full, LoRA) FLOPs of one step: 6N / 4N per token over the linear weights and the head, plus attention."""
    linear = sum(m.weight.numel() for m in model.modules() if type(m).__name__ in ("Linear", "Conv1D"))
    config = model.config
    layers, width = config.num_hidden_layers, config.hidden_size
    attention = 6 * layers * seq * width  # QK^T and AV, causal half: 2 * 2 * seq * d / 2 forward, x3 with backward
    tokens = batch * seq
    return (6 * linear + attention) * tokens, (4 * linear + attention) * tokens


def run(args) -> None:
    dtype = getattr(torch, args.dtype)
    rate = gemm_rate(args.device, dtype)
    print(f"# {args.shape} {args.dtype} batch {args.batch}x{args.seq}{' CUDA graphs' if args.cuda_graphs else ''} on "
          f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}; GEMM {rate / 1e12:.1f} TFLOP/s")
    header = f"{'method':13s} {'targets':10s} {'r':>3s} {'step s':>8s} {'tok/s':>9s} {'peak GB':>8s} " \
             f"{'x full':>6s} {'x peft':>6s} {'x floor':>7s} {'trainable':>11s} {'loss':>7s}"
    print(header)
    full_time, peft_time = None, {}
    configs = [("full", "-", 0)] + [(m, t, r) for t in args.targets.split(",") for r in map(int, args.ranks.split(","))
                                    for m in args.methods.split(",")]
    if "all-linear" in args.targets and "16" in args.ranks.split(",") and dtype == torch.bfloat16:
        configs.append(("lowrank-bf16", "all-linear", 16))  # the precision policy's alternative
    for method, which, r in configs:
        release_freed_memory()
        model, family = build(args.shape, args.device, dtype)
        full_flops, lora_flops = floor_flops(model, family, args.batch, args.seq)
        trained = adapt(model, family, method, r, which)
        with peak_memory(args.device) as peak_bytes:
            seconds, count, loss = step_times(trained, args.device, args.batch, args.seq, args.steps,
                                              model.config.vocab_size, args.compile, args.cuda_graphs)
        peak = peak_bytes[0] / 1e9
        full_time = seconds if method == "full" else full_time
        if method == "peft":
            peft_time[(which, r)] = seconds
        versus_peft = seconds / peft_time[(which, r)] if (which, r) in peft_time else float("nan")
        floor = (full_flops if method == "full" else lora_flops) / rate
        print(f"{method:13s} {which:10s} {r:3d} {seconds:8.4f} {args.batch * args.seq / seconds:9,.0f} {peak:8.2f} "
              f"{seconds / full_time:6.2f} {versus_peft:6.2f} {seconds / floor:7.2f} {count:11,d} {loss:7.3f}",
              flush=True)
        if args.profile and (method, which, r) in {("full", "-", 0), ("lowrank", "all-linear", 16)}:
            profile(trained, args, model.config.vocab_size, f"{method}-{which}-{r}")
        del model, trained
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()


def profile(model, args, vocab: int, name: str) -> None:
    """Where one step's device time goes: the top kernels by total time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    ids = torch.randint(0, vocab, (args.batch, args.seq), device=args.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(2):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        _sync(args.device)
    key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=args.profile_rows, max_name_column_width=60)
    with open(f"{args.profile}/profile-{args.shape}-{name}.txt", "w") as handle:
        handle.write(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-medium")
    parser.add_argument("--ranks", default="8,16,64")
    parser.add_argument("--targets", default="attention,all-linear")
    parser.add_argument("--methods", default="peft,lowrank")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (all methods)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay each method's step from a CUDA graph")
    parser.add_argument("--profile", default="", help="folder for profiles of full and lowrank all-linear r=16")
    parser.add_argument("--profile-rows", type=int, default=25)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
