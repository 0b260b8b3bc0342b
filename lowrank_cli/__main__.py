"""``python -m lowrank_cli ...`` runs the ``lowrank`` command (for launchers such as torchrun)."""

from lowrank_cli.main import main

main()
