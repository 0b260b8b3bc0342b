"""The options every command that reads text data shares: what ``--data`` accepts and ``--loss-on``."""

from __future__ import annotations

import click

from lowrank.data.instructions import LOSS_ON

DATA_FILES = ("a local .csv/.jsonl file with text[,label], prompt + completion, or messages (chat turns, "
              "rendered by the tokenizer's chat template), or a .txt file")
LOSS_ON_HELP = ("Instruction data (prompt/completion, messages): the loss on the completion / assistant turns "
                "only (prompt and other turns masked), or on all tokens. Plain text learns every token.")


def loss_on_option(default: str | None = "completion"):
    """``--loss-on completion|all``; ``default=None`` (analyze): the run's choice, from its metrics.json."""
    if default is None:
        return click.option("--loss-on", type=click.Choice(LOSS_ON), help=LOSS_ON_HELP + " [default: the run's, "
                            "from the adapter folder's metrics.json; else completion]")
    return click.option("--loss-on", type=click.Choice(LOSS_ON), default=default, show_default=True,
                        help=LOSS_ON_HELP)
