"""Rank advice, by when it runs: before training, ``planning/`` (suggest-rank: allocation signals from a registry,
spent under a budget); after training, ``sufficiency/`` (evidence on the trained adapter and the one rank verdict);
and the ground truth both are checked against, rank sweeps (``sweep.py``) and their statistics
(``ground_truth.py``). ``sample.py`` and ``gradients.py`` serve the first two."""
