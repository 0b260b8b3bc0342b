"""How ``sweep`` and ``suggest-rank`` word the training settings they take from ``lowrank train``'s options."""

from lowrank.data.instructions import DATA_FILES

PLANNED_RUN_HELPS = {
    "model": "Registry key or local Hugging Face folder.",
    "data": f"Registry key or {DATA_FILES}.",
    "targets": "LoRA targets, as for lowrank train.",
    "max_length": None,
}
