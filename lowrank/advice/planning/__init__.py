"""Before training: per-module ranks for a planned LoRA run (``suggest-rank``), from an allocation signal (one
spectrum per target module, :mod:`~lowrank.advice.planning.registry`) spent under a parameter budget
(:mod:`~lowrank.advice.planning.allocate`)."""
