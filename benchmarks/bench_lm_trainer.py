"""LLM LoRA training, lowrank against transformers' Trainer + peft (issue 30, item 5): one process, one model, the
same token blocks in the same order for every arm.

Arms, each for ``--warmup`` steps, then ``--steps`` timed steps (every step synchronized, so its time is the
device's):
- ``lowrank lora``: ``lowrank.training.loop.train`` itself, as ``lowrank train --task lm --method lora --targets
  all-linear`` runs it (float32 weights, bf16 autocast on CUDA, fused AdamW, CUDA-graph steps on one GPU);
- ``lowrank full``: the same with ``--method full``;
- ``Trainer+peft``: ``transformers.Trainer`` on a peft ``LoraConfig`` with the same r, alpha and targets (peft's
  all-linear, the LM head excluded as lowrank's is), SDPA attention, bf16 autocast on CUDA, fused AdamW, the same
  rate, warm-up steps (transformers' ramp starts at 0, lowrank's at 1 / warm-up steps), linear decay, clipping and
  batch order (a sequential sampler over the blocks lowrank draws);
- with ``--checkpointing``, each again with activation checkpointing (``--checkpointing``; the Trainer's
  ``gradient_checkpointing``, non-reentrant);
- with ``--fused``, lowrank's arms use liger-kernel's fused kernels (``lowrank train --fused``,
  lowrank.training.fused; where it is installed); with ``--fused-ab`` they run without them (``plain``), then
  with. The Trainer arms run before any of lowrank's, as liger's patch of transformers' Llama lasts for the process.

Columns: tokens/s = batch x seq / median step seconds; peak memory: ``torch.cuda.max_memory_allocated`` on CUDA,
the largest resident set sampled every 5 ms on the CPU (benchmarks/bench_lora_step.py); held-out loss: mean
next-token cross-entropy over one fixed seeded sample of ``--eval-blocks`` held-out blocks after the same steps
(``lowrank.tasks.evaluate``, for every arm). On CUDA,

    MFU = tokens/s x FLOPs per token / R,   R = the bf16 GEMM rate measured here (8192^3 products),
    FLOPs per token: LoRA 4N + A, full 6N + A,   A = 6 x layers x seq x width (causal attention, both passes)

with N the weights of the linear layers and the LM head (forward 2N, backward 2N for the activations' gradients and,
trained in full, 2N more for the weights'); the adapters' own products are left out, and so is checkpointing's
recompute (MFU counts the model's FLOPs, not the hardware's). Ratios: LoRA / full tokens/s, lowrank / Trainer+peft
tokens/s and memory.

Models: ``--model FOLDER`` (a local Llama-family folder with its tokenizer), or random-init from LlamaConfig:
``--shape smollm2`` / ``tinyllama`` (benchmarks/shaped_llama.py's shapes, the tokenizer's vocabulary) or ``--tiny``
(2 layers of 32, CPU-sized: batch 4 x 64, 3 + 4 steps). Data: ``--data FILE`` (.txt / .jsonl / .csv as
``lowrank train`` reads it, packed into blocks of ``--seq`` tokens), else random text (random token ids decoded).

  python benchmarks/bench_lm_trainer.py --tiny                                   # the CPU, well under a minute
  # GPU, one call (tokenizer packed here first: python -c "from transformers import AutoTokenizer as T; from
  # lowrank.assets import resolve_model_path as r; T.from_pretrained(r('smollm2-135m')).save_pretrained('.carry/tok')")
  PYTHONPATH=$PWD python3 benchmarks/bench_lm_trainer.py --shape tinyllama --tokenizer .carry/tok --checkpointing --json $OUT/lm_trainer.json
  # (the same as PARTS=lm-trainer benchmarks/gpu_training_speed.sh; peft must be there: 0.21.0 was, reports/training_speed.md)
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from bench_lora_step import floor_flops, gemm_rate, peak_memory
from lowrank import assets
from lowrank.cpu import release_freed_memory
from lowrank.data.batches import iter_batches
from lowrank.data.text import load_text_dataset
from lowrank.data.tokenize import tokenize_split
from lowrank.errors import LowrankError
from lowrank.tasks.defaults import DEFAULT_ALPHA, DEFAULT_LR
from lowrank.tasks.evaluate import evaluate
from lowrank.tiny_models import tiny_config
from lowrank.training.loop import TrainConfig, train
from shaped_llama import SHAPES, save_random_model

SHAPE_NAMES = {"smollm2": "smollm2-135m", "tinyllama": "llama-1b"}
WARMUP_RATIO = 0.06  # lowrank train's default


def model_folder(args, work: Path) -> Path:
    """``--model``, or a random-init Llama of ``--shape`` / ``--tiny`` saved (bf16) with the tokenizer."""
    if args.model:
        return Path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or assets.resolve_model_path("smollm2-135m"))
    if args.tiny:
        config = tiny_config("llama", vocab_size=len(tokenizer))
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=max(8192, args.seq),
                             rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, **SHAPES[SHAPE_NAMES[args.shape]])
    save_random_model(config, tokenizer, work / "model", args.seed)
    return work / "model"


def corpus(args, folder: Path, work: Path) -> Path:
    """``--data``, or paragraphs of random token ids decoded to text: half again the tokens the run reads in its
    90% (lowrank's split of a file) and at least ``--eval-blocks`` blocks in the held-out 10%."""
    if args.data:
        return Path(args.data)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    draw = random.Random(args.seed)
    tokens = 1.5 * max(args.batch * (args.warmup + args.steps) / 0.9, args.eval_blocks / 0.1) * args.seq
    paragraphs = -(-int(tokens) // 256)
    text = "\n\n".join(tokenizer.decode(draw.choices(ids, k=256)).replace("\n\n", "\n") for _ in range(paragraphs))
    (work / "random.txt").write_text(text, encoding="utf-8")
    return work / "random.txt"


def batch_order(train_set, batch: int, seed: int, steps: int) -> list[int]:
    """The blocks lowrank's loop trains on, in its order (``iter_batches`` over the epochs), for ``steps`` steps."""
    order, epoch = [], 0
    while len(order) < steps * batch:
        order += [i for indices in iter_batches(train_set, batch, seed, epoch) if len(indices) == batch
                  for i in indices]
        epoch += 1
    return order[: steps * batch]


class StepClock:
    """End times of the steps, each after a device synchronization; ``step_seconds`` of the last ``n`` steps."""

    def __init__(self, device: str):
        self.device, self.ends = device, []

    def tick(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def step_seconds(self, n: int) -> list[float]:
        return [b - a for a, b in zip(self.ends[:-1], self.ends[1:])][-n:]


def lowrank_arm(args, folder: Path, data: Path, work: Path, method: str, checkpointing: bool, fused: bool) -> dict:
    clock = StepClock(args.device)
    config = TrainConfig(model=str(folder), data=str(data), method=method, task="lm", targets="all-linear",
                         out=work / f"lowrank-{method}-{checkpointing}-{fused}", rank=args.rank, alpha=args.alpha,
                         lr=DEFAULT_LR[(method, "lm")], epochs=10 ** 6, max_steps=args.warmup + args.steps,
                         batch_size=args.batch, max_length=args.seq, eval_samples=args.eval_blocks,
                         warmup_ratio=WARMUP_RATIO, seed=args.seed, device=args.device, checkpointing=checkpointing,
                         fused=fused)
    metrics = train(config, lambda event: clock.tick() if event.task == "train" else None)
    return {"seconds": clock.step_seconds(args.steps), "loss": metrics["final"]["loss"],
            "train_losses": [row["train_loss"] for row in metrics["history"] if "train_loss" in row]}


def trainer_arm(args, folder: Path, blocks, test_set, work: Path, checkpointing: bool) -> dict:
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    clock, cuda = StepClock(args.device), args.device == "cuda"

    class Clocked(TrainerCallback):
        def on_step_end(self, *_, **__):
            clock.tick()

    class InOrder(Trainer):  # lowrank's batch order: the blocks come pre-ordered
        def _get_train_sampler(self, *_, **__):
            return SequentialSampler(self.train_dataset)

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules="all-linear",
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    total = args.warmup + args.steps
    training = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=args.batch, max_steps=total,
        learning_rate=DEFAULT_LR[("lora", "lm")], lr_scheduler_type="linear", warmup_steps=round(WARMUP_RATIO * total),
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused", bf16=cuda, use_cpu=not cuda,
        gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True, seed=args.seed,
        dataloader_pin_memory=cuda)
    data = [{"input_ids": block, "labels": block} for block in blocks]
    InOrder(model=model, args=training, train_dataset=data, data_collator=default_data_collator,
            callbacks=[Clocked()]).train()
    loss = evaluate(model, test_set, args.batch, torch.device(args.device), True, args.eval_blocks)["loss"]
    return {"seconds": clock.step_seconds(args.steps), "loss": loss}


def measured(run, device: str) -> dict:
    """``run()``'s result with its peak memory (GB); an arm that fails (out of memory, a failed kernel) is recorded
    as failed."""
    release_freed_memory()
    try:
        with peak_memory(device) as peak:
            result = run()
        result["peak_gb"] = peak[0] / 1e9
    except (torch.OutOfMemoryError, LowrankError, RuntimeError) as error:  # out of memory, a kernel that failed
        result = {"failed": str(error).splitlines()[0][:200]}
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--model", help="a local Llama-family model folder with its tokenizer")
    chosen.add_argument("--shape", choices=sorted(SHAPE_NAMES), help="a random-init Llama of this shape")
    chosen.add_argument("--tiny", action="store_true", help="a 2-layer random-init Llama, CPU-sized run")
    parser.add_argument("--tokenizer", help="for --shape / --tiny [default: the smollm2-135m asset's]")
    parser.add_argument("--data", help="a .txt / .jsonl / .csv file [default: random text]")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (CUDA-graph capture included)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--eval-blocks", type=int, default=64)
    parser.add_argument("--checkpointing", action="store_true", help="each arm again with activation checkpointing")
    parser.add_argument("--fused", action="store_true", help="lowrank's arms with --fused (liger-kernel)")
    parser.add_argument("--fused-ab", action="store_true", help="lowrank's arms without, then with --fused")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.seq, args.steps, args.eval_blocks = min(args.batch, 4), min(args.seq, 64), 4, 8
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        folder = model_folder(args, work)
        data = corpus(args, folder, work)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # as lowrank.assets loads it
        dataset = load_text_dataset(str(data))
        train_set, test_set = (tokenize_split(dataset, tokenizer, "lm", split, args.seq, "completion")
                               for split in ("train", "test"))
        blocks = [torch.tensor(train_set.input_ids[i]) for i in
                  batch_order(train_set, args.batch, args.seed, args.warmup + args.steps)]
        with torch.device("meta"):  # the shapes alone, for the FLOP counts
            shell = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
        tokens = args.batch * args.seq
        full_flops, lora_flops = (flops / tokens for flops in floor_flops(shell, "llama", args.batch, args.seq))
        rate = gemm_rate("cuda", torch.bfloat16) if args.device == "cuda" else None
        arms = {}
        settings = (("", False), (" ckpt", True)) if args.checkpointing else (("", False),)
        for tag, checkpointing in settings:  # first: liger patches transformers' Llama for the whole process
            arms[f"Trainer+peft{tag}"] = measured(
                lambda: trainer_arm(args, folder, blocks, test_set, work, checkpointing), args.device)
        for fused, fused_tag in ((False, " plain"), (True, "")) if args.fused_ab else ((args.fused, ""),):
            for tag, checkpointing in settings:
                for method in ("lora", "full"):
                    arms[f"lowrank {method}{fused_tag}{tag}"] = measured(
                        lambda: lowrank_arm(args, folder, data, work, method, checkpointing, fused), args.device)
    report(args, arms, full_flops, lora_flops, rate, len(train_set), len(test_set))


def report(args, arms: dict, full_flops: float, lora_flops: float, rate: float | None, n_train: int,
           n_test: int) -> None:
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"# {args.model or args.shape or 'tiny'} on {device}: batch {args.batch} x {args.seq}, r={args.rank} "
          f"alpha={args.alpha:g} all-linear, {args.warmup} + {args.steps} steps, {n_train} training blocks, held-out "
          f"loss over {min(args.eval_blocks, n_test)} blocks" + (f"; GEMM {rate / 1e12:.0f} TFLOP/s" if rate else ""))
    print(f"{'arm':20s} {'tokens/s':>10s} {'step s':>8s} {'peak GB':>8s} {'MFU':>6s} {'held-out':>9s}")
    for name, arm in arms.items():
        if "failed" in arm:
            print(f"{name:20s} failed: {arm['failed']}")
            continue
        arm["step_s"] = statistics.median(arm["seconds"])
        arm["tokens_per_s"] = args.batch * args.seq / arm["step_s"]
        per_token = full_flops if "full" in name else lora_flops
        arm["mfu"] = arm["tokens_per_s"] * per_token / rate if rate else None
        mfu = f"{arm['mfu']:6.1%}" if rate else f"{'-':>6s}"
        print(f"{name:20s} {arm['tokens_per_s']:10,.0f} {arm['step_s']:8.4f} {arm['peak_gb']:8.2f} {mfu} "
              f"{arm['loss']:9.4f}")
    for tag in ("", " ckpt", " plain", " plain ckpt"):
        peft = arms.get(f"Trainer+peft{tag.replace(' plain', '')}", {})
        lora, full = (arms.get(f"lowrank {method}{tag}", {}) for method in ("lora", "full"))
        if "tokens_per_s" in lora and "tokens_per_s" in full:
            print(f"LoRA / full tokens/s{tag}: {lora['tokens_per_s'] / full['tokens_per_s']:.2f}")
        if "tokens_per_s" in lora and "tokens_per_s" in peft:
            print(f"lowrank / Trainer+peft{tag}: tokens/s {lora['tokens_per_s'] / peft['tokens_per_s']:.2f}, "
                  f"peak memory {lora['peak_gb'] / peft['peak_gb']:.2f}")
    for name, plain_name in ((f"lowrank {m}{tag}", f"lowrank {m} plain{tag}") for m in ("lora", "full")
                             for tag in ("", " ckpt")):
        fused, plain = arms.get(name, {}), arms.get(plain_name, {})
        if "train_losses" in fused and "train_losses" in plain:
            gap = max(abs(a - b) / abs(b) for a, b in zip(fused["train_losses"], plain["train_losses"]))
            print(f"{name} against plain: largest per-step training loss difference {gap:.2%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "args": vars(args), "gemm_flops": rate,
                                               "arms": arms}, indent=2) + "\n")


if __name__ == "__main__":
    main()
