"""``lowrank analyze``: the update sources, subspaces, rank verdicts, the orchestration
(:mod:`lowrank.analysis.run`) and the frozen result records (the JSON contract)."""
