"""Pretraining loops, typed configs, DDP, precision, checkpoints (fine-tuning is ``finetune``)."""
