"""A resumable, rank-aware batch sampler whose position is the optimizer step.

The sample stream is an endless concatenation of seeded permutations of the dataset
(epoch e uses ``torch.Generator().manual_seed(seed + e)``). Optimizer step ``s`` consumes
the ``batch_size`` consecutive stream entries starting at ``s * batch_size``; they are split
into ``grad_accum`` micro-batches, each split into ``world_size`` equal contiguous shards.
So the data a step sees depends only on ``(seed, step)``: resuming at step ``s`` is exact,
and one process with batch B sees the same bags as W processes with B / W each.

Items are ``(epoch, index)`` pairs so that a dataset can seed its augmentation by
``(seed, epoch, index)`` (see ``EpochIndexed``) independently of worker assignment.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class StepBatchSampler:
    """Yields this rank's micro-batches (lists of ``(epoch, index)``) from ``start_step`` on.

    Parameters
    ----------
    num_samples : int
        Dataset length (bags).
    batch_size : int
        Global bags per optimizer step (all ranks, all micro-batches).
    grad_accum, world_size, rank : int
        Micro-batches per step, processes, this process.
    start_step, total_steps : int
        Steps to produce: ``range(start_step, total_steps)``.
    seed : int
        Permutation seed.
    shuffle : bool
        False keeps dataset order (useful in tests).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        grad_accum: int = 1,
        world_size: int = 1,
        rank: int = 0,
        start_step: int = 0,
        total_steps: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if num_samples < 1:
            raise ValueError("the bag manifest is empty: no bags to train on")
        if batch_size % (grad_accum * world_size):
            raise ValueError(
                f"batch size {batch_size} not divisible by grad_accum x world_size "
                f"= {grad_accum} x {world_size}"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.rank = rank
        self.start_step = start_step
        self.total_steps = total_steps
        self.seed = seed
        self.shuffle = shuffle
        self.micro = batch_size // (grad_accum * world_size)
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed + epoch)
                self._perms = {epoch: torch.randperm(self.num_samples, generator=gen).tolist()}
            else:
                self._perms = {epoch: list(range(self.num_samples))}
        return self._perms[epoch]

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """All ``batch_size`` ``(epoch, index)`` items of step ``step`` (every rank's, in order)."""
        first = step * self.batch_size
        out = []
        for i in range(first, first + self.batch_size):
            epoch = i // self.num_samples
            out.append((epoch, self._perm(epoch)[i % self.num_samples]))
        return out

    def micro_batches(self, step: int) -> list[list[tuple[int, int]]]:
        """This rank's ``grad_accum`` micro-batches of step ``step``."""
        batch = self.global_batch(step)
        per_micro = self.micro * self.world_size
        out = []
        for m in range(self.grad_accum):
            chunk = batch[m * per_micro : (m + 1) * per_micro]
            out.append(chunk[self.rank * self.micro : (self.rank + 1) * self.micro])
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield from self.micro_batches(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.grad_accum

    def state(self, step: int) -> dict:
        """The loader position after ``step`` finished steps (stored in checkpoints)."""
        consumed = step * self.batch_size
        return {
            "step": step,
            "epoch": consumed // self.num_samples,
            "index_in_epoch": consumed % self.num_samples,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }


class EpochIndexed:
    """Dataset view taking ``(epoch, index)`` keys: sets ``dataset.epoch`` then reads ``index``.

    Works in DataLoader workers (each holds its own copy of the dataset), so augmentation
    seeded by ``(seed, epoch, index)`` is the same whichever worker reads the item.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]
