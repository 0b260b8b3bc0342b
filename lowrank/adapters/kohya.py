"""Single-file LoRAs for diffusion models (Stable Diffusion 1.x/2.x, SDXL, SD3, FLUX): kohya's layout and diffusers'.

kohya (sd-scripts, also LyCORIS LoCon): ``<stem>.lora_down.weight`` (r, in[, k1, k2]), ``<stem>.lora_up.weight``
(out, r[, 1, 1]) and ``<stem>.alpha`` (a scalar), with ``dW = alpha / r * up @ down`` (alpha missing: alpha = r).
The stem is the module path with every ``.`` turned into ``_`` behind a component prefix: ``lora_unet_``,
``lora_te_`` / ``lora_te1_`` (the first text encoder), ``lora_te2_``, ``lora_te3_``, ``lora_transformer_``.
diffusers: ``<component>.<module>.lora_A.weight`` / ``.lora_B.weight`` (its peft layout), or the older
``<module>.lora.down.weight``, ``<module>.lora_linear_layer.down.weight`` and
``<block>.processor.to_q_lora.down.weight``; ``.alpha`` keys where present, else scale 1 (alpha = r, as diffusers
loads them).

Undoing kohya's ``.`` -> ``_`` needs the model's names: with a base, the base's module whose name, flattened the
same way, equals the stem; without one, known multi-word parts (``down_blocks``, ``to_q``, ``self_attn``...) are
kept whole and every other ``_`` becomes ``.``. A convolution's update is the matrix ``(out, in * k1 * k2)``.
"""

from __future__ import annotations

import math
from pathlib import Path

from safetensors import SafetensorError, safe_open

from lowrank.adapters.keys import LORA_A, LORA_B
from lowrank.adapters.layout import AdapterModule
from lowrank.adapters.adapter import Adapter, Format
from lowrank.weights import TensorInfo, open_checkpoint
from lowrank.errors import LowrankError

COMPONENTS = {"lora_unet_": "unet.", "lora_te1_": "text_encoder.", "lora_te2_": "text_encoder_2.",
              "lora_te3_": "text_encoder_3.", "lora_te_": "text_encoder.", "lora_transformer_": "transformer."}
FACTORS = ((".lora_down.weight", ".lora_up.weight", "kohya"), (".lora.down.weight", ".lora.up.weight", "diffusers"),
           (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight", "diffusers"),
           (LORA_A, LORA_B, "diffusers"))
FOREIGN = {".lokr_w1": "LoKr (LyCORIS Kronecker product)",
           ".lokr_w1_a": "LoKr (LyCORIS Kronecker product)", ".lora_mid.weight": "LoCon with a CP-decomposed middle",
           ".dora_scale": "DoRA in kohya's layout", ".oft_blocks": "OFT", ".diff": "a full-difference (LyCORIS diff)"}
# Parts of diffusers / transformers / FLUX module names that contain "_" themselves.
WORDS = sorted({
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "single_transformer_blocks", "proj_in", "proj_out",
    "to_q", "to_k", "to_v", "to_out", "to_add_out", "add_q_proj", "add_k_proj", "add_v_proj", "time_emb_proj",
    "conv_shortcut", "conv_in", "conv_out", "time_embedding", "linear_1", "linear_2", "ff_context", "proj_mlp",
    "norm1_context", "x_embedder", "context_embedder", "time_text_embed", "timestep_embedder", "text_embedder",
    "guidance_embedder", "add_embedding", "norm_out", "input_blocks", "middle_block", "output_blocks", "in_layers",
    "out_layers", "emb_layers", "skip_connection", "time_embed", "label_emb", "text_model", "self_attn", "q_proj", "k_proj", "v_proj",
    "out_proj", "final_layer_norm", "text_projection", "token_embedding", "position_embedding", "double_blocks",
    "single_blocks", "img_attn", "txt_attn", "img_mlp", "txt_mlp", "img_mod", "txt_mod", "img_in", "txt_in",
    "time_in", "vector_in", "guidance_in", "final_layer", "adaLN_modulation", "wi_0", "wi_1", "pos_embed",
    "time_proj"}, key=lambda w: -w.count("_"))


def safetensors_keys(path: Path) -> list[str]:
    """The tensor keys of a ``.safetensors`` file, from its header; empty for anything else."""
    if not (path.is_file() and path.suffix == ".safetensors"):
        return []
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError):
        return []


