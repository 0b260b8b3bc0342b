"""Adapter-factor precision under a bf16 model: float32 factors (lowrank's policy, peft's default) against bf16
factors, each trained 50 AdamW steps from the same init and compared with a float32 run of the same model.
Prints the relative error of the learned update s*B@A (all layers stacked) and the final loss gap.

  python benchmarks/precision_policy.py [--lr 1e-3] [--steps 50]
"""

from __future__ import annotations

import argparse

import torch

from lowrank import lora
from lowrank.tiny_models import tiny_model


def train(family: str, model_dtype: torch.dtype, factor_dtype: torch.dtype, lr: float, steps: int):
    model = tiny_model(family, "causal-lm", seed=0).to(model_dtype)
    lora.inject(model, lora.LoraConfig(r=4, alpha=8, targets=lora.Targets(all_linear=True)),
                torch.Generator().manual_seed(0))
    lora.mark_trainable(model)
    for layer in lora.lora_layers(model).values():
        layer.lora_A.data = layer.lora_A.data.to(factor_dtype)
        layer.lora_B.data = layer.lora_B.data.to(factor_dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    batches = torch.randint(1, 1000, (4, 4, 16), generator=torch.Generator().manual_seed(3))
    for step in range(steps):
        loss = model(input_ids=batches[step % 4], labels=batches[step % 4]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    deltas = torch.cat([layer.delta_weight().float().flatten() for layer in lora.lora_layers(model).values()])
    return deltas, float(loss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    print(f"{'family':7s} {'factors':9s} {'rel. error of s*B@A':>20s} {'final loss gap':>15s}")
    for family in ("gpt2", "llama"):
        reference, ref_loss = train(family, torch.float32, torch.float32, args.lr, args.steps)
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            deltas, loss = train(family, torch.bfloat16, dtype, args.lr, args.steps)
            error = float((deltas - reference).norm() / reference.norm())
            print(f"{family:7s} {name:9s} {error:20.4f} {loss - ref_loss:15.4f}")


if __name__ == "__main__":
    main()
