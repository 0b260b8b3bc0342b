"""lowrank: train LoRA adapters and measure how low-rank fine-tuning updates really are.

``lowrank.analyze``, ``lowrank.suggest_rank`` and ``lowrank.RankLogs`` are :mod:`lowrank.api`'s, imported on first
use (importing torch and transformers takes seconds; the command line starts without them).
"""

from lowrank.errors import LowrankError

__all__ = ["LowrankError", "RankLogs", "analyze", "suggest_rank"]
__version__ = "0.1.0"
_API = ("RankLogs", "analyze", "suggest_rank")


def __getattr__(name: str):
    if name in _API:
        from lowrank import api

        return getattr(api, name)
    raise AttributeError(f"module 'lowrank' has no attribute {name!r}")
