"""Intrinsic dimension: train in a random subspace ``theta = theta0 + P theta_d`` and find the smallest ``d``
that reaches 90% of the baseline (Li et al. 2018; Aghajanyan et al. 2020 for SAID)."""
