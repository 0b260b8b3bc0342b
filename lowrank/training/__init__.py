"""Training: the config, the setup, the one loop (LoRA and full fine-tuning), held-out evaluation, rank sweeps."""
