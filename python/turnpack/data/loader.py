"""`ChatDataLoader`: a torch DataLoader over a `ChatDataset` that can save and restore its exact place.

Why a wrapper: with `num_workers > 0` the dataset runs in worker processes, so the dataset object in
the training process never learns how far the workers got, and a checkpoint of it cannot resume. The
consumer is the one place that knows which batches were actually used. So:

1. Driven by this loader, each worker attaches to every item its *logical* worker id, epoch, index in
   that epoch and its sample counts so far (the `META_KEY` entry, removed before the batch reaches
   you), and emits an end-of-epoch marker item carrying its final counts (also not passed on).
2. The loader records, per logical worker, the position after the last item it handed out
   (`turnpack.data.progress.Progress`), plus the worker that is due next. Batches prefetched by the
   DataLoader but not yet handed out are not counted: after a resume they are produced again.
3. On resume, every worker replays its epoch deterministically and skips what was consumed (prepared
   shards seek instead). The remaining subtlety is the order in which batches of different workers
   interleave: torch's DataLoader (with `in_order=True`, its default) serves workers round-robin
   (worker 0, 1, ..., W-1, 0, ...), skipping exhausted workers, and always starts at worker 0. A
   resumed run therefore *rotates* the roles: physical worker `p` plays logical worker
   `(p + next) % W`, where `next` follows the worker of the last consumed item. The fresh round-robin
   then continues exactly where the interrupted one stopped, so the batches after a resume are
   identical to those of an uninterrupted run, with any number of workers and ranks.

Each rank has its own loader and state (rank and world size are part of the saved configuration).

A pass (one `for batch in loader`) runs the dataset's `epochs` epochs and then advances to the next
epoch. Leaving the loop early keeps the position: the next `iter()` continues from the next unconsumed
batch, just as after `load_state_dict`. `set_epoch(e)` moves to the start of epoch `e` (it keeps the
position if it is already inside `e`, so it can be called after `load_state_dict`).

Workers are started anew for each pass (`persistent_workers` is not supported, since every pass gives
the workers new start positions).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from turnpack.data.dataset import META_KEY, ChatDataset
from turnpack.data.progress import Progress

__all__ = ["ChatDataLoader"]

# DataLoader arguments the loader sets itself (or that would break the round-robin it relies on).
_FIXED = {
    "batch_size": "the dataset yields whole batches; set ChatDataset(batch_size=...)",
    "shuffle": "set ChatDataset(shuffle=...)",
    "sampler": "an IterableDataset takes no sampler",
    "batch_sampler": "an IterableDataset takes no sampler",
    "collate_fn": "batches are already collated",
    "drop_last": "set ChatDataset(drop_last=...)",
    "persistent_workers": "workers restart each pass with new start positions",
    "in_order": "exact resume needs the DataLoader's in-order round-robin",
}


class ChatDataLoader:
    """Iterates a `ChatDataset` through a torch `DataLoader` and checkpoints the exact position.

    Args:
        dataset: the `ChatDataset` (its `batch_size` is the rows per batch).
        num_workers: DataLoader worker processes (0: read in this process).
        **dataloader_kwargs: other `torch.utils.data.DataLoader` arguments (`pin_memory`,
            `prefetch_factor`, `timeout`, `multiprocessing_context`, `worker_init_fn`, ...).
    """

    def __init__(self, dataset: ChatDataset, *, num_workers: int = 0, **dataloader_kwargs: Any) -> None:
        if not isinstance(dataset, ChatDataset):
            raise TypeError(f"ChatDataLoader needs a ChatDataset, got {type(dataset).__name__}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        for key in dataloader_kwargs:
            if key in _FIXED:
                raise ValueError(f"ChatDataLoader does not take {key!r}: {_FIXED[key]}")
        self.dataset = dataset
        self.num_workers = num_workers
        self._kwargs = dataloader_kwargs
        self._progress = Progress(max(1, num_workers), dataset._config())

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        view = self.dataset._view(self._progress.plan())
        loader = DataLoader(
            view, batch_size=None, num_workers=self.num_workers, persistent_workers=False, **self._kwargs
        )
        for item in loader:
            meta = item.pop(META_KEY)
            self._progress.record(meta["worker"], meta["epoch"], meta["index"], meta["end"], meta["stats"])
            if not meta["end"]:
                yield item
        self._progress.finish(self.dataset.epochs)

    def set_epoch(self, epoch: int) -> None:
        """Start the next pass at `epoch` (kept if already positioned inside `epoch`)."""
        self._progress.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        """The first epoch of the next (or current) pass."""
        return self._progress.first_epoch

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable position (and counts) after the last batch handed out."""
        return self._progress.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue after the batch at which `state` was saved (same dataset settings and workers)."""
        self._progress.load_state_dict(state)

    @property
    def stats(self) -> dict[str, int | float]:
        """This rank's sample accounting over all epochs so far (see `turnpack.data.stats`)."""
        return self._progress.stats

    @property
    def epoch_stats(self) -> dict[int, dict[str, int | float]]:
        """This rank's sample accounting per epoch."""
        return self._progress.epoch_stats

    @property
    def worker_stats(self) -> dict[tuple[int, int], dict[str, int | float]]:
        """Sample accounting per `(epoch, logical worker)`."""
        return self._progress.worker_stats
