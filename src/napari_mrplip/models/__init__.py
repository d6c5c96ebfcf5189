"""MR-PLIP models, losses, tokenizer, checkpoints and published-model encoders.

Submodules import torch; this package root stays light so ``models.protocol`` can be
imported without a deep-learning stack.
"""
