"""Every command the CLI offers, in the order ``lowrank --help`` lists them."""

from lowrank_cli.train_cmd import train

ALL = [train]