def is_single_file_lora(path: Path) -> bool:
    """True for a ``.safetensors`` file whose keys are LoRA factors in kohya's or diffusers' layout (or another
    LyCORIS network in kohya's layout, which :func:`open_single_file` refuses by name)."""
    keys = safetensors_keys(path)
    return any(key.endswith(down) for key in keys for down, _, _ in FACTORS) or any(
        key.endswith(tuple(FOREIGN)) for key in keys)


def open_single_file(path: Path) -> Adapter:
    """A kohya or diffusers LoRA file as an :class:`Adapter` without a config: each module's rank and alpha are its
    own (module names without a base: see the docstring)."""
    if not path.exists():
        raise LowrankError(f"{path} does not exist")
    checkpoint = open_checkpoint(path)
    tensors = checkpoint.tensors
    for key in tensors:
        for suffix, what in FOREIGN.items():
            if key.endswith(suffix):
                raise LowrankError(f"{path} holds {what} tensors ({key}); lowrank reads LoRA (lora_down / lora_up) "
                                   "in this layout")
    modules, formats = {}, set()
    for key, info in tensors.items():
        for down, up, layout in FACTORS:
            if key.endswith(down):
                stem = key[: -len(down)]
                if stem + up not in tensors:
                    raise LowrankError(f"{path}: {key} has no matching {stem + up} tensor")
                alpha = checkpoint.tensor(stem + ".alpha") if stem + ".alpha" in tensors else None
                module = _module(module_name(stem), stem, info, tensors[stem + up], down, up, alpha, path)
                modules[module.name] = module
                formats.add(layout)
    if not modules:
        raise LowrankError(f"{path} holds no LoRA factors (lora_down / lora_up or lora_A / lora_B)")
    ranks = {m.rank for m in modules.values()}
    fmt = "kohya" if formats == {"kohya"} else "diffusers"
    notes = [f"{fmt} layout: {len(modules)} modules, ranks {sorted(ranks)}; module names "
             f"{'rebuilt from kohya stems' if fmt == 'kohya' else 'as stored'}"]
    if not any(key.endswith(".alpha") for key in tensors):
        notes.append("no alpha stored: scale 1 (alpha = r), as diffusers loads such files")
    return Adapter(path, fmt, None, checkpoint, modules, (), tuple(notes))


def _open(path: Path, allow_pickle: bool) -> Adapter:
    """:func:`open_single_file` as a :class:`Format` opener (single files are safetensors: nothing is pickled)."""
    return open_single_file(path)


SINGLE_FILE = Format("kohya / diffusers", ("kohya LoRA", "LyCORIS LoCon", "diffusers LoRA"), is_single_file_lora,
                     _open)


def _module(name: str, stem: str, down: TensorInfo, up: TensorInfo, down_suffix: str, up_suffix: str,
            alpha, path: Path) -> AdapterModule:
    a, b = down.shape, up.shape
    if len(a) < 2 or len(a) != len(b) or a[0] != b[1] or any(d != 1 for d in b[2:]):
        raise LowrankError(f"{path}: module {stem} has down {list(a)} and up {list(b)}, which do not combine as "
                           "(r, in[, k...]) and (out, r[, 1...])")
    if alpha is not None and (alpha.numel() != 1 or not float(alpha) > 0):
        raise LowrankError(f"{path}: module {stem} has alpha {alpha.tolist()}, expected one positive number")
    return AdapterModule(name, {"A": stem + down_suffix, "B": stem + up_suffix}, (b[0], math.prod(a[1:])), a[0],
                         "conv" if len(a) > 2 else "linear", float(alpha) if alpha is not None else float(a[0]))


def module_name(stem: str) -> str:
    """The module path a stored stem stands for: kohya's flattened stems rebuilt with :data:`WORDS`, diffusers'
    old processor names (``attn1.processor.to_q_lora`` -> ``attn1.to_q``, ``to_out_lora`` -> ``to_out.0``)."""
    for prefix, component in COMPONENTS.items():
        if stem.startswith(prefix):
            return component + _unflatten(stem[len(prefix):])
    if ".processor." in stem:
        block, _, part = stem.partition(".processor.")
        part = part.removesuffix("_lora")
        return f"{block}.{part}.0" if part == "to_out" else f"{block}.{part}"
    return stem


def _unflatten(flat: str) -> str:
    tokens, parts, i = flat.split("_"), [], 0
    while i < len(tokens):
        for word in WORDS:
            width = word.count("_") + 1
            if "_".join(tokens[i: i + width]) == word:
                parts.append(word)
                i += width
                break
        else:
            parts.append(tokens[i])
            i += 1
    return ".".join(parts)
