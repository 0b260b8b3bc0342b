"""``lowrank analyze``: checkpoints (lazy safetensors), subspaces, rank verdicts, the update
sources, the orchestration (:mod:`lowrank.analysis.run`) and the frozen result records (the JSON contract)."""
