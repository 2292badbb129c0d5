"""`ChatDataset`: packed, supervised chat batches as a torch `IterableDataset`.

Design
------
Each reader (one DataLoader worker of one rank) runs the whole pipeline on its own slice of the data:

    sources ─> own rows ─> buffered shuffle ─> field mapping ─> encode + pack (Rust) ─> batches

* **Sharding.** Worker `w` (of `W`) on rank `r` (of `R`) is shard `r * W + w` of `R * W`, and owns the
  rows whose position in the epoch's stream is its index modulo `R * W` (`turnpack.data.sharding`).
  So every sample is read by exactly one reader per epoch, with no coordination and no index files.
  Prepared shards (a folder written by `turnpack prepare`) are split the same way, by packed row.
* **Shuffling.** Per epoch, seeded by `(seed, epoch)`: the order of the source files, then a buffered
  shuffle of each reader's rows (`shuffle_buffer` records, seeded by `(seed, epoch, shard)`). Prepared
  rows get a full permutation per epoch. Everything is a pure function of the seed, the epoch and the
  shard, so an epoch can be replayed exactly.
* **Encoding and packing.** Records are encoded `encode_chunk` at a time straight into the `Packer`
  (`Packer.encode_extend`, GIL released) on `num_threads` threads: 1 inside DataLoader workers unless
  set (the workers already run in parallel), `TURNPACK_NUM_THREADS` or all cores in the main process.
  Samples reach the packer in order, as `options` (`PackingOptions`) say, and its rows are cut into
  batches of `batch_size` rows.
* **Batches.** Dicts of tensors, every per-token tensor `[B, seq_len]`:
  `input_ids`, `labels` (-100 where not trained; already shifted: `labels[t]` is the target of
  position `t`), `position_ids` (restart at 0 per document), `document_ids` (0, 1, ... per row; the
  padding run has its own id) - all int64 - plus `cu_seqlens` (int32 `[B, S + 1]`, per-row document
  boundaries, tail filled with `seq_len`) and `sample_ids` (int64 `[B, S]`, -1 filled; see
  `turnpack.data.sources.split_sample_id`).
* **Prefix-tree batches.** With `history="expand"` (streamed, or a folder prepared with it) every
  batch also has `prefix_starts` and `prefix_ends` (int64 `[B, seq_len]`: token `t` also attends to
  the row's tokens `prefix_starts[t]:prefix_ends[t]`; `0, 0` for tokens that see only their own
  document, and for every token of a batch that happens to hold no tree, so the keys never change
  within a run) and `doc_roles` (int64 `[B, S]` like `sample_ids`: 0 a sample's own document, 1 a
  branch, 2 a context copy of a trunk's first tokens, -1 filled). Give the two prefix arrays to the
  mask (`turnpack.attention`, `build_attention_mask`); `position_ids` continue from each branch point,
  so they must be taken from the batch, never recomputed from document boundaries. A branch's
  `sample_ids` entry is its sample's id: count samples where `doc_roles == 0`.
* **The last batch of an epoch** holds whatever rows are left: it has *fewer rows* (never padded rows),
  unless `drop_last=True`, which drops it and counts its samples as `dropped_last_batch`. Epochs never
  share a batch. Readers get different amounts of data, so ranks can yield different numbers of
  batches: in distributed training loop forever (`epochs=None`) and stop after a number of steps.
* **Accounting.** Every sample read is either a document of exactly one yielded row, or counted as
  dropped with its reason (`turnpack.data.stats`). A reader's counts travel with its batches.
* **Exact resume.** Each reader's stream of batches is deterministic, so resuming is "replay and
  skip": a reader told to start at item `k` of epoch `e` rebuilds epoch `e` and skips its first `k`
  batches (prepared shards seek straight to the row instead). Knowing `k` for every worker needs a
  consumer-side count, because DataLoader workers run in other processes: `ChatDataLoader`
  (`turnpack.data.loader`) keeps it, and explains how it also restores the DataLoader's round-robin.
  Iterated directly (or by a DataLoader with `num_workers=0`), the dataset keeps the count itself,
  so `ChatDataset.state_dict()` is exact there; with workers, use `ChatDataLoader.state_dict()`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from turnpack._core import ChatTokenizer
from turnpack.data.batching import RowQueue, Rows
from turnpack.data.errors import OnError, check_on_error
from turnpack.data.options import PackingOptions
from turnpack.data.pipeline import EncodePacker
from turnpack.data.progress import Progress, ResumePlan
from turnpack.data.records import FIELDS, Fields
from turnpack.data.sharding import Shard, buffered_shuffle, distributed_rank_world, epoch_seed, worker_info
from turnpack.data.shards import ShardReader
from turnpack.data.sources import iter_epoch, prepared_dir, resolve_sources, split_sample_id
from turnpack.data.stats import RowTally
from turnpack.tokenizer import load_tokenizer

__all__ = ["META_KEY", "ChatDataset", "TokenizerLike"]

# Key of the bookkeeping entry added to each item when a ChatDataLoader drives the dataset.
META_KEY = "_turnpack"

TokenizerLike = ChatTokenizer | str | os.PathLike | Callable[[], ChatTokenizer]

# One item of a reader's epoch: (index, rows or None for the end-of-epoch marker, counts so far).
_Item = tuple[int, Rows | None, dict[str, int]]


def _resolve_tokenizer(spec: TokenizerLike) -> ChatTokenizer:
    if isinstance(spec, ChatTokenizer):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return load_tokenizer(spec)
    if callable(spec):
        tokenizer = spec()
        if not isinstance(tokenizer, ChatTokenizer):
            raise TypeError(
                f"the tokenizer factory returned a {type(tokenizer).__name__}, not a ChatTokenizer"
            )
        return tokenizer
    raise TypeError(
        "tokenizer must be a ChatTokenizer, a model folder or tokenizer file, or a function returning a "
        "ChatTokenizer, "
        f"got {type(spec).__name__}"
    )


def _tensors(rows: Rows) -> dict[str, torch.Tensor]:
    """Batch dict; copies so that tensors never alias packer or memory-mapped buffers."""

    def t(a: np.ndarray, dtype: type) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=dtype, copy=True))

    batch = {
        "input_ids": t(rows.input_ids, np.int64),
        "labels": t(rows.labels, np.int64),
        "position_ids": t(rows.position_ids, np.int64),
        "document_ids": t(rows.document_ids, np.int64),
        "cu_seqlens": t(rows.cu_seqlens, np.int32),
        "sample_ids": t(rows.sample_ids, np.int64),
    }
    if rows.prefix_starts is not None and rows.prefix_ends is not None and rows.doc_roles is not None:
        batch["prefix_starts"] = t(rows.prefix_starts, np.int64)
        batch["prefix_ends"] = t(rows.prefix_ends, np.int64)
        batch["doc_roles"] = t(rows.doc_roles, np.int64)
    if rows.loss_weights is not None:
        # messages weighted other than 0 or 1: the loss is the weighted mean (next_token_loss)
        batch["loss_weights"] = t(rows.loss_weights, np.float32)
    return batch


class ChatDataset(IterableDataset):
    """Packed chat batches from conversations, streamed or read from prepared shards.

    Args:
        source: JSONL/JSON/Parquet path, folder or glob, or a list of them; a `datasets.Dataset`; a
            list or other re-iterable collection of records; a function returning an iterator of
            records; or a folder written by `turnpack prepare` (then `tokenizer` is not needed).
        tokenizer: a `ChatTokenizer`, what `turnpack.load_tokenizer` loads (a Hugging Face model
            folder, a tokenizer.json file, `"example"`), or a picklable function returning a
            `ChatTokenizer`. All work with DataLoader start methods that pickle the dataset (spawn,
            forkserver): a tokenizer object travels with the dataset, a path or a function is loaded
            again in each worker.
        seq_len: tokens per row (read from the index for prepared shards).
        batch_size: rows per batch.
        options: how records are encoded and packed, as one `PackingOptions`; or give the loose
            keyword arguments below (not both).
        buffer, max_open_rows, overflow, pad_id: packing options (see `turnpack.pack`; defaults 1024,
            16, "drop", 0). For prepared shards, `pad_id` (or `options.pad_id`), when given, must be the
            folder's.
        shuffle, seed, shuffle_buffer: per-epoch seeded shuffling (see the module docstring).
        rank, world_size: this process's place among data-parallel ranks; by default from
            `torch.distributed` when it is initialized when the dataset is built, else 0 and 1.
        fields: record layout, `"auto"`, `"messages"` (OpenAI) or `"sharegpt"`.
        encode_kwargs: encoding options as `ChatTokenizer.encode_batch` takes them (`supervise`, `eot`,
            `start`, `tools`, `history`, template variables such as `enable_thinking`, ...).
            `history="expand"` gives prefix-tree batches (see the module docstring); a prepared folder
            has its rows' history already, and asking a plain folder for `"expand"` is an error.
        on_error: `"raise"` a typed error naming the file and line of a bad record, or `"skip"` it
            and count it as `dropped_error`.
        num_threads: encoding threads per reader (None: 1 in a DataLoader worker, else the default).
        epochs: epochs per pass over the dataset; None loops forever.
        drop_last: drop each epoch's short last batch (its samples are counted as dropped).
        encode_chunk: records per `encode_extend` call.
    """

    def __init__(
        self,
        source: Any,
        tokenizer: TokenizerLike | None = None,
        seq_len: int | None = None,
        *,
        batch_size: int,
        options: PackingOptions | None = None,
        buffer: int | None = None,
        max_open_rows: int | None = None,
        overflow: str | None = None,
        pad_id: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 8192,
        rank: int | None = None,
        world_size: int | None = None,
        fields: Fields = "auto",
        encode_kwargs: Mapping[str, Any] | None = None,
        on_error: OnError = "raise",
        num_threads: int | None = None,
        epochs: int | None = 1,
        drop_last: bool = False,
        encode_chunk: int = 256,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 row, got {batch_size}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be at least 1, or None to loop forever, got {epochs}")
        if fields not in FIELDS:
            raise ValueError(f"fields must be one of {', '.join(map(repr, FIELDS))}, got {fields!r}")
        loose = {"buffer": buffer, "max_open_rows": max_open_rows, "overflow": overflow, "pad_id": pad_id}
        loose = {key: value for key, value in loose.items() if value is not None}
        if options is None:
            options = PackingOptions.from_encode_kwargs(encode_kwargs, **loose)
            wanted_pad_id = pad_id
        elif loose or encode_kwargs is not None:
            given = ", ".join([*loose, *(["encode_kwargs"] if encode_kwargs is not None else [])])
            raise ValueError(f"pass either options or {given}, not both")
        else:
            wanted_pad_id = options.pad_id
        wants_trees = options.history == "expand"
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.rank, self.world_size = distributed_rank_world(rank, world_size)
        self.fields: Fields = fields
        self.on_error: OnError = check_on_error(on_error)
        self.num_threads = num_threads
        self.epochs = epochs
        self.drop_last = drop_last
        self.encode_chunk = encode_chunk

        folder = prepared_dir(source)
        self._reader: ShardReader | None = ShardReader(folder) if folder is not None else None
        if self._reader is not None:
            if seq_len not in (None, self._reader.seq_len):
                raise ValueError(f"{folder} was prepared with seq_len={self._reader.seq_len}, not {seq_len}")
            if wanted_pad_id not in (None, self._reader.pad_id):
                raise ValueError(
                    f"{folder} was prepared with pad_id={self._reader.pad_id}, not {wanted_pad_id}"
                )
            if wants_trees and not self._reader.trees:
                # Its rows are packed already; silently training them without trees is not what was asked.
                raise ValueError(
                    f"{folder} holds no prefix trees (it was not prepared with history='expand'): "
                    "prepare it again with that option to train its branches"
                )
            self.seq_len, self.pad_id = self._reader.seq_len, self._reader.pad_id
            # The folder's rows are packed already: no options apply to them.
            self.options: PackingOptions | None = None
            self._sources = []
            self._tokenizer_spec, self._tokenizer = None, None
        else:
            if seq_len is None or seq_len < 2:
                raise ValueError(f"seq_len must be at least 2 tokens, got {seq_len}")
            if tokenizer is None:
                raise ValueError(
                    "a tokenizer is needed to encode conversations (only prepared shards need none)"
                )
            self.seq_len, self.pad_id = seq_len, options.pad_id
            self.options = options
            self._sources = resolve_sources(source)
            self._tokenizer_spec = None if isinstance(tokenizer, ChatTokenizer) else tokenizer
            self._tokenizer = _resolve_tokenizer(tokenizer)  # now, so that a bad tokenizer fails here
        self._progress = Progress(1, self._config())
        # Set on the per-run views a ChatDataLoader makes: where each worker starts, and whether to
        # attach META_KEY bookkeeping to items. None when the dataset is iterated directly.
        self._run: ResumePlan | None = None

    # ------------------------------------------------------------------ configuration and state

    @property
    def prepared(self) -> bool:
        """True when reading a folder written by `turnpack prepare`."""
        return self._reader is not None

    @property
    def prepared_stats(self) -> dict[str, Any]:
        """For prepared shards: the preparation's accounting (samples in, dropped by reason, ...)."""
        return self._reader.stats if self._reader is not None else {}

    @property
    def tokenizer(self) -> ChatTokenizer | None:
        if self._tokenizer is None and self._tokenizer_spec is not None:
            self._tokenizer = _resolve_tokenizer(self._tokenizer_spec)
        return self._tokenizer

    def _config(self) -> dict[str, Any]:
        """What determines the stream of batches; a resume state must have been saved under the same."""
        options = self.options
        return {
            "source": "prepared" if self.prepared else "stream",
            "rank": self.rank,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_buffer": self.shuffle_buffer if self.shuffle and not self.prepared else None,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "drop_last": self.drop_last,
            "packing": None
            if options is None
            else [options.buffer, options.max_open_rows, options.overflow, options.pad_id],
            "encoding": None
            if options is None
            else json.dumps([self.fields, options.encode_kwargs()], sort_keys=True, default=repr),
        }

    def set_epoch(self, epoch: int) -> None:
        """Start the next direct iteration at `epoch` (kept if already positioned inside `epoch`)."""
        self._progress.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Resume state of *direct* iteration (or a DataLoader with `num_workers=0`).

        With DataLoader workers this object never sees their progress: use `ChatDataLoader`.
        """
        return self._progress.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._progress.load_state_dict(state)

    @property
    def stats(self) -> dict[str, int | float]:
        """Sample accounting of direct iteration, summed over epochs (see `turnpack.data.stats`)."""
        return self._progress.stats

    @property
    def epoch_stats(self) -> dict[int, dict[str, int | float]]:
        return self._progress.epoch_stats

    def _view(self, plan: ResumePlan) -> ChatDataset:
        """A shallow copy for one ChatDataLoader run, reporting progress through META_KEY."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._run = plan
        return view

    def __getstate__(self) -> dict[str, Any]:
        # Spawned/forkserver workers receive the dataset pickled. A ChatTokenizer object is pickled
        # with it (it pickles as its tokenizer.json and template); a model folder or a factory is
        # sent instead of the tokenizer it loaded, and loaded again in the worker.
        state = self.__dict__.copy()
        if state["_tokenizer_spec"] is not None:
            state["_tokenizer"] = None
        return state

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = worker_info()
        in_worker = torch.utils.data.get_worker_info() is not None
        tagged = self._run is not None
        progress: Progress | None = None
        if tagged:
            plan = self._run
        elif num_workers == 1:
            progress = self._progress
            plan = progress.plan()
        else:  # a plain DataLoader with workers: nobody can record progress (use ChatDataLoader)
            first = self._progress.first_epoch
            plan = ResumePlan(first, ((first, 0),) * num_workers, 0, (None,) * num_workers)
        if len(plan.positions) != num_workers:
            raise RuntimeError(
                f"the resume plan is for {len(plan.positions)} worker(s) but the DataLoader runs {num_workers}"
            )
        logical = plan.logical(worker)
        shard = Shard.of(self.rank, self.world_size, logical, num_workers)
        threads = self.num_threads if self.num_threads is not None else (1 if in_worker else None)
        epoch, skip = plan.positions[logical]
        start_stats = plan.stats[logical]
        while self.epochs is None or epoch < plan.first_epoch + self.epochs:
            items = (
                self._prepared_epoch(epoch, shard, skip, start_stats)
                if self._reader is not None
                else self._stream_epoch(epoch, shard, skip, threads)
            )
            for index, rows, counts in items:
                end = rows is None
                if progress is not None:
                    progress.record(logical, epoch, index, end, counts)
                if tagged:
                    batch: dict[str, Any] = {} if rows is None else _tensors(rows)
                    batch[META_KEY] = {
                        "worker": logical,
                        "epoch": epoch,
                        "index": index,
                        "end": end,
                        "stats": counts,
                    }
                    yield batch
                elif rows is not None:
                    yield _tensors(rows)
            epoch, skip, start_stats = epoch + 1, 0, None
        if progress is not None:
            progress.finish(self.epochs)

    def _stream_epoch(self, epoch: int, shard: Shard, skip: int, threads: int | None) -> Iterator[_Item]:
        """Encodes and packs this shard's samples; yields items from index `skip` on."""
        sources = self._sources
        order = list(range(len(sources)))
        if self.shuffle and len(order) > 1:
            random.Random(epoch_seed(self.seed, epoch)).shuffle(order)
        samples = iter_epoch(sources, order, shard)
        if self.shuffle:
            rng = random.Random(epoch_seed(self.seed, epoch, shard.index, shard.count))
            samples = buffered_shuffle(samples, self.shuffle_buffer, rng)

        def describe(sample_id: int) -> str:
            source, row = split_sample_id(sample_id)
            return sources[source].describe(row)

        assert self.options is not None  # a streamed dataset always has options
        pipe = EncodePacker(
            self.tokenizer,
            self.seq_len,
            self.options,
            describe=describe,
            fields=self.fields,
            on_error=self.on_error,
            num_threads=threads,
            chunk_size=self.encode_chunk,
        )
        queue, tally, index = RowQueue(), RowTally(), 0
        for rows in pipe.run(samples):
            queue.add(rows)
            while len(queue) >= self.batch_size:
                batch = queue.take(self.batch_size)
                tally.batch(batch)
                if index >= skip:
                    yield index, batch, {**pipe.counts(), **tally.counts}
                index += 1
        if len(queue):
            batch = queue.take(len(queue))
            if self.drop_last:
                tally.dropped(batch)
            else:
                tally.batch(batch)
                if index >= skip:
                    yield index, batch, {**pipe.counts(), **tally.counts}
                index += 1
        if index >= skip:
            yield index, None, {**pipe.counts(), **tally.counts}

    def _prepared_epoch(
        self, epoch: int, shard: Shard, skip: int, start_stats: Mapping[str, int] | None
    ) -> Iterator[_Item]:
        """Reads this shard's rows of a prepared folder, seeking straight to batch `skip`."""
        reader = self._reader
        assert reader is not None
        n = reader.num_rows
        order = (
            np.random.default_rng(epoch_seed(self.seed, epoch)).permutation(n)
            if self.shuffle
            else np.arange(n)
        )
        mine = order[shard.index :: shard.count]
        size = self.batch_size
        full, rest = divmod(len(mine), size)
        batches = full + int(bool(rest) and not self.drop_last)
        tally = RowTally(start_stats if skip else None)
        if skip and start_stats is None:  # no saved counts at the resume point: recount the skipped rows
            for k in range(min(skip, batches)):
                tally.batch(reader.rows(mine[k * size : (k + 1) * size]))

        def counts() -> dict[str, int]:
            # The folder's rows are this epoch's samples (and branches): what they hold came in.
            c = tally.counts
            return {
                "samples": c["packed"] + c["dropped_last_batch"],
                "branches_in": c["branches"] + c["branches_dropped_last_batch"],
                **c,
            }

        for k in range(skip, batches):
            rows = reader.rows(mine[k * size : (k + 1) * size])
            tally.batch(rows)
            yield k, rows, counts()
        if skip <= batches:
            if rest and self.drop_last:
                tally.dropped(reader.rows(mine[full * size :]))
            yield batches, None, counts()
