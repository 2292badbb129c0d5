"""Batches for the training loop.

The loop (:mod:`turnpack.train`) accepts any *loader*: an iterable of dict
batches with int64 tensors ``input_ids``, ``labels``, ``position_ids`` and
``document_ids`` of shape ``[rows, seq_len]`` (:data:`BATCH_KEYS`), plus
``prefix_starts`` and ``prefix_ends`` of the same shape for prefix-tree rows
(:data:`TREE_KEYS`, both or neither; see :mod:`turnpack.attention`), optionally
with ``state_dict()`` / ``load_state_dict()`` for exact resume.  Each rank
builds its own loader and must get its own share of the data.

:class:`PackedBatches` is such a loader over rows packed in memory once
(``turnpack.pack``), and :func:`build_loader` is the one place where a
:class:`~turnpack.train.config.DataConfig` becomes a loader.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

import turnpack
from turnpack.tokenizer import load_tokenizer
from turnpack.train.config import ConfigError, DataConfig

__all__ = [
    "BATCH_KEYS",
    "DEFAULT_SEQ_LEN",
    "TREE_KEYS",
    "Batch",
    "DataSource",
    "PackedBatches",
    "StatefulLoader",
    "batch_keys",
    "build_loader",
]

#: The tensors every batch carries, each int64 ``[rows, seq_len]``.
BATCH_KEYS = ("input_ids", "labels", "position_ids", "document_ids")
#: The optional tensors of prefix-tree rows (same shape), carried when a source has them: both or neither.
TREE_KEYS = ("prefix_starts", "prefix_ends")
Batch = dict[str, torch.Tensor]
#: Row length when the config leaves data.seq_len unset (and the data does not fix it).
DEFAULT_SEQ_LEN = 512


def batch_keys(present: Any, where: str = "the batch") -> tuple[str, ...]:
    """The keys to carry from ``present``: :data:`BATCH_KEYS`, plus :data:`TREE_KEYS` when it has them.

    Args:
        present: a predicate ``key -> bool`` or a mapping (a key counts when present and not None).
        where: what to name in the error.

    Raises:
        ValueError: only one of the two prefix arrays is present (a half tree cannot be masked).
    """
    if isinstance(present, Mapping):
        mapping = present
        present = lambda key: mapping.get(key) is not None  # noqa: E731 - a one-line predicate
    found = [key for key in TREE_KEYS if present(key)]
    if len(found) == 1:
        missing = next(key for key in TREE_KEYS if key not in found)
        raise ValueError(f"{where} has {found[0]} but no {missing}: prefix-tree rows need both (or neither)")
    return BATCH_KEYS + TREE_KEYS if found else BATCH_KEYS


@runtime_checkable
class StatefulLoader(Protocol):
    """A loader whose position can be saved and restored (for exact resume)."""

    def __iter__(self) -> Iterator[Batch]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PackedBatches:
    """Endless, deterministic, resumable batches over packed rows held in memory.

    Every step takes ``batch_size * world_size`` rows (the global batch) from a
    per-epoch permutation of all rows, and rank ``r`` gets the ``r``-th slice of
    ``batch_size`` rows.  So a DDP run sees, step for step, exactly the rows a
    single process with ``batch_size * world_size`` rows per step sees.  Rows
    left over at the end of an epoch (fewer than a global batch) are skipped.

    Batches carry :data:`BATCH_KEYS`, plus :data:`TREE_KEYS` when ``rows`` has
    them (not None).

    The state is just ``(epoch, step)`` of the next batch, updated as batches
    are handed out, so ``state_dict()`` taken after consuming ``k`` batches
    resumes at batch ``k + 1``.
    """

    def __init__(
        self,
        rows: turnpack.PackedBatch | Mapping[str, np.ndarray],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        get = rows.__getitem__ if isinstance(rows, Mapping) else lambda k: getattr(rows, k)
        if isinstance(rows, Mapping):
            keys = batch_keys(rows, "the packed rows")
        else:
            keys = batch_keys(lambda k: getattr(rows, k, None) is not None, "the packed rows")
        # One int64 tensor per column up front, so a batch is a cheap index_select.
        self.columns = {k: torch.from_numpy(np.asarray(get(k), dtype=np.int64)) for k in keys}
        shape = self.columns["input_ids"].shape
        for k, column in self.columns.items():
            if column.shape != shape:
                raise ValueError(
                    f"{k} has shape {tuple(column.shape)} but input_ids has shape {tuple(shape)}"
                )
        self.num_rows = int(self.columns["input_ids"].shape[0])
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shuffle, self.seed = shuffle, seed
        self.steps_per_epoch = self.num_rows // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{self.num_rows} packed rows are fewer than one global batch "
                f"({batch_size} rows x {world_size} ranks)"
            )
        self.epoch, self.step = 0, 0

    def __len__(self) -> int:
        """Batches per epoch (per rank)."""
        return self.steps_per_epoch

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_rows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            epoch = self.epoch
            order = torch.from_numpy(self._order(epoch))
            while self.epoch == epoch:
                start = (self.step * self.world_size + self.rank) * self.batch_size
                index = order[start : start + self.batch_size]
                # Advance before yielding: state_dict() then points at the next batch.
                self.step += 1
                if self.step == self.steps_per_epoch:
                    self.epoch, self.step = epoch + 1, 0
                yield {k: v.index_select(0, index) for k, v in self.columns.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size", self.world_size) != self.world_size:
            raise ValueError(
                f"loader state was saved with world_size {state['world_size']}, now {self.world_size}"
            )
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


# ------------------------------------------------------------------ hookup


@dataclass
class DataSource:
    """A rank's loader plus what the model needs to know about the data."""

    loader: Any  # iterable of Batch; see the module docstring
    vocab_size: int | None  # None when the source cannot tell (then model.vocab_size must be set)
    seq_len: int
    description: str


