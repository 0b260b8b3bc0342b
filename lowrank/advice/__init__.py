"""Rank advice: the ground truth (rank sweeps and their statistics), the data-driven sufficiency of a trained rank
and its calibration, and ranks chosen before training (signals, allocation, suggest-rank)."""
