"""Who reads what: splitting a sample stream across ranks and DataLoader workers, and seeded shuffles.

Every (rank, worker) pair is one *shard*: `index = rank * num_workers + worker` out of
`count = world_size * num_workers`. A shard owns the samples whose position in the epoch's stream is
`index` modulo `count`, so every sample belongs to exactly one shard, whatever the lengths of the
sources, and every reader can decide ownership while streaming without any coordination.

Nothing here imports torch: `worker_info()` only asks torch when torch is already imported (a process
that has not imported torch cannot be a torch DataLoader worker).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

__all__ = ["Shard", "buffered_shuffle", "distributed_rank_world", "epoch_seed", "worker_info"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """The `index`-th of `count` interleaved slices of a stream."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} out of range for {self.count} shard(s)")

    @classmethod
    def of(cls, rank: int, world_size: int, worker: int, num_workers: int) -> Shard:
        """The shard read by `worker` (of `num_workers`) on `rank` (of `world_size`)."""
        return cls(rank * num_workers + worker, world_size * num_workers)

    def first_owned(self, offset: int) -> int:
        """The first row this shard owns in a source whose row 0 is at stream position `offset`."""
        return (self.index - offset) % self.count


def distributed_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """`(rank, world_size)`: the given values, else torch.distributed's when initialized, else (0, 1)."""
    if rank is None or world_size is None:
        dist = sys.modules.get("torch.distributed")
        if dist is None:
            try:
                import torch.distributed as dist
            except ImportError:
                dist = None
        initialized = dist is not None and dist.is_available() and dist.is_initialized()
        if rank is None:
            rank = dist.get_rank() if initialized else 0
        if world_size is None:
            world_size = dist.get_world_size() if initialized else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return rank, world_size


def worker_info() -> tuple[int, int]:
    """`(worker_id, num_workers)` inside a torch DataLoader worker, else `(0, 1)`."""
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    return (0, 1) if info is None else (info.id, info.num_workers)


def epoch_seed(seed: int, *keys: int) -> int:
    """A 64-bit seed derived from `seed` and `keys` (epoch, shard...), well mixed and platform-stable."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, *keys]).generate_state(1, np.uint64)[0])


def buffered_shuffle(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """Yields `items` in a pseudo-random order using a buffer of `size` items.

    Each incoming item replaces a random buffered one, which is yielded; the rest is shuffled at the
    end. The order depends only on the items' order and `rng`'s seed, which is what exact resume needs.
    `size <= 1` yields items unchanged.
    """
    if size <= 1:
        yield from items
        return
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        out, buffer[j] = buffer[j], item
        yield out
    rng.shuffle(buffer)
    yield from buffer
