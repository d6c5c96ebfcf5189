"""Pretraining and fine-tuning loops, typed configs, DDP, precision, checkpoints, progress events."""
