"""A random-init Llama-family model folder of a named shape, with a real tokenizer, for throughput runs on a
machine without model files (tokens/s does not depend on the weights' values).

    python benchmarks/shaped_llama.py SHAPE TOKENIZER_DIR OUT_DIR [LAYERS]

SHAPE: smollm2-135m (SmolLM2-135M's configuration: 30 layers of 576, 9 heads / 3 KV heads, MLP 1536, tied
embeddings) or llama-1b (TinyLlama-1.1B's: 22 layers of 2048, 32 / 4 heads, MLP 5632), both with the tokenizer's
vocabulary; LAYERS keeps the width and vocabulary with fewer layers (a CPU-sized step whose vocabulary projection
weighs as much as the real model's). Saved in bf16.
"""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4, tie_word_embeddings=False),
}


def save_random_model(config, tokenizer, out, seed: int = 0) -> int:
    """A causal LM built from ``config``, its weights drawn here (norms 1, the rest N(0, 0.02^2): some transformers
    versions leave a bare constructor's weights empty), saved in bf16 with ``tokenizer`` to ``out``; returns its
    parameter count."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.ones_like(param) if "norm" in name else torch.randn_like(param) * 0.02)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    shape, tokenizer_dir, out = sys.argv[1:4]
    layers = {"num_hidden_layers": int(sys.argv[4])} if len(sys.argv) > 4 else {}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=8192, rms_norm_eps=1e-5,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                         else tokenizer.eos_token_id, **(SHAPES[shape] | layers))
    print(f"{shape}: {save_random_model(config, tokenizer, out) / 1e6:.0f}M parameters in {out}")
