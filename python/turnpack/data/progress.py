"""Bookkeeping for exact resume: how far the consumer got in each reader's stream.

A reader (one DataLoader worker of one rank) produces a deterministic stream of *items* per epoch:
its batches, then an end-of-epoch marker. `Progress` records, for every logical worker, the epoch and
the number of items the consumer has received, plus which worker the DataLoader will serve next. That
is all a fresh set of workers needs to continue the exact same sequence of batches (see
`turnpack.data.loader` for why the next worker matters). It also keeps each reader's latest sample
counts per epoch, so statistics survive a resume too.

Pure Python and JSON-serializable: `state_dict()` can go into any checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from turnpack.data.stats import merge_stats

__all__ = ["Progress", "ResumePlan"]

STATE_FORMAT = "turnpack.progress"
STATE_VERSION = 1


@dataclass(frozen=True)
class ResumePlan:
    """Where each logical worker starts: `positions[w] = (epoch, items to skip in that epoch)`.

    `rotation` is the logical worker that physical worker 0 plays, so that the DataLoader's
    round-robin, which always starts at physical worker 0, starts at the worker that was due next.
    """

    first_epoch: int
    positions: tuple[tuple[int, int], ...]
    rotation: int
    # Each worker's counts at its resume point (None at an epoch start), so that a reader that seeks
    # instead of replaying (prepared shards) still reports exact statistics.
    stats: tuple[dict[str, int] | None, ...]

    def logical(self, physical: int) -> int:
        return (physical + self.rotation) % len(self.positions)


class Progress:
    """Items received per logical worker, for `num_workers` workers, under a fixed `config`.

    `config` names what must not change between saving and resuming (rank, world size, seed, batch
    size, ...); `load_state_dict` refuses a state saved under another config.
    """

    def __init__(self, num_workers: int, config: Mapping[str, Any]) -> None:
        if num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        self.num_workers = num_workers
        self.config = dict(config)
        self.first_epoch = 0
        self._stats: dict[tuple[int, int], dict[str, int]] = {}
        self._reset()

    def _reset(self) -> None:
        self.positions = [(self.first_epoch, 0)] * self.num_workers
        self.next_worker = 0
        self._stats = {k: v for k, v in self._stats.items() if k[0] < self.first_epoch}

    def plan(self) -> ResumePlan:
        stats = tuple(
            self._stats.get((epoch, w)) if items else None for w, (epoch, items) in enumerate(self.positions)
        )
        return ResumePlan(self.first_epoch, tuple(self.positions), self.next_worker, stats)

    def record(self, worker: int, epoch: int, index: int, end: bool, stats: Mapping[str, int]) -> None:
        """The consumer received item `index` of `worker`'s epoch `epoch` (`end`: the epoch marker)."""
        self.positions[worker] = (epoch + 1, 0) if end else (epoch, index + 1)
        self.next_worker = (worker + 1) % self.num_workers
        self._stats[(epoch, worker)] = dict(stats)

    def finish(self, epochs: int | None) -> None:
        """A pass over the dataset ended: the next pass starts after the epochs it ran."""
        if epochs is not None:
            self.first_epoch += epochs
        self._reset()

    def set_epoch(self, epoch: int) -> None:
        """Start the next pass at `epoch`; progress inside that same epoch is kept (a resume)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.first_epoch:
            self.first_epoch = epoch
            self._reset()

    @property
    def epoch_stats(self) -> dict[int, dict[str, int | float]]:
        """Sample accounting per epoch, summed over this rank's workers."""
        epochs = sorted({e for e, _ in self._stats})
        return {e: merge_stats(s for (ep, _), s in self._stats.items() if ep == e) for e in epochs}

    @property
    def worker_stats(self) -> dict[tuple[int, int], dict[str, int | float]]:
        """Sample accounting per `(epoch, worker)`, as each worker last reported it."""
        return {key: merge_stats([s]) for key, s in sorted(self._stats.items())}

    @property
    def stats(self) -> dict[str, int | float]:
        """Sample accounting summed over all epochs and workers seen so far."""
        return merge_stats(self._stats.values())

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": dict(self.config),
            "num_workers": self.num_workers,
            "first_epoch": self.first_epoch,
            "next_worker": self.next_worker,
            "positions": [list(p) for p in self.positions],
            "stats": [
                {"epoch": e, "worker": w, "counts": dict(s)} for (e, w), s in sorted(self._stats.items())
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError("not a turnpack data-loader state (wrong format or version)")
        if state["num_workers"] != self.num_workers:
            raise ValueError(
                f"the state was saved with num_workers={state['num_workers']}, this loader has "
                f"{self.num_workers}; exact resume needs the same number of workers"
            )
        saved = state.get("config", {})
        for key in sorted(set(saved) | set(self.config)):
            if saved.get(key) != self.config.get(key):
                raise ValueError(
                    f"the state was saved with {key}={saved.get(key)!r}, this loader has "
                    f"{key}={self.config.get(key)!r}; exact resume needs the same setting"
                )
        positions = [tuple(int(x) for x in p) for p in state["positions"]]
        if len(positions) != self.num_workers:
            raise ValueError("the state's positions do not match its number of workers")
        self.first_epoch = int(state["first_epoch"])
        self.positions = positions  # type: ignore[assignment]
        self.next_worker = int(state["next_worker"]) % self.num_workers
        self._stats = {(int(s["epoch"]), int(s["worker"])): dict(s["counts"]) for s in state["stats"]}
