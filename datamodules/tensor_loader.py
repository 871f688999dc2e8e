"""A batch iterator over in-memory tensors, used instead of ``torch.utils.data.DataLoader``.

The datasets in this project are small enough to live in memory as one tensor per split.
Going through ``DataLoader`` would index and collate one sample at a time; here a batch is
one ``index_select`` of its (shuffled, sharded) indices, or a view when the order is kept,
plus an optional batched transform.

Lightning accepts any iterable with ``__len__`` as a dataloader; it does not inject a
``DistributedSampler`` into it, so sharding across DDP ranks is done here
(``num_replicas`` / ``rank``), with the same padding/truncation rule as
``DistributedSampler`` so every rank runs the same number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TensorBatchLoader:
    """Yield ``(x_batch, y_batch)`` slices of ``x`` and ``y``.

    Args:
        x: inputs, first dimension is the sample dimension.
        y: targets with the same first dimension as ``x``.
        batch_size: samples per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: draw a new permutation at every ``__iter__`` (i.e. every epoch) from a
            generator seeded once with ``seed``: the same seed gives the same sequence of
            epoch orders.
        seed: seed of the shuffling generator. Must be the same on every DDP rank so that
            all ranks shard the same permutation.
        drop_last: drop the last incomplete batch; with ``num_replicas > 1`` it also
            truncates the index list to a multiple of ``num_replicas`` instead of padding it.
        transform: ``transform(x_batch, generator) -> x_batch`` applied to each batch
            (batched augmentation). Its generator is seeded from ``seed`` and ``rank``, so
            augmentation is reproducible and differs between ranks.
        num_replicas: number of DDP processes sharing the data.
        rank: this process's index in ``0..num_replicas-1``.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        transform: BatchTransform | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: len(x)={len(x)}, len(y)={len(y)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer")
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas={num_replicas!r}: must be a positive integer")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank!r}: must be an integer in 0..{num_replicas - 1}")
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.transform = transform
        self.num_replicas = num_replicas
        self.rank = rank
        # One generator for the order (shared seed -> identical permutation on every rank)
        # and one for augmentation (rank-dependent, so ranks do not draw identical crops).
        self._order_gen = torch.Generator().manual_seed(self.seed)
        self._aug_gen = torch.Generator().manual_seed(self.seed * 1_000_003 + rank + 1)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (after padding/truncation for sharding)."""
        n = len(self.x)
        if self.num_replicas == 1:
            return n
        if self.drop_last:
            return n // self.num_replicas
        return math.ceil(n / self.num_replicas)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def _epoch_indices(self) -> torch.Tensor | None:
        """Indices of this rank's samples for the next epoch, or None for "all, in order"."""
        n = len(self.x)
        if self.shuffle:
            indices = torch.randperm(n, generator=self._order_gen)
        elif self.num_replicas == 1:
            return None
        else:
            indices = torch.arange(n)
        if self.num_replicas > 1:
            total = self.num_samples * self.num_replicas
            if total <= n:
                indices = indices[:total]
            else:
                # Pad by wrapping around (as DistributedSampler does) so all ranks run the same
                # number of steps; a rank with fewer steps would hang collective ops in DDP.
                repeats = math.ceil(total / n)
                indices = indices.repeat(repeats)[:total]
            indices = indices[self.rank :: self.num_replicas]
        return indices

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._epoch_indices()
        n_batches = len(self)
        for b in range(n_batches):
            start = b * self.batch_size
            if indices is None:  # in order: views, no copy
                xb = self.x[start : start + self.batch_size]
                yb = self.y[start : start + self.batch_size]
            else:
                # One small gather per batch (cache-resident): measured 4x faster than
                # gathering the whole shuffled epoch up front (0.03 vs 0.13 s per
                # Fashion-MNIST epoch), and a run stopped early pays only for its batches.
                idx = indices[start : start + self.batch_size]
                xb = self.x.index_select(0, idx)
                yb = self.y.index_select(0, idx)
            if self.transform is not None:
                xb = self.transform(xb, self._aug_gen)
            yield xb, yb

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self.x)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, "
            f"num_replicas={self.num_replicas}, rank={self.rank}, batches={len(self)})"
        )
