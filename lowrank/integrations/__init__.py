"""lowrank inside training loops: :func:`rank_metrics` (rank logs of a live model, for any loop) and, in
:mod:`lowrank.integrations.transformers`, the ``RankCallback`` of a transformers Trainer."""

from lowrank.integrations.metrics import rank_metrics

__all__ = ["rank_metrics"]