def _example_source(config: DataConfig, rank: int, world_size: int, seed: int) -> DataSource:
    from turnpack.train import examples

    seq_len = config.seq_len or DEFAULT_SEQ_LEN
    options = config.packing_options(pad_id=examples.PAD_ID)
    dialogues = examples.register_dialogues(config.num_examples, seed=seed)
    encodings = examples.example_tokenizer().encode_batch(dialogues, **options.encode_kwargs())
    packed = turnpack.pack(encodings, seq_len, **options.pack_kwargs())
    loader = PackedBatches(
        packed, config.batch_size, rank=rank, world_size=world_size, shuffle=config.shuffle, seed=seed
    )
    stats = packed.stats
    description = (
        f"example register-machine dialogues: {stats['packed']} in {len(packed)} rows of {seq_len} "
        f"(efficiency {stats['efficiency']:.1%}, {stats['trained_tokens']:,} trained tokens, "
        f"{stats['dropped']} dropped), {len(loader)} steps per epoch"
    )
    return DataSource(loader, examples.VOCAB_SIZE, seq_len, description)


def _chat_dataset_source(config: DataConfig, rank: int, world_size: int, seed: int) -> DataSource:
    from turnpack.data import ChatDataLoader, ChatDataset
    from turnpack.data.sources import prepared_dir

    if not config.path:
        raise ValueError("data.source = 'dataset' needs data.path")
    prepared = prepared_dir(config.path) is not None
    tokenizer: Any = None
    vocab_size = None
    if config.tokenizer:
        # A picklable factory rather than the tokenizer itself, so that spawned workers can rebuild it.
        tokenizer = functools.partial(load_tokenizer, config.tokenizer, config.chat_template)
        vocab_size = tokenizer().vocab_size
    elif not prepared:
        raise ValueError("data.tokenizer is needed to encode conversations (only prepared folders need none)")
    if prepared:
        from turnpack.data.shards import ShardReader

        reader = ShardReader(prepared_dir(config.path))
        if config.history == "expand" and not reader.trees:
            raise ConfigError(
                f"data.history = 'expand' but data.path {config.path} holds no prefix trees: prepare it "
                'with --encode-kwargs \'{"history": "expand"}\''
            )
        recorded = reader.index.get("metadata", {}).get("vocab_size")
        if recorded is not None and vocab_size is not None and recorded != vocab_size:
            raise ConfigError(
                f"data.path {config.path} was prepared with a tokenizer of {recorded} tokens, but "
                f"data.tokenizer ({config.tokenizer}) has {vocab_size}: the rows' ids belong to another "
                "vocabulary"
            )
        vocab_size = vocab_size if vocab_size is not None else recorded
    dataset = ChatDataset(
        config.path,
        None if prepared else tokenizer,
        config.seq_len or (None if prepared else DEFAULT_SEQ_LEN),
        batch_size=config.batch_size,
        # a prepared folder's rows are packed already; streamed ones are packed as the config says
        options=None if prepared else config.packing_options(),
        shuffle=config.shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        epochs=None,  # loop forever: ranks may hold different numbers of batches; the run stops by step count
    )
    loader = ChatDataLoader(dataset, num_workers=config.num_workers)
    kind = "prepared shards" if prepared else "conversations streamed from"
    return DataSource(loader, vocab_size, dataset.seq_len, f"{kind} {config.path}, rank {rank}/{world_size}")


def build_loader(config: DataConfig, *, rank: int = 0, world_size: int = 1, seed: int = 0) -> DataSource:
    """Turn a data config into this rank's loader: the single hookup point for data sources.

    ``example`` dialogues are encoded and packed in memory (every rank packs the
    same rows and takes its own slice of each global batch, see
    :class:`PackedBatches`); ``dataset`` paths are read by
    :class:`turnpack.data.ChatDataset` through :class:`turnpack.data.ChatDataLoader`,
    which shard by ``(rank, world_size)`` and checkpoint their exact position.
    """
    if config.source == "example":
        return _example_source(config, rank, world_size, seed)
    if config.source == "dataset":
        return _chat_dataset_source(config, rank, world_size, seed)
    raise ValueError(f"unknown data.source {config.source!r}")
