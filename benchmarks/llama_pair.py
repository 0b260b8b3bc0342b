"""A Llama-shaped full fine-tuning pair for analysis benchmarks: base W0 ~ N(0, 0.02^2) and tuned
W1 = W0 + 2e-4 (planted rank-16 product) + 1e-3 noise, bf16, one safetensors shard per layer with an index.

    python benchmarks/llama_pair.py LAYERS HIDDEN MLP DEVICE WORK     (7B: 4096 11008; writes WORK/base, WORK/tuned)
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

layers, hidden, mlp, device, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden), "self_attn.v_proj": (hidden, hidden),
          "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (mlp, hidden), "mlp.up_proj": (mlp, hidden),
          "mlp.down_proj": (hidden, mlp)}
g = torch.Generator(device=device).manual_seed(0)
for side in ("base", "tuned"):
    Path(f"{work}/{side}").mkdir(parents=True, exist_ok=True)
index = {"base": {}, "tuned": {}}
for layer in range(layers):
    base, tuned = {}, {}
    for module, shape in shapes.items():
        key = f"model.layers.{layer}.{module}.weight"
        w0 = torch.randn(shape, generator=g, device=device) * 0.02
        planted = torch.randn(shape[0], 16, generator=g, device=device) @ torch.randn(16, shape[1], generator=g, device=device)
        w1 = w0 + 2e-4 * planted + 1e-3 * torch.randn(shape, generator=g, device=device)
        base[key], tuned[key] = w0.bfloat16().cpu(), w1.bfloat16().cpu()
    name = f"model-{layer + 1:05d}-of-{layers:05d}.safetensors"
    for side, tensors in (("base", base), ("tuned", tuned)):
        save_file(tensors, f"{work}/{side}/{name}")
        index[side].update({k: name for k in tensors})
for side in ("base", "tuned"):
    Path(f"{work}/{side}/model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index[side]}))
print("wrote", layers, "layers", flush=True)
