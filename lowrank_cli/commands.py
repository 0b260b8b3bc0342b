"""Every command the CLI offers, in the order ``lowrank --help`` lists them."""

from lowrank_cli.analyze_cmd import analyze
from lowrank_cli.compress_cmd import extract, resize
from lowrank_cli.intrinsic_cmd import intrinsic_dim
from lowrank_cli.suggest_cmd import suggest_rank
from lowrank_cli.sweep_cmd import sweep
from lowrank_cli.train_cmd import train

ALL = [train, sweep, analyze, suggest_rank, intrinsic_dim, extract, resize]
