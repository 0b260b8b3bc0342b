"""Compress updates into peft adapters: ``extract`` (a full fine-tune's delta, truncated SVD per module) and
``resize`` (an adapter at a new rank, factored SVD). Both stream one module at a time and report, per module, the
kept energy and relative Frobenius error, and optionally held-out metrics before and after."""

from lowrank.compress.evaluate import EvalConfig
from lowrank.compress.extract import ExtractConfig, extract
from lowrank.compress.factors import RankTarget
from lowrank.compress.records import CompressReport, Evaluation, ModuleRecord
from lowrank.compress.resize import ResizeConfig, resize

__all__ = ["CompressReport", "EvalConfig", "Evaluation", "ExtractConfig", "ModuleRecord", "RankTarget",
           "ResizeConfig", "extract", "resize"]
