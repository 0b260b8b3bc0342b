"""Rank advice: the data-driven sufficiency of a trained rank, and ranks chosen before training."""
