"""What RankCallback costs a transformers Trainer run: the same run with and without it, in one process.

A random-init Llama of SmolLM2-135M's shape (hidden 576, intermediate 1536, 30 layers, 9 heads, 3 KV heads, vocab
49152) with a peft LoRA (r=8 on all seven projections: 210 modules, more than the usual q/v, so the callback has
more to read) trains on random tokens with a plain ``transformers.Trainer`` (bf16 autocast on CUDA). The arms
alternate (A B B A ...) after a warm-up run that is not counted; each run builds the same model from the same seed.
A timing callback added last records the end of every optimizer step (after a CUDA synchronize, in both arms), so a
step's time includes the callback's work at its scheduled steps. Printed: per arm the median and mean step time,
the summed step time, ``train()``'s wall time (which includes the callback's end-of-training analysis), and the
overhead ``mean_with / mean_without - 1`` of the steps and of the wall time.

    python examples/callback_overhead.py                    # CUDA: 600 steps per run, every=200, 2 runs per arm
    python examples/callback_overhead.py --steps 1000 --repeats 3
    python examples/callback_overhead.py --tiny             # CPU-sized model and run (the default without CUDA)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from lowrank.integrations.transformers import RankCallback

SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class StepClock(TrainerCallback):
    """The time of every optimizer step's end (after the GPU finished it)."""

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.ends, self.ends[1:])]


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, count: int, length: int, vocab: int):
        self.ids = torch.randint(0, vocab, (count, length), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def run(shape: dict, steps: int, batch: int, length: int, every: int | None, folder: str) -> tuple[list[float], float]:
    """One Trainer run (with RankCallback when ``every``): its step times and train()'s wall time."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**shape, max_position_embeddings=max(length, 128)))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"))
    cuda = torch.cuda.is_available()
    args = TrainingArguments(output_dir=folder, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-4,
                             logging_steps=50, report_to=[], save_strategy="no", bf16=cuda, use_cpu=not cuda,
                             disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(steps * batch, length, shape["vocab_size"]))
    trainer.remove_callback(PrinterCallback)  # it prints every log, 634 rank keys included
    if every is not None:
        trainer.add_callback(RankCallback(every=every, html=False))
    clock = StepClock()
    trainer.add_callback(clock)  # last: a step's time includes the RankCallback's work
    began = time.perf_counter()
    trainer.train()
    return clock.step_times(), time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU-sized model and run (default without CUDA)")
    parser.add_argument("--steps", type=int, help="steps per run [600 on CUDA, 40 tiny]")
    parser.add_argument("--every", type=int, help="the callback's N [200 on CUDA, 10 tiny]")
    parser.add_argument("--repeats", type=int, default=2, help="runs per arm, alternating")
    parser.add_argument("--batch-size", type=int, help="[8 on CUDA, 4 tiny]")
    parser.add_argument("--seq-len", type=int, help="[512 on CUDA, 32 tiny]")
    options = parser.parse_args()
    tiny = options.tiny or not torch.cuda.is_available()
    shape = TINY if tiny else SMOLLM2
    steps = options.steps or (40 if tiny else 600)
    every = options.every or (10 if tiny else 200)
    batch, length = options.batch_size or (4 if tiny else 8), options.seq_len or (32 if tiny else 512)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}: {'tiny Llama' if tiny else 'SmolLM2-135M-shaped Llama'}, LoRA r=8 on {len(TARGETS)} "
          f"projections, {steps} steps of {batch} x {length} tokens, RankCallback(every={every})", flush=True)
    results = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as folder:
        step_times, wall = run(shape, min(steps, every + 1), batch, length, every, folder)  # warm-up: kernels, imports
        print(f"warm-up ({len(step_times) + 1} steps): train() {wall:.2f} s", flush=True)
        order = ["without", "with"]
        for repeat in range(options.repeats):
            for arm in order if repeat % 2 == 0 else order[::-1]:
                results[arm].append(run(shape, steps, batch, length, every if arm == "with" else None, folder))
                step_times, wall = results[arm][-1]
                print(f"run {repeat + 1} {arm}: steps {sum(step_times):.2f} s, train() {wall:.2f} s", flush=True)
    rows = {}
    for arm, runs in results.items():
        times = [t for step_times, _ in runs for t in step_times]
        rows[arm] = (statistics.median(times), statistics.fmean(times), sum(times) / len(runs),
                     statistics.fmean(wall for _, wall in runs))
    print(f"\n{'arm':<9}{'median step ms':>16}{'mean step ms':>14}{'steps s/run':>13}{'train() s/run':>15}")
    for arm, (median, mean, total, wall) in rows.items():
        print(f"{arm:<9}{1e3 * median:>16.2f}{1e3 * mean:>14.2f}{total:>13.2f}{wall:>15.2f}")
    steps_ratio = rows["with"][1] / rows["without"][1] - 1
    wall_ratio = rows["with"][3] / rows["without"][3] - 1
    print(f"\noverhead: steps {100 * steps_ratio:+.2f}%, train() wall {100 * wall_ratio:+.2f}% "
          f"({options.repeats} runs per arm, alternating)")


if __name__ == "__main__":
    main()
