"""Training: the config, the setup, the one loop (LoRA and full fine-tuning, text and images), held-out evaluation."""
