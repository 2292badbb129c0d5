"""Prepared shards: packed rows written once by `turnpack prepare`, read back memory-mapped.

A prepared folder holds, per shard `NNNNN`, plain `.npy` files (readable with numpy alone):

    NNNNN.input_ids.npy    int32 [rows, seq_len]   tokens, padding = pad_id
    NNNNN.labels.npy       int32 [rows, seq_len]   next token where trained, else -100
    NNNNN.doc_lens.npy     int32 [documents]       every document's length, row 0's first
    NNNNN.doc_offsets.npy  int64 [rows + 1]        row r's documents are doc_lens[off[r]:off[r+1]]
    NNNNN.sample_ids.npy   int64 [documents]       each document's sample id (source << 40 | row)

plus `index.json` (format, version, seq_len, pad_id, history, trees, shard list, the preparation's
stats and settings) and `stats.json`. `position_ids`, `document_ids` and `cu_seqlens` are derived from
the document lengths when reading, exactly as the packer derives them, so they take no space on disk.

Prefix-tree folders (prepared with `history="expand"`; `"trees": true` and format version 2 in the
index) store four more files per shard:

    NNNNN.position_ids.npy   int32 [rows, seq_len]   positions (a branch continues from its branch point)
    NNNNN.prefix_starts.npy  int32 [rows, seq_len]   token t also attends to prefix_starts[t]:prefix_ends[t]
    NNNNN.prefix_ends.npy    int32 [rows, seq_len]
    NNNNN.doc_roles.npy      uint8 [documents]       0 sample's own, 1 branch, 2 context copy (as doc_lens)

Branch positions go back inside a row, so they cannot be derived from the lengths; document ids and
boundaries still are. The version differs so that a reader that knows only plain folders refuses a
tree folder instead of deriving wrong positions and training every branch blind to its context; this
reader checks, the other way round, that a plain index has no tree files beside it.

A shard whose rows hold messages weighted other than 0 or 1 also has (and its index entry says
`"loss_weights": true`):

    NNNNN.loss_weights.npy   float32 [rows, seq_len] the weight of each label (0 where it is -100)

`index.json` is written last, atomically: a folder without it is an unfinished preparation, and is not
recognized as a prepared source.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from turnpack.data.batching import IGNORE_INDEX, RowQueue, Rows
from turnpack.data.errors import SourceError
from turnpack.data.options import HISTORIES
from turnpack.data.sources import INDEX_FILE

__all__ = [
    "FORMAT",
    "STATS_FILE",
    "TREE_VERSION",
    "VERSION",
    "ShardReader",
    "ShardWriter",
    "default_rows_per_shard",
]

FORMAT = "turnpack.prepared"
VERSION = 1
#: The format version of prefix-tree folders (plain folders keep `VERSION`, readable by older readers).
TREE_VERSION = 2
STATS_FILE = "stats.json"
_ARRAYS = ("input_ids", "labels", "doc_lens", "doc_offsets", "sample_ids")
# The arrays only prefix-tree folders have.
_TREE_ARRAYS = ("position_ids", "prefix_starts", "prefix_ends", "doc_roles")
# Files this module writes; `overwrite` removes only these.
_OWN_FILE = re.compile(
    r"^(\d{5,}\.(" + "|".join(_ARRAYS + _TREE_ARRAYS) + r")\.npy|index\.json|stats\.json)(\.tmp)?$"
)


def default_rows_per_shard(seq_len: int) -> int:
    """About 2**24 tokens (128 MiB of tokens + labels) per shard."""
    return max(1, (1 << 24) // seq_len)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)  # readers see the old file or the whole new one, never a partial one


class ShardWriter:
    """Writes rows into shards of `rows_per_shard` rows in `out_dir`, then the index (`close`).

    `history` is the encoding's `history` option, recorded in the index; with `"expand"` the folder
    holds prefix-tree rows and stores their arrays (rows without a tree get empty prefixes).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        seq_len: int,
        *,
        pad_id: int,
        rows_per_shard: int | None = None,
        overwrite: bool = False,
        history: str = "rendered",
    ) -> None:
        if history not in HISTORIES:
            raise ValueError(f"history must be one of {', '.join(map(repr, HISTORIES))}, got {history!r}")
        self.out_dir = Path(out_dir)
        self.seq_len = seq_len
        self.pad_id = pad_id
        self.history = history
        self.trees = history == "expand"
        self.rows_per_shard = rows_per_shard or default_rows_per_shard(seq_len)
        if self.rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
        self._prepare_dir(overwrite)
        self._queue = RowQueue()
        self._written: list[Path] = []
        self.shards: list[dict[str, int | str]] = []

    def _prepare_dir(self, overwrite: bool) -> None:
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        existing = sorted(p.name for p in out.iterdir())
        if not existing:
            return
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty ({len(existing)} entries); pass overwrite to replace it"
            )
        foreign = [name for name in existing if not _OWN_FILE.match(name)]
        if foreign:
            raise FileExistsError(
                f"{out} holds files that turnpack did not write ({', '.join(foreign[:3])}); "
                "refusing to overwrite it"
            )
        # The index goes first, so that an interrupted overwrite never leaves a readable mix.
        for name in sorted(existing, key=lambda n: n != INDEX_FILE):
            (out / name).unlink()

    def add(self, rows: Rows) -> None:
        if rows.seq_len != self.seq_len:
            raise ValueError(f"rows of {rows.seq_len} tokens do not fit shards of {self.seq_len}")
        if rows.has_trees and not self.trees:
            # Stored without their arrays, the branches would be read back blind to their context.
            raise ValueError('prefix-tree rows go into shards written with history="expand"')
        self._queue.add(rows.with_trees() if self.trees else rows)
        while len(self._queue) >= self.rows_per_shard:
            self._write(self._queue.take(self.rows_per_shard))

    def _write(self, rows: Rows) -> None:
        name = f"{len(self.shards):05d}"
        doc_lens = rows.doc_lens()
        arrays = {
            "input_ids": rows.input_ids.astype(np.int32, copy=False),
            "labels": rows.labels.astype(np.int32),
            "doc_lens": np.concatenate(doc_lens).astype(np.int32),
            "doc_offsets": np.concatenate([[0], np.cumsum(rows.doc_counts)]).astype(np.int64),
            "sample_ids": np.concatenate(rows.row_sample_ids()).astype(np.int64),
        }
        if self.trees:
            # `add` gave every queued row the tree arrays.
            assert rows.prefix_starts is not None and rows.prefix_ends is not None
            arrays["position_ids"] = rows.position_ids.astype(np.int32, copy=False)
            arrays["prefix_starts"] = rows.prefix_starts.astype(np.int32, copy=False)
            arrays["prefix_ends"] = rows.prefix_ends.astype(np.int32, copy=False)
            arrays["doc_roles"] = np.concatenate(rows.row_doc_roles()).astype(np.uint8)
        if rows.loss_weights is not None:
            arrays["loss_weights"] = rows.loss_weights.astype(np.float32, copy=False)
        for key, array in arrays.items():
            path = self.out_dir / f"{name}.{key}.npy"
            self._written.append(path)
            np.save(path, np.ascontiguousarray(array))
        entry = {"name": name, "rows": len(rows), "documents": int(rows.doc_counts.sum())}
        if rows.loss_weights is not None:
            entry["loss_weights"] = True
        self.shards.append(entry)

    def abort(self) -> None:
        """Removes the shard files written so far (after a failure; no index was written)."""
        for path in self._written:
            path.unlink(missing_ok=True)
        self._written.clear()

    def close(
        self, metadata: Mapping[str, Any] | None = None, stats: Mapping[str, Any] | None = None
    ) -> dict:
        """Writes the last (smaller) shard, `stats.json`, then `index.json`; returns the index."""
        if len(self._queue):
            self._write(self._queue.take(len(self._queue)))
        index = {
            "format": FORMAT,
            "version": TREE_VERSION if self.trees else VERSION,
            "seq_len": self.seq_len,
            "pad_id": self.pad_id,
            "history": self.history,
            "trees": self.trees,
            "rows": sum(int(s["rows"]) for s in self.shards),
            "documents": sum(int(s["documents"]) for s in self.shards),
            "shards": self.shards,
            "stats": dict(stats or {}),
            "metadata": dict(metadata or {}),
        }
        _write_json(self.out_dir / STATS_FILE, {"stats": index["stats"], **index["metadata"]})
        _write_json(self.out_dir / INDEX_FILE, index)
        return index


