"""The click layer of lowrank, installed as ``lowrank_cli``: parse options, call lowrank, render."""
