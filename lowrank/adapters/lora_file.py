"""A peft ``LoraConfig`` as a JSON file (what ``lowrank suggest-rank`` writes and ``peft.LoraConfig(**fields)``
takes) -> the matching :class:`TrainConfig` fields, for ``lowrank train --config FILE``.

Read: ``r``, ``lora_alpha``, ``target_modules`` (a list of module names or suffixes, or a regex string),
``rank_pattern``, ``alpha_pattern``, ``use_rslora``, ``lora_dropout``. Fields that change what the update is
(DoRA, other initializations) are refused rather than ignored.
"""

from __future__ import annotations

from pathlib import Path

from lowrank.errors import LowrankError
from lowrank.jsonfile import read_json_object

REFUSED = {"use_dora": False, "fan_in_fan_out": False}


def read_lora_file(path: str | Path) -> dict:
    """``{rank, alpha, targets, rank_pattern, alpha_pattern, use_rslora, dropout}`` from a LoraConfig JSON file."""
    path = Path(path)
    fields = read_json_object(path)
    if not isinstance(fields.get("r"), int):
        raise LowrankError(f"--config {path}: expected a JSON object with an integer 'r' (peft LoraConfig fields)")
    for key, plain in REFUSED.items():
        if fields.get(key, plain) != plain:
            raise LowrankError(f"--config {path}: {key}={fields[key]!r} is not plain LoRA; lowrank trains plain LoRA")
    targets = fields.get("target_modules") or "auto"
    if isinstance(targets, list):
        targets = ",".join(str(t) for t in targets)
    elif targets != "auto":
        targets = f"re:{targets}"
    patterns = {}
    for key, kind in (("rank_pattern", int), ("alpha_pattern", (int, float))):
        value = fields.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(v, kind) for v in value.values()):
            raise LowrankError(f"--config {path}: {key} must map module names to numbers")
        patterns[key] = {str(k): v for k, v in value.items()}
    return {"rank": fields["r"], "alpha": float(fields.get("lora_alpha", fields["r"])), "targets": targets,
            "use_rslora": bool(fields.get("use_rslora", False)), "dropout": float(fields.get("lora_dropout", 0.0)),
            **patterns}