class ShardReader:
    """Random access to the rows of a prepared folder; shard files are memory-mapped on first use."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        index_path = self.path / INDEX_FILE
        try:
            index = json.loads(index_path.read_text())
        except OSError as e:
            raise SourceError(f"cannot read {index_path}: {e.strerror or e}") from e
        except ValueError as e:
            raise SourceError(f"{index_path} is not valid JSON: {e}") from e
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise SourceError(f"{index_path} is not a turnpack prepared-shard index")
        version = index.get("version")
        if version not in (VERSION, TREE_VERSION):
            raise SourceError(
                f"{index_path} has format version {version}, this turnpack reads {VERSION} and {TREE_VERSION}"
            )
        #: True for a folder of prefix-tree rows (prepared with history="expand").
        self.trees = index.get("trees", False) is True
        if self.trees != (version == TREE_VERSION):
            raise SourceError(
                f"{index_path} is inconsistent: format version {version} with trees={index.get('trees')}"
            )
        self.index: dict[str, Any] = index
        self.seq_len = int(index["seq_len"])
        self.pad_id = int(index["pad_id"])
        #: The encoding's history option; None for folders prepared before it was recorded.
        self.history: str | None = index.get("history")
        self.shards: list[dict[str, Any]] = list(index["shards"])
        self.starts = np.cumsum([0] + [int(s["rows"]) for s in self.shards])
        self.num_rows = int(self.starts[-1])
        self._open: dict[int, dict[str, np.ndarray]] = {}

    @property
    def stats(self) -> dict[str, Any]:
        """The preparation's sample accounting (samples in, dropped by reason, ...)."""
        return dict(self.index.get("stats", {}))

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps would be pickled as copies of the data; a worker maps the files itself.
        return {**self.__dict__, "_open": {}}

    def _shard(self, s: int) -> dict[str, np.ndarray]:
        arrays = self._open.get(s)
        if arrays is None:
            name = self.shards[s]["name"]
            if not self.trees and (self.path / f"{name}.prefix_starts.npy").exists():
                raise SourceError(
                    f"shard {name} in {self.path} holds prefix-tree arrays but {INDEX_FILE} says plain rows: "
                    "read as plain rows, its branches would train without their context"
                )
            arrays = {}
            weighted = ("loss_weights",) if self.shards[s].get("loss_weights") else ()
            for key in _ARRAYS + (_TREE_ARRAYS if self.trees else ()) + weighted:
                file = self.path / f"{name}.{key}.npy"
                try:
                    arrays[key] = np.load(file, mmap_mode="r")
                except (OSError, ValueError) as e:
                    raise SourceError(f"cannot read {file}: {e}") from e
            rows = int(self.shards[s]["rows"])
            shapes = {"input_ids": (rows, self.seq_len), "doc_offsets": (rows + 1,)}
            if self.trees:
                documents = arrays["doc_lens"].shape
                shapes.update(dict.fromkeys(_TREE_ARRAYS[:3], (rows, self.seq_len)), doc_roles=documents)
            if any(arrays[key].shape != shape for key, shape in shapes.items()):
                raise SourceError(f"shard {name} in {self.path} does not match {INDEX_FILE}")
            self._open[s] = arrays
        return arrays

    def rows(self, indices: np.ndarray) -> Rows:
        """The rows at global `indices`, in that order."""
        indices = np.asarray(indices, np.int64)
        shard_of = np.searchsorted(self.starts, indices, side="right") - 1
        input_ids = np.empty((len(indices), self.seq_len), np.int32)
        labels = np.empty((len(indices), self.seq_len), np.int32)
        per_token = {key: np.empty((len(indices), self.seq_len), np.int32) for key in _TREE_ARRAYS[:3]}
        doc_lens, sample_ids, doc_roles = [], [], []
        # weighted shards bring their loss weights; rows of other shards weigh every trained label 1
        weighted = any(self.shards[s].get("loss_weights") for s in set(shard_of.tolist()))
        loss_weights = np.empty((len(indices), self.seq_len), np.float32) if weighted else None
        for k, (row, s) in enumerate(zip(indices.tolist(), shard_of.tolist())):
            shard = self._shard(s)
            local = row - int(self.starts[s])
            input_ids[k] = shard["input_ids"][local]
            labels[k] = shard["labels"][local]
            if loss_weights is not None:
                stored = shard.get("loss_weights")
                loss_weights[k] = stored[local] if stored is not None else labels[k] != IGNORE_INDEX
            a, b = int(shard["doc_offsets"][local]), int(shard["doc_offsets"][local + 1])
            doc_lens.append(np.asarray(shard["doc_lens"][a:b]))
            sample_ids.append(np.asarray(shard["sample_ids"][a:b]))
            if self.trees:
                for key, out in per_token.items():
                    out[k] = shard[key][local]
                doc_roles.append(np.asarray(shard["doc_roles"][a:b]))
        if not self.trees:
            rows = Rows.from_documents(input_ids, labels, doc_lens, sample_ids)
        else:
            rows = Rows.from_documents(
                input_ids, labels, doc_lens, sample_ids, **per_token, doc_roles=doc_roles
            )
        rows.loss_weights = loss_weights
        return rows
