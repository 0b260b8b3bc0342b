"""lowrank: train LoRA adapters and measure how low-rank fine-tuning updates really are."""

from lowrank.errors import LowrankError

__all__ = ["LowrankError"]
__version__ = "0.1.0"
